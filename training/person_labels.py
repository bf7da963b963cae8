"""Real photos whose persons are known but not their parts: partial labels for a parsing network.

COCO-style person masks (``training/scene_set.py``) say where every person of a real photo is, never
which part a pixel is. As a ``dataset.extra`` entry of a DTPR recipe:

    dataset:
      extra:
        - {name: coco_persons, root: data/real_scenes/validation, options: {repeat: 2}}

each photo's label map holds ``PERSON_INDEX`` (254) under a person's mask, ignore (255) under a COCO crowd
region and background (0) everywhere else (COCO annotates every person of a photo, so the rest is known to
be nobody). The loss reads 254 as "some part, which one unknown": -log(1 - p_background), the probability
that the pixel is any part (``person_loss``), and 254 stays out of every per-class term, the training
confusion and the label statistics. This is how persons at a robot's distance, sitting, lying and cut
off by the frame reach the default network at all: CCP's part labels only show one large standing person.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from human_parsing_ros.class_sets import IGNORE_INDEX, ClassSet
from training.datasets import DatasetError, ParsingDataset, Sample, read_image
from training.sample_checks import image_size
from training.scene_set import ScenePhoto, load_scene_set, person_mask

PERSON_INDEX = 254  # a pixel of some person, part unknown (training labels only)
COCO_PERSONS_OPTIONS = ("repeat",)


def person_label(photo: ScenePhoto) -> np.ndarray:
    """``photo``'s label map, uint8 H x W: 254 on its persons, 255 on crowd regions, 0 elsewhere."""
    label = np.zeros((photo.height, photo.width), dtype=np.uint8)
    for x0, y0, x1, y1 in photo.crowds:
        label[max(0, int(y0)):int(np.ceil(y1)), max(0, int(x0)):int(np.ceil(x1))] = IGNORE_INDEX
    for person in photo.persons:
        label[person_mask(person, photo.height, photo.width)] = PERSON_INDEX
    return label


class CocoPersons(ParsingDataset):
    """The photos of a COCO-style scene folder with ``person_label`` maps, each listed ``repeat`` times."""

    def __init__(self, photos: list[ScenePhoto], class_set: ClassSet, repeat: int = 1) -> None:
        items = [Sample(photo.image, (), photo.image.stem) for photo in photos for _ in range(repeat)]
        super().__init__(items, class_set)
        self.photos = [photo for photo in photos for _ in range(repeat)]

    def load_label(self, index: int) -> np.ndarray:
        return person_label(self.photos[index])

    def sample_problem(self, item: Sample) -> str | None:
        """What keeps ``item`` from loading (its labels are its annotation, not a file): an unreadable photo or
        one of another size than annotated; None when it loads."""
        photo = self.photos[self.items.index(item)]
        try:
            size = image_size(photo.image)
        except (OSError, ValueError) as error:
            return str(error)
        if size != (photo.height, photo.width):
            return f"{photo.image}: image is {size[0]}x{size[1]}, its annotation says {photo.height}x{photo.width}"
        return None

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        photo = self.photos[index]
        image = read_image(photo.image)
        if image.shape[:2] != (photo.height, photo.width):
            raise ValueError(f"{photo.image}: image is {image.shape[0]}x{image.shape[1]}, its annotation says "
                             f"{photo.height}x{photo.width}")
        return image, person_label(photo)


def coco_persons(root: str | Path, class_set: ClassSet, options: dict[str, Any]) -> CocoPersons:
    """The ``coco_persons`` extra dataset: every photo under ``root`` (``root/annotations.json``)."""
    unknown = sorted(set(options) - set(COCO_PERSONS_OPTIONS))
    if unknown:
        raise DatasetError(f"coco_persons: unknown option(s) {', '.join(unknown)} "
                           f"(known: {', '.join(COCO_PERSONS_OPTIONS)})")
    if class_set.background != 0:  # the labels and person_loss write and read background as class 0
        raise DatasetError(f"coco_persons: class set {class_set.name} has background {class_set.background}, not 0")
    repeat = options.get("repeat", 1)
    if not isinstance(repeat, int) or repeat < 1:
        raise DatasetError(f"coco_persons: repeat must be a positive integer, not {repeat!r}")
    return CocoPersons(load_scene_set(root), class_set, repeat)


def split_person_labels(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(``target`` with its person-only pixels ignored, the bool map of those pixels)."""
    person = target == PERSON_INDEX
    return target.masked_fill(person, IGNORE_INDEX), person


def person_loss(logits: torch.Tensor, person: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """-log(1 - p_background) summed over the ``person`` pixels, divided by the pixels with any label
    (``labelled`` part/background pixels plus the person pixels): a person pixel then weighs as much as a
    pixel of the cross-entropy's mean. Class 0 is background. No person pixel gives a connected zero."""
    log_any_part = torch.logsumexp(logits[:, 1:], dim=1) - torch.logsumexp(logits, dim=1)
    count = (labelled.sum() + person.sum()).clamp(min=1)
    return torch.where(person, -log_any_part, 0).sum() / count
