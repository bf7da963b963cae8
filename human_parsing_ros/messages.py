"""The JSON carried on ``parts`` and ``class_info``, with typed decoders.

A behaviour never parses these by hand::

    from human_parsing_ros.messages import PartsMessage
    parts = PartsMessage.from_json(msg.data)
    if parts.get("face").present: ...

Schemas are versioned by ``schema``: a reader refuses a version it does not know.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

PARTS_SCHEMA = "human_parsing_ros/parts/1"
CLASS_INFO_SCHEMA = "human_parsing_ros/class_info/1"


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
class Part:
    id: int
    name: str
    present: bool
    pixel_fraction: float
    bbox: tuple[int, int, int, int] | None  # x_min, y_min, x_max, y_max in label-image pixels, inclusive
    mean_confidence: float


@dataclass(frozen=True)
class PartsMessage:
    stamp: Stamp
    frame_id: str
    width: int  # of the label image the boxes refer to
    height: int
    threshold: float
    parts: tuple[Part, ...]

    def get(self, name: str) -> Part:
        for part in self.parts:
            if part.name == name:
                return part
        raise KeyError(f"no part named '{name}'")

    def present(self) -> list[Part]:
        return [p for p in self.parts if p.present]

    def to_json(self) -> str:
        doc = {"schema": PARTS_SCHEMA, **asdict(self)}
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PartsMessage:
        doc = _load(text, PARTS_SCHEMA)
        try:
            parts = tuple(
                Part(int(p["id"]), str(p["name"]), bool(p["present"]), float(p["pixel_fraction"]),
                     tuple(p["bbox"]) if p["bbox"] is not None else None, float(p["mean_confidence"]))
                for p in doc["parts"]
            )
            return cls(Stamp(int(doc["stamp"]["sec"]), int(doc["stamp"]["nanosec"])), str(doc["frame_id"]),
                       int(doc["width"]), int(doc["height"]), float(doc["threshold"]), parts)
        except (KeyError, TypeError, ValueError) as err:
            raise SchemaError(f"bad {PARTS_SCHEMA} message: {err!r}") from None


@dataclass(frozen=True)
class ClassInfoMessage:
    class_set: str
    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    architecture: str
    weights: str
    untrained: bool

    def to_json(self) -> str:
        doc = {"schema": CLASS_INFO_SCHEMA, **asdict(self)}
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ClassInfoMessage:
        doc = _load(text, CLASS_INFO_SCHEMA)
        try:
            return cls(str(doc["class_set"]), tuple(doc["names"]), tuple(tuple(c) for c in doc["palette"]),
                       tuple(tuple(p) for p in doc["flip_pairs"]), str(doc["architecture"]),
                       str(doc["weights"]), bool(doc["untrained"]))
        except (KeyError, TypeError, ValueError) as err:
            raise SchemaError(f"bad {CLASS_INFO_SCHEMA} message: {err!r}") from None
