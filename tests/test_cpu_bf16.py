"""bf16 autocast on the CPU (issue 26): the chapters' profile default follows chapter 15's committed whole-pretraining
check, read here from the saved per-seed results with the rule the chapter fixed before its run (its protocol)."""
import json
from pathlib import Path

import numpy as np
import pytest

from medcl_nb.report import claim_verdict
import medcl_nb.train as train
from medcl_nb.core import cpu_has_bf16
from medcl_nb.train import CPU_AUTOCAST_ENV, cpu_autocast_setting

ROOT = Path(__file__).resolve().parent.parent
RESULTS = sorted((ROOT/'figures/benchmark/reduced/results').glob('seed*-cpu_bf16.json'))


def committed_check():
    results = [json.loads(p.read_text(encoding='utf-8')) for p in RESULTS]
    rule = results[0]['provenance']['protocol']
    learns = all(claim_verdict(results, row, 'random_init@probe', 'auc')['verdict'] == 'reproduced' for row in ('fp32@probe', 'bf16@probe'))
    same = claim_verdict(results, 'bf16@probe', 'fp32@probe', 'auc')
    speedup = float(np.mean([r['rows']['fp32@probe']['pretrain_s'] / r['rows']['bf16@probe']['pretrain_s'] for r in results]))
    meets = learns and same['ci_low'] <= 0 <= same['ci_high'] and abs(same['mean_delta']) <= rule['margin'] and speedup >= rule['min_ratio']
    return results, rule, meets


@pytest.mark.skipif(not RESULTS, reason="chapter 15's cpu_bf16 part is not committed")
def test_profile_default_follows_the_committed_check(monkeypatch):
    monkeypatch.delenv(CPU_AUTOCAST_ENV, raising=False)
    results, rule, meets = committed_check()
    assert len(results) == len(rule['seeds']) >= 3, 'the check is paired over at least three seeds'
    assert {r['profile'] for r in results} == {'reduced'} and len({r['provenance']['git_commit'] for r in results}) == 1
    assert cpu_autocast_setting('reduced') == cpu_autocast_setting('full') == (meets and cpu_has_bf16())
    assert cpu_autocast_setting('smoke') is False
    assert {r['provenance'].get('cpu', {}).get('bf16_kernels', True) for r in results} == {True}, \
        'the check was made on a CPU with bf16 kernels (older results name no CPU)'


@pytest.mark.parametrize('kernels', [True, False])
def test_profile_default_needs_bf16_kernels(monkeypatch, kernels):
    "Without oneDNN's bf16 kernels (an AVX2-only CPU) bf16 runs many times slower than fp32: reduced and full stay fp32."
    monkeypatch.delenv(CPU_AUTOCAST_ENV, raising=False)
    monkeypatch.setattr(train, 'cpu_has_bf16', lambda: kernels)
    assert cpu_autocast_setting('smoke') is False
    assert cpu_autocast_setting('reduced') is cpu_autocast_setting('full') is kernels
    monkeypatch.setenv(CPU_AUTOCAST_ENV, '1'); assert cpu_autocast_setting('reduced') is True   # the switch still wins


def test_switch_overrides_the_profile(monkeypatch):
    monkeypatch.setenv(CPU_AUTOCAST_ENV, '0'); assert cpu_autocast_setting('reduced') is False
    monkeypatch.setenv(CPU_AUTOCAST_ENV, '1'); assert cpu_autocast_setting('smoke') is True
    monkeypatch.setenv(CPU_AUTOCAST_ENV, 'on')
    with pytest.raises(ValueError, match='use 0'): cpu_autocast_setting('reduced')
