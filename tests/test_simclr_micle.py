"""SimCLR/MICLe pieces from the package (medcl_nb.simclr, and the chapter's medcl_nb.simclr_micle): MICLe's bag sampling, the natural-photo surrogate, augmentation switches."""
import pytest
import torch

from medcl_nb.simclr import (BagSampler, bags_from_ids, contrastive_batches, pair_statistics, pretrain_simclr,
                             pretraining_augment, SimCLRNet)
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


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_micle_pairs_are_never_two_frames_of_one_clip(seed):
    g = torch.Generator().manual_seed(seed)
    clips_per_bag = torch.randint(1, 4, (30,), generator=g)                 # 30 patient-days of 1-3 clips
    bag_of_clip = torch.repeat_interleave(torch.arange(30), clips_per_bag)
    frames = torch.randint(1, 5, (len(bag_of_clip),), generator=g)           # 1-4 frames per clip
    clip = torch.repeat_interleave(torch.arange(len(bag_of_clip)), frames)
    sampler = BagSampler(bag_of_clip[clip], clip_of_image=clip)
    chosen = torch.randint(0, 30, (1000,), generator=g)
    a, b = sampler.pairs(chosen, g)
    assert torch.equal(bag_of_clip[clip[a]], chosen) and torch.equal(bag_of_clip[clip[b]], chosen)
    one_clip = clips_per_bag[chosen] == 1
    assert (clip[a][~one_clip] != clip[b][~one_clip]).all()              # several clips: always two of them
    assert torch.equal(a[one_clip], b[one_clip])                         # one clip: one frame twice, never two frames
    assert pair_statistics(sampler, torch.zeros(len(clip), 1, 2, 2, dtype=torch.uint8))['two frames of one clip'] == 0


def test_simclr_on_bags_sees_the_same_batches_as_micle():
    sampler = BagSampler(torch.arange(24) // 3, clip_of_image=torch.arange(24))
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    chosen = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    m1, m2 = sampler.pairs(chosen, g1)
    s1, s2 = sampler.pairs(chosen, g2, same=True)
    assert torch.equal(m1, s1) and torch.equal(s1, s2) and (m1 != m2).all()


def test_a_batch_larger_than_the_bags_is_refused():
    images = torch.randint(0, 255, (40, 1, 28, 28), dtype=torch.uint8)
    with pytest.raises(ValueError, match='exceeds the 10 bags'):
        pretrain_simclr(SimCLRNet('resnet18_w8'), images, pretraining_augment(), 1, batch_size=16,
                        bags=BagSampler(torch.arange(40) // 4))


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
    assert pretraining_augment('colour').config.blur_p > 0          # the review's recipe: crop, colour, blur, flip
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


@pytest.mark.parametrize('seed', [0, 1])
def test_the_chapters_micle_pairs_are_two_zones_of_one_patient_day(seed):
    from medcl_nb.simclr_micle import lus_bags, lus_micle_cohort
    c = lus_micle_cohort(seed)
    bag, clip = lus_bags(c, frames=3)
    sampler = BagSampler(bag, clip_of_image=clip)
    a, b = sampler.pairs(torch.arange(sampler.n_bags).repeat(3), torch.Generator().manual_seed(seed))
    assert (clip[a] != clip[b]).all()                                     # never two frames of one clip
    assert torch.equal(c.patient[clip[a]], c.patient[clip[b]]) and torch.equal(c.day[clip[a]], c.day[clip[b]])
    assert (c.zone[clip[a]] != c.zone[clip[b]]).all()
    stats = pair_statistics(sampler, torch.zeros(len(bag), 1, 2, 2, dtype=torch.uint8))
    assert stats['two frames of one clip'] == 0 and stats['two clips'] == 1


@pytest.mark.parametrize('fraction', [0.05, 0.1, 0.5])
def test_validation_subset_is_in_proportion_to_the_label_fraction(fraction):
    from medcl_nb.simclr_micle import labelled_subsets
    y_train, y_val = torch.arange(2000) % 4, torch.arange(400) % 4
    tr, va = labelled_subsets(y_train, y_val, fraction, seed=0)
    assert abs(len(tr) - fraction * 2000) <= 4 and abs(len(va) - fraction * 400) <= 4
    assert len(va) / len(y_val) <= fraction + 0.01
    assert [len(i) for i in labelled_subsets(y_train, y_val, 1.0)] == [2000, 400]


def test_supervised_natural_learns_from_the_same_photos_as_simclr():
    from medcl_nb import simclr_micle
    assert not hasattr(simclr_micle, 'imagenet_state')                   # no ImageNet on one side only
    photos = natural_photos(side=64)
    source = simclr_micle.pretrain_supervised_natural(SimCLRNet('resnet18_w8'), photos, pretraining_augment(), 1, 16, batch_size=8)
    assert source == simclr_micle.NATURAL_SOURCE


def test_fine_tuning_the_8_wide_resnet_on_an_odd_batch_runs_on_the_cpu():
    # channels-last weights made oneDNN's backward crash the process here (batch 5, 7 or 47; torch 2.14.1), so the
    # CPU keeps the default memory order unless MEDCL_CHANNELS_LAST=1 (04_train.use_channels_last)
    from medcl_nb.simclr import fine_tune, fine_tuning_augment
    from medcl_nb.train import use_channels_last
    if use_channels_last('cpu'): pytest.skip('MEDCL_CHANNELS_LAST=1 forces channels-last on the CPU')
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 256, (12, 1, 28, 28), dtype=torch.uint8, generator=g), torch.arange(12) % 2
    res = fine_tune(SimCLRNet('resnet18_w8').encoder, {'train': (x[:5], y[:5]), 'val': (x[5:9], y[5:9]), 'test': (x[9:], y[9:])},
                    2, 'binary-class', augment=fine_tuning_augment(), batch_size=5, max_steps=3, eval_every=3)
    assert res['steps'] == 3
