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
