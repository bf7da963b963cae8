"""Figures of a run: CPA at the recorded epoch against class pixel counts (the paper's Figure 3),
per-class IoU of two runs (baseline vs DTPR) sorted by class frequency."""
from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import torch

METRIC_NAMES = {"iou": "IoU", "class_pixel_accuracy": "CPA (precision)", "recall": "recall"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cpa_vs_pixels(cpa: Sequence[float] | torch.Tensor, pixels: Sequence[float] | torch.Tensor,
                       names: Sequence[str], path: str | Path, epoch: int) -> Path:
    plt = _pyplot()
    cpa, pixels = torch.as_tensor(cpa, dtype=torch.float64), torch.as_tensor(pixels, dtype=torch.float64)
    order = torch.argsort(pixels, descending=True).tolist()
    fig, ax = plt.subplots(figsize=(12, 4.5))
    ax.bar(range(len(order)), [float(pixels[i]) for i in order], color="#9ecae1", label="training pixels")
    ax.set_yscale("log")
    ax.set_ylabel("ground-truth pixels (log)")
    ax.set_xticks(range(len(order)), [names[i] for i in order], rotation=90, fontsize=7)
    twin = ax.twinx()
    twin.plot(range(len(order)), [float(torch.nan_to_num(cpa[i], nan=0.0)) for i in order], "o-", color="#d62728",
              label=f"CPA after epoch {epoch}")
    twin.set_ylim(0, 1)
    twin.set_ylabel("class pixel accuracy")
    fig.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def read_class_table(path: str | Path) -> dict[int, dict]:
    with open(path) as f:
        return {int(row["id"]): row for row in csv.DictReader(f)}


def plot_iou_comparison(baseline_csv: str | Path, dtpr_csv: str | Path, path: str | Path) -> Path:
    """Per-class IoU of two runs' class tables, classes sorted by ground-truth pixels."""
    base, dtpr = read_class_table(baseline_csv), read_class_table(dtpr_csv)
    ids = sorted(base)
    return plot_iou_by_frequency([base[i]["name"] for i in ids], [float(base[i]["gt_pixels"]) for i in ids],
                                 [float(base[i]["iou"] or "nan") for i in ids],
                                 [float(dtpr[i]["iou"] or "nan") for i in ids], path)


def plot_iou_by_frequency(names: Sequence[str], pixels: Sequence[float], baseline_iou: Sequence[float],
                          dtpr_iou: Sequence[float], path: str | Path) -> Path:
    """Baseline and DTPR IoU per class, most frequent class (by ``pixels``) first; NaN classes left out."""
    plt = _pyplot()
    ids = sorted((i for i in range(len(names)) if not math.isnan(baseline_iou[i]) and not math.isnan(dtpr_iou[i])),
                 key=lambda i: -pixels[i])
    fig, ax = plt.subplots(figsize=(12, 4.5))
    x = range(len(ids))
    ax.bar([v - 0.2 for v in x], [baseline_iou[i] for i in ids], width=0.4, label="baseline")
    ax.bar([v + 0.2 for v in x], [dtpr_iou[i] for i in ids], width=0.4, label="DTPR")
    ax.set_xticks(list(x), [names[i] for i in ids], rotation=90, fontsize=7)
    ax.set_ylabel("IoU")
    ax.set_xlabel("classes, most frequent first")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_group_gains(gains: dict[str, dict[str, list[float]]], path: str | Path) -> Path:
    """Bars of mean per-class gain over the baseline per frequency group: one panel per metric, one bar per row."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(gains), figsize=(6 * len(gains), 4), squeeze=False)
    for ax, (metric, rows) in zip(axes[0], gains.items()):
        width = 0.8 / max(1, len(rows))
        for k, (row, values) in enumerate(rows.items()):
            ax.bar([g + k * width for g in range(len(values))], [100 * v for v in values], width=width, label=row)
        groups = len(next(iter(rows.values()), []))
        ax.set_xticks([g + 0.4 - width / 2 for g in range(groups)],
                      ["head", "middle", "tail"][:groups] if groups == 3 else [str(g) for g in range(groups)])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric)} gain over baseline (points)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
