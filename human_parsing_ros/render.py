"""Pictures of a label map: palette colours and a blend over the input."""
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
