"""A recipe as typed, frozen sections: what ``training.config.load_config`` returns (``Recipe``). Each section
of ``config.DEFAULTS`` is a frozen dataclass with the same keys; lists become tuples; the open-ended settings
(``model.args``, ``dataset.options``, ``dataset.extra``'s entries, ``multi_person.loss_weights`` and
``val_options``) stay dicts. ``to_dict`` gives the plain data back, which is what checkpoints store."""
from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any


class Section:
    """A frozen recipe section: read as attributes (``config.optim.lr``); ``to_dict`` gives the plain data a
    checkpoint stores. Reading by key (``config["optim"]["lr"]``) is kept for scripts that treat the recipe
    as the dict it was; nothing can be set either way (``dataclasses.replace`` makes a changed copy)."""

    def __getitem__(self, key: str) -> Any:
        if key not in {f.name for f in fields(self)}:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in {f.name for f in fields(self)} else default

    def to_dict(self) -> dict[str, Any]:
        """The section as plain data (lists, dicts), as recipes and checkpoints hold it."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _frozen(value: Any) -> Any:
    """Lists as tuples (a frozen section holds no list that could change); dicts stay (open-ended settings)."""
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    return copy.deepcopy(value)


@dataclass(frozen=True)
class DatasetSection(Section):
    name: str
    root: str
    train_split: str
    val_split: str
    options: dict[str, Any]
    class_set: str | None
    extra: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class ModelSection(Section):
    architecture: str
    args: dict[str, Any]
    init: str | None


@dataclass(frozen=True)
class InputSection(Section):
    crop_size: tuple[int, int]
    scale_range: tuple[float, float]
    max_rotation: float
    jitter: float
    eval_size: tuple[int, int] | None
    eval_labels: str
    eval_flip: bool


@dataclass(frozen=True)
class OptimSection(Section):
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    workers: int
    eval_batch_size: int
    schedule: str
    poly_power: float
    milestones: tuple[float, ...]
    warmup_steps: int
    warmup_epochs: float
    warmup_start: float | None
    min_lr_factor: float


@dataclass(frozen=True)
class Stage1Section(Section):
    epochs: int
    schedule_epochs: int | None
    loss: str
    cpa_epoch: int
    cpa_source: str


@dataclass(frozen=True)
class Stage2Section(Section):
    epochs: int
    trains: str
    sampling: str
    prn_counts: str
    reduction: str
    loss: str
    eta: float | str
    floor: float
    lr: float | None


@dataclass(frozen=True)
class SelfCorrectionSection(Section):
    cycles: int
    cycle_epochs: int
    lr: float | None


@dataclass(frozen=True)
class MultiPersonSection(Section):
    epochs: int | None
    loss_weights: dict[str, float]
    short_sides: tuple[int, ...] | None
    max_size: int
    test_short_side: int | None
    min_score: float
    val_options: dict[str, Any]


@dataclass(frozen=True)
class LossesSection(Section):
    focal_gamma: float
    cb_beta: float


@dataclass(frozen=True)
class InterClassSection(Section):
    weight: float
    margin: float
    stages: tuple[int, ...]


@dataclass(frozen=True)
class LogSection(Section):
    tensorboard: bool
    progress: bool


@dataclass(frozen=True)
class ExportSection(Section):
    weights: str
    onnx: str | None
    input_size: tuple[int, int] | None


@dataclass(frozen=True)
class Recipe(Section):
    """A whole recipe (``load_config``): DEFAULTS' keys, each section a frozen dataclass."""

    name: str
    seed: int
    output_dir: str
    device: str
    amp: str
    max_nonfinite_steps: int
    deterministic: bool
    paper: str | None
    dataset: DatasetSection
    model: ModelSection
    input: InputSection
    optim: OptimSection
    stage1: Stage1Section
    stage2: Stage2Section
    self_correction: SelfCorrectionSection
    multi_person: MultiPersonSection
    losses: LossesSection
    inter_class: InterClassSection
    eval_every: int
    keep_checkpoints: tuple[int, ...]
    log: LogSection
    export: ExportSection

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> Recipe:
        """The recipe of a merged dict with DEFAULTS' keys (``merge`` refused any other)."""
        values = {}
        for f in fields(cls):
            value = config[f.name]
            section = SECTIONS.get(f.name)
            values[f.name] = section(**{k: _frozen(v) for k, v in value.items()}) if section else _frozen(value)
        return cls(**values)


SECTIONS: dict[str, type[Section]] = {
    "dataset": DatasetSection, "model": ModelSection, "input": InputSection, "optim": OptimSection,
    "stage1": Stage1Section, "stage2": Stage2Section, "self_correction": SelfCorrectionSection,
    "multi_person": MultiPersonSection, "losses": LossesSection, "inter_class": InterClassSection,
    "log": LogSection, "export": ExportSection}


