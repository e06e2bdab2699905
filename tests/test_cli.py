"""The runner: resume of finished seeds, the failure exit code, bad arguments, and `medcl --help`."""
import json, os, shutil, subprocess, sys
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


def fake_chapter(project: Path, name: str, fail: str = 'pass') -> Path:
    "A minimal chapter notebook: a tagged parameters cell, then a cell that 'trains' each missing seed."
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f'# {name}'),
                nbformat.v4.new_code_cell(PARAMS.format(name=name), metadata={'tags': ['parameters']}),
                nbformat.v4.new_code_cell('import math  # a harmless cell'),
                nbformat.v4.new_code_cell(FAKE_BODY.format(fail=fail))]
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


def test_corrupted_data_file_fails_the_chapter_with_the_fix_and_no_results(project, monkeypatch, capsys, source):
    "A deliberately corrupted data file: the runner exits non-zero, says what is wrong and how to fix it, writes no result."
    repo = Path(__file__).resolve().parent.parent
    shutil.copy(repo/'nbs'/'10_tour.ipynb', project/'nbs')
    cache = project/'cache'; cache.mkdir()
    data = bytearray((source/'pneumoniamnist.npz').read_bytes()); data[4096] ^= 0x10
    (cache/'pneumoniamnist.npz').write_bytes(bytes(data))
    monkeypatch.setenv('MEDCL_DATA', str(cache))
    assert main(['reproduce', 'tour', '--profile', 'smoke', '--device', 'cpu']) == 1
    err = capsys.readouterr().err
    assert "chapter 'tour' failed" in err and 'DataError' in err
    assert 'expected md5: 28209eda62fecd6e6a2d98b1501bb15f' in err and 'zenodo' in err
    assert not (project/'runs/smoke/tour/results').exists()


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
