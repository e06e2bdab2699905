"""Shared fixtures: a scratch project root, and a verified data source for the data tests."""
import os, shutil
from pathlib import Path

import pytest

from medcl_nb.data import dataset_files, md5sum

REPO = Path(__file__).resolve().parent.parent


def verified_source() -> Path | None:
    "A folder holding verified copies of the book's files: $MEDCL_DATA_MIRROR, else the project cache."
    for cand in (os.environ.get('MEDCL_DATA_MIRROR'), REPO/'data'):
        if cand and (Path(cand)/'breastmnist.npz').is_file():
            f = dataset_files('breastmnist')[0]
            if md5sum(Path(cand)/f.relpath) == f.md5: return Path(cand)
    return None


@pytest.fixture
def source():
    s = verified_source()
    if s is None: pytest.skip('needs verified dataset files: set MEDCL_DATA_MIRROR or run `medcl data fetch`')
    return s


@pytest.fixture
def project(tmp_path, monkeypatch):
    "An empty medcl-nb project root in tmp_path (settings.ini + nbs/), used as MEDCL_HOME."
    shutil.copy(REPO/'settings.ini', tmp_path/'settings.ini')
    (tmp_path/'nbs').mkdir()
    monkeypatch.setenv('MEDCL_HOME', str(tmp_path))
    monkeypatch.delenv('MEDCL_DEVICE', raising=False)
    return tmp_path
