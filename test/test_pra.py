"""PRA/PRN keep probabilities and the per-image, per-class pixel sampler."""
import math

import pytest
import torch

from human_parsing_ros.class_sets import IGNORE_INDEX
from training.sampling import PixelSampler, keep_probabilities, kept_pixel_counts

SCORES = torch.tensor([0.2, 0.4, 0.5, 0.8])


@pytest.mark.parametrize("eta,expected", [
    ("min", [1.0, 0.5, 0.4, 0.25]),
    ("mean", [1.0, 1.0, 0.95, 0.59375]),          # eta = 1.9 / 4 = 0.475
    ("median", [1.0, 1.0, 0.9, 0.5625]),          # eta = (0.4 + 0.5) / 2 = 0.45
    ("q25", [1.0, 0.875, 0.7, 0.4375]),           # eta = 0.2 + 0.75 * (0.4 - 0.2) = 0.35
    ("q100", [1.0, 1.0, 1.0, 1.0]),               # eta = max score
    (0.1, [0.5, 0.25, 0.2, 0.125]),
])
def test_eta_modes(eta, expected):
    prob = keep_probabilities(SCORES, eta=eta)
    assert prob.dtype == torch.float32 and prob.shape == (4,)
    torch.testing.assert_close(prob, torch.tensor(expected))


def test_invalid_scores_are_always_kept_and_excluded_from_eta():
    scores = torch.tensor([math.nan, 0.0, -1.0, 0.3, 0.6])
    prob = keep_probabilities(scores, eta="min")
    torch.testing.assert_close(prob, torch.tensor([1.0, 1.0, 1.0, 1.0, 0.5]))
    assert torch.equal(keep_probabilities(torch.tensor([math.nan, 0.0])), torch.ones(2))


def test_pixel_counts_prn_min_starves_head_classes():
    counts = torch.tensor([1_000_000.0, 10_000.0, 100.0])
    prob = keep_probabilities(counts, eta="min")
    torch.testing.assert_close(prob, torch.tensor([1e-4, 1e-2, 1.0]))


def test_floor_lifts_small_probabilities_only():
    prob = keep_probabilities(SCORES, eta="min", floor=0.45)
    torch.testing.assert_close(prob, torch.tensor([1.0, 0.5, 0.45, 0.45]))


@pytest.mark.parametrize("eta", ["max", "q", "q150", -1.0, 0.0])
def test_bad_eta_raises(eta):
    with pytest.raises(ValueError):
        keep_probabilities(SCORES, eta=eta)


def _striped_targets(count, height=4, width=6):
    """Each image holds classes 0, 1, 2 in column stripes and an ignore stripe; class 3 absent."""
    row = torch.tensor([0, 0, 1, 2, 2, IGNORE_INDEX])[:width]
    return row.expand(count, height, width).clone()


def test_empirical_keep_rate_matches_probability():
    keep_prob = torch.tensor([0.9, 0.5, 0.1, 0.7])
    images = 4000
    target = _striped_targets(images)
    mask = PixelSampler(keep_prob)(target, torch.Generator().manual_seed(123))
    for cls in range(3):
        kept_images = mask[:, 0, (target[0, 0] == cls).nonzero()[0, 0]].float()
        p = float(keep_prob[cls])
        sigma = math.sqrt(p * (1 - p) / images)
        assert abs(float(kept_images.mean()) - p) < 4 * sigma, cls


def test_decisions_are_per_image_per_class_and_ignore_never_kept():
    target = torch.randint(0, 5, (64, 12, 12))
    target[:, :2] = IGNORE_INDEX
    mask = PixelSampler(torch.full((5,), 0.5))(target, torch.Generator().manual_seed(7))
    assert not mask[target == IGNORE_INDEX].any()
    decisions = set()
    for n in range(target.shape[0]):
        for cls in target[n].unique().tolist():
            if cls == IGNORE_INDEX:
                continue
            values = mask[n][target[n] == cls]
            assert values.all() or not values.any(), (n, cls)
            decisions.add(bool(values[0]))
    assert decisions == {True, False}


def test_same_seed_same_mask_and_different_seed_differs():
    target = torch.randint(0, 8, (16, 20, 20))
    sampler = PixelSampler(torch.full((8,), 0.5))
    first = sampler(target, torch.Generator().manual_seed(3))
    second = sampler(target, torch.Generator().manual_seed(3))
    other = sampler(target, torch.Generator().manual_seed(4))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    assert first.dtype == torch.bool and first.shape == target.shape


def test_global_rng_is_used_without_generator():
    target = torch.randint(0, 8, (16, 10, 10))
    sampler = PixelSampler(torch.full((8,), 0.5))
    torch.manual_seed(11)
    first = sampler(target)
    torch.manual_seed(11)
    assert torch.equal(first, sampler(target))


def test_probability_one_and_zero_and_negative_ignore_index():
    target = torch.tensor([[[0, 1, -1], [1, 0, -1]]])
    mask = PixelSampler(torch.tensor([1.0, 0.0]), ignore_index=-1)(target)
    assert mask.tolist() == [[[True, False, False], [False, True, False]]]


def test_kept_pixel_counts():
    target = torch.tensor([[[0, 0, 1], [2, IGNORE_INDEX, 1]]])
    mask = torch.tensor([[[True, True, False], [True, True, True]]])
    kept, total = kept_pixel_counts(target, mask, num_classes=4)
    assert kept.tolist() == [2, 1, 1, 0]
    assert total.tolist() == [2, 2, 1, 0]


def _lip_split(root, labels):
    """A LIP-layout train split holding ``labels`` (uint8 arrays) with grey images beside them."""
    import numpy as np
    from PIL import Image

    (root / "train_images").mkdir(parents=True)
    (root / "train_segmentations").mkdir()
    ids = [f"{i:03d}" for i in range(len(labels))]
    for name, label in zip(ids, labels):
        Image.fromarray(np.full((*label.shape, 3), 128, np.uint8)).save(root / "train_images" / f"{name}.jpg")
        Image.fromarray(label).save(root / "train_segmentations" / f"{name}.png")
    (root / "train_id.txt").write_text("\n".join(ids) + "\n")


def test_prn_keep_probabilities_from_image_counts(tmp_path):
    """Three label maps: background in all three (mostly), class 1 (hat) in two, class 2 (hair) in one,
    large. PRN's default reading counts images: x = (3, 2, 1), eta = min = 1, s = (1/3, 1/2, 1); the pixel
    reading keeps the rare-but-large hair class only as often as the pixel counts say."""
    from dataclasses import replace

    import numpy as np

    from training.config import load_config
    from training.datasets import build_dataset
    from training.dtpr import sampling_scores, train_counts
    from training.label_statistics import class_statistics

    a, b, c = (np.zeros((10, 10), np.uint8) for _ in range(3))
    a[0, :2] = 1
    b[0, :3] = 1
    c[2:8, 2:8] = 2
    _lip_split(tmp_path, [a, b, c])
    stats = class_statistics(build_dataset("lip", tmp_path, "train"))
    counts = train_counts(stats)
    assert counts["images"][:3].tolist() == [3.0, 2.0, 1.0]
    assert counts["pixels"][:3].tolist() == [300.0 - 5 - 36, 5.0, 36.0]
    config = load_config(overrides={"stage2": {"sampling": "prn"}})
    assert config["stage2"]["prn_counts"] == "images"
    prob = keep_probabilities(sampling_scores(config.stage2, None, counts), eta="min")
    torch.testing.assert_close(prob[:3], torch.tensor([1 / 3, 1 / 2, 1.0]))
    assert torch.equal(prob[3:], torch.ones(17))  # classes in no image: always kept
    config = load_config(overrides={"stage2": {"sampling": "prn", "prn_counts": "pixels"}})
    prob = keep_probabilities(sampling_scores(config.stage2, None, counts), eta="min")
    torch.testing.assert_close(prob[:3], torch.tensor([5 / 259, 1.0, 5 / 36]))
    config = replace(config, stage2=replace(config.stage2, prn_counts="regions"))  # load_config refuses it
    with pytest.raises(ValueError, match="prn_counts 'regions'"):
        sampling_scores(config.stage2, None, counts)
