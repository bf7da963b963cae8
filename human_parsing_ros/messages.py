"""The JSON carried on ``parts``, ``persons`` and ``class_info``, with typed decoders.

A behaviour never parses these by hand::

    from human_parsing_ros.messages import PartsMessage
    parts = PartsMessage.from_json(msg.data)
    if parts.get("face").present: ...

Schemas are versioned by ``schema``: a reader refuses a version it does not know.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from .presence import CONFIDENCE_DIGITS, PIXEL_FRACTION_DIGITS, Part, PersonDetection, Position3D

if TYPE_CHECKING:  # for type hints only: this module stays free of torch and ROS
    from collections.abc import Sequence

    from .weights import WeightsInfo

PARTS_SCHEMA = "human_parsing_ros/parts/1"
CLASS_INFO_SCHEMA = "human_parsing_ros/class_info/1"
PERSONS_SCHEMA = "human_parsing_ros/persons/1"
# Part and the wire's decimal places live in the core (human_parsing_ros.presence); named here for readers.
__all__ = [
    "CLASS_INFO_SCHEMA", "CONFIDENCE_DIGITS", "PARTS_SCHEMA", "PERSONS_SCHEMA", "PIXEL_FRACTION_DIGITS",
    "ClassInfoMessage", "Part", "PartsMessage", "Person", "PersonsMessage", "SchemaError", "Stamp",
]


class SchemaError(ValueError):
    """A JSON message that does not follow the schema it claims."""


def _load(text: str, schema: str) -> dict:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise SchemaError(f"not JSON: {err}") from None
    if not isinstance(doc, dict) or doc.get("schema") != schema:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise SchemaError(f"expected schema '{schema}', got '{found}'")
    return doc


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

    def to_json(self) -> str:
        doc = _without_depth({"schema": PARTS_SCHEMA, **asdict(self)})
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PartsMessage:
        doc = _load(text, PARTS_SCHEMA)
        try:
            parts = tuple(_part_from_doc(part) for part in doc["parts"])
            return cls(Stamp(int(doc["stamp"]["sec"]), int(doc["stamp"]["nanosec"])), str(doc["frame_id"]),
                       int(doc["width"]), int(doc["height"]), float(doc["threshold"]), parts,
                       str(doc.get("depth_frame_id", "")))
        except (KeyError, TypeError, ValueError) as err:
            raise SchemaError(f"bad {PARTS_SCHEMA} message: {err!r}") from None


def _part_from_doc(part: dict) -> Part:
    """``bbox`` is the robust box, ``bbox_full`` the full extent; a message without ``bbox_full`` (a node from
    before it existed, whose ``bbox`` was the full extent) gives ``bbox`` for both."""
    bbox = _box(part["bbox"])
    return Part(int(part["id"]), str(part["name"]), bool(part["present"]), float(part["pixel_fraction"]), bbox,
                float(part["mean_confidence"]), _box(part["bbox_full"]) if "bbox_full" in part else bbox,
                _location(part.get("location")))


def _without_depth(doc: dict) -> dict:
    """``doc`` (a message, or a person) without the depth keys it does not use: without depth input the wire is
    what it was before depth existed. Parts lose a null ``location``."""
    if doc.get("depth_frame_id") == "":
        del doc["depth_frame_id"]
    if "location" in doc and doc["location"] is None:
        del doc["location"]
    for part in doc.get("parts", ()):
        if part.get("location", 0) is None:
            del part["location"]
    return doc


def _location(value: dict | None) -> Position3D | None:
    """A part's or person's ``location`` (absent in messages of nodes without depth input, or older ones)."""
    if value is None:
        return None
    position, extent = tuple(float(v) for v in value["position"]), tuple(float(v) for v in value["extent"])
    if len(position) != 3 or len(extent) != 3:
        raise ValueError(f"a location has 3 coordinates, not {value!r}")
    return Position3D(position, extent, int(value["valid_pixels"]))


def _box(value: list | None) -> tuple[int, int, int, int] | None:
    if value is None:
        return None
    box = tuple(int(v) for v in value)
    if len(box) != 4:
        raise ValueError(f"a box has 4 values (x_min, y_min, x_max, y_max), not {list(value)!r}")
    return box


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

    def to_json(self) -> str:
        doc = _without_depth({"schema": PERSONS_SCHEMA, **asdict(self)})
        for person in doc["persons"]:
            _without_depth(person)
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PersonsMessage:
        doc = _load(text, PERSONS_SCHEMA)
        try:
            persons = tuple(
                Person(int(p["id"]), int(p["instance"]), float(p["score"]), tuple(int(v) for v in p["bbox"]),
                       float(p["pixel_fraction"]), tuple(_part_from_doc(part) for part in p["parts"]),
                       _location(p.get("location")))
                for p in doc["persons"]
            )
            return cls(Stamp(int(doc["stamp"]["sec"]), int(doc["stamp"]["nanosec"])), str(doc["frame_id"]),
                       int(doc["width"]), int(doc["height"]), float(doc["threshold"]), int(doc["dropped"]), persons,
                       str(doc.get("depth_frame_id", "")))
        except (KeyError, TypeError, ValueError) as err:
            raise SchemaError(f"bad {PERSONS_SCHEMA} message: {err!r}") from None


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

    def to_json(self) -> str:
        doc = {"schema": CLASS_INFO_SCHEMA, **asdict(self)}
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ClassInfoMessage:
        doc = _load(text, CLASS_INFO_SCHEMA)
        try:
            return cls(str(doc["class_set"]), tuple(doc["names"]), tuple(tuple(colour) for colour in doc["palette"]),
                       tuple(tuple(pair) for pair in doc["flip_pairs"]), str(doc["architecture"]),
                       str(doc["weights"]), bool(doc["untrained"]), str(doc.get("backend", "torch")),
                       str(doc.get("precision", "")))
        except (KeyError, TypeError, ValueError) as err:
            raise SchemaError(f"bad {CLASS_INFO_SCHEMA} message: {err!r}") from None
