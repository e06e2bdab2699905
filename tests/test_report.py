"""The comparison table and the paired claim verdicts against small examples checked by hand, in every format they are
written to; the claims ledger on a scratch project in the figures/<chapter>/<profile>/ layout."""
import math, statistics

import pandas as pd
import pytest

from medcl_nb.report import (CLAIM_COLUMNS, PaperRegistry, claim_verdict, claims_ledger, claims_table, comparison_table,
                             load_results, save_seed_result, t_interval, write_table)

PAPER = PaperRegistry('example', 'Example et al., Table 1',
                      rows={'Ours (kNN), Test': {'accuracy': 0.84, 'precision': 0.85},
                            'Baseline, Test': {'accuracy': 0.74}},
                      notes={'Ours (kNN), Test': 'same data', 'Baseline, Test': 'surrogate: random init for ImageNet'})

# By hand: kNN accuracy over seeds 0.80, 0.83, 0.86 -> mean 0.83, sample sd sqrt((0.03^2 + 0 + 0.03^2)/2) = 0.03,
# delta 0.83 - 0.84 = -0.01; precision 0.90, 0.90, 0.90 -> sd 0, delta +0.05; baseline 0.70, 0.72, 0.74 ->
# mean 0.72, sd 0.02, delta -0.02.
SEEDS = {0: (0.80, 0.90, 0.70), 1: (0.83, 0.90, 0.72), 2: (0.86, 0.90, 0.74)}
EXPECTED_MD = """**Table 1** (profile: full)

| row | metric | paper | ours (mean ± sd) | Δ | note |
|---|---|---|---|---|---|
| Ours (kNN), Test | accuracy | 0.84 | 0.830 ± 0.030 (n=3) | -0.010 | same data |
| Ours (kNN), Test | precision | 0.85 | 0.900 ± 0.000 (n=3) | +0.050 | same data |
| Baseline, Test | accuracy | 0.74 | 0.720 ± 0.020 (n=3) | -0.020 | surrogate: random init for ImageNet |
"""


def test_table_matches_the_hand_computed_example(project):
    for seed, (acc, prec, base) in SEEDS.items():
        save_seed_result('example', 'full', seed,
                         {'Ours (kNN), Test': {'accuracy': acc, 'precision': prec}, 'Baseline, Test': {'accuracy': base}},
                         {'profile': 'full', 'seeds': [seed]})
    table = comparison_table(PAPER, load_results('example', 'full'))
    paths = write_table(table, 'example', 'full', 'table1', 'Table 1')
    assert paths['md'].read_text() == EXPECTED_MD
    csv = pd.read_csv(paths['csv'])
    assert csv['ours'].tolist() == ['0.830 ± 0.030 (n=3)', '0.900 ± 0.000 (n=3)', '0.720 ± 0.020 (n=3)']
    assert [round(x, 6) for x in csv['mean']] == [0.83, 0.9, 0.72]
    assert paths['md'] == project/'figures'/'example'/'full'/'table1.md'


def test_one_seed_shows_no_sd(project):
    save_seed_result('example', 'smoke', 0, {'Baseline, Test': {'accuracy': 0.5}}, {'profile': 'smoke'})
    table = comparison_table(PAPER, load_results('example', 'smoke'))
    row = table[table.row == 'Baseline, Test'].iloc[0]
    assert row['ours'] == '0.500 (n=1)' and row['delta'] == '-0.240'
    assert not (project/'figures').exists()


# Paired claim verdicts, by hand. Seeds 0-2: A = 0.70, 0.80, 0.90 and B = 0.685, 0.775, 0.882 -> per-seed differences
# 0.015, 0.025, 0.018: mean 0.019333, sd 0.005132, t(0.975, 2) = 4.3027 -> half-width 4.3027 * 0.005132 / sqrt(3) = 0.012749.
A, B, C = [0.70, 0.80, 0.90], [0.685, 0.775, 0.882], [0.67, 0.82, 0.89]


def _save_parts(profile='full'):
    "Each method saved as its own part of each seed, as the chapters do."
    for seed in range(3):
        for part, row, values in (('a', 'A, Test', A), ('b', 'B, Test', B), ('c', 'C, Test', C)):
            save_seed_result('example', profile, seed, {row: {'auc': values[seed], 'accuracy': 0.5}},
                             {'profile': profile, 'seeds': [seed]}, part=part)


def test_paired_verdict_matches_the_hand_computed_interval(project):
    _save_parts()
    v = claim_verdict(load_results('example', 'full'), 'A, Test', 'B, Test', 'auc')
    assert v['verdict'] == 'reproduced' and v['n'] == 3 and v['seeds'] == [0, 1, 2] and v['profile'] == 'full'
    assert math.isclose(v['mean_delta'], 0.019333, abs_tol=1e-6)
    assert math.isclose(v['ci_low'], 0.019333 - 0.012749, abs_tol=1e-5) and math.isclose(v['ci_high'], 0.019333 + 0.012749, abs_tol=1e-5)
    assert v['text'] == 'reproduced: Δ auc +0.019 [+0.007, +0.032], n=3'


@pytest.mark.parametrize('better,worse,higher,verdict', [
    ('A, Test', 'B, Test', True, 'reproduced'),       # a clear, consistent win
    ('B, Test', 'A, Test', True, 'contradicted'),     # the same, reversed
    ('A, Test', 'C, Test', True, 'inconclusive'),     # +0.03, -0.02, +0.01: noise
    ('A, Test', 'Z, Test', True, 'not run'),          # a row nobody ran
    ('B, Test', 'A, Test', False, 'reproduced'),      # lower is better: the direction flips
])
def test_verdict_words(project, better, worse, higher, verdict):
    _save_parts()
    assert claim_verdict(load_results('example', 'full'), better, worse, 'auc', higher_is_better=higher)['verdict'] == verdict


@pytest.mark.parametrize('value', [0.1, 0.5, 0.8, -0.03])
def test_zero_spread_gives_the_zero_width_interval(value):
    "scipy's t.interval(..., scale=stats.sem(v)) is (nan, nan) for equal values (scale 0); the book's interval is [m, m]."
    assert t_interval([value] * 3) == (value, value, value)
    results = [{'profile': 'full', 'seed': s, 'part': None, 'rows': {'A': {'auc': 0.9}, 'B': {'auc': 0.9 - value}}} for s in range(3)]
    v = claim_verdict(results, 'A', 'B', 'auc')
    assert v['ci_low'] == pytest.approx(value) and v['ci_high'] == pytest.approx(value)
    assert v['verdict'] == ('reproduced' if value > 0 else 'contradicted')


def test_t_interval_is_scipys_where_the_spread_is_positive():
    from scipy import stats
    for values in ([0.015, 0.025, 0.018], [1.0, 3.0], [0.2, 0.4, 0.1, 0.9, 0.5]):
        m = statistics.mean(values)
        assert t_interval(values, 0.9) == pytest.approx((m, *stats.t.interval(0.9, len(values) - 1, loc=m, scale=stats.sem(values))))


def test_the_unpaired_rule_would_have_called_the_paired_win_noise():
    assert statistics.mean(A) - statistics.mean(B) < min(statistics.stdev(A), statistics.stdev(B))


def test_one_seed_is_inconclusive_and_profiles_never_mix(project):
    _save_parts()
    one = claim_verdict(load_results('example', 'full', seeds=[0]), 'A, Test', 'B, Test', 'auc')
    assert one['verdict'] == 'inconclusive' and one['n'] == 1 and math.isnan(one['ci_low'])
    save_seed_result('example', 'smoke', 0, {'A, Test': {'auc': 0.9}}, {'profile': 'smoke'})
    mixed = load_results('example', 'full') + load_results('example', 'smoke')
    with pytest.raises(ValueError, match='mix profiles'):
        claim_verdict(mixed, 'A, Test', 'B, Test', 'auc')


def test_claims_table_round_trip(project):
    _save_parts()
    results = load_results('example', 'full')
    claims = [{**claim_verdict(results, 'A, Test', w, 'auc'), 'claim': f'A beats {w[0]}'} for w in ('B, Test', 'C, Test', 'Z, Test')]
    table = claims_table(claims)
    assert table[CLAIM_COLUMNS].values.tolist() == [
        ['A beats B', 'auc', 'full', 3, '+0.019', '[+0.007, +0.032]', 'reproduced'],
        ['A beats C', 'auc', 'full', 3, '+0.007', '[-0.056, +0.069]', 'inconclusive'],
        ['A beats Z', 'auc', 'full', 0, '', '', 'not run']]
    paths = write_table(table, 'example', 'full', 'claims', 'Claims')
    md = paths['md'].read_text()
    assert '| A beats B | auc | full | 3 | +0.019 | [+0.007, +0.032] | reproduced |' in md and 'ci_low' not in md
    csv = pd.read_csv(paths['csv'])
    assert csv['better'].tolist() == ['A, Test'] * 3 and math.isclose(csv['ci_high'][0], 0.019333 + 0.012749, abs_tol=1e-5)


def test_ledger_takes_the_largest_committed_profile_and_lists_chapters_without_claims(tmp_path):
    def commit(chapter, profile, claim):
        (tmp_path/'figures'/chapter/profile).mkdir(parents=True, exist_ok=True)
        v = {'better': 'A', 'worse': 'B', 'metric': 'kappa', 'profile': profile, 'n': 3, 'mean_delta': 0.041,
             'ci_low': 0.012, 'ci_high': 0.07, 'verdict': 'reproduced', 'claim': claim}
        claims_table([v]).to_csv(tmp_path/'figures'/chapter/profile/'claims.csv', index=False)
    commit('comcl', 'reduced', 'CoMCL beats lesion-based CL (reduced)')
    commit('comcl', 'full', 'CoMCL beats lesion-based CL (full)')
    commit('simclr_micle', 'reduced', 'MICLe beats SimCLR')
    (tmp_path/'figures'/'contrastive_autoencoder').mkdir()                  # flat, old layout: not read
    (tmp_path/'figures'/'contrastive_autoencoder'/'claims.csv').write_text('claim\n')
    ledger = claims_ledger(tmp_path, {'contrastive_autoencoder': ('Ferrante et al., Table 1', 'data'),
                                      'comcl': 'Hou et al.', 'simclr_micle': 'Azizi et al.'})
    lines = ledger.splitlines()
    assert lines[0] == '| chapter | paper | claim | metric | profile | seeds | Δ [95 % CI] | verdict | table |'
    assert lines[2] == '| contrastive_autoencoder | Ferrante et al., Table 1 | no claims committed yet |  |  | 0 |  | not run |  |'
    assert lines[3] == ('| comcl | Hou et al. | CoMCL beats lesion-based CL (full) | kappa | full | 3 | +0.041 [+0.012, +0.070] '
                        '| reproduced | [claims](figures/comcl/full/claims.md) |')
    assert lines[4].startswith('| simclr_micle | Azizi et al. | MICLe beats SimCLR | kappa | reduced |')
    assert '(reduced)' not in ledger and len(lines) == 5


def _kappa_runs(scores):
    return [{'chapter': 'toy', 'profile': 'reduced', 'seed': s, 'part': None,
             'rows': {row: {'kappa': v[s], 'accuracy': v[s]} for row, v in scores.items()}} for s in range(3)]


@pytest.mark.parametrize('floor_row,floored', [([0.01, 0.00, 0.02], True), ([0.06, 0.04, 0.08], False),
                                                ([-0.02, 0.01, 0.00], True)])
def test_a_drop_claim_on_a_row_near_the_majority_class_is_not_judged(floor_row, floored):
    from medcl_nb.report import require_above_majority, SCALE_VERDICT
    runs = _kappa_runs({'X': [0.40, 0.43, 0.45], 'Y': floor_row, 'M': [0.0] * 3,
                        'drop X': [0.20, 0.19, 0.19], 'drop Y': [0.05, 0.04, 0.06]})
    claim = {**claim_verdict(runs, 'drop Y', 'drop X', 'kappa', higher_is_better=False), 'claim': 'Y loses less'}
    assert claim['verdict'] == 'reproduced'                   # the interval alone would decide it
    gated = require_above_majority(claim, runs, ['X', 'Y'], 'M', 'kappa')
    assert (gated['verdict'] == SCALE_VERDICT) == floored
    if floored: assert gated['judged on'].startswith('Y not clearly above M (Δ kappa') and 'X' not in gated['judged on'][:2]


def test_a_collapsed_row_fails_the_floor_rule_even_above_the_majority():
    from medcl_nb.report import require_above_majority, SCALE_VERDICT
    runs = _kappa_runs({'X': [0.40, 0.43, 0.45], 'M': [0.0] * 3})
    runs[1]['rows']['X'].update(collapsed=1.0, top_share=0.97)
    claim = {**claim_verdict(runs, 'X', 'M', 'kappa'), 'claim': 'X beats M'}
    gated = require_above_majority(claim, runs, ['X'], 'M', 'accuracy')
    assert gated['verdict'] == SCALE_VERDICT and gated['judged on'] == 'X collapsed in seed 1 (one class for 97% of the images)'
