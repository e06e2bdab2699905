"""Provenance fields and atomic writes (including a process killed in the middle of a write, and an unwritable folder)."""
import json, os, shutil, subprocess, sys, textwrap

import pytest

import torch

from medcl_nb.core import atomic_open, atomic_write_json, run_provenance


def test_provenance_has_every_field():
    p = run_provenance('full', [0, 1, 2], 'cpu', data_md5={'pneumoniamnist.npz': '28209eda62fecd6e6a2d98b1501bb15f'},
                       wall_time_s=12.5)
    for key in ('profile', 'seeds', 'git_commit', 'git_dirty', 'device', 'versions', 'data_md5', 'wall_time_s'):
        assert key in p, key
    assert p['profile'] == 'full' and p['seeds'] == [0, 1, 2] and p['wall_time_s'] == 12.5
    assert len(p['git_commit']) == 40 and isinstance(p['git_dirty'], bool)  # the tests run inside the repository
    assert p['device'].startswith('cpu')
    assert set(p['versions']) >= {'python', 'torch', 'torchvision', 'medmnist'}
    assert p['versions']['torch'] == torch.__version__
    json.dumps(p)


def test_atomic_write_survives_an_exception(tmp_path):
    target = tmp_path/'seed0.json'
    atomic_write_json(target, {'accuracy': 0.8})
    try:
        with atomic_open(target) as f:
            f.write('{"accuracy": 0.')
            raise RuntimeError('interrupted')
    except RuntimeError:
        pass
    assert json.loads(target.read_text()) == {'accuracy': 0.8}
    assert [p.name for p in tmp_path.iterdir()] == ['seed0.json']


def test_atomic_write_survives_a_killed_process(tmp_path):
    "A process that dies (os._exit: no cleanup at all) half-way through a write leaves the old file intact."
    target = tmp_path/'seed0.json'
    atomic_write_json(target, {'accuracy': 0.8})
    script = textwrap.dedent(f"""
        import os
        from medcl_nb.core import atomic_open
        with atomic_open({str(target)!r}) as f:
            f.write('{{"accuracy": 0.')
            f.flush()
            os._exit(9)
    """)
    assert subprocess.run([sys.executable, '-c', script]).returncode == 9
    assert json.loads(target.read_text()) == {'accuracy': 0.8}


def test_atomic_write_into_an_unwritable_folder_names_the_folder_and_the_fix(tmp_path):
    "Not a PermissionError about `.seed0.json.x1y2.tmp`: the target, the folder that refused, and what to do."
    locked = tmp_path/'figures'; locked.mkdir(); locked.chmod(0o555)
    cmd = [sys.executable, '-c', textwrap.dedent(f"""
        from medcl_nb.core import atomic_write_json, NotWritable
        for target in ({str(locked/'seed0.json')!r}, {str(locked/'ch'/'reduced'/'seed0.json')!r}):
            try: atomic_write_json(target, {{}})
            except NotWritable as e: print(e)
        """)]
    if os.geteuid() == 0:   # root ignores permissions unless it drops the capability that bypasses them
        if not shutil.which('setpriv'): pytest.skip('as root, this test needs setpriv to drop CAP_DAC_OVERRIDE')
        cmd = ['setpriv', '--bounding-set', '-dac_override,-dac_read_search', *cmd]
    try: r = subprocess.run(cmd, capture_output=True, text=True)
    finally: locked.chmod(0o755)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and all(f'the folder {locked} is not writable for your user' in l and f'`chmod u+w {locked}`' in l
                                   for l in lines), r.stdout
    assert '.tmp' not in r.stdout and lines[1].startswith(f"cannot write {locked/'ch'/'reduced'/'seed0.json'} (Permission denied)")
