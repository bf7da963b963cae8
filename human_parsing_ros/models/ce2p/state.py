"""Reading SCHP's .pth files (its parsing checkpoints, its ImageNet ResNet-101) without running pickled code."""
from __future__ import annotations

import os

import torch

from ...errors import one_line

# Every BatchNorm of SCHP's network is in-place ABN, which scales by |weight| + eps (its eps, 1e-5), not by the
# stored weight: a channel trained to a negative weight acts as its absolute value.
ABN_EPS = 1e-5


def read_state(path: str | os.PathLike, what: str, error: type[ValueError] = ValueError) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` (a state dict, or a dict holding one under ``state_dict``), ``module.`` stripped,
    loaded with ``weights_only=True``; ``error`` naming the file, which should be ``what``, otherwise."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as failure:  # missing, truncated, not a zip, pickled code: one line naming the file
        raise error(f"{path}: not a readable {what} ({one_line(failure)})") from None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise error(f"{path}: holds no state_dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


def match_state(path: str | os.PathLike, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                what: str, error: type[ValueError] = ValueError) -> dict[str, torch.Tensor]:
    """``state`` with the BatchNorm batch counters it lacks (SCHP's in-place ABN keeps none) taken from
    ``expected``; ``error`` naming the file when its tensor names or shapes are not those of ``what``."""
    state = {**{key: torch.zeros_like(value) for key, value in expected.items()
                if key.endswith("num_batches_tracked")}, **state}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise error(f"{path}: not {what}: tensors missing {missing[:3]}, unexpected {unexpected[:3]}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise error(f"{path}: tensor {key} has shape {list(value.shape)}, {what} has "
                        f"{list(expected[key].shape)}")
    return state


def abn_as_batchnorm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` (SCHP's names or ours) with every BatchNorm weight w replaced by |w| + ``ABN_EPS``: the weight
    with which a plain BatchNorm computes what SCHP's in-place ABN computes from w."""
    out = dict(state)
    for key in state:
        if key.endswith("running_mean") and (weight := key.removesuffix("running_mean") + "weight") in out:
            out[weight] = out[weight].abs() + ABN_EPS
    return out
