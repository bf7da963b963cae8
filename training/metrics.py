"""Segmentation metrics from one confusion matrix.

The matrix ``M`` is int64 [C, C], rows = ground truth, columns = prediction;
ignore pixels are never counted. With TP_i = M[i, i], GT_i = row sum (pixels
of class i in the ground truth) and P_i = column sum (pixels predicted as i):

* PA (pixel accuracy) = sum_i TP_i / sum_i GT_i.
* CPA_i (class pixel accuracy, the DTPR paper's definition) = TP_i / P_i: the
  fraction of the pixels *predicted* as i that are correct (a precision).
  A class in the ground truth that is never predicted has CPA 0.
* MPA (mean pixel accuracy, the paper's) = mean of CPA_i over the classes
  present in the ground truth.
* recall_i = TP_i / GT_i; "mean recall" is its mean over the classes present
  in the ground truth. This is the more common "mean accuracy" (e.g. in
  mmsegmentation's mAcc); it is reported next to MPA, labelled as recall.
* IoU_i = TP_i / (GT_i + P_i - TP_i); mIoU = mean over present classes.

A class is *present* when GT_i > 0. Per-class values of absent classes are NaN
and never enter a mean. ``compute()`` returns Python floats for the scalars
and float64 CPU tensors for the per-class values; ``to_jsonable`` converts.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
import torch.distributed as dist

from human_parsing_ros.class_sets import IGNORE_INDEX

# The scalar metrics every table and record reports, in this order.
METRICS = ("pixel_accuracy", "mean_pixel_accuracy", "mean_recall", "mean_iou")

MPA_DEFINITION = ("MPA = mean over classes present in the ground truth of CPA "
                  "(correct pixels / pixels predicted as the class; DTPR paper definition). "
                  "Mean recall = mean of correct / ground-truth pixels (the usual 'mean accuracy').")


class ConfusionMatrix:
    """Accumulates an int64 [C, C] confusion matrix (rows = ground truth, cols = prediction)."""

    def __init__(self, num_classes: int, device: torch.device | str | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.matrix = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.matrix.zero_()

    def update(self, pred: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> None:
        """Add one batch; ``pred`` and ``target`` hold class ids, any equal shape."""
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        device = self.matrix.device
        target = target.reshape(-1).to(device=device, dtype=torch.int64)
        pred = pred.reshape(-1).to(device=device, dtype=torch.int64)
        valid = target != ignore_index
        target, pred = target[valid], pred[valid]
        if target.numel() == 0:
            return
        _check_range("target", target, self.num_classes)
        _check_range("pred", pred, self.num_classes)
        counts = torch.bincount(target * self.num_classes + pred,
                                minlength=self.num_classes ** 2)
        self.matrix += counts.view(self.num_classes, self.num_classes)

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the matrix over all processes when torch.distributed is initialised."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        return self

    def compute(self) -> dict:
        return compute_metrics(self.matrix)


def _check_range(name: str, labels: torch.Tensor, num_classes: int) -> None:
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"{name} holds class ids in [{low}, {high}], outside [0, {num_classes})")


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den with NaN where den == 0."""
    return torch.where(den > 0, num / den.clamp(min=1), torch.nan)


def _mean_over(values: torch.Tensor, present: torch.Tensor) -> float:
    if not bool(present.any()):
        return math.nan
    return float(values[present].mean())


def compute_metrics(matrix: torch.Tensor) -> dict:
    """All metrics of the module docstring from a [C, C] confusion matrix."""
    m = matrix.detach().to(device="cpu", dtype=torch.float64)
    tp = m.diagonal()
    gt = m.sum(dim=1)
    predicted = m.sum(dim=0)
    present = gt > 0
    cpa = torch.where(predicted > 0, tp / predicted.clamp(min=1), 0.0)
    cpa = torch.where(present, cpa, torch.nan)
    recall = torch.where(present, _ratio(tp, gt), torch.nan)
    iou = torch.where(present, _ratio(tp, gt + predicted - tp), torch.nan)
    total = float(gt.sum())
    return {
        "pixel_accuracy": float(tp.sum()) / total if total > 0 else math.nan,
        "class_pixel_accuracy": cpa,
        "mean_pixel_accuracy": _mean_over(cpa, present),
        "recall": recall,
        "mean_recall": _mean_over(recall, present),
        "iou": iou,
        "mean_iou": _mean_over(iou, present),
        "present": present,
        "gt_pixels": gt.to(torch.int64),
        "pred_pixels": predicted.to(torch.int64),
    }


def cpa_for_sampling(matrix: torch.Tensor) -> torch.Tensor:
    """CPA per class (TP / pixels predicted as the class) for PRA; NaN where never predicted.

    Unlike ``compute()``, classes absent from the ground truth but predicted get
    their CPA (0), since they are the worst-predicted classes. Float32 [C], CPU.
    """
    m = matrix.detach().to(device="cpu", dtype=torch.float64)
    return _ratio(m.diagonal(), m.sum(dim=0)).to(torch.float32)


def to_jsonable(result: dict) -> dict:
    """``compute()``'s result with tensors turned into lists (NaN stays float NaN)."""
    return {key: value.tolist() if isinstance(value, torch.Tensor) else value
            for key, value in result.items()}


_TABLE_COLUMNS = ("id", "name", "gt_pixels", "iou", "cpa", "recall")


def _class_rows(result: dict, names: list[str]) -> list[tuple]:
    num_classes = len(result["gt_pixels"])
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} names for {num_classes} classes")
    return [(i, names[i], int(result["gt_pixels"][i]), float(result["iou"][i]),
             float(result["class_pixel_accuracy"][i]), float(result["recall"][i]))
            for i in range(num_classes)]


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100.0 * value:.2f}"


def write_class_table(result: dict, names: list[str], csv_path: str | Path,
                      md_path: str | Path | None = None) -> None:
    """Per-class table (id, name, gt_pixels, IoU, CPA, recall) as CSV (fractions) and Markdown (%)."""
    rows = _class_rows(result, names)
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(_TABLE_COLUMNS)
        for index, name, pixels, iou, cpa, recall in rows:
            writer.writerow((index, name, pixels, repr(iou), repr(cpa), repr(recall)))
    if md_path is None:
        return
    lines = [f"Accuracy definition: {MPA_DEFINITION}", "", format_summary(result), "",
             "| id | name | gt pixels | IoU % | CPA % | recall % |",
             "|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {index} | {name} | {pixels} | {_percent(iou)} | {_percent(cpa)} | {_percent(recall)} |"
              for index, name, pixels, iou, cpa, recall in rows]
    Path(md_path).write_text("\n".join(lines) + "\n")


def format_summary(result: dict) -> str:
    """One line: PA, MPA (mean CPA, paper), mean recall and mIoU, in percent."""
    return (f"PA {_percent(result['pixel_accuracy'])}  "
            f"MPA {_percent(result['mean_pixel_accuracy'])} (mean CPA, paper)  "
            f"mean recall {_percent(result['mean_recall'])}  "
            f"mIoU {_percent(result['mean_iou'])}")
