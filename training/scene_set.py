"""A folder of real photos with COCO-style person annotations: the real-scene evaluation's input.

Layout: ``ROOT/images/*.jpg`` and ``ROOT/annotations.json`` (COCO instances format: ``images``,
``annotations`` with ``bbox`` [x, y, w, h], ``segmentation`` polygons or RLE, ``iscrowd``, and a
``person`` category). A photo listed in ``images`` with no person annotation is a people-free photo.
Crowd regions (``iscrowd: 1``) are neither persons to find nor false detections (COCO's convention).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from human_parsing_ros.errors import UserError


class SceneSetError(UserError, ValueError):
    """A scene folder or annotation file that cannot be read; the message names it."""


@dataclass
class ScenePerson:
    box: tuple[float, float, float, float]  # x_min, y_min, x_max, y_max (pixels, exclusive max)
    segmentation: Any = None  # COCO polygons or RLE; None: box only


@dataclass
class ScenePhoto:
    image: Path
    height: int
    width: int
    persons: list[ScenePerson] = field(default_factory=list)
    crowds: list[tuple[float, float, float, float]] = field(default_factory=list)

    @property
    def people_free(self) -> bool:
        return not self.persons and not self.crowds


def load_scene_set(root: str | Path, annotations: str | Path | None = None) -> list[ScenePhoto]:
    """Every photo of ``root/annotations.json`` (or ``annotations``) with its persons, in file-name order."""
    root = Path(root).expanduser()
    path = Path(annotations) if annotations else root / "annotations.json"
    if not path.is_file():
        raise SceneSetError(f"{path}: annotation file not found (build the set: docs/real_scenes.md)")
    try:
        coco = json.loads(path.read_text())
        person_ids = {c["id"] for c in coco["categories"] if c["name"] == "person"}
        photos = {img["id"]: ScenePhoto(root / "images" / img["file_name"], int(img["height"]), int(img["width"]))
                  for img in coco["images"]}
        for ann in coco["annotations"]:
            if ann["category_id"] not in person_ids:
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            photo = photos[ann["image_id"]]
            if ann.get("iscrowd", 0):
                photo.crowds.append((x, y, x + w, y + h))
            else:
                photo.persons.append(ScenePerson((x, y, x + w, y + h), ann.get("segmentation")))
    except (ValueError, KeyError, TypeError) as error:
        raise SceneSetError(f"{path}: not a COCO instances file ({type(error).__name__}: {error})") from None
    if not person_ids:
        raise SceneSetError(f"{path}: no 'person' category")
    missing = [str(p.image) for p in photos.values() if not p.image.is_file()]
    if missing:
        raise SceneSetError(f"{root / 'images'}: {len(missing)} listed photo(s) missing, e.g. {missing[0]}")
    return sorted(photos.values(), key=lambda p: p.image.name)


def person_mask(person: ScenePerson, height: int, width: int) -> np.ndarray:
    """The person's pixels, H x W bool: its polygons or RLE; its box when it has no segmentation."""
    seg = person.segmentation
    if isinstance(seg, dict):
        return rle_mask(seg, height, width)
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if isinstance(seg, list) and seg:
        for polygon in seg:
            if len(polygon) >= 6:
                draw.polygon([(float(x), float(y)) for x, y in zip(polygon[::2], polygon[1::2])], fill=1)
    else:
        x0, y0, x1, y1 = person.box
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=1)
    return np.asarray(canvas, dtype=bool)


def rle_mask(rle: dict[str, Any], height: int, width: int) -> np.ndarray:
    """A COCO run-length mask (counts as a list, or as COCO's compressed string), H x W bool."""
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = decode_rle_string(counts)
    flat = np.zeros(height * width, dtype=bool)
    position, value = 0, False
    for run in counts:
        if value:
            flat[position:position + run] = True
        position += run
        value = not value
    return flat.reshape(width, height).T  # COCO runs go down the columns


def decode_rle_string(text: str) -> list[int]:
    """COCO's compressed counts: characters offset by 48 carry 5 bits each and a continuation bit, the last
    one sign-extends, and from the fourth count on each is a difference to the count two before."""
    counts: list[int] = []
    i = 0
    while i < len(text):
        value, shift, more = 0, 0, True
        while more:
            chunk = ord(text[i]) - 48
            value |= (chunk & 0x1F) << (5 * shift)
            more = bool(chunk & 0x20)
            i += 1
            shift += 1
            if not more and chunk & 0x10:
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts
