"""Where parts and persons are in 3D: an aligned depth image and the intrinsics of both cameras back-project the
pixels of each label. ROS-free (NumPy).

Depth follows REP-118: ``16UC1`` in millimetres or ``32FC1`` in metres; 0, NaN, Inf and values outside
``[min_depth, max_depth]`` are invalid and never enter a figure. The depth image must be registered to the
colour camera (same optical axes, as ``aligned_depth_to_color`` topics are) but may have another resolution:
each depth pixel is mapped to the colour pixel it sees through both cameras' intrinsics. Positions are in the
depth camera's optical frame (x right, y down, z forward, metres).

The reading taken for a position: each valid depth pixel under a label is back-projected; the position is the
per-axis median of those points (robust to the background that leaks in at a mask's edge), the extent the
per-axis spread between the 5th and the 95th percentile.
"""
from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .errors import UserError
from .presence import Part, Position3D

DEPTH_ENCODINGS = ("16UC1", "32FC1")
EXTENT_PERCENTILES = (5.0, 95.0)


class DepthError(UserError, ValueError):
    """A depth image or camera_info that cannot be used; one line naming what is wrong."""


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera: focal lengths and principal point in pixels, and the image size it describes."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int, source: str = "camera_info") -> Intrinsics:
        """From a row-major 3x3 K (``sensor_msgs/CameraInfo.k``); DepthError for a K no camera can have."""
        values = [float(v) for v in k]
        if len(values) != 9:
            raise DepthError(f"{source}: K must have 9 values, not {len(values)}")
        fx, cx, fy, cy = values[0], values[2], values[4], values[5]
        if not all(math.isfinite(v) for v in values) or fx <= 0 or fy <= 0:
            raise DepthError(f"{source}: K has no usable focal length (fx {fx:g}, fy {fy:g}); is the camera "
                             "calibrated?")
        if width <= 0 or height <= 0:
            raise DepthError(f"{source}: image size {width}x{height} is empty")
        return cls(fx, fy, cx, cy, int(width), int(height))

    def scaled_to(self, width: int, height: int) -> Intrinsics:
        """The same camera described at another image size (labels at the network's resolution)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                          width, height)


def check_registered(depth: Intrinsics, colour_hw: tuple[int, int], tolerance: float = 0.01) -> None:
    """DepthError unless the depth image has the colour image's aspect ratio (within ``tolerance``): the colour
    camera is taken to be the depth camera at another resolution, which holds for depth registered to it."""
    depth_ratio, colour_ratio = depth.width / depth.height, colour_hw[1] / colour_hw[0]
    if abs(depth_ratio / colour_ratio - 1) > tolerance:
        raise DepthError(f"depth image {depth.width}x{depth.height} and colour image {colour_hw[1]}x{colour_hw[0]} "
                         "differ in aspect ratio: is the depth registered to the colour camera "
                         "(aligned_depth_to_color)?")


def depth_in_metres(depth: np.ndarray, encoding: str, min_depth: float, max_depth: float) -> np.ndarray:
    """float32 metres, NaN where the reading is invalid (0, NaN, Inf, outside ``[min_depth, max_depth]``)."""
    if min_depth >= max_depth:
        raise DepthError(f"min_depth {min_depth:g} must be below max_depth {max_depth:g}: every reading would be "
                         "invalid")
    if encoding == "16UC1":
        metres = depth.astype(np.float32) * np.float32(1e-3)
    elif encoding == "32FC1":
        metres = depth.astype(np.float32, copy=True)
    else:
        raise DepthError(f"depth encoding must be one of {', '.join(DEPTH_ENCODINGS)} (REP-118), not '{encoding}'")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(metres) & (metres > 0) & (metres >= min_depth) & (metres <= max_depth)
    metres[~valid] = np.nan
    return metres


@functools.lru_cache(maxsize=8)
def colour_pixels_of_depth(colour: Intrinsics, depth: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """The depth pixels that see a colour pixel (flat indices into the depth image) and that colour pixel
    (flat indices into the colour image). Cached: a camera pair's mapping stays the same from frame to frame."""
    u = (np.arange(depth.width) - depth.cx) * (colour.fx / depth.fx) + colour.cx
    v = (np.arange(depth.height) - depth.cy) * (colour.fy / depth.fy) + colour.cy
    columns, rows = np.rint(u).astype(np.int64), np.rint(v).astype(np.int64)
    inside = ((rows >= 0) & (rows < colour.height))[:, None] & ((columns >= 0) & (columns < colour.width))[None, :]
    depth_index = np.flatnonzero(inside)
    colour_index = (rows[depth_index // depth.width] * colour.width + columns[depth_index % depth.width])
    for array in (depth_index, colour_index):
        array.flags.writeable = False  # shared by every caller through the cache
    return depth_index, colour_index


def locate_labels(labels: np.ndarray, ids: Sequence[int], depth_m: np.ndarray, colour: Intrinsics,
                  depth: Intrinsics) -> dict[int, Position3D]:
    """The 3D position of each label value in ``ids`` (class ids of a label map, or person values of an
    instance map), from ``depth_m`` (``depth_in_metres``); ids without a valid depth pixel are left out.
    One pass over the depth image whatever the number of ids."""
    if labels.shape != (colour.height, colour.width):
        raise DepthError(f"labels are {labels.shape[1]}x{labels.shape[0]}, the colour intrinsics describe "
                         f"{colour.width}x{colour.height}")
    if depth_m.shape != (depth.height, depth.width):
        raise DepthError(f"depth image is {depth_m.shape[1]}x{depth_m.shape[0]}, its camera_info says "
                         f"{depth.width}x{depth.height}")
    depth_index, colour_index = colour_pixels_of_depth(colour, depth)
    z = depth_m.reshape(-1)[depth_index]
    wanted = np.isin(labels.reshape(-1)[colour_index], np.asarray(list(ids), dtype=labels.dtype)) & np.isfinite(z)
    index, z = depth_index[wanted], z[wanted].astype(np.float64)
    seen = labels.reshape(-1)[colour_index[wanted]]
    order = np.argsort(seen, kind="stable")
    index, z, seen = index[order], z[order], seen[order]
    found: dict[int, Position3D] = {}
    for label in ids:
        start, end = np.searchsorted(seen, label, "left"), np.searchsorted(seen, label, "right")
        if start == end:
            continue
        ys, xs, depths = index[start:end] // depth.width, index[start:end] % depth.width, z[start:end]
        points = np.stack([(xs - depth.cx) / depth.fx * depths, (ys - depth.cy) / depth.fy * depths, depths], axis=1)
        low, high = np.percentile(points, EXTENT_PERCENTILES, axis=0)
        found[int(label)] = Position3D(tuple(float(v) for v in np.median(points, axis=0)),
                                       tuple(float(v) for v in high - low), int(end - start))
    return found


def with_locations(parts: Sequence[Part], locations: dict[int, Position3D]) -> list[Part]:
    """``parts`` with the location of each part found in ``locations`` (by class id)."""
    return [replace(part, location=locations.get(part.id)) for part in parts]


@dataclass(frozen=True)
class DepthFrame:
    """One depth image ready for ``locate_labels``: metres (NaN invalid), its camera and its frame."""

    stamp_ns: int
    metres: np.ndarray
    camera: Intrinsics
    frame_id: str


class DepthPairing:
    """The depth messages of the last second (kept as they came, decoded only when paired), and the one for a
    colour frame: the same stamp first, else the nearest within a tolerance. Counts what happened to each colour
    frame. Thread-safe (filled by the depth callback, read by the frame loop)."""

    def __init__(self, keep: int = 64, keep_ns: int = 1_000_000_000) -> None:
        self._items: list[tuple[int, Any]] = []
        self._keep, self._keep_ns = keep, keep_ns
        self._lock = threading.Lock()
        self.exact = self.nearest = self.unpaired = 0
        self.last_received: float | None = None  # time.monotonic() of the newest depth message

    def add(self, stamp_ns: int, item: Any) -> None:
        """Keep ``item``, and the others stamped at most ``keep_ns`` before it (at most ``keep`` in all)."""
        with self._lock:
            recent = [entry for entry in self._items[-(self._keep - 1):] if stamp_ns - entry[0] <= self._keep_ns]
            self._items = [*recent, (stamp_ns, item)]
            self.last_received = time.monotonic()

    def pair(self, stamp_ns: int, tolerance_ns: int) -> Any | None:
        """The item stamped ``stamp_ns``, else the nearest within ``tolerance_ns``, else None (counted)."""
        with self._lock:
            best = min(self._items, key=lambda item: abs(item[0] - stamp_ns), default=None)
            gap = abs(best[0] - stamp_ns) if best is not None else None
            if gap == 0:
                self.exact += 1
            elif gap is not None and gap <= tolerance_ns:
                self.nearest += 1
            else:
                self.unpaired += 1
                return None
            return best[1]

    def clear(self) -> None:
        with self._lock:
            self._items = []
            self.last_received = None
