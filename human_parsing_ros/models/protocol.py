"""ServableModel: what the weights loader and ``HumanParser`` need of any registered architecture.

Two kinds satisfy it. Single-map parsers (``multi_person`` False) are ``SegmentationModel``s:
``forward_lowres(images)`` gives one map of per-pixel logits. Multi-person parsers (``multi_person``
True, RP R-CNN) give, in eval mode, ``model(images)``: per image a dict of the persons' ``boxes``,
``scores`` and 128 x 128 ``parts`` probabilities, and the ``semantic`` parts map. ``HumanParser``
picks its parse path from ``multi_person`` once, when it is set up.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class ServableModel(Protocol):
    """A network the loader can build and fill, and the parser can serve (every ``ARCHITECTURES`` entry)."""

    multi_person: bool  # a class attribute: is_multi_person(name) reads it without building the network
    # old prefixes of tensor names -> current ones, renamed on load (files written before a layout change)
    legacy_aux_keys: Mapping[str, str]

    @property
    def num_classes(self) -> int: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any: ...

    def eval(self) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


def rename_legacy_keys(state: dict[str, torch.Tensor], renames: Mapping[str, str],
                       prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename, in place, the keys of ``state`` under ``prefix`` that start with an old prefix of ``renames``."""
    for key in list(state):
        for old, new in renames.items():
            if key.startswith(prefix + old):
                state[prefix + new + key[len(prefix + old):]] = state.pop(key)
                break
    return state
