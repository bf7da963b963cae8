"""Architecture registry: every parser is built by name from plain keyword arguments.

The arguments are what a weights file stores, so ``build_model(info.architecture,
**info.architecture_args)`` rebuilds exactly the trained network. Every architecture is a
``ServableModel`` (``protocol.py``): a ``SegmentationModel`` (one label map) or a multi-person parser.
"""
from __future__ import annotations

import inspect
from typing import Any

from ..errors import UserError, flattened
from .base import SegmentationHead, SegmentationModel
from .encoders import ENCODERS, build_encoder
from .protocol import ServableModel, rename_legacy_keys
from .registry import ARCHITECTURES, register_architecture

# Integer architecture arguments (channels, proposals, detections, ...) are sizes or counts: none is negative,
# and none of a network that fits a computer is above this; a weights file saying otherwise is refused before
# anything is allocated (a constructor asked for 1e9 channels would try to allocate them).
ARCHITECTURE_INT_RANGE = (0, 1 << 16)


class ArchitectureError(UserError, ValueError):
    """An architecture name or arguments (from a recipe or a weights file) that build no network."""


def build_model(name: str, **kwargs: Any) -> ServableModel:
    """Build architecture ``name``; raises ArchitectureError (a ValueError), one line, naming what is unknown or wrong.

    Whatever the constructor raises (an IndexError for a list too short, a RuntimeError for a negative size, a
    MemoryError) becomes that error, naming the argument(s) that make it fail where one can be found.
    """
    if name not in ARCHITECTURES:
        raise ArchitectureError(f"unknown architecture '{name}' (known: {', '.join(sorted(ARCHITECTURES))})")
    cls = ARCHITECTURES[name]
    reason = _argument_error(cls, kwargs)
    if reason:
        raise ArchitectureError(f"bad arguments for architecture '{name}': {reason}")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ArchitectureError(f"bad arguments for architecture '{name}': {err}") from None
    except Exception as err:  # noqa: BLE001 (MemoryError included: any failure to build is the arguments')
        culprits = _culprits(cls, kwargs)
        which = (", ".join(f"{key}={kwargs[key]!r}" for key in culprits) if culprits
                 else "arguments " + ", ".join(f"{key}={value!r}" for key, value in sorted(kwargs.items())))
        kind = "" if isinstance(err, ValueError) else f"{type(err).__name__}: "
        raise ArchitectureError(f"cannot build architecture '{name}' with {which}: {kind}{flattened(err)}") from None


def _argument_error(cls: type, kwargs: dict[str, Any]) -> str | None:
    """Why an argument cannot be right whatever the architecture does with it: an integer outside
    ``ARCHITECTURE_INT_RANGE``, or a non-integer where the constructor's default is an integer."""
    defaults = {key: param.default for key, param in inspect.signature(cls.__init__).parameters.items()}
    low, high = ARCHITECTURE_INT_RANGE
    for key, value in sorted(kwargs.items()):
        default = defaults.get(key, inspect.Parameter.empty)
        integer_default = isinstance(default, int) and not isinstance(default, bool)
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        for item in items:
            is_int = isinstance(item, int) and not isinstance(item, bool)
            if integer_default and not is_int:
                return f"{key}={value!r} must be an integer"
            if is_int and not low <= item <= high:
                return f"{key}={value!r} must be within {low}..{high}"
    return None


def _culprits(cls: type, kwargs: dict[str, Any]) -> list[str]:
    """The arguments which, each set back to its default alone, let ``cls`` build: the ones to blame (or [])."""
    defaults = {key: param.default for key, param in inspect.signature(cls.__init__).parameters.items()}
    found = []
    for key in sorted(kwargs):
        default = defaults.get(key, inspect.Parameter.empty)
        if default is inspect.Parameter.empty or kwargs[key] == default:
            continue
        try:
            cls(**{**kwargs, key: default})
        except Exception:  # noqa: BLE001, S112 (still failing: not this argument alone)
            continue
        found.append(key)
    return found


def semantic_architectures() -> list[str]:
    """Names of the single-map parsers (``SegmentationModel``s), sorted; the others parse each person apart."""
    return sorted(name for name, cls in ARCHITECTURES.items() if not cls.multi_person)


def is_multi_person(name: str) -> bool:
    """Whether architecture ``name`` parses each person apart (its parse has instances and persons)."""
    cls = ARCHITECTURES.get(name)
    return cls is not None and cls.multi_person


def _register_all() -> None:
    """Import every architecture folder (one subpackage each); each registers itself."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:
            importlib.import_module(f"{__name__}.{info.name}")


_register_all()

__all__ = [
    "ARCHITECTURES", "ENCODERS", "SegmentationHead", "SegmentationModel", "ServableModel",
    "build_encoder", "build_model", "is_multi_person", "register_architecture", "rename_legacy_keys",
    "semantic_architectures",
]
