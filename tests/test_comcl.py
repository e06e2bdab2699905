"""CoMCL pieces from the package: degradations, the surrogate detector, hard-negative mining and self-paced selection."""
import math

import pytest
import torch

from medcl_nb.comcl import (hard_negative_count, level_infonce, make_low_quality, self_paced_mask, detect_lesions,
                            crop_patches, multilevel_loss, LEVEL_PAIRS)


@pytest.mark.parametrize('kind,channels', [('fundus', 3), ('xray', 1)])
@pytest.mark.parametrize('share', [0.0, 0.334, 0.7, 1.0])
def test_degradation_share_and_determinism(kind, channels, share):
    x = (torch.rand(40, channels, 28, 28, generator=torch.Generator().manual_seed(0)) * 255).byte()
    out, low = make_low_quality(x, share, kind, seed=5)
    assert int(low.sum()) == round(share * 40)
    assert torch.equal(out[low == 0], x[low == 0])
    assert torch.equal(out, make_low_quality(x, share, kind, seed=5)[0])
    if share: assert (out[low == 1].float() - x[low == 1].float()).abs().mean() > 3


def test_hard_negative_schedule_decreases_from_delta_to_one():
    ks = [hard_negative_count(t, 200, 64) for t in range(201)]
    assert ks[0] == 64 and ks[-1] == 1 and all(a >= b for a, b in zip(ks, ks[1:]))


def test_mining_keeps_the_most_similar_negatives():
    torch.manual_seed(0)
    a, p, n = torch.randn(5, 8), torch.randn(5, 8), torch.randn(12, 8)
    full = level_infonce(a, p, n, 0.1)
    hard3 = level_infonce(a, p, n, 0.1, k_hard=3)
    assert (hard3 <= full + 1e-6).all()
    # by hand for anchor 0: its three most similar negatives
    an, pn, nn_ = (torch.nn.functional.normalize(t, dim=1) for t in (a, p, n))
    sims = an[0] @ nn_.T / 0.1
    top = sims.topk(3).values
    pos = (an[0] * pn[0]).sum() / 0.1
    assert math.isclose(hard3[0].item(), (torch.logsumexp(torch.cat([pos[None], top]), 0) - pos).item(), rel_tol=1e-5)


def test_self_paced_share_grows_as_hard_negatives_shrink():
    losses = torch.arange(10.)
    shares = [int(self_paced_mask(losses, k, 10).sum()) for k in (10, 5, 2, 1)]
    assert shares == sorted(shares) and shares[0] == 5 and shares[-1] == 9
    assert self_paced_mask(losses, 10, 10)[:5].all()         # the easiest first


def test_multilevel_loss_runs_every_variant():
    torch.manual_seed(0)
    embed = torch.nn.Linear(12, 4)
    views = {lvl: (torch.randn(6, 12), torch.randn(6, 12)) for lvl in ('L', 'Lq', 'H', 'Hq', 'Lall', 'Hall')}
    for name, pairs in LEVEL_PAIRS.items():
        loss, parts = multilevel_loss(embed, views, pairs, step=3, total_steps=10)
        assert torch.isfinite(loss) and len(parts) == len(pairs)
        loss.backward()


def test_patches_follow_the_detection():
    x = torch.zeros(1, 1, 28, 28, dtype=torch.uint8); x[0, 0, :, :] = 100; x[0, 0, 18:21, 6:9] = 255
    centre = detect_lesions(x, k=1)[0][:, 0]
    assert (centre[0] - torch.tensor([7., 19.])).abs().max() <= 1
    patch = crop_patches(x, centre)
    assert patch.float().max() > 200                          # the blob is inside its patch


@pytest.mark.parametrize('seed', range(5))
def test_similarities_are_float32_under_bf16_autocast(seed):
    # the failing case: inside bf16 autocast the negatives' matmul ran in bf16 and swapped nearly tied anchors in and
    # out of the self-paced selection (4 of these 5 batches)
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(512, 64, generator=g); p = a + 0.5 * torch.randn(512, 64, generator=g); n = torch.randn(512, 64, generator=g)
    exact = level_infonce(a, p, n, 0.07, k_hard=256)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        under_autocast = level_infonce(a, p, n, 0.07, k_hard=256)
    assert under_autocast.dtype == torch.float32
    assert torch.allclose(under_autocast, exact, atol=1e-6)
    assert torch.equal(self_paced_mask(under_autocast, 256, 512), self_paced_mask(exact, 256, 512))
