"""Per-class pixel and image counts of a dataset split, as CSV and a long-tail plot.

    python training/tools/dataset_stats.py --dataset ccp --root ../shared/data/ccp --split train --out DIR

writes ``DIR/class_stats.csv`` (id, name, pixels, pixel_fraction, images) and
``DIR/long_tail.png`` (classes sorted by pixel count, log scale; needs matplotlib).
"""
from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a file (python training/tools/dataset_stats.py), Python puts training/tools/ on sys.path, not the
    # repository root, so `import training` would fail: add the root. Script-only: never on import or with -m.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import csv
from typing import Any

import numpy as np

from human_parsing_ros.errors import add_debug_flag
from training.cli import run_training_cli
from training.datasets import DATASET_NAMES, build_dataset
from training.label_statistics import class_statistics


def write_csv(stats: dict[str, Any], path: Path) -> None:
    """``class_statistics`` per class: id, name, pixels, pixel_fraction, images."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name", "pixels", "pixel_fraction", "images"])
        for i, name in enumerate(stats["names"]):
            writer.writerow([i, name, stats["pixels"][i], f"{stats['pixel_fraction'][i]:.8f}", stats["images"][i]])


def plot_long_tail(stats: dict[str, Any], path: Path, title: str = "") -> None:
    """Bar chart of the classes sorted by pixel count (log scale); absent classes are listed, not drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(range(len(stats["names"])), key=lambda i: -stats["pixels"][i])
    present = [i for i in order if stats["pixels"][i] > 0]
    absent = [stats["names"][i] for i in order if stats["pixels"][i] == 0]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(order) + 2), 4.5))
    ax.bar(range(len(present)), [stats["pixels"][i] for i in present], color="#4477aa")
    ax.set_yscale("log")
    ax.set_xticks(range(len(present)), [f"{i} {stats['names'][i]}" for i in present], rotation=90, fontsize=7)
    ax.set_ylabel("pixels (log scale)")
    if absent:
        ax.set_xlabel("absent: " + ", ".join(absent), fontsize=8)
    ax.set_title(title or f"{stats['class_set']}: {stats['num_images']} images")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary(stats: dict[str, Any]) -> str:
    """One line about the long tail of ``class_statistics``."""
    fractions = np.asarray(stats["pixel_fraction"])
    head = int(np.argmax(fractions)) if fractions.size else 0
    return (f"{stats['num_images']} images, {stats['labelled_pixels']} labelled pixels; "
            f"largest class {stats['names'][head]} ({fractions[head]:.1%}); "
            f"{int((fractions < 0.001).sum())} classes under 0.1% (absent ones included), "
            f"{stats['pixels'].count(0)} never occur; "
            f"{stats['ignored_pixels']} ignored, {stats['out_of_range_pixels']} out-of-range pixels")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--split", required=True)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--ids", nargs="*", help="explicit sample ids instead of the split's list")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = {} if args.ids is None else {"ids": args.ids}
    dataset = build_dataset(args.dataset, args.root, args.split, **options)
    stats = class_statistics(dataset)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(stats, args.out / "class_stats.csv")
    plot_long_tail(stats, args.out / "long_tail.png", f"{args.dataset} {args.split}: {len(dataset)} images")
    print(summary(stats))
    print(f"wrote {args.out / 'class_stats.csv'} and {args.out / 'long_tail.png'}")
    return 0


if __name__ == "__main__":
    run_training_cli(main, "dataset_stats.py")
