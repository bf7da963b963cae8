"""Figures of a run: CPA at the recorded epoch against class pixel counts (the paper's Figure 3),
per-class IoU of two runs (baseline vs DTPR) sorted by class frequency."""
from __future__ import annotations

import csv
from pathlib import Path

import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cpa_vs_pixels(cpa: torch.Tensor, pixels: torch.Tensor, names, path: str | Path, epoch: int) -> Path:
    plt = _pyplot()
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
    plt = _pyplot()
    base, dtpr = read_class_table(baseline_csv), read_class_table(dtpr_csv)
    ids = sorted((i for i in base if base[i]["iou"] not in ("", "nan")),
                 key=lambda i: -float(base[i]["gt_pixels"]))
    fig, ax = plt.subplots(figsize=(12, 4.5))
    x = range(len(ids))
    ax.bar([v - 0.2 for v in x], [float(base[i]["iou"]) for i in ids], width=0.4, label="baseline")
    ax.bar([v + 0.2 for v in x], [float(dtpr[i]["iou"]) for i in ids], width=0.4, label="DTPR")
    ax.set_xticks(list(x), [base[i]["name"] for i in ids], rotation=90, fontsize=7)
    ax.set_ylabel("IoU")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
