"""ParseOptions: the per-frame choices of one parse, checked once when built.

    options = ParseOptions(resize_mode="stretch", flip_tta=True)
    parser.parse(image, options)
    parser.parse(image, dataclasses.replace(options, output_resolution="network"))

A node rebuilds its ``ParseOptions`` when a parameter changes; the parser never reads node state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

RESIZE_MODES = ("letterbox", "stretch")
OUTPUT_RESOLUTIONS = ("input", "network")
MAX_PERSONS_LIMIT = 255  # person ids must fit a mono8 instance image


def check_resize_mode(mode: Any) -> str:
    """``mode`` if it is a resize mode; ValueError naming it otherwise."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, not '{mode}'")
    return mode


def check_output_resolution(value: Any) -> str:
    """``value`` if it is an output resolution; ValueError naming it otherwise."""
    if value not in OUTPUT_RESOLUTIONS:
        raise ValueError(f"output resolution must be 'input' or 'network', not '{value}'")
    return value


def check_flip_tta(flip_tta: Any) -> bool:
    """``flip_tta`` as a bool; ValueError for anything but True or False."""
    if not isinstance(flip_tta, (bool, np.bool_)):
        raise ValueError(f"flip_tta must be True or False, not '{flip_tta}'")
    return bool(flip_tta)


def check_person_threshold(value: Any) -> float:
    """``value`` as a score threshold in [0, 1]; ValueError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"person_threshold must be a number within 0..1, not {value!r}")
    return float(value)


def check_max_persons(value: Any) -> int:
    """``value`` as a person cap (1..255: ids must fit a mono8 image); ValueError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_PERSONS_LIMIT:
        raise ValueError(f"max_persons must be an integer within 1..{MAX_PERSONS_LIMIT}, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class ParseOptions:
    """What one ``HumanParser.parse`` call does; every field is checked here (ValueError naming it).

    ``person_threshold`` matters only for multi-person weights (None: the weights file's own calibrated
    ``min_score``); ``max_persons`` caps the persons of either source. ``map_persons``: single-map weights
    also give persons, the connected regions of their map (``map_persons.py``), as ``instances`` and
    ``persons``; multi-person weights ignore it (their network says who is who).
    """

    output_resolution: str = "input"  # input: labels at the image's size | network: at the letterboxed input's
    resize_mode: str = "letterbox"
    flip_tta: bool = False
    person_threshold: float | None = None
    max_persons: int = 16
    map_persons: bool = False

    def __post_init__(self) -> None:
        check_output_resolution(self.output_resolution)
        check_resize_mode(self.resize_mode)
        object.__setattr__(self, "flip_tta", check_flip_tta(self.flip_tta))
        if self.person_threshold is not None:
            object.__setattr__(self, "person_threshold", check_person_threshold(self.person_threshold))
        object.__setattr__(self, "max_persons", check_max_persons(self.max_persons))
        if not isinstance(self.map_persons, (bool, np.bool_)):
            raise ValueError(f"map_persons must be True or False, not '{self.map_persons}'")
        object.__setattr__(self, "map_persons", bool(self.map_persons))
