"""Architecture registry: every parser is built by name from plain keyword arguments.

The arguments are what a weights file stores, so ``build_model(info.architecture,
**info.architecture_args)`` rebuilds exactly the trained network. Every architecture is a
``ServableModel`` (``protocol.py``): a ``SegmentationModel`` (one label map) or a multi-person parser.
"""
from __future__ import annotations

from typing import Any

from .base import SegmentationHead, SegmentationModel
from .encoders import ENCODERS, build_encoder
from .protocol import ServableModel, rename_legacy_keys
from .registry import ARCHITECTURES, register_architecture


def build_model(name: str, **kwargs: Any) -> ServableModel:
    """Build architecture ``name``; raises ValueError naming what is unknown or wrong."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{name}' (known: {', '.join(sorted(ARCHITECTURES))})")
    try:
        return ARCHITECTURES[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments for architecture '{name}': {err}") from None


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
