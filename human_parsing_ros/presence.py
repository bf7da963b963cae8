"""Part presence: which classes a frame (or one person of it) shows, how much, where and how surely.

``ParseResult.presence`` and ``ParseResult.person_presence`` both end in ``parts_from_counts``; the
messages' views (``human_parsing_ros.messages``) only round the ``Part``s and ``PersonDetection``s defined
here, and ``ros/interface.py`` puts them on the wire. No torch, no ROS.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

# Decimal places of the figures on the wire; Part.rounded applies them.
PIXEL_FRACTION_DIGITS = 6
CONFIDENCE_DIGITS = 4

Box = tuple[int, int, int, int]  # x_min, y_min, x_max, y_max in label-image pixels, inclusive
POSITION_DIGITS = 3  # metres on the wire: millimetres


@dataclass(frozen=True)
class Position3D:
    """Where a part or a person is, from depth (human_parsing_ros.depth): in the depth camera's optical frame."""

    position: tuple[float, float, float]  # per-axis median x, y, z of the back-projected pixels (m)
    extent: tuple[float, float, float]  # 5th-95th percentile spread along x, y, z (m)
    valid_pixels: int  # depth pixels that went into it

    def rounded(self) -> Position3D:
        return Position3D(tuple(round(v, POSITION_DIGITS) for v in self.position),
                          tuple(round(v, POSITION_DIGITS) for v in self.extent), int(self.valid_pixels))


@dataclass(frozen=True)
class Part:
    id: int
    name: str
    present: bool
    pixel_fraction: float
    bbox: Box | None  # robust: the box of the part's pixels less the 1 % farthest out at each end of x and y
    mean_confidence: float
    bbox_full: Box | None = None  # the full extent of the part's pixels, stray ones included
    location: Position3D | None = None  # with depth input: where the part is; None without a valid reading

    def rounded(self) -> Part:
        """This part with its figures at wire precision."""
        return replace(self, pixel_fraction=round(self.pixel_fraction, PIXEL_FRACTION_DIGITS),
                       mean_confidence=round(self.mean_confidence, CONFIDENCE_DIGITS),
                       location=self.location.rounded() if self.location else None)


@dataclass(frozen=True)
class PersonDetection:
    """One person of a multi-person parse: its value in ``ParseResult.instances``, score and visible extent."""

    instance: int  # k: the person's pixels are instances == k
    score: float  # sqrt(box score x predicted part mIoU), RP R-CNN's
    bbox: Box  # x_min, y_min, x_max, y_max of its pixels, inclusive
    pixels: int  # how many pixels it owns (instances == k)


def parts_from_counts(names: Sequence[str], counts: Sequence[int], confidence_sums: Sequence[float],
                      boxes: Sequence[Sequence[int] | None], total: int, threshold: float,
                      full_boxes: Sequence[Sequence[int] | None] | None = None) -> list[Part]:
    """One ``Part`` per class name, full precision.

    ``counts[c]`` pixels of class c out of ``total`` (a frame's, or one person's), ``confidence_sums[c]`` the
    sum of their confidence, ``boxes[c]`` their robust box and ``full_boxes[c]`` their full extent (None: the
    same as ``boxes``; both read only where the count is above 0). A class is ``present`` when it has pixels
    and its fraction of ``total`` is at least ``threshold``.
    """
    full_boxes = boxes if full_boxes is None else full_boxes
    total = max(1, int(total))
    parts = []
    for class_id, name in enumerate(names):
        count = int(counts[class_id])
        fraction = count / total
        parts.append(Part(
            class_id, name, count > 0 and fraction >= threshold, fraction,
            tuple(int(v) for v in boxes[class_id]) if count else None,
            float(confidence_sums[class_id]) / count if count else 0.0,
            tuple(int(v) for v in full_boxes[class_id]) if count else None,
        ))
    return parts
