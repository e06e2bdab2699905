"""The LEARNER chapter's surrogates and losses, used from the package: properties over several seeds."""
import pytest
import torch

from medcl_nb.simulators import (PAPER_SPLIT_PAIRS, make_cohort, render_brain, render_lus, identity_vs_severity,
                                 severity_regression_probe,
                                 change_label, SF_RANGE_EDGES)
from medcl_nb.learner import (score_contrastive_loss, score_neighbour_masks, temporal_shift, pair_similarity,
                              _per_anchor_mean_one, pretraining_loss, split_training_patients, score_r2)


@pytest.mark.parametrize('kind', ['lus', 'brain'])
@pytest.mark.parametrize('seed', [0, 1, 2, 3])
def test_cohort_has_the_papers_splits_and_is_patient_disjoint(kind, seed):
    c = make_cohort(kind, seed=seed)
    assert {s: int(c.pair_mask(s).sum()) for s in PAPER_SPLIT_PAIRS} == PAPER_SPLIT_PAIRS
    patients = {s: set(c.patient[c.scan_mask(s)].tolist()) for s in PAPER_SPLIT_PAIRS}
    assert not (patients['train'] & patients['val'] or patients['train'] & patients['test'] or patients['val'] & patients['test'])
    # every pair is one patient, one zone, earlier -> later, and labelled from its two scores
    a, b = c.pairs[:, 0], c.pairs[:, 1]
    assert (c.patient[a] == c.patient[b]).all() and (c.zone[a] == c.zone[b]).all() and (c.day[a] < c.day[b]).all()
    assert torch.equal(c.pair_label, change_label(c.score[a], c.score[b], c.edges))
    assert set(c.pair_label.tolist()) == {0, 1, 2}


def test_lus_cohort_matches_the_papers_scale():
    c = make_cohort('lus', seed=5)
    assert (c.n_patients, c.n_scans, len(c.pairs)) == (189, 718, 761)
    assert c.edges == SF_RANGE_EDGES


@pytest.mark.parametrize('kind', ['lus', 'brain'])
def test_surrogates_keep_the_patient_identity_property(kind):
    c = make_cohort(kind, seed=1)
    clips = (render_lus if kind == 'lus' else render_brain)(c, None, 4, 32)
    r = identity_vs_severity(c, clips)
    assert r['identity'] > 0.8 and r['identity'] > 50 * r['identity_chance']
    assert r['severity'] < 2.5 * r['severity_chance']


def test_rendering_is_the_same_in_batches_and_alone():
    c = make_cohort('lus', seed=0)
    assert torch.equal(render_lus(c, torch.tensor([5, 9]), 4, 16), render_lus(c, None, 4, 16)[[5, 9]])


def test_contrastive_loss_is_finite_and_differentiable_for_any_embeddings():
    torch.manual_seed(0)
    u = torch.randn(8, 16, requires_grad=True)
    scores = torch.rand(8)
    for weighted in (False, True):
        for sim in ('cosine', 'l2'):
            loss = score_contrastive_loss(torch.cat([u[:4], -u[:4]]), scores, weighted=weighted, similarity=sim)
            loss.backward()
            assert torch.isfinite(loss) and torch.isfinite(u.grad).all()
            u.grad = None
    pos, neg = score_neighbour_masks(scores)
    assert (pos.sum(1) == 4).all() and (neg.sum(1) == 3).all()


def test_temporal_shift_keeps_clips_apart():
    x = torch.arange(2 * 3 * 8, dtype=torch.float32).view(6, 8, 1, 1)   # 2 clips of 3 frames
    y = temporal_shift(x, frames=3)
    assert y[2, 0] == 0 and y[3, 1] == 0          # nothing leaks from clip 0 into clip 1 or back


@pytest.mark.parametrize('kind', ['lus', 'brain'])
@pytest.mark.parametrize('seed', [1, 2])
def test_within_patient_change_is_detectable_but_not_trivial_from_raw_pixels(kind, seed):
    # the per-patient offset and gain of the shown severity (issue 18, point 3): a scan's score is harder to read
    # across patients than without them, while a pair's change stays visible in the pixel difference, well below R² 1
    render = render_lus if kind == 'lus' else render_brain
    on = make_cohort(kind, seed=seed)
    off = make_cohort(kind, seed=seed, severity_offset=0, severity_gain=(1, 1))
    r_on, r_off = severity_regression_probe(on, render(on, None, 4, 32)), severity_regression_probe(off, render(off, None, 4, 32))
    assert r_on['absolute_r2'] < r_off['absolute_r2'] - 0.05
    assert 0.2 < r_on['change_r2'] < 0.75


@pytest.mark.parametrize('seed', [1, 2])
def test_brain_change_needs_32_px(seed):
    c = make_cohort('brain', seed=seed)
    r16, r32 = (severity_regression_probe(c, render_brain(c, None, 4, size)) for size in (16, 32))
    assert r16['change_r2'] < r32['change_r2'] - 0.1


@pytest.mark.parametrize('batch', [4, 8, 16])
@pytest.mark.parametrize('similarity', ['cosine', 'l2'])
def test_normalised_wcl_is_cl_when_every_score_is_equal(batch, similarity):
    # issue 18, point 2: with equal score distances the normalised weights are all 1, so wCL and CL agree
    u = torch.randn(batch, 8, generator=torch.Generator().manual_seed(batch)).requires_grad_()
    scores = torch.full((batch,), 0.3)
    grads = []
    for weighted in (False, True):
        loss = score_contrastive_loss(u, scores, weighted=weighted, similarity=similarity)
        grads.append((loss.detach(), torch.autograd.grad(loss, u)[0]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


@pytest.mark.parametrize('seed', [0, 1, 2, 3])
def test_normalised_wcl_pulls_on_the_scale_of_cl_and_the_printed_one_does_not(seed):
    g = torch.Generator().manual_seed(seed)
    u, scores = torch.randn(8, 16, generator=g), torch.rand(8, generator=g)
    def grad_norm(**kw):
        x = u.clone().requires_grad_()
        return torch.autograd.grad(score_contrastive_loss(x, scores, **kw), x)[0].norm().item()
    cl, wcl, printed = grad_norm(), grad_norm(weighted=True), grad_norm(weighted=True, normalise=False)
    assert 1 / 3 < wcl / cl < 3
    assert printed / cl > 2


def test_normalised_weights_average_one_over_each_anchors_positives():
    scores = torch.rand(8, generator=torch.Generator().manual_seed(0))
    pos, _ = score_neighbour_masks(scores)
    w = _per_anchor_mean_one(1 / ((scores[:, None] - scores[None]).abs() + 0.05), pos)
    torch.testing.assert_close((w * pos).sum(1) / pos.sum(1), torch.ones(8))


@pytest.mark.parametrize('kind', ['cosine', 'l2'])
def test_pair_similarity_is_float32_inside_bf16_autocast(kind):
    # issue 13: the similarity matmul must not run in bf16, which would move the similarities the loss compares
    u = torch.randn(16, 32, generator=torch.Generator().manual_seed(0))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        inside, from_bf16 = pair_similarity(u, kind), pair_similarity(u.bfloat16(), kind)
    assert inside.dtype == torch.float32 and torch.equal(inside, pair_similarity(u, kind))
    assert from_bf16.dtype == torch.float32


def test_change_metrics_macro_f1_counts_only_the_labels_present():
    "As scikit-learn: a change label in neither the truth nor the prediction does not count (it was F1 = 0)."
    from sklearn.metrics import f1_score
    from medcl_nb.learner import change_metrics
    for yt, yp in [([1, 1, 0], [1, 1, 0]), ([1, 1, 1, 2], [1, 1, 1, 1]), ([0, 1, 2, 1], [0, 1, 1, 1])]:
        assert change_metrics(yt, yp)['f1'] == pytest.approx(f1_score(yt, yp, average='macro', zero_division=0))
    assert change_metrics(torch.tensor([1, 1, 0]), torch.tensor([1, 1, 0]))['f1'] == 1.0


def _eq1_plus_eq3_loop(u, pred, y, weighted, eps=0.05, delta=0.1):
    "LEARNER's Eq. 1 + Eq. 3 (printed weights for wCL) transcribed with plain loops, as Algorithm 1 picks the halves."
    import math
    b = len(y)
    total = sum((float(y[i]) - float(pred[i])) ** 2 for i in range(b))
    for i in range(b):
        others = sorted((j for j in range(b) if j != i), key=lambda j: abs(float(y[i] - y[j])))
        for k, j in enumerate(others):
            s = (1 + float(torch.nn.functional.cosine_similarity(u[i], u[j], dim=0))) / 2
            log_s, d = math.log(s + delta), abs(float(y[i] - y[j])) + eps
            if k < b // 2: total -= log_s / d if weighted else log_s
            else: total += (log_s + math.log(d)) if weighted else log_s
    return total


@pytest.mark.parametrize('batch', [4, 8, 16])
@pytest.mark.parametrize('loss', ['mse', 'mse_cl', 'mse_wcl'])
def test_pretraining_loss_is_the_papers_literal_sums(batch, loss):
    # issue 30, point 2: Eq. 1 and Eq. 3 are sums, so the contrastive term weighs B - 1 times what two means give it
    g = torch.Generator().manual_seed(batch)
    u, pred, y = torch.randn(batch, 6, generator=g), torch.rand(batch, generator=g), torch.rand(batch, generator=g)
    got, parts = pretraining_loss(lambda clips: (u, pred), None, y, loss, normalise=False)
    want = _eq1_plus_eq3_loop(u, pred, y, weighted=(loss == 'mse_wcl')) if loss != 'mse' else float(((pred - y) ** 2).sum())
    assert float(got) == pytest.approx(want, rel=1e-5, abs=1e-5)
    if loss == 'mse_cl':
        mean_cl = float(score_contrastive_loss(u, y))
        assert parts['cl'] == pytest.approx(batch * (batch - 1) * mean_cl, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize('kind', ['lus', 'brain'])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_the_change_classifier_never_sees_the_encoders_patients(kind, seed):
    # issue 30, point 4: the classifier's training pairs come from training patients held out of pretraining
    c = make_cohort(kind, seed=seed)
    h = split_training_patients(c, 0.5, seed=seed)
    pre, cls = (set(c.patient[h['scans'][k]].tolist()) for k in ('pretrain', 'classifier'))
    assert pre and cls and not pre & cls
    assert torch.equal(h['pairs']['pretrain'] | h['pairs']['classifier'], c.pair_mask('train'))
    a, b = c.pairs[h['pairs']['classifier'], 0], c.pairs[h['pairs']['classifier'], 1]
    assert not (h['scans']['pretrain'][a] | h['scans']['pretrain'][b]).any()
    assert 0.4 < h['pairs']['classifier'].sum() / c.pair_mask('train').sum() < 0.6


def test_score_r2_matches_scikit_learn():
    from sklearn.metrics import r2_score
    g = torch.Generator().manual_seed(0)
    y, p = torch.rand(50, generator=g), torch.rand(50, generator=g)
    assert score_r2(p, y) == pytest.approx(r2_score(y.numpy(), p.numpy()), rel=1e-5)
