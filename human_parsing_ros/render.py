"""Pictures of a label map: palette colours, a blend over the input, and the resize that lines them up."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """H x W class ids -> H x W x 3 uint8 palette colours."""
    return palette[labels]


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float,
            background: int = 0) -> np.ndarray:
    """Blend palette colours over ``image`` with weight ``alpha``; background pixels stay as they are."""
    out = image.copy()
    fg = labels != background
    if alpha > 0 and fg.any():
        mixed = image[fg].astype(np.float32) * (1.0 - alpha) + palette[labels[fg]].astype(np.float32) * alpha
        out[fg] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
    return out


def resize_nearest(image: np.ndarray, height_width: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an H x W (x C) array to ``height_width``.

    Output pixel (y, x) takes source pixel (y * H // height, x * W // width), so
    every source pixel value is kept exactly (used to bring the input to the
    label map's size for ``overlay``).
    """
    height, width = height_width
    if height < 1 or width < 1:
        raise ValueError(f"resize target must be at least 1 x 1, not {height} x {width}")
    rows = np.arange(height) * image.shape[0] // height
    cols = np.arange(width) * image.shape[1] // width
    return image[rows][:, cols]


def with_legend(picture: np.ndarray, labels: np.ndarray, names: Sequence[str], palette: np.ndarray,
                background: int = 0) -> np.ndarray:
    """``picture`` with a legend strip on its right: a swatch and the name of every class in ``labels``
    (background excluded), most pixels first."""
    from PIL import Image, ImageDraw, ImageFont

    counts = np.bincount(labels.ravel(), minlength=len(names))
    present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0 and c != background]
    font = ImageFont.load_default()
    row = 16
    width = 12 + max([int(font.getlength(names[c])) for c in present] + [60]) + 8 + 14
    strip = Image.new("RGB", (width, max(picture.shape[0], row * (len(present) + 1))), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    draw.text((6, 3), "classes" if present else "no classes", fill=(0, 0, 0), font=font)
    for line, class_id in enumerate(present, start=1):
        top = line * row + 2
        draw.rectangle((6, top, 18, top + 11), fill=tuple(int(v) for v in palette[class_id]), outline=(0, 0, 0))
        draw.text((24, top), names[class_id], fill=(0, 0, 0), font=font)
    out = np.full((strip.height, picture.shape[1] + width, 3), 255, dtype=np.uint8)
    out[:picture.shape[0], :picture.shape[1]] = picture
    out[:, picture.shape[1]:] = np.asarray(strip)
    return out


def contact_sheet(pictures: Sequence[np.ndarray], columns: int = 3, height: int = 360) -> np.ndarray:
    """The ``pictures`` scaled to ``height`` rows each and tiled, ``columns`` to a row, on white."""
    if not pictures:
        raise ValueError("a contact sheet needs at least one picture")
    scaled = [resize_nearest(p, (height, max(1, round(p.shape[1] * height / p.shape[0])))) for p in pictures]
    cell = max(p.shape[1] for p in scaled)
    rows = -(-len(scaled) // columns)
    sheet = np.full((rows * height, min(columns, len(scaled)) * cell, 3), 255, dtype=np.uint8)
    for index, picture in enumerate(scaled):
        top, left = (index // columns) * height, (index % columns) * cell
        sheet[top:top + height, left:left + picture.shape[1]] = picture
    return sheet


# Distinct, saturated outline colours for persons, picked by id (so a person keeps its colour across frames).
PERSON_COLOURS = ((255, 59, 48), (0, 122, 255), (255, 204, 0), (52, 199, 89), (175, 82, 222), (255, 149, 0),
                  (90, 200, 250), (255, 45, 85))


def person_colour(person_id: int) -> tuple[int, int, int]:
    return PERSON_COLOURS[(int(person_id) - 1) % len(PERSON_COLOURS)]


def outline_persons(picture: np.ndarray, instances: np.ndarray,
                    persons: Sequence[tuple[int, int, tuple[int, int, int, int]]]) -> np.ndarray:
    """``picture`` with each person, given as (its value in ``instances``, its id, its box), outlined in its
    id's colour (2 px along the edge of its mask) and labelled ``#id`` above its box."""
    from PIL import Image, ImageDraw, ImageFont

    if picture.shape[:2] != instances.shape:
        raise ValueError(f"picture is {picture.shape[:2]}, instances {instances.shape}")
    out = picture.copy()
    for instance, person_id, _ in persons:
        mask = instances == instance
        inner = mask.copy()
        inner[1:] &= mask[:-1]
        inner[:-1] &= mask[1:]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        edge = mask & ~inner
        edge[1:] |= edge[:-1]  # two pixels wide
        edge[:, 1:] |= edge[:, :-1]
        out[edge & mask] = person_colour(person_id)
    image = Image.fromarray(out)
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    for _, person_id, (x_min, y_min, _, _) in persons:
        text = f"#{person_id}"
        top = max(0, y_min - 13)
        draw.rectangle((x_min, top, x_min + int(font.getlength(text)) + 6, top + 12), fill=person_colour(person_id))
        draw.text((x_min + 3, top), text, fill=(0, 0, 0), font=font)
    return np.asarray(image)
