"""Multi-person frames composed from single-person photos, with who-is-who known by construction.

A CCP photo annotates one person: its non-null pixels. Everything else in
the photo, passers-by included, is unlabelled, so no part of a photo outside
its annotation is ever used: each person is cut out along its annotation and
pasted onto a generated background (smooth colour fields, a floor, a few
flat shapes). No unlabelled person can therefore appear in a composite.

Persons are pasted one over another (the later one in front). A placement is
kept only if the new person shows at least ``MIN_IN_FRAME`` of itself inside
the frame and leaves every earlier person at least ``MIN_VISIBLE`` of the
pixels it had; otherwise another placement is drawn, and after
``ATTEMPTS`` failures that person is left out. Every choice comes from one
numpy generator, so a frame is a function of its seed.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from human_parsing_ros.class_sets import IGNORE_INDEX

HEIGHT_RANGE = (0.45, 0.95)  # a person's height, as a fraction of the frame's
MIN_IN_FRAME = 0.6  # of a person's own pixels inside the frame
MIN_VISIBLE = 0.5  # of an earlier person's pixels still visible after a later one is pasted
ATTEMPTS = 8


@dataclass(frozen=True)
class Placement:
    """Where one kept person went: its source photo, the top-left corner of its scaled box, its scaled size."""

    source: str
    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class Composite:
    image: np.ndarray  # uint8 H x W x 3
    labels: np.ndarray  # uint8 H x W, class ids
    persons: np.ndarray  # uint8 H x W: 0 = nobody, k = placements[k - 1]
    placements: list[Placement]


@dataclass(frozen=True)
class Person:
    """One annotated person, cut to its box: RGB pixels, class ids (0 outside the person)."""

    image: np.ndarray  # uint8 h x w x 3
    labels: np.ndarray  # uint8 h x w
    source: str  # the photo it came from

    @property
    def mask(self) -> np.ndarray:
        return (self.labels != 0) & (self.labels != IGNORE_INDEX)


def cut_person(image: np.ndarray, labels: np.ndarray, source: str) -> Person:
    """The annotated person of a single-person photo, cut to the box of its labelled pixels."""
    on = (labels != 0) & (labels != IGNORE_INDEX)
    if not on.any():
        raise ValueError(f"{source}: no annotated person to cut out")
    ys, xs = np.nonzero(on)
    box = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    part_labels = np.where(on[box], labels[box], 0).astype(np.uint8)
    return Person(np.ascontiguousarray(image[box]), part_labels, source)


def generated_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """uint8 height x width x 3: a smooth colour field, a floor below a horizon, flat shapes, fine noise."""
    from PIL import Image

    cells = int(rng.integers(2, 9))
    coarse = rng.uniform(30, 225, size=(cells, cells, 3)).astype(np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR), dtype=np.float32)
    horizon = int(rng.uniform(0.55, 0.85) * height)
    field[horizon:] = 0.35 * field[horizon:] + 0.65 * rng.uniform(40, 200, size=3)
    for _ in range(int(rng.integers(0, 6))):
        y0, x0 = int(rng.integers(0, height)), int(rng.integers(0, width))
        h, w = int(rng.integers(height // 10, height // 2)), int(rng.integers(width // 10, width // 3))
        field[y0:y0 + h, x0:x0 + w] = rng.uniform(20, 235, size=3)
    field += rng.normal(0.0, 5.0, size=field.shape)
    return np.clip(field, 0, 255).astype(np.uint8)


def scaled_person(person: Person, scale: float) -> Person:
    from PIL import Image

    h, w = person.labels.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = np.asarray(Image.fromarray(person.image).resize(size, Image.BILINEAR))
    labels = np.asarray(Image.fromarray(person.labels).resize(size, Image.NEAREST))
    return Person(image, labels, person.source)


def _placement(rng: np.random.Generator, person: Person, height: int, width: int) -> tuple[Person, int, int]:
    """The person scaled to a random height, and the frame position (top, left) of its box."""
    scale = rng.uniform(*HEIGHT_RANGE) * height / person.labels.shape[0]
    scaled = scaled_person(person, scale)
    h, w = scaled.labels.shape
    left = int(rng.integers(-w // 5, max(-w // 5 + 1, width - 4 * w // 5)))
    bottom = int(rng.uniform(0.75, 1.1) * height)
    return scaled, bottom - h, left


def _frame_window(top: int, left: int, shape: tuple[int, int], height: int, width: int):
    """(frame slice, person slice) of a box at (top, left) clipped to the frame, or None if outside."""
    h, w = shape
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + h, height), min(left + w, width)
    if y0 >= y1 or x0 >= x1:
        return None
    return np.s_[y0:y1, x0:x1], np.s_[y0 - top:y1 - top, x0 - left:x1 - left]


def compose(people: Sequence[Person], rng: np.random.Generator, size: tuple[int, int],
            persons: tuple[int, int] = (1, 4)) -> Composite:
    """One frame of ``size`` (height, width) with ``persons`` [min, max] persons drawn from ``people``
    (person k = the k-th one pasted and kept; ids are consecutive)."""
    height, width = int(size[0]), int(size[1])
    image = generated_background(rng, height, width)
    labels = np.zeros((height, width), np.uint8)
    person_map = np.zeros((height, width), np.uint8)
    wanted = int(rng.integers(persons[0], persons[1] + 1))
    chosen = rng.choice(len(people), size=wanted, replace=len(people) < wanted)
    pasted: list[int] = []  # pixel count of each kept person when it was pasted
    placements: list[Placement] = []
    for index in chosen:
        for _ in range(ATTEMPTS):
            scaled, top, left = _placement(rng, people[int(index)], height, width)
            window = _frame_window(top, left, scaled.labels.shape, height, width)
            if window is None:
                continue
            frame, part = window
            on = scaled.mask[part]
            if on.sum() < MIN_IN_FRAME * scaled.mask.sum():
                continue
            covered = np.bincount(person_map[frame][on], minlength=len(pasted) + 1)[1:]
            remaining = np.bincount(person_map.ravel(), minlength=len(pasted) + 1)[1:] - covered
            if any(left_over < MIN_VISIBLE * total for left_over, total in zip(remaining, pasted)):
                continue
            image[frame][on] = scaled.image[part][on]
            labels[frame][on] = scaled.labels[part][on]
            person_map[frame][on] = len(pasted) + 1
            pasted.append(int(on.sum()))
            placements.append(Placement(scaled.source, top, left, *scaled.labels.shape))
            break
    return Composite(image, labels, person_map, placements)
