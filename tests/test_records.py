"""The executed record of every committed run (issue 27): it exists, carries outputs, names no machine, stays under its
size limit, and was rendered at a commit equal to or descending from every commit in its results' provenance.

A committed profile whose folder holds `RECORD_PENDING` (written when `medcl reproduce` starts a reduced or full run,
removed when it writes the record) is a run not finished yet: its record is skipped as pending. One with neither a
record nor the marker fails."""
import json, re, socket, subprocess
from pathlib import Path

import pytest

from medcl_nb.docs import MACHINE_PATH, RECORD_LIMIT_BYTES, RECORD_PENDING, machine_strings, record_path

ROOT = Path(__file__).resolve().parent.parent
NOT_RENDERED = {
    ('benchmark', 'full'): 'a re-render of the benchmark times the engine again, which is a run, not a re-render',
    ('tour', 'full'): 'its full run predates the records and was not re-rendered (a full-profile rerun on this CPU was not risked)',
}
COMMITTED = sorted({(p.parent.parent.parent.name, p.parent.parent.name) for p in ROOT.glob('figures/*/*/results/seed*.json')})


def git(*args):
    return subprocess.run(['git', '-C', str(ROOT), *args], capture_output=True, text=True)


@pytest.fixture(params=COMMITTED, ids=['/'.join(c) for c in COMMITTED])
def record(request):
    chapter, profile = request.param
    path = record_path(chapter, profile, ROOT)
    if not path.is_file() and (chapter, profile) in NOT_RENDERED: pytest.skip(f'record not rendered: {NOT_RENDERED[chapter, profile]}')
    if not path.is_file() and (path.parent/RECORD_PENDING).exists():
        pytest.skip(f'record pending: the {profile} run of {chapter} has not finished ({RECORD_PENDING} in {path.parent.name}/)')
    assert path.is_file(), (f'{chapter} ({profile}) has committed results but no executed record: '
                            f'`medcl reproduce {chapter} --profile {profile}` writes {path.relative_to(ROOT)}')
    return chapter, profile, path


def test_the_record_carries_the_tables_and_figures(record):
    chapter, profile, path = record
    nb = json.loads(path.read_text(encoding='utf-8'))
    outputs = [o for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])]
    kinds = {k for o in outputs for k in o.get('data', {})}
    assert outputs and kinds & {'text/markdown', 'text/html'}, f'{path.name} shows no table'
    if any(path.parent.glob('*.png')): assert 'image/png' in kinds or 'data:image/png' in path.read_text(), f'{path.name} shows no figure'
    assert not [o for o in outputs if o.get('output_type') == 'error'], f'{path.name} records an error'


def test_the_record_names_no_machine_and_stays_small(record):
    chapter, profile, path = record
    text = path.read_text(encoding='utf-8')
    assert path.stat().st_size <= RECORD_LIMIT_BYTES
    assert not MACHINE_PATH.search(text), MACHINE_PATH.search(text).group(0)
    for s in machine_strings(): assert s not in text, s
    host = socket.gethostname()
    assert not re.search(rf'(?<![\w.-]){re.escape(host)}(?![\w-])', text), f'host name {host!r} in {path.name}'
    assert 'widget-view+json' not in text and '"papermill"' not in text


def test_the_record_was_rendered_at_or_after_its_results(record):
    chapter, profile, path = record
    if git('rev-parse', 'HEAD').returncode != 0: pytest.skip('not a git checkout')
    meta = json.loads(path.read_text(encoding='utf-8'))['metadata']['medcl']
    rendered = meta.get('git_commit')
    assert rendered and meta.get('git_dirty') is False, f'{path.name} was not rendered from a clean commit: {meta}'
    assert git('cat-file', '-e', f'{rendered}^{{commit}}').returncode == 0, f'render commit {rendered} is not in this repository'
    commits = {json.loads(p.read_text(encoding='utf-8'))['provenance'].get('git_commit')
               for p in (path.parent/'results').glob('seed*.json')}
    for c in sorted(commits - {None}):
        assert git('merge-base', '--is-ancestor', c, rendered).returncode == 0, \
            f'{path.name} was rendered at {rendered[:10]}, which does not descend from {c[:10]}, a commit of its results'
