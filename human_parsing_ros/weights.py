"""The weights contract: one safetensors file carrying the tensors and everything needed to use them.

Metadata keys (all values JSON text, as safetensors metadata must be strings):
``format``, ``format_version``, ``architecture``, ``architecture_args``,
``class_set``, ``class_names``, ``flip_pairs``, ``palette``, ``input_size``
([height, width]), ``mean``, ``std``, ``recipe`` (dataset, stages, sampling,
metrics, ...). Loading never unpickles anything.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .class_sets import ClassSet
from .errors import UserError, flattened
from .models import ServableModel, build_model, rename_legacy_keys

FORMAT = "human_parsing_ros.weights"
FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE_LIMITS = (16, 4096)  # smallest and largest network input side, in pixels


class WeightsError(UserError, ValueError):
    """A weights file that cannot be used; the message names the file and the reason."""


def check_input_size(size: Any) -> str | None:
    """Why ``size`` is not a network input ``[height, width]``, or None if it is.

    The one input-size rule: the weights metadata, HumanParser and the node's
    ``input_size`` parameter all ask this.
    """
    low, high = INPUT_SIZE_LIMITS
    try:
        values = [size] if isinstance(size, str) else list(size)
    except TypeError:
        values = [size]
    if len(values) == 2 and all(_is_int(v) and low <= v <= high for v in values):
        return None
    shown = [int(v) if _is_int(v) else v for v in values]
    return f"input_size must be [height, width], integers within {low}..{high}, not {shown}"


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass
class WeightsInfo:
    architecture: str
    architecture_args: dict[str, Any]
    class_set_name: str
    class_names: list[str]
    flip_pairs: list[tuple[int, int]]
    palette: list[list[int]]
    input_size: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    recipe: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_class_set(cls, architecture: str, architecture_args: dict[str, Any], class_set: ClassSet,
                      input_size: tuple[int, int], recipe: dict[str, Any] | None = None) -> WeightsInfo:
        return cls(architecture, dict(architecture_args), class_set.name, list(class_set.names),
                   [tuple(pair) for pair in class_set.flip_pairs], class_set.palette.tolist(),
                   tuple(input_size), recipe=dict(recipe or {}))

    def class_set(self) -> ClassSet:
        """The class set as this file defines it (names, palette and pairs travel with the weights)."""
        palette = np.asarray(self.palette)
        if palette.dtype.kind not in "iu" or palette.size and not 0 <= palette.min() <= palette.max() <= 255:
            raise ValueError("palette values must be whole numbers in 0..255")
        return ClassSet(self.class_set_name, tuple(self.class_names),
                        tuple(tuple(pair) for pair in self.flip_pairs), palette=palette.astype(np.uint8))

    @property
    def untrained(self) -> bool:
        return bool(self.recipe.get("untrained", False))

    def to_metadata(self) -> dict[str, str]:
        values = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "architecture": self.architecture, "architecture_args": self.architecture_args,
            "class_set": self.class_set_name, "class_names": self.class_names,
            "flip_pairs": [list(pair) for pair in self.flip_pairs], "palette": self.palette,
            "input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std),
            "recipe": self.recipe,
        }
        return {key: json.dumps(value) for key, value in values.items()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None, path: str | os.PathLike) -> WeightsInfo:
        if not metadata or "format" not in metadata:
            raise WeightsError(f"{path}: not a human_parsing_ros weights file (no metadata)")
        try:
            values = {key: json.loads(text) for key, text in metadata.items()}
        except json.JSONDecodeError as err:
            raise WeightsError(f"{path}: metadata is not valid JSON ({err})") from None
        if values["format"] != FORMAT:
            raise WeightsError(f"{path}: format is '{values['format']}', expected '{FORMAT}'")
        if values.get("format_version") != FORMAT_VERSION:
            raise WeightsError(f"{path}: format version {values.get('format_version')} is not supported "
                               f"(this package reads version {FORMAT_VERSION})")
        try:
            info = cls(
                values["architecture"], dict(values["architecture_args"]), values["class_set"],
                list(values["class_names"]), [tuple(pair) for pair in values["flip_pairs"]], values["palette"],
                tuple(values["input_size"]), tuple(values["mean"]), tuple(values["std"]),
                dict(values.get("recipe", {})),
            )
            info.class_set()  # validates the palette and the flip pairs
            check_normalisation(info.mean, info.std)
        except KeyError as err:
            raise WeightsError(f"{path}: metadata lacks {err}") from None
        except (TypeError, ValueError) as err:
            raise WeightsError(f"{path}: bad metadata ({err})") from None
        reason = check_input_size(info.input_size)
        if reason:
            raise WeightsError(f"{path}: {reason}")
        return info


def check_normalisation(mean: tuple, std: tuple) -> None:
    """ValueError unless ``mean`` and ``std`` are three finite numbers each (RGB), every std above 0."""
    values = [*mean, *std]
    if len(mean) != 3 or len(std) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise ValueError(f"mean {list(mean)} and std {list(std)} must be three finite numbers each (RGB)")
    if min(std) <= 0:
        raise ValueError(f"std {list(std)} must be above 0")


def save_weights(path: str | os.PathLike, model: ServableModel, info: WeightsInfo) -> Path:
    """Write ``model`` with ``info`` atomically (a reader never sees half a file)."""
    from safetensors.torch import save_file

    if model.num_classes != len(info.class_names):
        raise WeightsError(f"{path}: model has {model.num_classes} outputs but "
                           f"{len(info.class_names)} class names")
    path = Path(path)
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    bad = non_finite_tensor(tensors)
    if bad:
        raise WeightsError(f"{path}: refusing to write a model with non-finite values: {bad}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=info.to_metadata())
        # mkstemp (and safetensors) create 0600 files: give the file the mode any new file gets here,
        # or a node running as another user (an installed package, a container) cannot read it.
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def new_file_mode() -> int:
    """The mode any new file gets here (0666 less the umask): for files written through a temporary file."""
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask sets it to read it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _open_safetensors(path: Path):
    from safetensors import safe_open

    if path.is_dir():
        raise WeightsError(f"{path}: is a directory, not a weights file")
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as err:  # safetensors raises its own error type for every malformed file
        raise WeightsError(f"{path}: not a valid safetensors file ({err})") from None


def read_weights_info(path: str | os.PathLike) -> WeightsInfo:
    """Only the metadata: cheap, and enough to say what a file holds."""
    path = Path(path)
    with _open_safetensors(path) as handle:
        return WeightsInfo.from_metadata(handle.metadata(), path)


def load_weights(path: str | os.PathLike) -> tuple[ServableModel, WeightsInfo]:
    """Build the architecture the file names and load its tensors (on the CPU, in eval mode)."""
    path = Path(path)
    try:
        with _open_safetensors(path) as handle:
            info = WeightsInfo.from_metadata(handle.metadata(), path)
            state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except WeightsError:
        raise
    except Exception as err:  # data section shorter than the header says, and similar
        raise WeightsError(f"{path}: unreadable tensors ({err})") from None
    try:
        return _build(path, info, state), info
    except WeightsError:
        raise
    except Exception as err:  # noqa: BLE001 (whatever building the network raises, MemoryError included)
        raise WeightsError(f"{path}: cannot build the network: {type(err).__name__}: "
                           f"{flattened(err)}") from None


def _build(path: Path, info: WeightsInfo, state: dict[str, torch.Tensor]) -> ServableModel:
    args = {key: value for key, value in info.architecture_args.items() if key != "encoder_weights"}
    try:
        model = build_model(info.architecture, **args)  # ValueError, one line, for any failure to build
    except ValueError as err:
        raise WeightsError(f"{path}: {err}") from None
    if model.num_classes != len(info.class_names):
        raise WeightsError(f"{path}: class count mismatch: the architecture has {model.num_classes} outputs, "
                           f"the metadata names {len(info.class_names)} classes")
    rename_legacy_keys(state, model.legacy_aux_keys)  # files written before the zoo's one aux-head attribute
    _check_state(path, model, state)
    model.load_state_dict(state)
    return model.eval()


def non_finite_tensor(state: dict[str, torch.Tensor]) -> str | None:
    """The first floating-point tensor holding NaN or Inf, described (name, counts), or None if all are finite."""
    for key, tensor in state.items():
        if not torch.is_floating_point(tensor):
            continue
        finite = torch.isfinite(tensor)
        if bool(finite.all()):
            continue
        nan = int(torch.isnan(tensor).sum())
        inf = int(torch.isinf(tensor).sum())
        return f"tensor {key} has {nan} NaN and {inf} Inf of {tensor.numel()} values"
    return None


def _check_state(path: Path, model: ServableModel, state: dict[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = (f"missing {len(missing)} tensors (e.g. {missing[0]})" if missing
                  else f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        raise WeightsError(f"{path}: tensors do not match architecture '{type(model).__name__}': {detail}")
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise WeightsError(f"{path}: tensor {key} has shape {list(state[key].shape)}, "
                               f"the architecture expects {list(tensor.shape)}")
    bad = non_finite_tensor(state)
    if bad:
        raise WeightsError(f"{path}: non-finite weights: {bad}")
