"""Pictures of a label map: palette colours, a blend over the input, and the resize that lines them up."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Legend:
    """What a legend lists: (name, colour) per class, in the order drawn."""

    entries: tuple[tuple[str, tuple[int, int, int]], ...]

    @classmethod
    def of(cls, labels: np.ndarray, names: Sequence[str], palette: np.ndarray, background: int = 0) -> Legend:
        """Every class in ``labels`` but ``background``, most pixels first."""
        counts = np.bincount(labels.ravel(), minlength=len(names))
        present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0 and c != background]
        return cls(tuple((names[c], tuple(int(v) for v in palette[c])) for c in present))


def legend_font_size(height: int) -> int:
    """The legend's font size (pixels) beside a picture ``height`` rows high: readable when the two are shown at
    that height (one twenty-second of it, 16 px beside a contact sheet's 360-row cells), never below 11."""
    return max(11, round(height / 22))


def _font(size: int):
    """Pillow's default font at ``size`` pixels and the factor to enlarge what it draws: (font, 1) where
    Pillow can scale it (FreeType, Pillow >= 10.1), else the 11-pixel bitmap font and the enlargement that
    brings it near ``size``."""
    from PIL import ImageFont, features

    if features.check("freetype2"):
        try:
            return ImageFont.load_default(size=size), 1
        except TypeError:  # Pillow < 10.1: no sizes
            pass
    return ImageFont.load_default(), max(1, round(size / 11))


def render_legend(legend: Legend, height: int, font_size: int | None = None) -> np.ndarray:
    """A white strip exactly ``height`` rows high: "classes", then a swatch and the name of every entry, in as
    many columns as needed to fit; text ``font_size`` pixels high (default ``legend_font_size(height)``)."""
    from PIL import Image, ImageDraw

    size = font_size or legend_font_size(height)
    font, scale = _font(size)
    size = max(1, size // scale)  # the layout is drawn at 1 / scale and enlarged
    rows_high = max(1, height // scale)
    row, pad = size + max(3, size // 3), max(3, size // 3)
    per_column = max(1, (rows_high - pad - row) // row)
    names = [name for name, _ in legend.entries]
    column_width = pad + size + pad + max([int(font.getlength(n)) for n in names] + [int(font.getlength("classes"))])
    columns = max(1, -(-len(names) // per_column))
    strip = Image.new("RGB", (columns * column_width + 2 * pad, rows_high), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    draw.text((pad, pad), "classes" if names else "no classes", fill=(0, 0, 0), font=font)
    for index, (name, colour) in enumerate(legend.entries):
        left = pad + (index // per_column) * column_width
        top = pad + row * (1 + index % per_column)
        draw.rectangle((left, top + 1, left + size - 2, top + size - 1), fill=colour, outline=(0, 0, 0))
        draw.text((left + size + pad, top), name, fill=(0, 0, 0), font=font)
    out = np.asarray(strip)
    if scale > 1:
        out = resize_nearest(out, (height, out.shape[1] * scale))
    return out


def with_legend(picture: np.ndarray, labels: np.ndarray, names: Sequence[str], palette: np.ndarray,
                background: int = 0, font_size: int | None = None) -> np.ndarray:
    """``picture`` with a legend strip on its right, as high as the picture: a swatch and the name of every class
    in ``labels`` (background excluded), most pixels first; text sized for the picture's height."""
    strip = render_legend(Legend.of(labels, names, palette, background), picture.shape[0], font_size)
    return np.concatenate([picture, strip], axis=1)


def contact_sheet(pictures: Sequence[np.ndarray], columns: int = 3, height: int = 360,
                  legends: Sequence[Legend | None] | None = None, font_size: int | None = None) -> np.ndarray:
    """The ``pictures`` scaled to ``height`` rows each and tiled, ``columns`` to a row, on white.

    ``legends`` (one per picture, None for none) are drawn after the scaling, beside their picture, with text
    ``font_size`` pixels high (default ``legend_font_size(height)``): as readable as the sheet allows, whatever
    the pictures' own size.
    """
    if not pictures:
        raise ValueError("a contact sheet needs at least one picture")
    if legends is not None and len(legends) != len(pictures):
        raise ValueError(f"{len(legends)} legends for {len(pictures)} pictures")
    scaled = [resize_nearest(p, (height, max(1, round(p.shape[1] * height / p.shape[0])))) for p in pictures]
    if legends is not None:
        scaled = [picture if legend is None else np.concatenate([picture, render_legend(legend, height, font_size)],
                                                                axis=1)
                  for picture, legend in zip(scaled, legends)]
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
