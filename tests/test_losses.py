"""NT-Xent's faults found with inputs from public bug reports: a batch with no negatives is an error, never a silent 0."""
import math

import pytest
import torch

from medcl_nb.losses import multi_positive_nt_xent, nt_xent_loss, positive_mask_from_groups


def test_one_pair_is_an_error_not_a_zero_loss():
    # the failing case: one pair gave loss 0 and gradient 0 without a word
    z1, z2 = torch.randn(1, 8, requires_grad=True), torch.randn(1, 8, requires_grad=True)
    with pytest.raises(ValueError, match='at least 2 pairs'):
        nt_xent_loss(z1, z2)


@pytest.mark.parametrize('n', [2, 3, 257])
@pytest.mark.parametrize('temperature', [0.07, 0.5])
def test_collapse_value_from_two_pairs_up(n, temperature):
    same = torch.randn(1, 16).expand(n, 16)
    assert math.isclose(nt_xent_loss(same, same, temperature).item(), math.log(2 * n - 1), rel_tol=1e-5)


def test_last_batch_of_a_257_image_split_would_be_one_pair():
    n, batch = 257, 256
    sizes = [min(batch, n - s) for s in range(0, n, batch)]
    assert sizes == [256, 1]
    z = torch.randn(n, 8)
    assert torch.isfinite(nt_xent_loss(z[:256], z[:256] + 0.1))
    with pytest.raises(ValueError, match='merge a last batch'):
        nt_xent_loss(z[256:], z[256:] + 0.1)


@pytest.mark.parametrize('ids', [[0, 0], [3, 3, 3, 3]])
def test_multi_positive_anchor_without_negative_is_an_error(ids):
    with pytest.raises(ValueError, match='no negative'):
        multi_positive_nt_xent(torch.randn(len(ids), 4), positive_mask_from_groups(torch.tensor(ids)))


def test_multi_positive_with_two_groups_is_fine():
    loss = multi_positive_nt_xent(torch.randn(4, 4), positive_mask_from_groups(torch.tensor([0, 0, 1, 1])))
    assert torch.isfinite(loss) and loss > 0
