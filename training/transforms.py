"""Training and evaluation transforms: (uint8 image, uint8 label) -> (normalised tensor, int64 ids).

``TrainTransform`` does scale, rotation, crop (with padding) and flip in one
resampling pass: every output pixel is mapped back to the source image
through one affine map and sampled there (bilinear for the image, nearest for
the label), so the work is proportional to the crop, not to the scaled image.
Pixels that fall outside the source image get the mean colour (exactly 0
after normalisation) and the ignore label 255. Colour jitter then acts on the
crop's image pixels only.

All random numbers come from one ``torch.rand`` call on the given generator
(torch's global generator when None), a fixed count per call, so a run is
reproducible and resumable bit-exactly.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from human_parsing_ros.class_sets import IGNORE_INDEX
from human_parsing_ros.weights import IMAGENET_MEAN, IMAGENET_STD

_GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's colour jitter uses


@dataclass(frozen=True)
class _Draw:
    """The random choices of one TrainTransform call."""

    scale: float
    angle: float  # degrees
    flip: bool
    brightness: float
    contrast: float
    saturation: float
    top_fraction: float  # where the crop sits, in [0, 1)
    left_fraction: float


class TrainTransform:
    """Random scale, rotation, crop to ``crop_size`` (height, width), flip and colour jitter.

    The image is scaled by s in ``scale_range`` (rounded pixel size), rotated
    about its centre by up to ``max_rotation`` degrees on a canvas of the same
    size, and cut to ``crop_size`` at a random place; where the canvas is
    smaller than the crop it lands at a random place inside the padded crop.
    A flip (probability 0.5) mirrors the crop and maps label ids through
    ``flip_permutation`` (255 and ids beyond it stay as they are).
    """

    def __init__(self, crop_size: tuple[int, int] = (400, 400), scale_range: tuple[float, float] = (0.5, 2.0),
                 max_rotation: float = 10.0, flip_permutation: list[int] | None = None, jitter: float = 0.2,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be 0 < low <= high, not {scale_range}")
        self.max_rotation = float(max_rotation)
        self.jitter = float(jitter)
        self.flip_lut = flip_lookup(flip_permutation)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: np.ndarray, label: np.ndarray,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check_pair(image, label)
        draw = self.draw(generator)
        grid = self.sampling_grid(image.shape[:2], draw)
        inside = source_coverage(grid, image.shape[:2])
        centred = to_float_image(image).sub_(self.mean)  # zero padding = the mean colour
        x = F.grid_sample(centred[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        if self.jitter > 0:
            x = colour_jitter(x.add_(self.mean), draw.brightness, draw.contrast, draw.saturation, inside)
            x = x.sub_(self.mean)
        x = torch.where(inside, x.div_(self.std), 0.0)
        y = sample_label(label, grid)
        if draw.flip:
            y = self.flip_lut[y]
        return x.contiguous(), y

    def draw(self, generator: torch.Generator | None = None) -> _Draw:
        """The random choices of one call: always 8 uniform numbers from ``generator``."""
        uniform = torch.rand(8, generator=generator, dtype=torch.float64).tolist()
        low, high = self.scale_range
        jitter = self.jitter
        return _Draw(scale=low + uniform[0] * (high - low), angle=(2 * uniform[1] - 1) * self.max_rotation,
                     flip=uniform[2] < 0.5, brightness=1 + jitter * (2 * uniform[3] - 1),
                     contrast=1 + jitter * (2 * uniform[4] - 1), saturation=1 + jitter * (2 * uniform[5] - 1),
                     top_fraction=uniform[6], left_fraction=uniform[7])

    def sampling_grid(self, image_hw: tuple[int, int], draw: _Draw) -> torch.Tensor:
        """1 x crop_h x crop_w x 2 grid_sample coordinates of the output pixels in the source image."""
        crop_h, crop_w = self.crop_size
        scaled_h = max(1, round(image_hw[0] * draw.scale))
        scaled_w = max(1, round(image_hw[1] * draw.scale))
        top = _offset(scaled_h, crop_h, draw.top_fraction)
        left = _offset(scaled_w, crop_w, draw.left_fraction)
        cols = torch.arange(crop_w, dtype=torch.float64)
        if draw.flip:
            cols = cols.flip(0)
        # Output pixel centres in the scaled, rotated canvas, relative to its centre.
        dx = (cols + left - (scaled_w - 1) / 2)[None, :]
        dy = (torch.arange(crop_h, dtype=torch.float64) + top - (scaled_h - 1) / 2)[:, None]
        cos, sin = math.cos(math.radians(draw.angle)), math.sin(math.radians(draw.angle))
        # Undo the rotation, then go to normalised source coordinates (align_corners=False).
        x = (cos * dx + sin * dy + scaled_w / 2) * (2 / scaled_w) - 1
        y = (-sin * dx + cos * dy + scaled_h / 2) * (2 / scaled_h) - 1
        return torch.stack([x, y], dim=-1)[None].float()


class EvalTransform:
    """No randomness: optional resize of the image to ``size`` (height, width), then normalisation.

    ``resize_labels``: the labels are resized too (nearest; fast, batches of equal sizes), else they
    stay at the image's own resolution, where papers report (``engine.evaluate`` upsamples the logits).
    """

    def __init__(self, size: tuple[int, int] | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, resize_labels: bool = True) -> None:
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.resize_labels = bool(resize_labels)

    def __call__(self, image: np.ndarray, label: np.ndarray,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check_pair(image, label)
        x = to_float_image(image)
        y = torch.from_numpy(_writable(label)).long()
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            # Antialiased bilinear, as the node resizes its input.
            x = F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False, antialias=True)[0]
            if self.resize_labels:
                y = F.interpolate(y[None, None].float(), size=self.size, mode="nearest-exact")[0, 0].long()
        return ((x - self.mean) / self.std).contiguous(), y


def flip_lookup(permutation: Sequence[int] | None) -> torch.Tensor:
    """256-entry id table for mirrored labels: ``permutation`` on its ids, identity elsewhere (255 too)."""
    table = torch.arange(256, dtype=torch.int64)
    if permutation is not None:
        perm = torch.as_tensor(list(permutation), dtype=torch.int64)
        if perm.numel() > IGNORE_INDEX or sorted(perm.tolist()) != list(range(perm.numel())):
            raise ValueError("flip_permutation must be a permutation of 0..n-1 with n < 256")
        table[: perm.numel()] = perm
    return table


def to_float_image(image: np.ndarray) -> torch.Tensor:
    """uint8 H x W x 3 -> float32 3 x H x W in [0, 1]."""
    return torch.from_numpy(_writable(image)).permute(2, 0, 1).contiguous().float().div_(255.0)


def colour_jitter(x: torch.Tensor, brightness: float, contrast: float, saturation: float,
                  inside: torch.Tensor | None = None) -> torch.Tensor:
    """Brightness, contrast (about the mean grey of the ``inside`` pixels), saturation (about each
    pixel's grey) on a 3 x H x W image in [0, 1], clamped to [0, 1] after each step."""
    weights = torch.tensor(_GREY, dtype=x.dtype).view(3, 1, 1)
    x = x.mul_(brightness).clamp_(0, 1)
    grey = (x * weights).sum(0)
    mean_grey = grey[inside] if inside is not None else grey
    mean_grey = mean_grey.mean() if mean_grey.numel() else grey.new_tensor(0.5)
    x = x.sub_(mean_grey).mul_(contrast).add_(mean_grey).clamp_(0, 1)
    grey = (x * weights).sum(0, keepdim=True)
    return x.sub_(grey).mul_(saturation).add_(grey).clamp_(0, 1)


def source_coverage(grid: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """H x W bool: output pixels that bilinear sampling at ``grid`` draws at least partly from the image."""
    height, width = image_hw
    gx, gy = grid[0, ..., 0], grid[0, ..., 1]
    return (gx > -1 - 1 / width) & (gx < 1 + 1 / width) & (gy > -1 - 1 / height) & (gy < 1 + 1 / height)


def sample_label(label: np.ndarray, grid: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour label at ``grid``; outside the source image -> 255."""
    shifted = torch.from_numpy(_writable(label)).float().add_(1)[None, None]  # 0 = outside
    y = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)[0, 0]
    y = y.long().sub_(1)
    y[y < 0] = IGNORE_INDEX
    return y


def _writable(array: np.ndarray) -> np.ndarray:
    """A C-contiguous writable view or copy (arrays from PIL are read-only; torch warns on those)."""
    return array if array.flags.writeable and array.flags.c_contiguous else np.array(array, order="C")


def _offset(size: int, crop: int, fraction: float) -> int:
    """Crop start in a canvas of ``size``; negative when the canvas is smaller (padding before it)."""
    low, high = min(0, size - crop), max(0, size - crop)
    return low + min(int(fraction * (high - low + 1)), high - low)


def _check_pair(image: np.ndarray, label: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 H x W x 3, not {image.dtype} {image.shape}")
    if label.shape != image.shape[:2]:
        raise ValueError(f"label is {label.shape}, image is {image.shape[:2]}")
