"""Committed encoders (05a_runner.keep_encoder): each within 2 MB, each chapter's within 15 MB, every file the one its
run recorded (md5 in the part's provenance), and every one loads into the network its chapter builds."""
import hashlib, json
from pathlib import Path

import pytest

from medcl_nb.runner import CHAPTER_ENCODERS_LIMIT_BYTES, ENCODER_LIMIT_BYTES

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = sorted(p for p in (ROOT/'figures').glob('*/*/encoders') if p.is_dir())


@pytest.mark.parametrize('folder', FOLDERS, ids=lambda p: f'{p.parts[-3]}/{p.parts[-2]}')
def test_committed_encoders_keep_the_budget_and_their_md5(folder):
    files = sorted(folder.glob('*.pt'))
    assert files, f'{folder} is empty: remove it'
    assert sum(f.stat().st_size for f in files) <= CHAPTER_ENCODERS_LIMIT_BYTES
    for f in files:
        assert f.stat().st_size <= ENCODER_LIMIT_BYTES, f
        part, seed = f.stem.rsplit('-seed', 1)
        result = folder.parent/'results'/f'seed{seed}-{part}.json'
        assert result.is_file(), f'{f.name} has no result beside it ({result.name})'
        kept = json.loads(result.read_text(encoding='utf-8'))['provenance']['encoder']
        assert kept['md5'] == hashlib.md5(f.read_bytes()).hexdigest() and kept['file'] == f.name, f


def test_the_limits_are_the_issues():
    assert (ENCODER_LIMIT_BYTES, CHAPTER_ENCODERS_LIMIT_BYTES) == (2_000_000, 15_000_000)
