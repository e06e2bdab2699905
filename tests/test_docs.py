"""The docs site in a real browser: build it, serve it on localhost, open every chapter page in headless Chromium.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them and sets MEDCL_REQUIRE_BROWSER=1, so
there a missing browser fails the test instead of skipping it). A screenshot of one chapter page is kept in
runs/test-artifacts/.
"""
import functools, http.server, json, os, re, shutil, threading, urllib.request

import pytest

from medcl_nb.cli import find_chapters
from medcl_nb.core import project_root

CHROMIUM, CHROMEDRIVER = shutil.which('chromium'), shutil.which('chromedriver')
# Without the background-networking flags Chromium keeps trying to reach Google's hosts, which this machine refuses.
# The resolver rule makes every host but localhost fail at once (the pages ask a CDN for MathJax), so a network
# that drops packets instead of refusing them cannot stall a page load; /dev/shm is small in containers.
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage',
                  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1', '--window-size=1400,1800']
SCREENSHOT_PAGE = 'contrastive_autoencoder'


def _browser_missing() -> str | None:
    missing = [name for name, path in (('chromium', CHROMIUM), ('chromedriver', CHROMEDRIVER)) if not path]
    try: import selenium  # noqa: F401
    except ImportError: missing.append('selenium (pip)')
    return ', '.join(missing) or None


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    from medcl_nb.docs import build_site
    out = build_site('nbconvert', out_dir=tmp_path_factory.mktemp('site')/'_docs')   # leaves the reader's _docs/ alone
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
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
    nav = re.search(r'<nav class="book-nav">(.*?)</nav>', index, re.S).group(1)
    linked = re.findall(r'href="([^"]+)"', nav)
    assert sorted(linked) == sorted(p.name for p in out.glob('*.html')), 'the sidebar must link every page, once'
    assert {f'{c}.html' for c in find_chapters()} <= set(linked) and 'index.html' in linked
    for page in linked:
        with urllib.request.urlopen(f'{url}/{page}') as r: assert r.status == 200, page


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
        # Nothing committed yet: the page must say so, not show an empty block.
        assert 'No reduced or full results are committed' in block.find_element(By.CSS_SELECTOR, '.no-results').text
        return
    tables = block.find_elements(By.CSS_SELECTOR, 'table.results-table')
    assert tables and all(t.is_displayed() for t in tables)
    assert len(tables[0].find_elements(By.CSS_SELECTOR, 'tbody tr')) >= 1
    images = block.find_elements(By.CSS_SELECTOR, 'figure.results-figure img')
    rendered = [browser.execute_script('return arguments[0].complete && arguments[0].naturalWidth > 0', img)
                for img in images]
    assert images and all(rendered), f'{chapter}: {rendered.count(False)} of {len(images)} figures did not render'
    if chapter == SCREENSHOT_PAGE:
        shot = project_root()/'runs'/'test-artifacts'/f'docs-{chapter}.png'
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


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
