"""The plan is a measurement: for the smoke profile, `medcl reproduce --plan`'s estimate of a chapter is within 3x of
the time the smoke run then really takes. Timed tests do not belong in CI (a shared machine makes any bound flaky),
so this one runs only when asked for, on a quiet machine: `MEDCL_TIMING=1 pytest tests/test_plan_timing.py`."""
import os, time

import pytest

from medcl_nb.cli import find_chapters, plan_chapter, reproduce

pytestmark = pytest.mark.skipif(not os.environ.get('MEDCL_TIMING'),
                                reason='timed test: set MEDCL_TIMING=1 on a quiet machine (never in CI)')


@pytest.mark.parametrize('chapter', ['contrastive_autoencoder', 'simclr_micle', 'comcl', 'learner'])
def test_smoke_plan_is_within_3x_of_the_smoke_run(chapter):
    notebook = find_chapters()[chapter]
    plan = plan_chapter(chapter, notebook, 'smoke', [0], 'cpu')
    start = time.perf_counter()
    assert reproduce([chapter], 'smoke', [0], 'cpu') == 0
    actual = time.perf_counter() - start
    ratio = plan['est_chapter_s'] / actual
    print(f"{chapter}: plan {plan['est_chapter_s']:.0f} s, smoke run {actual:.0f} s, ratio {ratio:.2f}")
    assert 1 / 3 <= ratio <= 3, (plan['est_chapter_s'], actual)
