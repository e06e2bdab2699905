"""The docs site in a real browser: build it, serve it on localhost, read its pages in headless Chromium, offline.

Needs Debian's `chromium` and `chromium-driver`, and KaTeX (`libjs-katex`) for the math (`.ci/run` installs them and
sets MEDCL_REQUIRE_BROWSER=1, so there a missing browser or KaTeX fails the test instead of skipping it). Every host
but localhost is unreachable from the browser, as in a classroom without network. A screenshot of chapter 11 is kept
in runs/test-artifacts/.
"""
import json, os, re, shutil, threading, urllib.request

import pandas as pd
import pytest

from medcl_nb.cli import find_chapters, site_server
from medcl_nb.core import project_root
from medcl_nb.docs import chapter_status

CHROMIUM, CHROMEDRIVER = shutil.which('chromium'), shutil.which('chromedriver')
# Without the background-networking flags Chromium keeps trying to reach Google's hosts, which this machine refuses.
# The resolver rule makes every host but localhost fail at once, so a page that asked a CDN for anything would show
# it at once (and a network that drops packets instead of refusing them cannot stall a page load); /dev/shm is small
# in containers.
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage',
                  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1', '--window-size=1400,1800']
SCREENSHOT_PAGE = 'contrastive_autoencoder'
LOSSES_PAGE = 'losses.html'


def _browser_missing() -> str | None:
    missing = [name for name, path in (('chromium', CHROMIUM), ('chromedriver', CHROMEDRIVER)) if not path]
    try: import selenium  # noqa: F401
    except ImportError: missing.append('selenium (pip)')
    return ', '.join(missing) or None


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    from medcl_nb.docs import build_site
    out = build_site('nbconvert', out_dir=tmp_path_factory.mktemp('site')/'_docs')   # leaves the reader's _docs/ alone
    server = site_server(out, log=False)   # a client that hangs up mid-reply is not a traceback in the test's output
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield out, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown(); server.server_close()


@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    missing = _browser_missing()
    if missing:
        if os.environ.get('MEDCL_REQUIRE_BROWSER') == '1': pytest.fail(f'browser test required but missing: {missing}')
        pytest.skip(f'no browser here ({missing}): apt-get install chromium chromium-driver; pip install selenium')
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS: options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_every_page_linked_from_the_sidebar_is_served(site):
    out, url = site
    with urllib.request.urlopen(f'{url}/index.html') as r: index = r.read().decode()
    nav = re.search(r'<div class="nav-body">(.*?)</div></nav>', index, re.S).group(1)
    linked = re.findall(r'<a href="([^"]+)"', nav)
    assert sorted(linked) == sorted(p.name for p in out.glob('*.html')), 'the sidebar must link every page, once'
    assert {f'{c}.html' for c in find_chapters()} <= set(linked) and linked[0] == 'index.html'
    assert re.findall(r'<h3>([^<]+)</h3>', nav) == ['Start', 'Library', 'Tour', 'Paper chapters', 'Benchmark']
    assert '`' not in re.sub(r'<[^>]+>', '', nav), 'sidebar titles render their backticks as code'
    for page in linked + ['site.css', 'search.js', 'search-index.js']:
        with urllib.request.urlopen(f'{url}/{page}') as r: assert r.status == 200, page
    assert 'https://' not in re.sub(r'<a [^>]*>', '', index.split('<main>')[0]), 'the page head loads nothing from the network'


@pytest.mark.parametrize('chapter', list(find_chapters()))
def test_chapter_page_shows_its_committed_results(site, browser, chapter):
    from selenium.webdriver.common.by import By
    _, url = site
    browser.get(f'{url}/{chapter}.html')
    assert browser.find_element(By.CSS_SELECTOR, 'h1.title').text.strip()
    block = browser.find_element(By.CSS_SELECTOR, f'.committed-results[data-chapter="{chapter}"]')
    from medcl_nb.docs import committed_files
    from medcl_nb.core import committed_profiles
    profiles = committed_profiles(chapter)
    tables_committed, figures_committed = (committed_files(project_root()/'figures'/chapter/profiles[-1])
                                           if profiles else ([], []))
    if not tables_committed and not figures_committed:
        # Nothing committed yet, or a run still going (results saved, no table): the page says which, not an empty block.
        note, status = (browser.find_element(By.CSS_SELECTOR, s).text for s in ('.committed-results .no-results', 'p.page-status'))
        if profiles and (project_root()/'figures'/chapter/profiles[-1]/'RECORD_PENDING').exists():
            assert 'run of this chapter is in progress' in note and 'in progress' in status, (note, status)
        else:
            assert 'No reduced or full results are committed' in note and 'smoke-tested only' in status, (note, status)
        return
    browser.execute_script("arguments[0].querySelectorAll('details').forEach(d => d.open = true)", block)  # the variants
    tables = block.find_elements(By.CSS_SELECTOR, 'table.results-table')
    assert tables and all(t.is_displayed() for t in tables)
    assert len(tables[0].find_elements(By.CSS_SELECTOR, 'tbody tr')) >= 1
    images = block.find_elements(By.CSS_SELECTOR, 'figure.results-figure img')
    rendered = [browser.execute_script('return arguments[0].complete && arguments[0].naturalWidth > 0', img)
                for img in images]
    # A run resumed across sessions may commit no figure (chapter 13's saliency needs networks trained in the rendering
    # execution): then the page shows none; every committed figure must be there and render.
    assert len(images) >= len(figures_committed) and all(rendered), f'{chapter}: {rendered.count(False)} of {len(images)} figures did not render'
    # Every committed figure has a caption that says what it is, the protocol, the profile and the seeds.
    captions = [f.get_attribute('textContent') for f in block.find_elements(By.CSS_SELECTOR, 'figure.results-figure figcaption')]
    assert len(captions) == len(images) and all('profile;' in c and 'seeds' in c and '.png' in c for c in captions), captions
    status = browser.find_element(By.CSS_SELECTOR, 'p.page-status').text
    assert profiles[-1] in status
    if chapter == SCREENSHOT_PAGE:
        shot = project_root()/'runs'/'test-artifacts'/f'docs-{chapter}.png'
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def _open(browser, url, page):
    browser.get(f'{url}/{page}')
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, 30).until(lambda b: b.execute_script('return document.readyState') == 'complete')


def test_math_is_typeset_offline(site, browser):
    from medcl_nb.docs import KATEX_HELP, find_katex
    if find_katex() is None:
        if os.environ.get('MEDCL_REQUIRE_BROWSER') == '1': pytest.fail(KATEX_HELP)
        pytest.skip(KATEX_HELP)
    from selenium.webdriver.support.ui import WebDriverWait
    _, url = site
    _open(browser, url, LOSSES_PAGE)
    WebDriverWait(browser, 30).until(lambda b: b.execute_script('return document.body.dataset.math') == 'rendered')
    raw = browser.execute_script('''
        const w = document.createTreeWalker(document.querySelector('main'), NodeFilter.SHOW_TEXT), left = [];
        for (let n = w.nextNode(); n; n = w.nextNode())
            if (n.textContent.includes('$$') && !n.parentElement.closest('pre, code, .katex')) left.push(n.textContent.slice(0, 80));
        return left;''')
    assert not raw, f'TeX left untypeset: {raw[:3]}'
    assert browser.execute_script("return document.querySelectorAll('main .katex-display .katex-html').length") >= 1


def test_code_is_highlighted_and_long_cells_folded(site, browser):
    _, url = site
    _open(browser, url, LOSSES_PAGE)
    colours = browser.execute_script('''
        const k = document.querySelector('.input_area .highlight .k'), body = getComputedStyle(document.body).color;
        return [k ? getComputedStyle(k).color : null, body];''')
    assert colours[0] and colours[0] != colours[1], colours
    solution = browser.execute_script("const d = document.querySelector('details.solution'); return d && !d.open")
    assert solution, 'the exercise solution is folded'
    assert 'SOLUTION START' not in browser.find_element('css selector', 'main').text


def test_prev_next_and_on_this_page(site, browser):
    from selenium.webdriver.common.by import By
    out, url = site
    _open(browser, url, 'contrastive_autoencoder.html')
    prev = browser.find_element(By.CSS_SELECTOR, 'nav.prev-next a[rel=prev]').get_attribute('href').rsplit('/', 1)[1]
    nxt = browser.find_element(By.CSS_SELECTOR, 'nav.prev-next a[rel=next]').get_attribute('href').rsplit('/', 1)[1]
    assert (prev, nxt) == ('tour.html', 'simclr_micle.html')
    toc = browser.find_elements(By.CSS_SELECTOR, 'nav.on-this-page a')
    assert len(toc) >= 4 and all(browser.find_elements(By.ID, a.get_attribute('href').split('#')[1]) for a in toc)


def test_search_finds_the_losses_page(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    _, url = site
    _open(browser, url, 'index.html')
    browser.find_element(By.ID, 'search-box').send_keys('NT-Xent')
    first = WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, '#search-results a'))[0]
    assert first.get_attribute('href').rsplit('/', 1)[1].split('#')[0] == LOSSES_PAGE
    first.click()
    WebDriverWait(browser, 10).until(lambda b: b.current_url.split('/')[-1].startswith(LOSSES_PAGE))


@pytest.mark.parametrize('page', ['contrastive_autoencoder.html', 'simclr_micle.html'])
def test_chapters_show_their_illustrations(site, browser, page):
    from selenium.webdriver.common.by import By
    _, url = site
    _open(browser, url, page)
    notes = browser.find_elements(By.CSS_SELECTOR, 'p.illustration-note')
    assert notes and all('smoke' in n.text for n in notes), [n.text for n in notes]
    images = browser.execute_script('''return [...document.querySelectorAll('.celltag_illustration .output_png img')]
                                       .map(i => i.complete && i.naturalWidth > 0);''')
    assert images and all(images), f'{page}: illustration images {images}'


def test_table_1_in_the_papers_shape(site, browser):
    from selenium.webdriver.common.by import By
    profile = chapter_status('contrastive_autoencoder')['profile']      # the profile the page shows (largest committed)
    if profile is None: pytest.skip('chapter 11 has no committed reduced or full results yet')
    _, url = site
    _open(browser, url, 'contrastive_autoencoder.html')
    table = browser.find_elements(By.CSS_SELECTOR, '.committed-results table.results-table')[0]
    assert 'paper-shape' in table.get_attribute('class')
    head = table.find_element(By.TAG_NAME, 'thead').text
    assert all(w in head for w in ('accuracy', 'precision', 'recall', 'paper', 'ours (Δ)')), head
    csv = pd.read_csv(project_root()/'figures'/'contrastive_autoencoder'/profile/'table1.csv', keep_default_na=False)
    lines = len(table.find_elements(By.CSS_SELECTOR, 'tbody tr'))   # one per row (method, split), one heading per split
    splits = csv.row.str.rsplit(', ', n=1).str[1].nunique()
    assert lines == csv.row.nunique() + splits < len(csv), ('one line per method and split, not per metric', lines)
    text = table.text + browser.find_element(By.CSS_SELECTOR, '.committed-results').text
    assert 'nan' not in text and '{' not in text and '−' in text


def test_wide_tables_fit_and_the_sidebar_folds_on_a_phone(site, browser):
    _, url = site
    try:
        browser.set_window_size(1280, 900)
        _open(browser, url, 'index.html')
        widths = browser.execute_script('''return [document.documentElement.clientWidth,
            ...[...document.querySelectorAll('main table')].map(t => t.getBoundingClientRect().right)];''')
        assert len(widths) > 1 and max(widths[1:]) <= widths[0], f'a table is wider than the page: {widths}'
        browser.set_window_size(390, 844)
        _open(browser, url, 'index.html')
        nav, view = browser.execute_script("return [document.querySelector('nav.book-nav').getBoundingClientRect().height, window.innerHeight]")
        assert nav < view / 3, f'on a phone the sidebar takes {nav:.0f} of {view} px'
        for page in ['index.html', 'ledger.html', *[f'{c}.html' for c in find_chapters()]]:   # nothing widens the page
            _open(browser, url, page)
            scroll, width = browser.execute_script('return [document.documentElement.scrollWidth, window.innerWidth]')
            assert scroll <= width + 4, f'{page} is {scroll} px wide on a {width} px phone screen'
    finally:
        browser.set_window_size(1400, 1800)


def test_every_results_folder_belongs_to_a_chapter():
    # A folder under figures/ that no chapter page shows would be results nobody can find in the docs.
    folders = {p.name for p in (project_root()/'figures').iterdir() if p.is_dir()}
    assert folders <= set(find_chapters()), folders - set(find_chapters())
    summaries = {json.loads(p.read_text())['chapter'] for p in (project_root()/'figures').glob('*/*/summary.json')}
    assert summaries <= folders
    # Inside a chapter's folder only one folder per committed profile: a table never mixes profiles.
    for chapter in folders:
        inside = {p.name for p in (project_root()/'figures'/chapter).iterdir()}
        assert inside <= {'reduced', 'full'}, f'figures/{chapter}/ holds {sorted(inside)}: only reduced/ and full/ belong there'
