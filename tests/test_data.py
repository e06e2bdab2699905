"""Data errors: missing file, corrupted byte, truncated file, unknown name, bad mirror; each says how to fix it.
Stratified subsets of multi-label targets keep the share of every label vector."""
import os, shutil
from pathlib import Path

import pytest
import torch
from medmnist import INFO

from medcl_nb.data import DataError, dataset_status, fetch_dataset, load_split, stratified_indices

MD5 = INFO['breastmnist']['MD5']


def _error(fn) -> str:
    with pytest.raises(DataError) as e: fn()
    return str(e.value)


def _says_how_to_fix(msg, cache):
    for part in ('breastmnist.npz', MD5, INFO['breastmnist']['url'], str(Path(cache)/'breastmnist.npz')):
        assert part in msg, (part, msg)


def test_missing_file_without_mirror(tmp_path, monkeypatch):
    monkeypatch.delenv('MEDCL_DATA_MIRROR', raising=False)
    msg = _error(lambda: fetch_dataset('breastmnist', root=tmp_path, download=False))
    assert 'missing' in msg
    _says_how_to_fix(msg, tmp_path)


def test_copies_from_mirror_and_verifies(tmp_path, monkeypatch, source):
    monkeypatch.setenv('MEDCL_DATA_MIRROR', str(source))
    assert fetch_dataset('breastmnist', root=tmp_path) == {'breastmnist.npz': MD5}
    assert dataset_status('breastmnist', root=tmp_path)[0]['status'] == 'verified'


def test_corrupted_byte_is_an_error_and_not_replaced(tmp_path, monkeypatch, source):
    monkeypatch.setenv('MEDCL_DATA_MIRROR', str(source))
    data = bytearray((source/'breastmnist.npz').read_bytes())
    data[len(data)//2] ^= 0x01
    (tmp_path/'breastmnist.npz').write_bytes(bytes(data))
    msg = _error(lambda: load_split('breastmnist', 'train', root=tmp_path))
    assert 'cached file' in msg and 'has md5' in msg
    _says_how_to_fix(msg, tmp_path)
    assert (tmp_path/'breastmnist.npz').read_bytes() == bytes(data)  # no silent re-download over it
    assert dataset_status('breastmnist', root=tmp_path)[0]['status'] == 'wrong md5'


def test_truncated_file_is_diagnosed(tmp_path, source):
    (tmp_path/'breastmnist.npz').write_bytes((source/'breastmnist.npz').read_bytes()[:10_000])
    msg = _error(lambda: fetch_dataset('breastmnist', root=tmp_path, download=False))
    assert 'not a complete npz archive' in msg
    _says_how_to_fix(msg, tmp_path)


def test_corrupted_mirror_file_is_not_copied(tmp_path, monkeypatch, source):
    mirror = tmp_path/'mirror'; mirror.mkdir()
    data = bytearray((source/'breastmnist.npz').read_bytes()); data[100] ^= 0xFF
    (mirror/'breastmnist.npz').write_bytes(bytes(data))
    monkeypatch.setenv('MEDCL_DATA_MIRROR', str(mirror))
    cache = tmp_path/'cache'
    msg = _error(lambda: fetch_dataset('breastmnist', root=cache))
    assert 'mirror file' in msg and str(mirror/'breastmnist.npz') in msg
    assert not (cache/'breastmnist.npz').exists()


def test_unknown_name_suggests_the_right_one(tmp_path):
    msg = _error(lambda: load_split('pneumonia_mnist', 'train', root=tmp_path))
    assert 'Unknown dataset' in msg and 'pneumoniamnist' in msg


def test_mirror_that_is_not_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv('MEDCL_DATA_MIRROR', str(tmp_path/'nope'))
    assert 'is not a folder' in _error(lambda: fetch_dataset('breastmnist', root=tmp_path))


def test_splits_are_uint8_tensors(tmp_path, monkeypatch, source):
    monkeypatch.setenv('MEDCL_DATA_MIRROR', str(source))
    s = load_split('breastmnist', 'test', root=tmp_path)
    assert s.images.dtype.is_floating_point is False and str(s.images.dtype) == 'torch.uint8'
    assert tuple(s.images.shape) == (INFO['breastmnist']['n_samples']['test'], 1, 28, 28)
    assert s.md5 == {'breastmnist.npz': MD5}


def test_files_the_book_writes_have_ordinary_permissions(tmp_path, monkeypatch, source):
    "A classroom shares one cache: files follow the umask (0o666 & ~umask), not mkstemp's private 0o600."
    from medcl_nb.core import run_provenance
    from medcl_nb.report import save_seed_result
    monkeypatch.setenv('MEDCL_DATA_MIRROR', str(source))
    monkeypatch.setenv('MEDCL_HOME', str(tmp_path))
    old = os.umask(0o002)
    try:
        fetch_dataset('breastmnist', root=tmp_path/'cache')
        saved = save_seed_result('demo', 'smoke', 0, {'row': {'accuracy': 0.5}}, run_provenance('smoke', [0], 'cpu'))
    finally: os.umask(old)
    assert (tmp_path/'cache'/'breastmnist.npz').stat().st_mode & 0o777 == 0o664
    assert saved.stat().st_mode & 0o777 == 0o664


def test_verify_says_when_the_mirror_has_a_wrong_md5_or_none_of_the_files(tmp_path, monkeypatch, capsys, source):
    from medcl_nb.cli import data_verify
    mirror, empty = tmp_path/'mirror', tmp_path/'empty'
    mirror.mkdir(); empty.mkdir()
    (mirror/'breastmnist.npz').write_bytes((source/'breastmnist.npz').read_bytes()[:5000])
    shutil.copy(source/'retinamnist.npz', mirror)
    monkeypatch.setenv('MEDCL_DATA', str(tmp_path/'cache'))
    monkeypatch.setenv('MEDCL_DATA_MIRROR', str(mirror))
    assert data_verify() == 1
    rows = {l.split()[0] + ' ' + l.split()[1]: l for l in capsys.readouterr().out.splitlines() if l.startswith(('breast', 'retina'))}
    assert 'wrong md5 in the mirror' in rows['breastmnist breastmnist.npz'] and 'missing' not in rows['breastmnist breastmnist.npz']
    assert 'in MEDCL_DATA_MIRROR: run `medcl data fetch`' in rows['retinamnist retinamnist.npz']
    monkeypatch.setenv('MEDCL_DATA_MIRROR', str(empty))
    assert data_verify() == 1
    assert f"MEDCL_DATA_MIRROR={empty} holds none of the book's 7 files" in capsys.readouterr().out


# stratified_indices on multi-label targets: the failing case was "no finding" rows sharing label 0's stratum
MULTI_PATTERNS = {(0, 0, 0, 0): 520, (1, 0, 0, 0): 160, (0, 1, 0, 0): 120, (1, 0, 1, 0): 80, (0, 0, 0, 1): 60,
                  (0, 1, 1, 1): 40, (1, 1, 1, 1): 20}


def _multi_label_set(seed=0):
    rows = [p for p, count in MULTI_PATTERNS.items() for _ in range(count)]
    return torch.tensor(rows)[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))]


@pytest.mark.parametrize('n', [50, 100, 0.25, 333])
@pytest.mark.parametrize('seed', [0, 1, 7])
def test_multi_label_strata_are_label_vectors_and_keep_their_share(n, seed):
    y = _multi_label_set(seed)
    idx = stratified_indices(y, n, seed=seed)
    k = round(n * len(y)) if isinstance(n, float) else n
    assert len(idx) == k == len(idx.unique())
    for pattern, count in MULTI_PATTERNS.items():
        got = int((y[idx] == torch.tensor(pattern)).all(1).sum())
        assert abs(got - k * count / len(y)) < 1, (pattern, got, k * count / len(y))   # each within one of its share


def test_single_label_column_is_stratified_by_class():
    y = torch.tensor([0] * 80 + [1] * 20)[:, None]                # MedMNIST's raw (N, 1) labels
    idx = stratified_indices(y, 10, seed=0)
    assert int(y[idx].sum()) == 2


@pytest.mark.parametrize('seed', range(8))
def test_holdout_keeps_a_single_member_class_in_training(seed):
    "Like HF datasets #5532: a class (or multi-label vector) with one member used to land wholly on the held-out side."
    from medcl_nb.data import ImageSplit, holdout
    images = torch.zeros(12, 1, 2, 2, dtype=torch.uint8)
    for labels in (torch.tensor([0] * 6 + [1] * 5 + [2]), torch.tensor([[0, 0]] * 6 + [[1, 0]] * 5 + [[1, 1]])):
        split = ImageSplit('toy', 'train', images, labels, 'multi-class')
        rest, held = holdout(split, 0.25, seed=seed)
        lonely = labels[-1]
        assert int((rest.labels == lonely).reshape(len(rest), -1).all(1).sum()) == 1
        assert len(rest) + len(held) == 12 and len(held) >= 2
