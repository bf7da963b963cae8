"""Class statistics of a parsing dataset's labels (images are not read), and the trainer's refusals of labels
it cannot train on: ids outside the class set (``LabelIdError``), unreadable validation files
(``UnreadableDataError``)."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from human_parsing_ros.class_sets import IGNORE_INDEX
from training.datasets import ParsingDataset, Sample, read_label


def class_statistics(dataset: ParsingDataset) -> dict[str, Any]:
    """Label statistics of every item of ``dataset``.

    Keys: ``class_set``, ``names``, ``pixels`` (per class), ``images`` (items
    containing the class), ``pixel_fraction`` (of the pixels with a valid
    class id), ``num_images``, ``total_pixels`` (every label pixel),
    ``labelled_pixels`` (valid class ids), ``ignored_pixels`` (255) and
    ``out_of_range_pixels`` (other ids >= num_classes), ``out_of_range``
    (one ``(label file, [ids])`` per file holding such ids), ``skipped`` (ids of
    items whose labels could not be read, for datasets that skip those).
    """
    num_classes = dataset.class_set.num_classes
    pixels = np.zeros(256, dtype=np.int64)
    images = np.zeros(256, dtype=np.int64)
    skipped: list[str] = []
    out_of_range: list[tuple[str, list[int]]] = []
    for index in range(len(dataset)):
        try:
            counts = np.bincount(dataset.load_label(index).ravel(), minlength=256)
        except (OSError, ValueError) as error:
            if not dataset.skip_unreadable:
                raise
            warnings.warn(f"statistics skip {dataset.items[index].id}: {error}", stacklevel=2)
            skipped.append(dataset.items[index].id)
            continue
        pixels += counts
        images += counts > 0
        if _bad_ids(counts, num_classes):
            out_of_range.extend(_files_with_bad_ids(dataset, dataset.items[index], num_classes))
    labelled = int(pixels[:num_classes].sum())
    fraction = pixels[:num_classes] / labelled if labelled else np.zeros(num_classes)
    return {
        "class_set": dataset.class_set.name,
        "names": list(dataset.class_set.names),
        "pixels": pixels[:num_classes].tolist(),
        "images": images[:num_classes].tolist(),
        "pixel_fraction": fraction.tolist(),
        "num_images": len(dataset) - len(skipped),
        "total_pixels": int(pixels.sum()),
        "labelled_pixels": labelled,
        "ignored_pixels": int(pixels[IGNORE_INDEX]),
        "out_of_range_pixels": int(pixels[num_classes:].sum() - pixels[IGNORE_INDEX]),
        "out_of_range": out_of_range,
        "skipped": skipped,
    }


class LabelIdError(ValueError):
    """Label files holding ids that are neither a class of the class set nor the ignore index."""


class UnreadableDataError(ValueError):
    """A validation file that cannot be read (the message names it): validation never substitutes another
    sample, which would score that one twice."""


def _bad_ids(counts: np.ndarray, num_classes: int) -> list[int]:
    return [int(v) for v in np.flatnonzero(counts) if v >= num_classes and v != IGNORE_INDEX]


def _files_with_bad_ids(dataset: ParsingDataset, item: Sample, num_classes: int) -> list[tuple[str, list[int]]]:
    """Which of ``item``'s label files hold the out-of-range ids (MHPv2 merges several per image)."""
    found = [(str(path), _bad_ids(np.bincount(dataset.map_label(read_label(path)).ravel(), minlength=256),
                                  num_classes)) for path in item.labels]
    return [(path, ids) for path, ids in found if ids]


def check_label_ids(stats: dict[str, Any], num_classes: int) -> None:
    """Refuse (one line naming the first file and its ids) statistics that found out-of-range label ids."""
    bad = stats["out_of_range"]
    if bad:
        path, ids = bad[0]
        more = f" (and {len(bad) - 1} more label files)" if len(bad) > 1 else ""
        raise LabelIdError(f"{path}: label ids {ids} are not classes of {stats['class_set']} "
                           f"(0-{num_classes - 1}, {IGNORE_INDEX} = ignore){more}")


def class_pixel_counts(dataset: ParsingDataset) -> torch.Tensor:
    """Ground-truth pixels per class over ``dataset``, float64 [C] (PRN's x_i, class-balanced weights).

    The trainer's first pass over the labels: raises ``LabelIdError`` naming the file and the ids when a
    label holds an id that is neither a class nor the ignore index, before any time is spent training.
    """
    stats = class_statistics(dataset)
    check_label_ids(stats, dataset.class_set.num_classes)
    return torch.tensor(stats["pixels"], dtype=torch.float64)
