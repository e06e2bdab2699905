"""The runner: resume, failures and the closing summary, -p checks, Ctrl-C, the lock, --plan, unreadable files, `medcl --help`."""
import json, os, re, shutil, signal, subprocess, sys, time
from pathlib import Path

import nbformat
import pytest

from medcl_nb.cli import find_chapters, main

MEDCL = str(Path(sys.executable).parent/'medcl')  # the console script installed with the package

PARAMS = "chapter = '{name}'\nprofile = 'smoke'\nseeds = [0]\ndevice = 'auto'"

FAKE_BODY = """
from medcl_nb.core import run_provenance
from medcl_nb.report import save_seed_result, seeds_to_run, results_dir
log = results_dir(chapter, profile).parent/'trained.log'
for seed in seeds_to_run(chapter, profile, seeds):
    {fail}
    save_seed_result(chapter, profile, seed, {{'row': {{'accuracy': 0.5 + seed / 10}}}}, run_provenance(profile, [seed], 'cpu'))
    with open(log, 'a') as f: f.write(f'{{seed}}\\n')
"""


def fake_chapter(project: Path, name: str, fail: str = 'pass', params: str = '', body: str | None = None) -> Path:
    "A minimal chapter notebook: a tagged parameters cell (plus `params`), then a cell that 'trains' each missing seed (or `body`)."
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f'# {name}'),
                nbformat.v4.new_code_cell(PARAMS.format(name=name) + params, metadata={'tags': ['parameters']}),
                nbformat.v4.new_code_cell('import math  # a harmless cell'),
                nbformat.v4.new_code_cell(FAKE_BODY.format(fail=fail) if body is None else body)]
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    path = project/'nbs'/f'50_{name}.ipynb'
    nbformat.write(nb, path)
    return path


def trained(project, name, profile='full'):
    log = (project/'runs/smoke'/name if profile == 'smoke' else project/'figures'/name/profile)/'trained.log'
    return [int(x) for x in log.read_text().split()] if log.exists() else []


def test_chapters_are_found_by_their_parameters_cell(project):
    fake_chapter(project, 'fake')
    assert list(find_chapters()) == ['fake']


def test_full_profile_resumes_finished_seeds(project):
    fake_chapter(project, 'fake')
    assert main(['reproduce', 'fake', '--profile', 'full', '--seeds', '0', '1', '--device', 'cpu']) == 0
    assert trained(project, 'fake') == [0, 1]
    assert main(['reproduce', 'fake', '--profile', 'full', '--seeds', '0', '1', '2', '--device', 'cpu']) == 0
    assert trained(project, 'fake') == [0, 1, 2]  # 0 and 1 were not trained again
    assert sorted(p.name for p in (project/'figures/fake/full/results').iterdir()) == ['seed0.json', 'seed1.json', 'seed2.json']
    run = json.loads((project/'runs/full/last_run.json').read_text())
    assert run[0]['seeds_run'] == [2] and run[0]['status'] == 'ok'
    assert (project/'runs/full/executed/fake.ipynb').exists()


def test_smoke_profile_writes_only_under_runs(project):
    fake_chapter(project, 'fake')
    assert main(['reproduce', 'fake', '--profile', 'smoke', '--device', 'cpu']) == 0
    assert trained(project, 'fake', 'smoke') == [0]
    assert not (project/'figures').exists()


def test_failing_chapter_exits_nonzero_naming_chapter_and_cell(project, capsys):
    fake_chapter(project, 'broken', fail="raise ValueError('the loss exploded')")
    fake_chapter(project, 'fine')
    assert main(['reproduce', 'broken', 'fine', '--profile', 'full', '--seeds', '0', '--device', 'cpu']) == 1
    err = capsys.readouterr().err
    assert "chapter 'broken' failed in cell" in err and 'ValueError: the loss exploded' in err
    assert 'executed notebook kept at' in err
    assert trained(project, 'fine') == [0]  # the other chapter still ran
    assert not (project/'figures/broken/full/results').exists()


@pytest.mark.parametrize('args, message', [
    (['reproduce', 'nope'], 'unknown chapter(s) nope'),
    (['reproduce', '--profile', 'fast'], "invalid choice: 'fast'"),
    (['reproduce', '--device', 'tpu'], "invalid choice: 'tpu'"),
])
def test_bad_arguments_are_clear_errors_and_write_nothing(project, args, message):
    fake_chapter(project, 'fake')
    r = subprocess.run([MEDCL, *args], capture_output=True, text=True,
                       env={**os.environ, 'MEDCL_HOME': str(project)})
    assert r.returncode == 2, r
    assert message in r.stderr
    assert sorted(p.name for p in project.iterdir()) == ['nbs', 'settings.ini']


def test_cuda_on_a_machine_without_one(project, capsys):
    import torch
    if torch.cuda.is_available(): pytest.skip('this machine has a GPU')
    fake_chapter(project, 'fake')
    assert main(['reproduce', 'fake', '--device', 'cuda']) == 2
    assert 'no CUDA GPU' in capsys.readouterr().err
    assert not (project/'runs').exists()


def test_help_explains_commands_and_profiles():
    r = subprocess.run([MEDCL, '--help'], capture_output=True, text=True)
    assert r.returncode == 0
    for word in ('reproduce', 'data', 'smoke', 'full', 'MEDCL_DATA_MIRROR', 'resumes'):
        assert word in r.stdout, word


@pytest.mark.parametrize('where', ['cache', 'mirror'])
def test_corrupted_data_file_stops_reproduce_before_a_kernel_starts(project, monkeypatch, capsys, source, where):
    "A deliberately corrupted data file: one line naming the file and the fix, before any kernel starts or anything trains."
    repo = Path(__file__).resolve().parent.parent
    shutil.copy(repo/'nbs'/'10_tour.ipynb', project/'nbs')
    cache, mirror = project/'cache', project/'mirror'; cache.mkdir(); mirror.mkdir()
    data = bytearray((source/'pneumoniamnist.npz').read_bytes()); data[4096] ^= 0x10
    ((cache if where == 'cache' else mirror)/'pneumoniamnist.npz').write_bytes(bytes(data))
    monkeypatch.setenv('MEDCL_DATA', str(cache)); monkeypatch.setenv('MEDCL_DATA_MIRROR', str(mirror))
    assert main(['reproduce', 'tour', '--profile', 'smoke', '--device', 'cpu']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(((cache if where == 'cache' else mirror)/'pneumoniamnist.npz').resolve()) in err
    assert 'md5 is not the published 28209eda62fecd6e6a2d98b1501bb15f' in err
    assert ('`medcl data fetch pneumoniamnist`' if where == 'cache' else 'check MEDCL_DATA_MIRROR') in err
    assert not (project/'runs/smoke/executed').exists() and not (project/'runs/smoke/tour').exists()


def test_nbdev_clean_keeps_the_parameters_tag(tmp_path):
    repo = Path(__file__).resolve().parent.parent
    for name in ('settings.ini', 'nbs'):
        (shutil.copytree if (repo/name).is_dir() else shutil.copy)(repo/name, tmp_path/name)
    subprocess.run([str(Path(sys.executable).parent/'nbdev_clean')], cwd=tmp_path, check=True, capture_output=True)
    assert 'tour' in find_chapters(tmp_path/'nbs')


def test_data_verify_lists_every_file_and_fails_when_one_is_missing(tmp_path, monkeypatch, source):
    monkeypatch.setenv('MEDCL_DATA', str(tmp_path))
    monkeypatch.setenv('MEDCL_DATA_MIRROR', str(source))
    r = subprocess.run([MEDCL, 'data', 'verify'], capture_output=True, text=True)
    assert r.returncode == 1 and 'pneumoniamnist.npz' in r.stdout and 'missing' in r.stdout
    assert 'run `medcl data fetch`' in r.stdout and '0 of 7 files verified' in r.stdout
    assert subprocess.run([MEDCL, 'data', 'fetch'], capture_output=True, text=True).returncode == 0
    r = subprocess.run([MEDCL, 'data', 'verify'], capture_output=True, text=True)
    assert r.returncode == 0 and '7 of 7 files verified' in r.stdout, r.stdout


# --- the closing summary, failed runs, "results updated" --------------------------------------------------------

def test_failed_run_keeps_the_last_good_notebook_and_prints_each_error_once(project, capsys, monkeypatch):
    fake_chapter(project, 'flaky', fail="""import os
    if os.environ.get('FAKE_FAIL'): raise ValueError('the loss exploded')""")
    assert main(['reproduce', 'flaky', '--profile', 'smoke', '--device', 'cpu']) == 0
    out = capsys.readouterr().out
    good = project/'runs/smoke/executed/flaky.ipynb'
    summary = out[out.index('== summary'):]
    assert re.search(r'flaky\s+ok\s+[\d.]+ s\s+runs/smoke/executed/flaky.ipynb\s+runs/smoke/flaky', summary), summary
    assert 'results updated' not in out  # never for smoke
    before = good.read_bytes()
    monkeypatch.setenv('FAKE_FAIL', '1')  # the kernel inherits it
    assert main(['reproduce', 'flaky', '--profile', 'smoke', '--device', 'cpu']) == 1
    out, err = capsys.readouterr()
    assert good.read_bytes() == before  # the failed run did not overwrite the last good executed notebook
    assert (project/'runs/smoke/executed/flaky.failed.ipynb').exists()
    assert (out + err).count('the loss exploded') == 1  # each error once
    assert 'runs/smoke/executed/flaky.failed.ipynb' in err and 'untouched' in err
    summary = out[out.index('== summary'):]
    assert re.search(r'flaky\s+FAILED\s+[\d.]+ s\s+runs/smoke/executed/flaky.failed.ipynb\s+-', summary), summary
    assert 'tables and figures in' not in out + err and 'runs/smoke/flaky\n' not in summary


def test_results_updated_only_when_a_committed_file_changed(project, capsys):
    fake_chapter(project, 'fake')
    assert main(['reproduce', 'fake', '--profile', 'full', '--seeds', '0', '--device', 'cpu']) == 0
    assert 'Full results updated' in capsys.readouterr().out
    assert main(['reproduce', 'fake', '--profile', 'full', '--seeds', '0', '--device', 'cpu']) == 0  # nothing new
    out = capsys.readouterr().out
    assert 'results updated' not in out and '== summary (full): 1 of 1 chapter(s) ok' in out


# --- input checked before anything starts ------------------------------------------------------------------------

LIST_PARAM = "\ndatasets = ['pneumoniamnist', 'mnist']\nvariant = ''"


@pytest.mark.parametrize('value, message', [
    ('datasets=5', "datasets of chapter 'fake' is a list of strings"),
    ('datasets=[pneumoniamnist]', """quote the words: -p 'datasets=["pneumoniamnist"]'"""),
    ('datasets', """e.g. -p 'datasets=["pneumoniamnist"]' (chapter 'fake')"""),
    ('dataset=["mnist"]', 'did you mean datasets'),
])
def test_param_values_are_checked_before_a_kernel_starts(project, capsys, value, message):
    fake_chapter(project, 'fake', params=LIST_PARAM)
    assert main(['reproduce', 'fake', '--profile', 'smoke', '--device', 'cpu', '-p', value]) == 2
    assert message in capsys.readouterr().err
    assert not (project/'runs').exists()  # nothing started, nothing written


def test_chapters_lists_per_part_seeds_per_profile_in_columns(project, capsys):
    fake_chapter(project, 'fake')
    fake_chapter(project, 'parted')
    for rel in ('parted/full/results/seed0-mnist.json', 'parted/full/results/seed0-pneumoniamnist.json',
                'parted/full/results/seed1-mnist.json', 'parted/reduced/results/seed2-mnist.json', 'fake/full/results/seed0.json'):
        (project/'figures'/rel).parent.mkdir(parents=True, exist_ok=True); (project/'figures'/rel).write_text('{}')
    assert main(['chapters']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ['chapter', 'notebook', 'reduced', 'seeds', 'full', 'seeds']
    rows = {l.split()[0]: l for l in lines[1:]}
    assert rows['parted'].split('  ')[-1].strip() == '0, 1 × 1 part (+1 on seed 0)'   # mnist on seeds 0, 1; pneumoniamnist on 0
    assert '2 × 1 part' in rows['parted'] and rows['fake'].rstrip().endswith('0')
    col = lines[0].index('full seeds')
    assert rows['parted'][col:].startswith('0, 1 × 1 part') and rows['fake'][col:].startswith('0')  # aligned


def test_help_lists_the_chapters_and_describes_every_command(project):
    fake_chapter(project, 'fake')
    env = {**os.environ, 'MEDCL_HOME': str(project)}
    r = subprocess.run([MEDCL, 'reproduce', '--help'], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and 'Chapters: fake' in r.stdout and '--plan' in r.stdout
    for cmd in (['chapters'], ['readme'], ['data', 'verify']):
        r = subprocess.run([MEDCL, *cmd, '--help'], capture_output=True, text=True, env=env)
        body = r.stdout.split('\n\n')[1]
        assert not body.startswith('options'), (cmd, r.stdout)  # a description comes before the options



def _fastest(cmd: list, runs: int = 3) -> float:
    "Wall time of the fastest of `runs` runs of `cmd`: the least disturbed by other work on a shared machine."
    best = float('inf')
    for _ in range(runs):
        start = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        best = min(best, time.perf_counter() - start)
        assert r.returncode == 0, r
    return best


def test_the_command_line_imports_no_heavy_library_to_start():
    "torch, medmnist, nbformat and pandas are imported where they are used, not when `medcl` starts."
    heavy = ('torch', 'torchvision', 'medmnist', 'sklearn', 'nbformat', 'pandas', 'scipy', 'papermill')
    r = subprocess.run([sys.executable, '-c', f"import sys, medcl_nb.cli\nprint([m for m in {heavy!r} if m in sys.modules])"],
                       capture_output=True, text=True, check=True)
    assert r.stdout.strip() == '[]', r.stdout


@pytest.mark.parametrize('args', [['--help'], ['chapters'], ['reproduce', '--help']])
def test_the_command_line_answers_in_well_under_two_seconds(args):
    "Help and the chapter list took 13-20 s when the CLI imported torch at start; now a fraction of a second."
    python = _fastest([sys.executable, '-c', 'pass'])   # the machine's own start-up cost, loaded or not
    took = _fastest([MEDCL, *args])
    assert took < 2 + 10 * python, f"`medcl {' '.join(args)}` took {took:.2f} s (python -c pass: {python:.2f} s)"

# --- Ctrl-C, the lock -----------------------------------------------------------------------------------------

SLEEPER = """
import time
from medcl_nb.core import write_run_status, update_run_status
write_run_status(chapter, profile, part='mnist', seed=0)
update_run_status(epoch=2, epochs=5)
time.sleep(300)
"""


def test_ctrl_c_stops_the_kernel_and_says_where_the_run_stood(project):
    fake_chapter(project, 'fake', body=SLEEPER)
    status = project/'runs/full/status/fake.json'
    p = subprocess.Popen([MEDCL, 'reproduce', 'fake', '--profile', 'full', '--device', 'cpu'], start_new_session=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, 'MEDCL_HOME': str(project)})
    try:
        for _ in range(240):
            if status.exists() and 'epoch' in status.read_text(): break
            time.sleep(0.5)
        else: raise AssertionError(p.communicate(timeout=5))
        kernel = json.loads(status.read_text())['pid']
        os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in the terminal does: the whole foreground group, medcl only
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, (out, err)
    assert err.strip() == 'medcl: interrupted in fake mnist seed 0, epoch 2 of 5; rerun the same command to resume', err
    assert not (project/'runs/full/executed/fake.ipynb').exists()  # an interrupted run is not a good executed notebook
    time.sleep(1)
    with pytest.raises(ProcessLookupError): os.kill(kernel, 0)  # the kernel is gone


def test_a_second_run_of_the_same_chapter_refuses_and_a_killed_one_leaves_no_lock(project, capsys):
    fake_chapter(project, 'fake')
    holder = subprocess.Popen([sys.executable, '-c', "import time\nfrom medcl_nb.cli import chapter_lock\n"
                               "with chapter_lock('fake', 'full'):\n    print('locked', flush=True); time.sleep(300)"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, 'MEDCL_HOME': str(project)})
    try:
        assert holder.stdout.readline().strip() == 'locked'
        assert main(['reproduce', 'fake', '--profile', 'full', '--device', 'cpu']) == 2
        assert f"chapter 'fake' (full) is already being run by process {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill(); holder.wait()  # kill -9: no clean-up code runs
    from medcl_nb.cli import chapter_lock
    with chapter_lock('fake', 'full'): pass  # the operating system released the lock


# --- --plan --------------------------------------------------------------------------------------------------

PLANNER = """
import json, time
from medcl_nb.core import runs_dir
if plan:
    time.sleep(0.5)
    fits = [{'desc': 'pretrain', 'epochs': 10, 'steps_per_epoch': 20, 's_per_step': 0.5, 'est_s': 100.0},
            {'desc': 'probe', 'epochs': 5, 'steps_per_epoch': 4, 's_per_step': 0.25, 'est_s': 5.0}]
    out = {'chapter': chapter, 'profile': profile, 'seeds': seeds, 'device': 'cpu: test', 'runner_wall_s': 0.5,
           'parts': [{'part': p, 'est_s': 105.0, 'measured_s': 0.2, 'fits': fits} for p in ('mnist', 'pneumoniamnist')],
           'est_per_seed_s': 210.0, 'est_total_s': 210.0 * len(seeds)}
    (runs_dir()/profile/'plan').mkdir(parents=True, exist_ok=True)
    (runs_dir()/profile/'plan'/f'{chapter}.json').write_text(json.dumps(out))
    raise type('PlanFinished', (Exception,), {})()
raise RuntimeError('a plan run must not get here')
"""


def test_plan_times_chapters_and_trains_nothing(project, capsys):
    fake_chapter(project, 'planned', params='\nplan = False', body=PLANNER)
    fake_chapter(project, 'plain')
    assert main(['reproduce', '--plan', '--profile', 'reduced', '--seeds', '0', '1', '2', '--device', 'cpu']) == 0
    out = capsys.readouterr().out
    plan = json.loads((project/'runs/reduced/plan/planned.json').read_text())
    assert plan['seeds'] == [0, 1, 2]
    row = next(l for l in out.splitlines() if l.startswith('planned'))
    assert '2 × 3' in row and '0.375 (0.25–0.5)' in row
    minutes = float(re.search(r'([\d.]+) min', row).group(1))
    assert 630 / 60 - 0.05 <= minutes < (630 + 120) / 60  # est_total_s plus the notebook's own seconds (printed to 0.1 min)
    assert re.search(r'plain\s+no plan \(chapter has no plan parameter\)', out)
    assert 'total:' in out and 'runs/reduced/plan' in out
    assert (project/'runs/reduced/plan/planned.ipynb').exists()
    assert not (project/'runs/reduced/executed').exists() and not (project/'figures').exists()


def test_plan_estimate_is_the_notebooks_own_time_plus_the_runners_estimate(project):
    from medcl_nb.cli import plan_chapter
    path = fake_chapter(project, 'planned', params='\nplan = False', body=PLANNER)
    plan = plan_chapter('planned', path, 'full', [0, 1], 'cpu')
    assert plan['est_total_s'] == 420.0
    assert plan['est_chapter_s'] == pytest.approx(plan['papermill_wall_s'] - 0.5 + 420.0, abs=0.1)


RUNNER_PLANNER = """
from medcl_nb.runner import run_experiment
def run_one(part, seed): return {'row': {'accuracy': 0.5}}, {}
run_experiment(chapter, profile, seeds, {'mnist': 1, 'pneumoniamnist': 1}, run_one, device='cpu', plan=plan)
"""


def test_plan_says_what_it_counted_when_parts_are_saved(project, capsys):
    "A chapter whose every part is saved costs only its notebook: the plan says so, and what a fresh run would cost."
    from medcl_nb.report import save_seed_result
    fake_chapter(project, 'planned', params='\nplan = False', body=RUNNER_PLANNER)
    for part in ('mnist', 'pneumoniamnist'):
        for seed in (0, 1, 2): save_seed_result('planned', 'reduced', seed, {'row': {'accuracy': 0.5}}, {'profile': 'reduced'}, part=part)
    args = ['reproduce', 'planned', '--plan', '--profile', 'reduced', '--seeds', '0', '1', '2', '--device', 'cpu']
    assert main(args) == 0
    row = next(l for l in capsys.readouterr().out.splitlines() if l.startswith('planned'))
    assert re.search(r'all 2 × 3 parts saved: nothing to train \([\d.]+ min of notebook\); a fresh run: [\d.]+ min', row), row
    (project/'figures/planned/reduced/results/seed2-mnist.json').unlink()
    assert main(args) == 0
    row = next(l for l in capsys.readouterr().out.splitlines() if l.startswith('planned'))
    assert re.search(r'1 of 6 parts to run: [\d.]+ min; a fresh run: [\d.]+ min', row), row
    plan = json.loads((project/'runs/reduced/plan/planned.json').read_text())
    assert [p['n_seeds'] for p in plan['parts']] == [3, 3] and [p['to_run'] for p in plan['parts']] == [1, 0]


# --- unreadable files: one line naming the file and the fix ------------------------------------------------------

def unprivileged(cmd: list) -> list:
    "Run `cmd` so that file permissions apply: as root, without the capabilities that bypass them."
    if os.geteuid() != 0: return cmd
    if not shutil.which('setpriv'): pytest.skip('as root, this test needs setpriv to drop CAP_DAC_OVERRIDE')
    return ['setpriv', '--bounding-set', '-dac_override,-dac_read_search', *cmd]


def _one_line_error(r, path):
    assert 'Traceback' not in r.stderr and 'Traceback' not in r.stdout, r.stderr
    lines = [l for l in (r.stdout + r.stderr).splitlines() if str(path) in l and 'cannot read' in l]
    assert lines and all('chmod' in l for l in lines), (r.stdout, r.stderr)


@pytest.mark.parametrize('where, how', [('cache', 'file'), ('cache', 'folder'), ('mirror', 'file')])
def test_unreadable_data_file_is_one_line_with_the_fix(tmp_path, source, where, how):
    cache, mirror = tmp_path/'cache', tmp_path/'mirror'
    cache.mkdir(); mirror.mkdir()
    target = (cache if where == 'cache' else mirror)/'breastmnist.npz'
    shutil.copy(source/'breastmnist.npz', target)
    locked = target if how == 'file' else target.parent
    locked.chmod(0o000 if how == 'file' else 0o600)  # a folder without execute permission hides its files
    env = {**os.environ, 'MEDCL_DATA': str(cache), 'MEDCL_DATA_MIRROR': str(mirror)}
    try:
        for cmd in (['data', 'verify'], ['data', 'fetch', 'breastmnist']):
            r = subprocess.run(unprivileged([MEDCL, *cmd]), capture_output=True, text=True, env=env)
            assert r.returncode == 1, r
            _one_line_error(r, target)
            assert ('MEDCL_DATA ' if where == 'cache' else 'unset MEDCL_DATA_MIRROR') in r.stdout + r.stderr
    finally: locked.chmod(0o755 if how == 'folder' else 0o644)


def test_unreadable_result_stops_reproduce_before_it_starts(project):
    fake_chapter(project, 'fake')
    results = project/'figures/fake/full/results'; results.mkdir(parents=True)
    (results/'seed0.json').write_text('{}'); (results/'seed0.json').chmod(0o000)
    r = subprocess.run(unprivileged([MEDCL, 'reproduce', 'fake', '--profile', 'full', '--device', 'cpu']),
                       capture_output=True, text=True, env={**os.environ, 'MEDCL_HOME': str(project)})
    assert r.returncode == 2, r
    _one_line_error(r, results/'seed0.json')
    assert not (project/'runs/full/executed').exists()


@pytest.mark.parametrize('first_run', [False, True])
def test_unwritable_figures_folder_stops_reproduce_with_the_fix(project, first_run):
    "A figures/ the user cannot write: one line naming the folder and the fix, before a kernel starts (no temporary file named)."
    fake_chapter(project, 'fake')
    locked = project/'figures' if first_run else project/'figures/fake/full/results'
    locked.mkdir(parents=True); locked.chmod(0o555)
    try:
        r = subprocess.run(unprivileged([MEDCL, 'reproduce', 'fake', '--profile', 'full', '--device', 'cpu']),
                           capture_output=True, text=True, env={**os.environ, 'MEDCL_HOME': str(project)})
    finally: locked.chmod(0o755)
    assert r.returncode == 2, r
    assert 'Traceback' not in r.stderr and '.tmp' not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    rel = str(locked.relative_to(project))
    assert f'cannot write {rel} (not writable for your user)' in r.stderr and f'`chmod -R u+w {rel}`' in r.stderr, r.stderr
    assert not (project/'runs/full/executed').exists()


def test_kernel_over_ipc_sends_no_tcp_warning(project):
    fake_chapter(project, 'fake')
    r = subprocess.run([MEDCL, 'reproduce', 'fake', '--profile', 'smoke', '--device', 'cpu'], capture_output=True,
                       text=True, env={**os.environ, 'MEDCL_HOME': str(project)})
    assert r.returncode == 0, r
    assert 'TCP' not in r.stderr and 'IProgress' not in r.stderr, r.stderr


# --- the executed record of a committed run (issue 27) -----------------------------------------------------------

def test_a_finished_run_writes_its_executed_record_beside_its_results(project):
    fake_chapter(project, 'fake', body=FAKE_BODY.format(fail='pass') + "\nimport os, sys\nprint('saved under', os.getcwd(), sys.prefix)")
    assert main(['reproduce', 'fake', '--profile', 'full', '--seeds', '0', '--device', 'cpu']) == 0
    record = project/'figures/fake/full/fake.ipynb'
    text = record.read_text()
    nb = json.loads(text)
    assert nb['metadata']['medcl']['profile'] == 'full' and 'git_commit' in nb['metadata']['medcl']
    assert nb['metadata']['medcl']['parameters']['seeds'] == [0] and 'papermill' not in nb['metadata']
    assert any('saved under ./nbs <venv>' in ''.join(o.get('text', '')) for c in nb['cells'] for o in c.get('outputs', []))
    assert str(project) not in text and sys.prefix not in text
    assert not (project/'figures/fake/full/RECORD_PENDING').exists()
    assert json.loads((project/'runs/full/last_run.json').read_text())[0]['record'] == 'figures/fake/full/fake.ipynb'


def test_a_failed_run_leaves_its_record_pending(project):
    fake_chapter(project, 'broken', fail="raise ValueError('the loss exploded')")
    assert main(['reproduce', 'broken', '--profile', 'full', '--seeds', '0', '--device', 'cpu']) == 1
    assert (project/'figures/broken/full/RECORD_PENDING').exists() and not (project/'figures/broken/full/broken.ipynb').exists()


def test_a_run_with_param_overrides_leaves_the_executed_record_alone(project, capsys):
    "-p makes a variant of the chapter: the record of the committed run is neither overwritten nor marked pending."
    fake_chapter(project, 'fake', params="\nvariant = 'plain'")
    assert main(['reproduce', 'fake', '--profile', 'full', '--seeds', '0', '--device', 'cpu']) == 0
    record = project/'figures/fake/full/fake.ipynb'
    before = record.read_bytes()
    capsys.readouterr()
    assert main(['reproduce', 'fake', '--profile', 'full', '--seeds', '0', '1', '--device', 'cpu', '-p', 'variant=lars']) == 0
    assert record.read_bytes() == before and not (project/'figures/fake/full/RECORD_PENDING').exists()
    assert trained(project, 'fake') == [0, 1]   # the variant itself ran
    err = capsys.readouterr().err
    assert 'fake ran with -p variant=lars: its executed record figures/fake/full/fake.ipynb is left as it was' in err, err
    assert 'runs/full/executed/fake.ipynb' in err
    assert json.loads((project/'runs/full/last_run.json').read_text())[0].get('record') is None
