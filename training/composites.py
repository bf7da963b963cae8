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

A ``SceneStyle`` makes the frames look like the world a robot sees
(issue #32): real people-free photos behind the persons instead of generated
fields, a share of frames with nobody in them (hard negatives: a real room
is not a person), persons from far away (10% of the frame's height) to
close, objects occluding them, and changes of light and clothing colour.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from human_parsing_ros.class_sets import IGNORE_INDEX

HEIGHT_RANGE = (0.45, 0.95)  # a person's height, as a fraction of the frame's
MIN_IN_FRAME = 0.6  # of a person's own pixels inside the frame
MIN_VISIBLE = 0.5  # of an earlier person's pixels still visible after a later one is pasted
ATTEMPTS = 8


@dataclass(frozen=True)
class SceneStyle:
    """What composites hold and how they look; the default is the original recipe (1-4 persons 45-95% of the
    frame's height on generated backgrounds, colours as photographed)."""

    persons: tuple[int, int] = (1, 4)  # [min, max] persons a frame is given (before any is left out)
    backgrounds: tuple[Path, ...] = ()  # real people-free photos, drawn one per frame; empty: generated fields
    height_range: tuple[float, float] = HEIGHT_RANGE  # a person's height over the frame's
    empty_share: float = 0.0  # share of frames with nobody at all
    occluded_share: float = 0.0  # share of persons with an object (a patch of a background photo) in front
    photometric: bool = False  # light (gain, gamma, colour cast) per frame and clothing brightness per person
    clothes: tuple[int, ...] = ()  # the label ids whose brightness ``photometric`` changes


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


def photo_background(rng: np.random.Generator, path: Path, height: int, width: int) -> np.ndarray:
    """uint8 height x width x 3: a random crop of photo ``path`` scaled to cover the frame (up to 1.6 times
    the smallest cover), mirrored half the time."""
    from PIL import Image

    with Image.open(path) as img:
        photo = img.convert("RGB")
    cover = max(height / photo.height, width / photo.width) * rng.uniform(1.0, 1.6)
    size = (max(width, round(photo.width * cover)), max(height, round(photo.height * cover)))
    photo = np.asarray(photo.resize(size, Image.BILINEAR))
    top, left = int(rng.integers(0, size[1] - height + 1)), int(rng.integers(0, size[0] - width + 1))
    crop = photo[top:top + height, left:left + width]
    return np.array(crop[:, ::-1] if rng.random() < 0.5 else crop)  # a writable copy: persons are pasted on it


def _placement(rng: np.random.Generator, person: Person, height: int, width: int,
               height_range: tuple[float, float] = HEIGHT_RANGE) -> tuple[Person, int, int]:
    """The person scaled to a random height, and the frame position (top, left) of its box."""
    scale = rng.uniform(*height_range) * height / person.labels.shape[0]
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
            persons: tuple[int, int] = (1, 4), style: SceneStyle | None = None) -> Composite:
    """One frame of ``size`` (height, width) with ``persons`` [min, max] persons drawn from ``people``
    (person k = the k-th one pasted and kept; ids are consecutive), looking as ``style`` says (its own
    ``persons`` is ``CompositeDataset``'s: this call's wins)."""
    style = style or SceneStyle()
    height, width = int(size[0]), int(size[1])
    if style.backgrounds:
        image = photo_background(rng, style.backgrounds[int(rng.integers(len(style.backgrounds)))], height, width)
    else:
        image = generated_background(rng, height, width)
    labels = np.zeros((height, width), np.uint8)
    person_map = np.zeros((height, width), np.uint8)
    empty = style.empty_share > 0 and rng.random() < style.empty_share  # no draw by default: frames as before
    wanted = 0 if empty else int(rng.integers(persons[0], persons[1] + 1))
    chosen = rng.choice(len(people), size=wanted, replace=len(people) < wanted)
    pasted: list[int] = []  # pixel count of each kept person when it was pasted
    placements: list[Placement] = []
    for index in chosen:
        for _ in range(ATTEMPTS):
            scaled, top, left = _placement(rng, people[int(index)], height, width, style.height_range)
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
            pixels = scaled.image[part]
            if style.photometric and style.clothes:
                pixels = recolour_clothes(rng, pixels, scaled.labels[part], style.clothes)
            image[frame][on] = pixels[on]
            labels[frame][on] = scaled.labels[part][on]
            person_map[frame][on] = len(pasted) + 1
            pasted.append(int(on.sum()))
            placements.append(Placement(scaled.source, top, left, *scaled.labels.shape))
            break
    if style.occluded_share > 0:
        for k in range(1, len(pasted) + 1):
            if rng.random() < style.occluded_share:
                occlude(rng, image, labels, person_map, k, style.backgrounds)
    if style.photometric:
        image = relight(rng, image)
    return Composite(image, labels, person_map, placements)


def occlude(rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, person_map: np.ndarray, k: int,
            backgrounds: Sequence[Path] = ()) -> None:
    """Put an object in front of person ``k`` (in place): a rectangle from the bottom or a side of its box,
    a quarter to a half of it, filled from a background photo (or one colour), labelled background. The
    person keeps at least ``MIN_VISIBLE`` of its pixels (the object is shrunk until it does)."""
    ys, xs = np.nonzero(person_map == k)
    if ys.size == 0:
        return
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    share = rng.uniform(0.25, 0.5)
    side = int(rng.integers(3))  # 0: from below (a table, a sofa back), 1: from the left, 2: from the right
    for _ in range(4):
        if side == 0:
            box = np.s_[y1 - max(1, round((y1 - y0) * share)):y1, x0:x1]
        elif side == 1:
            box = np.s_[y0:y1, x0:x0 + max(1, round((x1 - x0) * share))]
        else:
            box = np.s_[y0:y1, x1 - max(1, round((x1 - x0) * share)):x1]
        if (person_map[box] == k).sum() <= (1 - MIN_VISIBLE) * ys.size:
            break
        share /= 2
    else:
        return
    h, w = person_map[box].shape
    if backgrounds:
        image[box] = photo_background(rng, backgrounds[int(rng.integers(len(backgrounds)))], h, w)
    else:
        image[box] = rng.uniform(20, 235, size=3).astype(np.uint8)
    labels[box], person_map[box] = 0, 0


def recolour_clothes(rng: np.random.Generator, pixels: np.ndarray, labels: np.ndarray,
                     clothes: Sequence[int]) -> np.ndarray:
    """``pixels`` with the clothing (``labels`` in ``clothes``) made brighter or darker, towards white or
    black clothing, half the time; the texture stays (a gain and an offset, not a fill)."""
    if rng.random() < 0.5:
        return pixels
    on = np.isin(labels, clothes)
    out = pixels.astype(np.float32)
    if rng.random() < 0.5:  # towards white
        out[on] = 255 - (255 - out[on]) * rng.uniform(0.1, 0.4)
    else:  # towards black
        out[on] = out[on] * rng.uniform(0.15, 0.45)
    return np.clip(out, 0, 255).astype(np.uint8)


def relight(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """The whole frame under other light: a gain, a gamma and a warm or cold cast (indoor lamps, a window)."""
    out = image.astype(np.float32) / 255.0
    out = out ** rng.uniform(0.7, 1.4) * rng.uniform(0.6, 1.3) * rng.uniform(0.88, 1.12, size=3)
    return np.clip(out * 255.0, 0, 255).astype(np.uint8)
