"""The architecture registry: name -> class. Each architecture module registers itself on import."""
from __future__ import annotations

from collections.abc import Callable

from .protocol import ServableModel

ARCHITECTURES: dict[str, type[ServableModel]] = {}


def register_architecture(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        ARCHITECTURES[name] = cls
        return cls

    return add
