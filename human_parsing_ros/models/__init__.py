"""Architecture registry: every parser is built by name from plain keyword arguments.

The arguments are what a weights file stores, so ``build_model(info.architecture,
**info.architecture_args)`` rebuilds exactly the trained network.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import SegmentationHead, SegmentationModel
from .encoders import ENCODERS, build_encoder

ARCHITECTURES: dict[str, Callable[..., SegmentationModel]] = {}


def register_architecture(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        ARCHITECTURES[name] = cls
        return cls

    return add


def build_model(name: str, **kwargs: Any) -> SegmentationModel:
    """Build architecture ``name``; raises ValueError naming what is unknown or wrong."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{name}' (known: {', '.join(sorted(ARCHITECTURES))})")
    try:
        return ARCHITECTURES[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments for architecture '{name}': {err}") from None


def semantic_architectures() -> list[str]:
    """Names of the single-map parsers (``SegmentationModel``s), sorted; the others parse each person apart."""
    return sorted(name for name, cls in ARCHITECTURES.items()
                  if isinstance(cls, type) and issubclass(cls, SegmentationModel))


def is_multi_person(name: str) -> bool:
    """Whether architecture ``name`` parses each person apart (its parse has instances and persons)."""
    return bool(getattr(ARCHITECTURES.get(name), "multi_person", False))


def _register_all() -> None:
    """Import every architecture folder (one subpackage each); each registers itself."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:
            importlib.import_module(f"{__name__}.{info.name}")


_register_all()

__all__ = [
    "ARCHITECTURES", "ENCODERS", "SegmentationHead", "SegmentationModel",
    "build_encoder", "build_model", "is_multi_person", "register_architecture", "semantic_architectures",
]
