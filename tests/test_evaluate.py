"""Baselines and the standardised linear probe: the scaler sees the training rows only, trivial baselines score what
they must (AUC 0.5, the majority share), and the probes run for every task kind on images or features."""
import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.metrics import precision_recall_fscore_support
from sklearn.preprocessing import StandardScaler

from medcl_nb.evaluate import (classification_metrics, linear_probe, majority_class_scores, probe_baselines,
                               standardize_features)


def test_standardize_matches_sklearn_and_uses_training_rows_only():
    rng = np.random.default_rng(0)
    train, test = rng.normal(3, [1, 5, 1e-3], size=(80, 3)).astype(np.float32), rng.normal(size=(20, 3)).astype(np.float32)
    tr, te, mean, scale = standardize_features(torch.tensor(train), torch.tensor(test))
    sk = StandardScaler().fit(train)
    np.testing.assert_allclose(te.numpy(), sk.transform(test), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(mean.numpy(), train.mean(0), rtol=1e-6)
    _, te_shifted, _, _ = standardize_features(torch.tensor(train), torch.tensor(test) + 100)
    np.testing.assert_allclose((te_shifted - te).numpy(), np.broadcast_to(100 / scale.numpy(), te.shape), rtol=1e-3)


def test_probe_scaler_comes_from_the_training_embeddings():
    x, y = make_blobs(n_samples=120, centers=2, n_features=4, random_state=1)
    res = linear_probe(x[:80], y[:80], {'test': x[80:] * 1000}, n_classes=2, epochs=5, device='cpu')
    np.testing.assert_allclose(res.mean.numpy(), x[:80].mean(0), rtol=1e-4)


@pytest.mark.parametrize('spread', [1e-3, 1e-2])
def test_standardised_probe_learns_where_the_raw_one_cannot(spread):
    x, y = make_blobs(n_samples=300, centers=3, n_features=8, cluster_std=1.0, random_state=0)
    x = (10 + spread * x).astype(np.float32)
    kw = dict(n_classes=3, epochs=100, batch_size=64, device='cpu')
    raw = linear_probe(x[:200], y[:200], x[200:], standardize=False, **kw)
    std = linear_probe(x[:200], y[:200], x[200:], **kw)
    assert classification_metrics(y[200:], raw.preds)['accuracy'] < 0.7
    assert classification_metrics(y[200:], std.preds)['accuracy'] == 1.0


@pytest.mark.parametrize('task,labels', [('binary', [0, 1, 1, 1, 1, 0, 1, 1]), ('multi-class', [0, 1, 2, 2, 2, 1, 2, 0])])
def test_majority_class_has_auc_half_and_the_majority_share(task, labels):
    y_train = np.array(labels * 10)
    y_test = np.array(labels[::-1])
    n_classes = int(y_train.max()) + 1
    m = classification_metrics(y_test, y_score=majority_class_scores(y_train, len(y_test), n_classes), task=task)
    majority = np.bincount(y_train).argmax()
    assert m['auc'] == 0.5 and m['accuracy'] == pytest.approx((y_test == majority).mean())


def test_majority_class_multi_label_scores_each_label_by_its_frequency():
    Y = np.array([[1, 0], [1, 1], [1, 0], [0, 0]])
    s = majority_class_scores(Y, 3, n_classes=2)
    np.testing.assert_allclose(s, [[0.75, 0.25]] * 3)
    assert classification_metrics(Y, y_score=majority_class_scores(Y, 4, 2), task='multi-label')['auc'] == 0.5


@pytest.mark.parametrize('task', ['binary', 'multi-class', 'multi-label'])
def test_probe_baselines_on_images_for_every_task(task):
    g = torch.Generator().manual_seed(0)
    n, classes = 90, 3
    y = torch.randint(0, classes, (n,), generator=g)
    images = torch.rand(n, 1, 9, 9, generator=g) * 60
    for c in range(classes): images[y == c, :, 3 * c:3 * c + 3] += 150                    # class c lights up band c
    images = images.byte()
    if task == 'binary': y, classes = (y > 0).long(), 2
    if task == 'multi-label': y = torch.stack([y > 0, y > 1], 1).long()
    out = probe_baselines(images[:60], y[:60], {'val': (images[60:75], y[60:75]), 'test': (images[75:], y[75:])},
                          classes, task, k=3, device='cpu', epochs=200)
    assert set(out) == {'knn', 'linear'} and all(set(v) == {'val', 'test'} for v in out.values())
    for probe in out.values():
        m = probe['test']
        assert {'accuracy', 'f1_macro', 'auc'} <= set(m) and m['accuracy'] > 0.8
        if task != 'multi-label': assert 'kappa_qw' in m


@pytest.mark.parametrize('seed', range(5))
def test_macro_averages_match_sklearn_over_the_classes_present(seed):
    "A class in neither y_true nor y_pred (here: 3 and 4 of five score columns) does not count, as in scikit-learn."
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, 3, 12), rng.integers(0, 3, 12)
    with pytest.warns(UserWarning):                                         # AUC undefined: classes 3, 4 unseen
        m = classification_metrics(y, p, y_score=np.full((12, 5), 0.2))
    pr, rc, f1, _ = precision_recall_fscore_support(y, p, average='macro', zero_division=0)
    assert (m['precision_macro'], m['recall_macro'], m['f1_macro']) == pytest.approx((pr, rc, f1))
    assert classification_metrics([0, 0], [0, 0])['f1_macro'] == 1.0     # was 0.5: class 1 counted as F1 = 0


@pytest.mark.parametrize('n_classes', [3, 5, 10])
def test_roc_auc_accepts_bf16_softmax_rows_and_still_names_logits(n_classes):
    "bf16 softmax rows sum to 1 only within ~3e-3; they are probabilities, not logits (they were refused as logits)."
    from sklearn.metrics import roc_auc_score
    from medcl_nb.evaluate import roc_auc
    g = torch.Generator().manual_seed(n_classes)
    logits, y = 3 * torch.randn(300, n_classes, generator=g), torch.randint(0, n_classes, (300,), generator=g)
    p = torch.softmax(logits.bfloat16(), 1)
    assert (p.float().sum(1) - 1).abs().max() > 1e-3
    renorm = (p.float() / p.float().sum(1, keepdim=True)).numpy()
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y.numpy(), renorm, multi_class='ovr'))
    assert classification_metrics(y, y_score=p)['auc'] == pytest.approx(roc_auc(y, p))
    with pytest.raises(ValueError, match='logits'): roc_auc(y, logits)
    with pytest.raises(ValueError, match='sums to'): roc_auc(y, p.float() * 1.05)
