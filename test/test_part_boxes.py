"""Part boxes (#31, #35): ``bbox`` ignores stray pixels (the 1 % of a part's pixels farthest out at each end of x
and y), ``bbox_full`` is the full extent; both from per-class row/column counts, in bounded slices."""
import numpy as np
import pytest
import torch

from human_parsing_ros import inference
from human_parsing_ros.inference import class_statistics, confidence_map, place_image
from human_parsing_ros.parse_result import trimmed_box
from human_parsing_ros.presence import parts_from_counts


def _reference(labels: np.ndarray, class_id: int):
    ys, xs = np.nonzero(labels == class_id)
    n = len(xs)
    k = n // 100
    xs, ys = np.sort(xs), np.sort(ys)
    return (xs[0], ys[0], xs[-1], ys[-1]), (xs[k], ys[k], xs[n - 1 - k], ys[n - 1 - k])


def test_a_few_stray_pixels_stretch_bbox_full_but_not_bbox():
    labels = np.zeros((240, 320), np.uint8)
    labels[100:160, 140:180] = 3  # a hand: 2400 pixels
    labels[5, 2] = labels[230, 318] = labels[120, 0] = 3  # stray pixels at the image's edges
    labels[50:60, 50:70] = 1
    stats = class_statistics(torch.from_numpy(labels), torch.ones(labels.shape), 5)
    assert stats.boxes[3].tolist() == [0, 5, 318, 230]  # the full extent: almost the whole image
    assert stats.robust_boxes[3].tolist() == [140, 100, 179, 159]  # the hand
    assert stats.boxes[1].tolist() == stats.robust_boxes[1].tolist() == [50, 50, 69, 59]  # 200 pixels, no strays
    assert stats.boxes[4].tolist() == stats.robust_boxes[4].tolist() == [-1] * 4  # absent
    parts = parts_from_counts([f"c{i}" for i in range(5)], stats.pixel_counts.tolist(),
                              stats.confidence_sums.tolist(), stats.robust_boxes.tolist(), labels.size, 0.005,
                              stats.boxes.tolist())
    assert parts[3].bbox == (140, 100, 179, 159) and parts[3].bbox_full == (0, 5, 318, 230)
    assert parts[4].bbox is None and parts[4].bbox_full is None
    # a person's parts (ParseResult.person_presence) use the same definition
    ys, xs = np.nonzero(labels == 3)
    assert trimmed_box(xs, ys) == (140, 100, 179, 159)


@pytest.mark.parametrize("sliced", [False, True], ids=["whole_counts", "sliced_search"])
@pytest.mark.parametrize("shape", [(97, 131), (4000, 1), (1, 3000), (700, 3)])
def test_boxes_match_their_definition_whatever_the_shape_and_the_slices(shape, sliced, monkeypatch):
    monkeypatch.setattr(inference, "SLICE_VALUES", 64)  # many slices of rows, also across a class's pixels
    if sliced:  # the path of an extreme shape's long axis: counts made and searched a slice at a time
        monkeypatch.setattr(inference, "DENSE_COUNTS", 0)
    rng = np.random.default_rng(sum(shape))
    labels = rng.choice(6, size=shape, p=[0.5, 0.3, 0.1, 0.05, 0.05, 0.0]).astype(np.uint8)
    labels[tuple(s // 2 for s in shape)] = 5  # one class of a single pixel
    stats = class_statistics(torch.from_numpy(labels), torch.ones(shape), 7)
    for class_id in range(7):
        count = int((labels == class_id).sum())
        assert int(stats.pixel_counts[class_id]) == count
        if count == 0:
            assert stats.boxes[class_id].tolist() == stats.robust_boxes[class_id].tolist() == [-1] * 4
            continue
        full, robust = _reference(labels, class_id)
        assert tuple(stats.boxes[class_id].tolist()) == full
        assert tuple(stats.robust_boxes[class_id].tolist()) == robust
        ys, xs = np.nonzero(labels == class_id)
        assert trimmed_box(xs, ys) == robust


@pytest.mark.parametrize("out_hw", [(300, 200), (5000, 1), (1, 5000), (413, 7)])
def test_the_sliced_confidence_map_equals_the_whole_one(out_hw, monkeypatch):
    logits = torch.randn(5, 13, 17, generator=torch.Generator().manual_seed(1))
    placement = place_image(out_hw, (52, 68), "letterbox")
    whole = confidence_map(logits, (52, 68), placement, out_hw)
    monkeypatch.setattr(inference, "SLICE_VALUES", 50)
    sliced = confidence_map(logits, (52, 68), placement, out_hw)
    assert sliced.shape == out_hw and torch.equal(sliced, whole)  # bit for bit
