"""Training and evaluation transforms: geometry, flip id swap, padding, reproducibility."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from human_parsing_ros.class_sets import get_class_set
from human_parsing_ros.weights import IMAGENET_MEAN, IMAGENET_STD
from training.transforms import EvalTransform, TrainTransform

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def normalised(image: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255 - MEAN) / STD


@pytest.fixture()
def pair():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (83, 55, 3), dtype=np.uint8)
    label = rng.integers(0, 20, (83, 55), dtype=np.uint8)
    label[:5, :5] = 255
    return image, label


def test_output_types_and_crop_shape(pair):
    image, label = pair
    transform = TrainTransform(crop_size=(40, 64), flip_permutation=get_class_set("lip").flip_permutation())
    for seed in range(6):
        x, y = transform(image, label, torch.Generator().manual_seed(seed))
        assert x.shape == (3, 40, 64) and x.dtype == torch.float32 and x.is_contiguous()
        assert y.shape == (40, 64) and y.dtype == torch.int64
        valid = set(np.unique(label).tolist()) | set(get_class_set("lip").flip_permutation())
        assert set(y.unique().tolist()) <= valid | {255}  # nearest: no invented ids


def halves(left_value, right_value, hw=(20, 30)):
    h, w = hw
    out = np.empty((h, w) + np.shape(left_value), dtype=np.uint8)
    out[:, : w // 2] = left_value
    out[:, w // 2:] = right_value
    return out


def test_flip_swaps_left_and_right_ids():
    lip = get_class_set("lip")
    assert (lip.names[14], lip.names[15]) == ("left-arm", "right-arm")
    label = halves(14, 15)
    image = halves((255, 0, 0), (0, 0, 255))  # red left, blue right: shows whether it was mirrored
    transform = TrainTransform(crop_size=label.shape, scale_range=(1, 1), max_rotation=0,
                               flip_permutation=lip.flip_permutation(), jitter=0)
    outcomes = {}
    for seed in range(50):
        x, y = transform(image, label, torch.Generator().manual_seed(seed))
        mirrored = bool(x[2, :, 0].mean() > x[0, :, 0].mean())  # blue on the left now
        outcomes.setdefault(mirrored, (x, y))
        if len(outcomes) == 2:
            break
    assert set(outcomes) == {True, False}, "50 seeds gave only one flip outcome"
    x, y = outcomes[True]
    np.testing.assert_allclose(x.numpy(), normalised(image[:, ::-1]).numpy(), atol=1e-5)
    # The arm on the image's left is still the left arm (id 14) once mirrored and relabelled.
    np.testing.assert_array_equal(y.numpy(), label)
    x, y = outcomes[False]
    np.testing.assert_array_equal(y.numpy(), label)
    np.testing.assert_allclose(x.numpy(), normalised(image).numpy(), atol=1e-5)


def test_flip_keeps_ignore_and_maps_every_pair():
    lip = get_class_set("lip")
    label = np.array([[14, 16, 18, 255, 2]], dtype=np.uint8).repeat(4, axis=0)
    image = np.zeros((4, 5, 3), np.uint8)
    transform = TrainTransform(crop_size=(4, 5), scale_range=(1, 1), max_rotation=0,
                               flip_permutation=lip.flip_permutation(), jitter=0)
    results = {tuple(transform(image, label, torch.Generator().manual_seed(s))[1][0].tolist()) for s in range(40)}
    assert results == {(14, 16, 18, 255, 2), (2, 255, 19, 17, 15)}


def test_padding_is_ignore_label_and_zero_image(pair):
    image, label = pair
    label = np.minimum(label, 19)  # no ignore pixels of its own
    crop = (120, 100)
    transform = TrainTransform(crop_size=crop, scale_range=(1, 1), max_rotation=0, jitter=0.4)
    placements = set()
    for seed in range(6):
        x, y = transform(image, label, torch.Generator().manual_seed(seed))
        padded = y == 255
        assert int(padded.sum()) == crop[0] * crop[1] - label.size
        assert torch.all(x[:, padded] == 0)  # the mean colour, exactly 0 once normalised
        assert torch.all(x[:, ~padded].abs().sum(0) > 0)
        rows, cols = torch.nonzero(~padded, as_tuple=True)
        placements.add((int(rows.min()), int(cols.min())))
        np.testing.assert_array_equal(np.sort(y[~padded].numpy()), np.sort(label.ravel()))
    assert len(placements) > 1  # the image lands at random places in the padded crop


def test_rotation_pads_corners_with_ignore():
    label = np.full((60, 60), 3, np.uint8)
    image = np.full((60, 60, 3), 128, np.uint8)
    transform = TrainTransform(crop_size=(60, 60), scale_range=(1, 1), max_rotation=30, jitter=0)
    corners = 0
    for seed in range(10):
        x, y = transform(image, label, torch.Generator().manual_seed(seed))
        assert set(y.unique().tolist()) <= {3, 255}
        corners += int(y[0, 0] == 255)
        assert (y[28:32, 28:32] == 3).all()  # the centre never leaves the image
    assert corners >= 5  # |angle| >= 1 degree nearly always empties a corner pixel


def test_scale_changes_size_of_content():
    label = np.zeros((40, 40), np.uint8)
    label[10:30, 10:30] = 1
    image = np.zeros((40, 40, 3), np.uint8)
    transform = TrainTransform(crop_size=(100, 100), scale_range=(2, 2), max_rotation=0, jitter=0)
    _, y = transform(image, label, torch.Generator().manual_seed(0))
    assert int((y == 1).sum()) == 40 * 40 and int((y == 0).sum()) == 80 * 80 - 40 * 40


def test_same_seed_same_output_and_different_seeds_differ(pair):
    image, label = pair
    transform = TrainTransform(crop_size=(32, 32))
    a = transform(image, label, torch.Generator().manual_seed(11))
    b = transform(image, label, torch.Generator().manual_seed(11))
    c = transform(image, label, torch.Generator().manual_seed(12))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_randomness_comes_only_from_torch(pair):
    image, label = pair
    transform = TrainTransform(crop_size=(32, 32))
    numpy_state, python_state = np.random.get_state()[1].copy(), random.getstate()
    torch.manual_seed(3)
    first = transform(image, label)
    torch.manual_seed(3)
    second = transform(image, label)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)
    assert random.getstate() == python_state
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    transform(image, label, generator)
    assert not torch.equal(generator.get_state(), state)


def test_jitter_changes_colours_only(pair):
    image, label = pair
    plain = TrainTransform(crop_size=image.shape[:2], scale_range=(1, 1), max_rotation=0, jitter=0)
    jittered = TrainTransform(crop_size=image.shape[:2], scale_range=(1, 1), max_rotation=0, jitter=0.3)
    x0, y0 = plain(image, label, torch.Generator().manual_seed(1))
    x1, y1 = jittered(image, label, torch.Generator().manual_seed(1))
    assert torch.equal(y0, y1)
    assert (x0 - x1).abs().mean() > 0.01


def test_eval_transform_is_deterministic(pair):
    image, label = pair
    x, y = EvalTransform()(image, label)
    np.testing.assert_allclose(x.numpy(), normalised(image).numpy(), atol=1e-6)
    np.testing.assert_array_equal(y.numpy(), label)
    assert y.dtype == torch.int64
    resize = EvalTransform(size=(40, 30))
    torch.manual_seed(0)
    a = resize(image, label)
    torch.manual_seed(1)
    b = resize(image, label)
    assert a[0].shape == (3, 40, 30) and a[1].shape == (40, 30)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert set(a[1].unique().tolist()) <= set(np.unique(label).tolist())


def test_bad_arguments_are_refused(pair):
    image, label = pair
    with pytest.raises(ValueError, match="permutation"):
        TrainTransform(flip_permutation=[0, 0, 1])
    with pytest.raises(ValueError, match="label"):
        TrainTransform()(image, label[:10])
