"""Comparing the views of ``human_parsing_ros.messages`` after a trip through the typed messages, whose float
fields are float32: equal up to float32 rounding."""
from __future__ import annotations

import dataclasses
import math
from typing import Any


def same_view(a: Any, b: Any, path: str = "view") -> None:
    """Assert ``a`` and ``b`` equal field by field, floats within float32 precision; the path names a difference."""
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
        for field in dataclasses.fields(a):
            same_view(getattr(a, field.name), getattr(b, field.name), f"{path}.{field.name}")
    elif isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        assert len(a) == len(b), f"{path}: {len(a)} != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            same_view(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
