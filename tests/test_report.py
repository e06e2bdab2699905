"""The comparison table against a small example checked by hand, in every format it is written to."""
import pandas as pd

from medcl_nb.report import PaperRegistry, comparison_table, load_results, save_seed_result, write_table

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
