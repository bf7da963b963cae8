"""The sample frames installed with the package (CCP photos, Apache-2.0; see data/ccp/NOTICE.md)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .resources import SAMPLES


def sample_photos() -> list[Path]:
    return sorted((SAMPLES / "photos").glob("*.jpg"))


def load_rgb(path: str | Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def load_annotation(photo: str | Path) -> np.ndarray:
    """Ground truth (uint8 H x W, ccp ids) of a sample photo."""
    from scipy.io import loadmat

    return loadmat(SAMPLES / "annotations" / f"{Path(photo).stem}.mat")["groundtruth"].astype(np.uint8)
