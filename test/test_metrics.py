"""Confusion-matrix metrics: PA, MPA (mean CPA), mean recall, mIoU, class table."""
import csv
import math

import pytest
import torch

from training.metrics import (
    ConfusionMatrix,
    compute_metrics,
    cpa_for_sampling,
    format_summary,
    to_jsonable,
    write_class_table,
)

# rows = ground truth, cols = prediction; class 2 is absent from GT but predicted once,
# class 3 is in GT but never predicted.
MATRIX = torch.tensor([
    [50, 5, 1, 0],
    [10, 30, 0, 0],
    [0, 0, 0, 0],
    [2, 2, 0, 0],
])


def _matrix_metrics():
    cm = ConfusionMatrix(4)
    cm.matrix += MATRIX
    return cm.compute()


def test_compute_matches_hand_values():
    r = _matrix_metrics()
    assert r["pixel_accuracy"] == pytest.approx(80 / 100)
    cpa = [50 / 62, 30 / 37, math.nan, 0.0]
    recall = [50 / 56, 30 / 40, math.nan, 0.0]
    iou = [50 / (56 + 62 - 50), 30 / (40 + 37 - 30), math.nan, 0.0]
    for key, expected in (("class_pixel_accuracy", cpa), ("recall", recall), ("iou", iou)):
        torch.testing.assert_close(r[key], torch.tensor(expected, dtype=torch.float64),
                                   equal_nan=True)
    assert r["mean_pixel_accuracy"] == pytest.approx((50 / 62 + 30 / 37 + 0) / 3)
    assert r["mean_recall"] == pytest.approx((50 / 56 + 30 / 40 + 0) / 3)
    assert r["mean_iou"] == pytest.approx((50 / 68 + 30 / 47 + 0) / 3)
    assert r["present"].tolist() == [True, True, False, True]
    assert r["gt_pixels"].tolist() == [56, 40, 0, 4]
    assert r["pred_pixels"].tolist() == [62, 37, 1, 0]


def test_cpa_for_sampling_keeps_predicted_absent_classes():
    cpa = cpa_for_sampling(MATRIX)
    torch.testing.assert_close(cpa, torch.tensor([50 / 62, 30 / 37, 0.0, math.nan]),
                               equal_nan=True)


def test_update_counts_pairs_and_skips_ignore():
    cm = ConfusionMatrix(3)
    target = torch.tensor([[0, 0, 1, 255], [2, 1, 255, 2]])
    pred = torch.tensor([[0, 1, 1, 2], [2, 0, 0, 1]])
    cm.update(pred, target)
    cm.update(pred[0], target[0])
    assert cm.matrix.tolist() == [[2, 2, 0], [1, 2, 0], [0, 1, 1]]
    cm.reset()
    assert not cm.matrix.any()


def test_update_rejects_out_of_range_labels():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError):
        cm.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 7]))


def test_all_reduce_is_noop_without_process_group():
    cm = ConfusionMatrix(4)
    cm.matrix += MATRIX
    assert torch.equal(cm.all_reduce().matrix, MATRIX)


def test_empty_matrix_gives_nan_not_error():
    r = ConfusionMatrix(2).compute()
    assert math.isnan(r["pixel_accuracy"]) and math.isnan(r["mean_iou"])


def test_class_table_round_trips(tmp_path):
    r = _matrix_metrics()
    names = ["background", "hat", "glove", "scarf"]
    write_class_table(r, names, tmp_path / "classes.csv", tmp_path / "classes.md")
    with open(tmp_path / "classes.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == names
    for i, row in enumerate(rows):
        assert int(row["id"]) == i
        assert int(row["gt_pixels"]) == int(r["gt_pixels"][i])
        for column, key in (("iou", "iou"), ("cpa", "class_pixel_accuracy"), ("recall", "recall")):
            value, expected = float(row[column]), float(r[key][i])
            assert value == expected or (math.isnan(value) and math.isnan(expected))
    markdown = (tmp_path / "classes.md").read_text()
    assert "MPA = mean over classes present in the ground truth of CPA" in markdown
    assert "| 1 | hat | 40 | 63.83 | 81.08 | 75.00 |" in markdown
    with pytest.raises(ValueError):
        write_class_table(r, names[:3], tmp_path / "bad.csv")


def test_format_summary_and_json():
    r = compute_metrics(MATRIX)
    assert format_summary(r) == ("PA 80.00  MPA 53.91 (mean CPA, paper)  "
                                 "mean recall 54.76  mIoU 45.79")
    plain = to_jsonable(r)
    assert plain["gt_pixels"] == [56, 40, 0, 4] and isinstance(plain["mean_iou"], float)


class _HalvesModel(torch.nn.Module):
    """Logits that say class 0 on the left half of the input and class 1 on the right, whatever the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        right = (torch.arange(x.shape[-1]) >= x.shape[-1] // 2).float()
        logits = torch.stack([1 - right, right]).view(1, 2, 1, -1)
        return logits.expand(x.shape[0], 2, x.shape[-2], x.shape[-1])


def _halves_loader(resize_labels: bool):
    """One 8x8 photo (any colour) whose label is class 0 in columns 0-2 and class 1 in 3-7, evaluated
    through a 4x4 network input."""
    import numpy as np

    from training.transforms import EvalTransform

    label = np.zeros((8, 8), np.uint8)
    label[:, 3:] = 1
    pair = EvalTransform((4, 4), resize_labels=resize_labels)(np.zeros((8, 8, 3), np.uint8), label)
    return [(pair[0][None], pair[1][None])]


def test_evaluation_at_the_labels_resolution_equals_a_hand_computation():
    """Bilinear 4 -> 8 upsampling keeps columns 0-3 on the left half's class 0 (column 3 samples x = 1.25)
    and 4-7 on class 1. Against the 8x8 label: class 0 TP 24, predicted 32; class 1 TP 32, ground truth 40.
    Resizing the labels instead (nearest, columns 1, 3, 5, 7) scores another image: 0 1 1 1 vs 0 0 1 1."""
    from training.engine import evaluate

    result = evaluate(_HalvesModel(), _halves_loader(resize_labels=False), 2, torch.device("cpu")).compute()
    assert result["pixel_accuracy"] == pytest.approx(56 / 64)
    assert result["iou"].tolist() == pytest.approx([24 / 32, 32 / 40])
    assert result["mean_iou"] == pytest.approx((0.75 + 0.8) / 2)
    resized = evaluate(_HalvesModel(), _halves_loader(resize_labels=True), 2, torch.device("cpu")).compute()
    assert resized["pixel_accuracy"] == pytest.approx(12 / 16)
    assert resized["iou"].tolist() == pytest.approx([4 / 8, 8 / 12])


def test_flip_test_swaps_left_and_right_classes():
    """The model's halves do not depend on the image, so its mirrored logits, mirrored back, put class 1
    on the left. With classes 0 and 1 as a left/right pair the swap restores them (same result as without
    flip); without the swap the two average to a tie everywhere, which argmax resolves to class 0."""
    from training.engine import evaluate

    loader = _halves_loader(resize_labels=False)
    plain = evaluate(_HalvesModel(), loader, 2, torch.device("cpu")).matrix
    swapped = evaluate(_HalvesModel(), loader, 2, torch.device("cpu"), flip_perm=[1, 0]).matrix
    assert torch.equal(plain, swapped)
    unswapped = evaluate(_HalvesModel(), loader, 2, torch.device("cpu"), flip_perm=[0, 1]).compute()
    assert unswapped["pixel_accuracy"] == pytest.approx(24 / 64)
