"""Integrity check of a dataset split: every problem is named, none is fatal.

    python training/tools/check_dataset.py --dataset lip --root DATA/LIP --split val [--strict]

Finds missing and unreadable files, image/label size mismatches and label
values out of range (>= the class count and not the ignore label 255).
Prints a summary; with ``--strict`` exits 1 when any problem is found.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a file (python training/tools/check_dataset.py), Python puts training/tools/ on sys.path, not the
    # repository root, so `import training` would fail: add the root. Script-only: never on import or with -m.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np

from human_parsing_ros.class_sets import IGNORE_INDEX
from human_parsing_ros.errors import add_debug_flag, one_line
from training.cli import run_training_cli
from training.datasets import DATASET_NAMES, ParsingDataset, Sample, build_dataset, read_image, read_label

KINDS = ("missing-image", "missing-label", "unreadable-image", "unreadable-label", "size-mismatch",
         "label-out-of-range", "skipped")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one sample; ``kind`` is one of ``KINDS``."""

    kind: str
    sample_id: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.detail}"


def check_dataset(dataset: ParsingDataset) -> list[Problem]:
    """Every problem of every item of ``dataset``, in item order."""
    problems: list[Problem] = []
    for item in dataset.items:
        problems.extend(check_sample(item, dataset.class_set.num_classes))
    return problems


def check_sample(item: Sample, num_classes: int) -> list[Problem]:
    """Problems of one ``Sample``: its image, each of its label files, their sizes and values."""
    image_shape, problems = _check_image(item)
    if not item.labels:
        problems.append(Problem("missing-label", item.id, str(item.image), "no label file for this image"))
    for path in item.labels:
        label, label_problems = _check_label(item.id, path, num_classes)
        problems.extend(label_problems)
        if label is not None and image_shape is not None and label.shape != image_shape:
            problems.append(Problem("size-mismatch", item.id, str(path),
                                    f"label is {label.shape[1]}x{label.shape[0]}, "
                                    f"image is {image_shape[1]}x{image_shape[0]} (width x height)"))
    return problems


def _check_image(item: Sample) -> tuple[tuple[int, int] | None, list[Problem]]:
    if not item.image.is_file():
        return None, [Problem("missing-image", item.id, str(item.image), "file not found")]
    try:
        return read_image(item.image).shape[:2], []
    except Exception as error:  # PIL raises many types for a broken file
        return None, [Problem("unreadable-image", item.id, str(item.image), one_line(error))]


def _check_label(sample_id: str, path: Path, num_classes: int) -> tuple[np.ndarray | None, list[Problem]]:
    if not path.is_file():
        return None, [Problem("missing-label", sample_id, str(path), "file not found")]
    try:
        label = read_label(path)
    except Exception as error:  # PIL / scipy raise many types for a broken file
        return None, [Problem("unreadable-label", sample_id, str(path), one_line(error))]
    values = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    bad = [int(v) for v in values if v >= num_classes and v != IGNORE_INDEX]
    if bad:
        return label, [Problem("label-out-of-range", sample_id, str(path),
                               f"values {bad} (classes are 0-{num_classes - 1}, {IGNORE_INDEX} = ignore)")]
    return label, []


def format_report(problems: list[Problem], num_samples: int, limit: int = 50) -> str:
    lines = [str(p) for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    counts = Counter(p.kind for p in problems)
    by_kind = ", ".join(f"{counts[k]} {k}" for k in KINDS if counts[k])
    lines.append(f"checked {num_samples} samples: {len(problems)} problems" + (f" ({by_kind})" if by_kind else ""))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--split", required=True)
    parser.add_argument("--ids", nargs="*", help="explicit sample ids instead of the split's list")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any problem is found")
    parser.add_argument("--limit", type=int, default=50, help="problems to list (default 50)")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = {} if args.ids is None else {"ids": args.ids}
    with warnings.catch_warnings(record=True) as caught:  # samples skipped while listing the split
        warnings.simplefilter("always")
        dataset = build_dataset(args.dataset, args.root, args.split, **options)
    skipped = [Problem("skipped", "", "", str(w.message)) for w in caught]
    problems = skipped + check_dataset(dataset)
    print(format_report(problems, len(dataset) + len(skipped), args.limit))
    return 1 if args.strict and problems else 0


if __name__ == "__main__":
    run_training_cli(main, "check_dataset.py")
