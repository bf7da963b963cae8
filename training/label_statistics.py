"""Class statistics of a parsing dataset's labels (images are not read), and the trainer's refusals of labels
it cannot train on: ids outside the class set (``LabelIdError``), unreadable validation files
(``UnreadableDataError``)."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from human_parsing_ros.class_sets import IGNORE_INDEX
from human_parsing_ros.errors import UserError
from training.datasets import ParsingDataset, Sample, read_label
from training.person_labels import PERSON_INDEX
from training.sample_checks import sample_problem


def class_statistics(dataset: ParsingDataset) -> dict[str, Any]:
    """Label statistics of every item of ``dataset``.

    Keys: ``class_set``, ``names``, ``pixels`` (per class), ``images`` (items
    containing the class), ``pixel_fraction`` (of the pixels with a valid
    class id), ``num_images``, ``total_pixels`` (every label pixel),
    ``labelled_pixels`` (valid class ids), ``ignored_pixels`` (255), ``person_pixels`` (254: a person, part
    unknown, ``person_labels.py``) and
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
        "person_pixels": int(pixels[PERSON_INDEX]),
        "out_of_range_pixels": int(pixels[num_classes:].sum() - pixels[IGNORE_INDEX] - pixels[PERSON_INDEX]),
        "out_of_range": out_of_range,
        "skipped": skipped,
    }


class LabelIdError(UserError, ValueError):
    """Label files holding ids that are neither a class of the class set nor the ignore index."""


class UnreadableDataError(UserError, ValueError):
    """A validation file that cannot be read (the message names it): validation never substitutes another
    sample, which would score that one twice."""


def file_problems(dataset: ParsingDataset) -> list[tuple[str, str]]:
    """``(item id, problem)`` for every item of ``dataset`` whose image or labels cannot be read or whose sizes
    differ (``sample_problem``: headers, no full decoding): the trainer's check before its first epoch."""
    found = [(item.id, _problem(part, item)) for part in getattr(dataset, "parts", [dataset]) for item in part.items]
    return [(item_id, problem) for item_id, problem in found if problem]


def _problem(part: ParsingDataset, item: Sample) -> str | None:
    own_check = getattr(part, "sample_problem", None)  # a dataset whose labels are not files has its own check
    return own_check(item) if own_check else sample_problem(item)


def listed(problems: list[tuple[str, str]], limit: int = 5) -> str:
    """The first ``limit`` problems in one line."""
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(problem for _, problem in problems[:limit]) + more


def check_files(train_set: ParsingDataset, val_set: ParsingDataset, val_split: str,
                train_split: str) -> list[str]:
    """Every image and label of both splits readable and of one size, before the first epoch. The training set
    skips what it cannot read (the trainer's loader substitutes the next sample): returned as warning lines. A
    validation set that skips unreadable samples (MHPv2) leaves them out (a warning line); any other refuses
    the run (``UnreadableDataError`` naming the files)."""
    warnings_: list[str] = []
    bad = file_problems(train_set)
    if bad:
        warnings_.append(f"warning: training split '{train_split}': {len(bad)} sample(s) that cannot be read are "
                         f"skipped: {listed(bad)}")
    bad = file_problems(val_set)
    if bad and not val_set.skip_unreadable:
        raise UnreadableDataError(f"validation split '{val_split}': {len(bad)} sample(s) cannot be read: "
                                  f"{listed(bad)}")
    if bad:
        dropped = {item_id for item_id, _ in bad}
        val_set.items = [item for item in val_set.items if item.id not in dropped]
        warnings_.append(f"warning: validation split '{val_split}' leaves out {len(bad)} sample(s) that cannot "
                         f"be read: {listed(bad)}")
    return warnings_


def _bad_ids(counts: np.ndarray, num_classes: int) -> list[int]:
    return [int(v) for v in np.flatnonzero(counts) if v >= num_classes and v not in (IGNORE_INDEX, PERSON_INDEX)]


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
