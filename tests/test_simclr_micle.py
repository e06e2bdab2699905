"""SimCLR/MICLe pieces from the package (medcl_nb.simclr, and the chapter's medcl_nb.simclr_micle): MICLe's bag sampling, the natural-photo surrogate, augmentation switches."""
import pytest
import torch

from medcl_nb.simclr import BagSampler, bags_from_ids, contrastive_batches, pretraining_augment, SimCLRNet
from medcl_nb.simclr_micle import natural_crops, natural_photos, NATURAL_PHOTOS


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_micle_pairs_stay_in_their_bag_and_differ_when_they_can(seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 20, (200,), generator=g)                # 20 patients, uneven numbers of images
    bags = bags_from_ids(ids.tolist())
    sampler = BagSampler(bags)
    chosen = torch.randint(0, sampler.n_bags, (500,), generator=g)
    a, b = sampler.pairs(chosen, g)
    assert torch.equal(bags[a], chosen) and torch.equal(bags[b], chosen)
    several = sampler.sizes[chosen] > 1
    assert (a[several] != b[several]).all() and torch.equal(a[~several], b[~several])


def test_bags_must_not_be_empty():
    with pytest.raises(ValueError, match='no empty bag'):
        BagSampler(torch.tensor([0, 0, 2]))


def test_natural_crops_are_seeded_and_come_from_the_photos():
    photos = natural_photos(side=64)
    assert len(photos) == len(NATURAL_PHOTOS)
    x1, s1 = natural_crops(photos, 32, seed=3)
    x2, s2 = natural_crops(photos, 32, seed=3)
    assert torch.equal(x1, x2) and torch.equal(s1, s2) and int(s1.max()) < len(photos)
    assert not torch.equal(x1, natural_crops(photos, 32, seed=4)[0])


def test_chest_pipeline_switches():
    assert pretraining_augment('chest').config.blur_p == 0 and pretraining_augment('chest').config.hflip_p > 0
    assert pretraining_augment('colour', flips=False).config.hflip_p == 0


def test_simclr_net_accepts_grey_and_colour_uint8():
    net = SimCLRNet('resnet18')
    for c in (1, 3):
        assert net(torch.randint(0, 255, (2, c, 28, 28), dtype=torch.uint8)).shape == (2, 128)


@pytest.mark.parametrize('n,batch', [(257, 256), (513, 256), (9, 4), (2, 256), (255, 256)])
@pytest.mark.parametrize('drop_last', [False, True])
def test_contrastive_batches_never_hold_a_lone_pair(n, batch, drop_last):
    # the failing case: 257 images at batch 256 left a last batch of one pair (NT-Xent 0, gradient 0)
    batches = contrastive_batches(n, batch, drop_last=drop_last, generator=torch.Generator().manual_seed(0))
    assert all(len(b) >= 2 for b in batches)
    every = torch.cat(batches) if batches else torch.zeros(0, dtype=torch.long)   # drop_last below one batch: none
    assert len(every.unique()) == len(every)
    if not drop_last: assert sorted(every.tolist()) == list(range(n))      # merged, not dropped: every image is used


def test_pretraining_refuses_a_source_without_negatives():
    with pytest.raises(ValueError, match='at least 2'):
        contrastive_batches(1, 256)
