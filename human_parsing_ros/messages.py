"""What the node publishes on ``parts``, ``persons`` and ``class_info``, as plain Python views.

The wire carries ``human_parsing_msgs/Parts``, ``Persons`` and ``ClassInfo`` (typed, with the input
image's header); ``human_parsing_ros.ros.interface`` turns a received message into these views and back::

    from human_parsing_ros.ros.interface import parts_from_msg
    parts = parts_from_msg(msg)
    if parts.get("face").present: ...

The views build the messages from a parse (``PartsMessage.from_parts``, ``PersonsMessage.from_persons``,
``ClassInfoMessage.from_weights``) and need neither ROS nor torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .presence import CONFIDENCE_DIGITS, PIXEL_FRACTION_DIGITS, Part, PersonDetection, Position3D

if TYPE_CHECKING:  # for type hints only: this module stays free of torch and ROS
    from collections.abc import Sequence

    from .weights import WeightsInfo

# Part and the wire's decimal places live in the core (human_parsing_ros.presence); named here for readers.
__all__ = ["CONFIDENCE_DIGITS", "PIXEL_FRACTION_DIGITS", "ClassInfoMessage", "Part", "PartsMessage", "Person",
           "PersonsMessage", "Stamp"]


@dataclass(frozen=True)
class Stamp:
    sec: int
    nanosec: int

    def to_sec(self) -> float:
        return self.sec + self.nanosec * 1e-9


@dataclass(frozen=True)
class PartsMessage:
    stamp: Stamp
    frame_id: str
    width: int  # of the label image the boxes refer to
    height: int
    threshold: float
    parts: tuple[Part, ...]
    depth_frame_id: str = ""  # the frame of the parts' locations (the depth camera's optical frame); "" without

    @classmethod
    def from_parts(cls, parts: Sequence[Part], stamp: Stamp, frame_id: str, width: int, height: int,
                   threshold: float, depth_frame_id: str = "") -> PartsMessage:
        """The message for one parsed frame (``ParseResult.presence(threshold)`` of a ``width`` x ``height``
        label image): every part, figures rounded to wire precision."""
        return cls(stamp, frame_id, int(width), int(height), float(threshold),
                   tuple(part.rounded() for part in parts), depth_frame_id)

    def get(self, name: str) -> Part:
        for part in self.parts:
            if part.name == name:
                return part
        raise KeyError(f"no part named '{name}'")

    def present(self) -> list[Part]:
        return [part for part in self.parts if part.present]

@dataclass(frozen=True)
class Person:
    """One person of a frame (multi-person weights): ``parts`` are as on ``parts``, within this person
    (``pixel_fraction`` of the person's pixels; ``mean_confidence`` of the person's part probabilities)."""

    id: int  # the same while the person stays in view (human_parsing_ros.tracking)
    instance: int  # the person's value in this frame's ``instances`` image: its mask is instances == instance
    score: float
    bbox: tuple[int, int, int, int]  # x_min, y_min, x_max, y_max of its pixels, inclusive
    pixel_fraction: float  # of the image
    parts: tuple[Part, ...]
    location: Position3D | None = None  # with depth input: where the person is (all its pixels), else None

    def get(self, name: str) -> Part:
        for part in self.parts:
            if part.name == name:
                return part
        raise KeyError(f"no part named '{name}'")


@dataclass(frozen=True)
class PersonsMessage:
    stamp: Stamp
    frame_id: str
    width: int  # of the label and instance images
    height: int
    threshold: float  # part presence threshold
    dropped: int  # persons above the score threshold left out by the node's max_persons
    persons: tuple[Person, ...]
    depth_frame_id: str = ""  # the frame of the locations (the depth camera's optical frame); "" without

    @classmethod
    def from_persons(cls, persons: Sequence[tuple[int, PersonDetection, Sequence[Part]]], stamp: Stamp,
                     frame_id: str, width: int, height: int, threshold: float, dropped: int,
                     locations: dict[int, Position3D] | None = None, depth_frame_id: str = "") -> PersonsMessage:
        """The message for one parsed frame of ``width`` x ``height``: per person its tracked id, its detection
        (``ParseResult.persons``) and its parts (``ParseResult.person_presence``), rounded to wire precision;
        ``locations`` by instance value (``depth.locate_labels`` of the instance image)."""
        total = max(1, int(width) * int(height))
        locations = locations or {}
        people = tuple(
            Person(int(person_id), detection.instance, round(detection.score, CONFIDENCE_DIGITS),
                   tuple(int(v) for v in detection.bbox), round(detection.pixels / total, PIXEL_FRACTION_DIGITS),
                   tuple(part.rounded() for part in parts),
                   location.rounded() if (location := locations.get(detection.instance)) else None)
            for person_id, detection, parts in persons)
        return cls(stamp, frame_id, int(width), int(height), float(threshold), int(dropped), people, depth_frame_id)

    def get(self, person_id: int) -> Person:
        for person in self.persons:
            if person.id == person_id:
                return person
        raise KeyError(f"no person with id {person_id}")

@dataclass(frozen=True)
class ClassInfoMessage:
    class_set: str
    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    architecture: str
    weights: str
    untrained: bool
    backend: str = "torch"  # what runs the network (backends.py); absent in messages of older nodes
    precision: str = ""  # what the network computes in (fp32, fp16, bf16, int8); "" until the node is active

    @classmethod
    def from_weights(cls, info: WeightsInfo, weights_path: str | os.PathLike, backend: str = "torch",
                     precision: str = "") -> ClassInfoMessage:
        """What ``class_info`` says about the weights file at ``weights_path`` run by ``backend`` in
        ``precision``."""
        class_set = info.class_set()
        palette = tuple(tuple(int(channel) for channel in colour) for colour in class_set.palette.tolist())
        flip_pairs = tuple((int(left), int(right)) for left, right in class_set.flip_pairs)
        return cls(info.class_set_name, tuple(class_set.names), palette, flip_pairs, info.architecture,
                   str(weights_path), info.untrained, backend, precision)
