"""Pictures of a label map: palette colours, a blend over the input, and the resize that lines them up."""
from __future__ import annotations

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
