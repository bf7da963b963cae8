"""The trainer's check of a split before its first epoch: every image and label readable and of one size,
read through their headers (a JPEG at 1/8 scale) rather than decoded at full size."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from human_parsing_ros.errors import one_line
from training.datasets import Sample, read_label


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of image ``path``, its whole file read through without decoding it at full size (a JPEG
    at 1/8 scale, which still reads every byte; other formats' chunks verified) so that a truncated or corrupt
    file is found; OSError naming the file otherwise."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.format == "JPEG":
                img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                img.load()
            else:
                img.verify()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found") from None
    except Exception as error:  # PIL raises many types for a broken file; name the file in every one
        raise OSError(f"{path}: unreadable image ({one_line(error)})") from None
    return height, width


def label_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of label file ``path``: a PNG's header (chunks verified), a CCP ``.mat`` read whole."""
    path = Path(path)
    if path.suffix.lower() == ".mat":
        return tuple(read_label(path).shape[:2])
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
            img.verify()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: label file not found") from None
    except Exception as error:
        raise OSError(f"{path}: unreadable label ({one_line(error)})") from None
    return height, width


def sample_problem(item: Sample) -> str | None:
    """What keeps ``item`` from loading, naming the file (unreadable image or label, sizes that differ), or
    None; headers only where the format allows (``image_size``, ``label_size``)."""
    try:
        size = image_size(item.image)
        if not item.labels:
            return f"{item.image}: no label file"
        for path in item.labels:
            found = label_size(path)
            if found != size:
                return f"{item.image}: image is {size[0]}x{size[1]}, label {path} is {found[0]}x{found[1]}"
    except (OSError, ValueError) as error:
        return str(error)
    return None


def instance_sample_problem(item: Any) -> str | None:
    """``sample_problem`` for a multi-person sample, whose person map (``item.humans``, CIHP) must also be
    readable and of the image's size."""
    problem = sample_problem(item)
    if problem or getattr(item, "humans", None) is None:
        return problem
    try:
        size, found = image_size(item.image), label_size(item.humans)
    except (OSError, ValueError) as error:
        return str(error)
    if found != size:
        return f"{item.image}: image is {size[0]}x{size[1]}, person map {item.humans} is {found[0]}x{found[1]}"
    return None
