"""The two-stage DTPR loop: one run from a config.

Stage 1 trains the whole network and records CPA at ``stage1.cpa_epoch``;
stage 2 freezes the encoder and trains the decoder (or classifier) on the
pixels PRA/PRN keeps. Then evaluation and export. ``run`` builds the pieces
(datasets, loaders, model, per-stage optimizer and loss), calls the epoch loops
of ``training/engine.py``, and writes a checkpoint after every epoch.

Reproducibility: the data order, every sample's augmentation, dropout and the
PRA draws are all seeded from (seed, epoch, index/step, rank), so a run resumed
from its last epoch checkpoint repeats the uninterrupted run bit for bit.
"""
from __future__ import annotations

import inspect
import json
import math
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from human_parsing_ros.class_sets import ClassSet, get_class_set
from human_parsing_ros.errors import one_line
from human_parsing_ros.models import ARCHITECTURES, SegmentationModel, build_model
from human_parsing_ros.weights import WeightsError, load_weights, non_finite_tensor
from training.checkpoint import CheckpointError, load_checkpoint, make_checkpoint, save_checkpoint
from training.config import recipe_changes
from training.datasets import (
    ConcatParsingDataset,
    ParsingDataset,
    UnreadableDataError,
    build_dataset,
    check_label_ids,
    class_statistics,
)
from training.distributed import DistInfo, barrier, setup_distributed, unwrap_ddp, wrap_ddp
from training.engine import STAGE_LOSSES, NonFiniteError, StageLoss, StageState, evaluate, train_one_epoch
from training.export import export_weights, validation_is_trained_on
from training.loaders import make_eval_loader, make_train_loader
from training.losses import REDUCTIONS, class_balanced_weights
from training.metrics import METRICS, cpa_for_sampling, format_summary, write_class_table
from training.sampling import PixelSampler, keep_probabilities
from training.seeding import capture_rng_states, restore_rng_states
from training.self_correction import cycle_lr_factor, cycle_plan, update_aggregated
from training.transforms import EvalTransform, TrainTransform

# What a run writes into its output_dir (besides checkpoint_epochNN.pt and tensorboard/).
RUN_FILES = ("checkpoint.pt", "history.json", "metrics.json", "kept_pixels.csv", "val_classes.csv",
             "val_classes.md", "cpa_vs_pixels.png")


class RunDirectoryError(FileExistsError):
    """A new run asked to write into the directory of an earlier one."""


# ---- building blocks ------------------------------------------------------------------------------
def make_model(architecture: str, args: dict[str, Any], num_classes: int) -> SegmentationModel:
    """``build_model`` with a hint when the ImageNet encoder weights cannot be fetched."""
    try:
        return build_model(architecture, **{**args, "num_classes": num_classes})
    except (RuntimeError, OSError) as err:
        raise RuntimeError(
            f"building {architecture} failed: {err}. Offline? Put torchvision's checkpoint in "
            "$TORCH_HOME/hub/checkpoints/ or set model.args.encoder_weights: null") from None


def architecture_args(architecture: str, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` with the architecture's defaults filled in (not ``encoder_weights``/``num_classes``): two
    argument dicts build the same network exactly when these agree."""
    signature = inspect.signature(ARCHITECTURES[architecture].__init__)
    defaults = {name: p.default for name, p in signature.parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {k: v for k, v in {**defaults, **args}.items() if k not in ("encoder_weights", "num_classes")}


def init_from_weights(model: torch.nn.Module, path: str | Path, architecture: str, args: dict[str, Any],
                      class_set: ClassSet) -> None:
    """Start ``model`` (built from ``architecture`` and ``args``) from the tensors of weights file ``path``
    (fine-tuning); WeightsError names the file and what differs when its network or classes are not the run's."""
    net, info = load_weights(path)
    if info.architecture != architecture:
        raise WeightsError(f"{path}: architecture '{info.architecture}', the run trains '{architecture}'")
    theirs, ours = architecture_args(architecture, info.architecture_args), architecture_args(architecture, args)
    differ = [f"{key} {theirs.get(key)!r} (file) vs {ours.get(key)!r} (run)" for key in sorted(theirs | ours)
              if theirs.get(key) != ours.get(key)]
    if differ:
        raise WeightsError(f"{path}: model.args differ: {'; '.join(differ)}")
    if tuple(info.class_names) != tuple(class_set.names):
        raise WeightsError(f"{path}: classes of '{info.class_set_name}' ({len(info.class_names)}), the run trains "
                           f"'{class_set.name}' ({class_set.num_classes}); set dataset.class_set to match")
    model.load_state_dict(net.state_dict())


def without_download(args: dict[str, Any]) -> dict[str, Any]:
    """Architecture ``args`` that build the network without fetching ImageNet encoder weights."""
    return {**args, "encoder_weights": None} if "encoder_weights" in args else dict(args)


def start_weights_args(config: dict, resuming: bool) -> dict[str, Any]:
    """The run's model.args, without ImageNet encoder weights when a checkpoint (``resuming``) or
    ``model.init`` replaces every tensor anyway: a resumed run needs neither the network nor the file."""
    args = config["model"]["args"]
    return without_download(args) if resuming or config["model"]["init"] else dict(args)


def recipe_class_set(config: dict) -> ClassSet:
    """The class set a recipe trains (``dataset.class_set``, else the dataset's own)."""
    return get_class_set(config["dataset"]["class_set"] or config["dataset"]["name"])


RESUME_IGNORED = ("output_dir", "model.args.encoder_weights")  # a copied run resumes where it is; no downloads


def resume_changes(checkpoint: dict, config: dict) -> list[str]:
    """The settings in which ``config`` differs from the recipe ``checkpoint`` was trained with."""
    return recipe_changes(checkpoint["config"], config, ignore=RESUME_IGNORED)


def load_resumed_model(model: torch.nn.Module, checkpoint: dict, config: dict, path: Path) -> None:
    """``checkpoint``'s network into ``model``; one line naming the file and the network's changed settings
    when this recipe builds a network its tensors do not fit."""
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        network = [change for change in resume_changes(checkpoint, config)
                   if change.startswith(("model.", "dataset.class_set ", "dataset.name "))]
        raise CheckpointError(f"{path}: its network does not fit this recipe's "
                              f"({'; '.join(network) or one_line(error)}): resume with the recipe the run started "
                              "with, or start a new run (model.init fine-tunes from a weights file)") from None


def start_description(config: dict, start_epoch: int) -> str:
    """How a run starts, for its first log line."""
    if start_epoch:
        return f"resuming after epoch {start_epoch}"
    return f"from {config['model']['init']}" if config["model"]["init"] else "from scratch"


def make_optimizer(params: Iterable[torch.nn.Parameter], lr: float, momentum: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


SCHEDULES = ("cosine", "poly", "step")
PRN_COUNTS = ("images", "pixels")
SAMPLINGS = ("pra", "prn", "none")
STAGE2_TRAINS = ("auto", "decoder", "classifier")
CPA_SOURCES = ("val", "train")
EVAL_LABELS = ("original", "resized")


def check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    """ValueError naming the config ``key`` when ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{key} '{value}' is not one of {', '.join(allowed)}")


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, schedule: str = "cosine",
                   poly_power: float = 0.9, cycle_steps: int = 0, cycle_factor: float = 0.5,
                   milestones: Sequence[float] = (), warmup_steps: int = 0, warmup_start: float | None = None,
                   min_lr_factor: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration learning-rate factor over one stage: cosine annealing (DTPR's CosineAnnealing),
    poly, (1 - step / total_steps) ** poly_power (C-DLinkNet's), or step, x 0.1 at each milestone (fractions of
    ``total_steps``; RP R-CNN's), over ``total_steps``, from 1 down to ``min_lr_factor`` (SCHP: 0.01);
    ``warmup_steps``: first a linear ramp from ``warmup_start`` (default 1/3) that multiplies the schedule.
    After them, with ``cycle_steps``, self-correction's cyclical schedule: a cosine from ``cycle_factor`` to
    ``min_lr_factor`` every cycle (SCHP's)."""
    check_choice("optim.schedule", schedule, SCHEDULES)
    steps = max(1, total_steps)
    start, rise = (1 / 3, 2 / 3) if warmup_start is None else (warmup_start, 1 - warmup_start)
    floor = min_lr_factor

    def main(step: int) -> float:
        if schedule == "poly":
            return (1.0 - min(step, steps) / steps) ** poly_power
        if schedule == "step":
            return 0.1 ** sum(step >= fraction * steps for fraction in milestones)
        return 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))

    def factor(step: int) -> float:
        if not cycle_steps or step < steps:
            ramp = 1.0 if step >= warmup_steps else start + rise * step / warmup_steps
            return ramp * (floor + (1 - floor) * main(step))
        within = (step - steps) % cycle_steps
        return floor + (cycle_factor - floor) * 0.5 * (1.0 + math.cos(math.pi * within / cycle_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def stage_loss_name(config: dict, stage: int) -> str:
    """``stage<stage>.loss``, refused unless it is one of ``STAGE_LOSSES``."""
    name = config[f"stage{stage}"]["loss"]
    check_choice(f"stage{stage}.loss", name, STAGE_LOSSES)
    return name


def check_losses(config: dict) -> None:
    """Refuse loss, schedule and evaluation settings that cannot work before any time is spent training."""
    stage2 = config["stage2"]
    for stage in (1, 2):
        stage_loss_name(config, stage)
    if stage2["sampling"] != "none" and stage2["loss"] != "ce":
        raise ValueError(f"stage2.loss '{stage2['loss']}' needs stage2.sampling: none (PRA/PRN sample for CE)")
    check_choice("stage2.reduction", stage2["reduction"], REDUCTIONS)
    check_choice("stage2.prn_counts", stage2["prn_counts"], PRN_COUNTS)
    check_choice("stage2.sampling", stage2["sampling"], SAMPLINGS)
    check_choice("stage2.trains", stage2["trains"], STAGE2_TRAINS)
    check_choice("stage1.cpa_source", config["stage1"]["cpa_source"], CPA_SOURCES)
    if stage2["sampling"] != "none":  # found now, not after all of stage 1
        try:
            keep_probabilities(torch.ones(2), stage2["eta"], stage2["floor"])
        except ValueError as err:
            raise ValueError(f"stage2 eta {stage2['eta']!r} / floor {stage2['floor']!r}: {err}") from None
    if stage2["sampling"] == "pra" and stage2["epochs"] and config["stage1"]["cpa_epoch"] < 1:
        raise ValueError("stage2.sampling pra needs CPA: stage1.cpa_epoch must be 1 or more")
    if not isinstance(config["eval_every"], int) or config["eval_every"] < 1:
        raise ValueError(f"eval_every must be a whole number of epochs, 1 or more, not {config['eval_every']!r} "
                         "(the last epoch is always evaluated)")
    optim = config["optim"]
    check_choice("optim.schedule", optim["schedule"], SCHEDULES)
    if optim["warmup_steps"] and optim["warmup_epochs"]:
        raise ValueError("optim: set warmup_steps or warmup_epochs, not both")
    if not 0 <= optim["min_lr_factor"] < 1 or not 0 <= (optim["warmup_start"] or 0) <= 1:
        raise ValueError(f"optim: min_lr_factor must be in [0, 1) and warmup_start in [0, 1], not "
                         f"{optim['min_lr_factor']} and {optim['warmup_start']}")
    check_choice("input.eval_labels", config["input"]["eval_labels"], EVAL_LABELS)
    cycle_plan(config)


def sampling_scores(config: dict, cpa: torch.Tensor | None, counts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The x_i that stage 2's sampler divides eta by: PRA's CPA, or PRN's training-set counts per class
    (``stage2.prn_counts``: images containing the class, or its pixels)."""
    stage2 = config["stage2"]
    if stage2["sampling"] == "pra":
        if cpa is None:
            raise ValueError("stage2.sampling pra needs CPA: stage1.cpa_epoch must lie within stage 1")
        return cpa
    check_choice("stage2.prn_counts", stage2["prn_counts"], PRN_COUNTS)
    return counts[stage2["prn_counts"]]


def make_stage_loss(config: dict, stage: int, cpa: torch.Tensor | None, counts: dict[str, torch.Tensor]) -> StageLoss:
    """The loss of ``stage``: PRA (scores = ``cpa``) or PRN (``counts``) sampling in stage 2, or
    ``stage<N>.loss`` on every pixel; the inter-class term where ``inter_class.stages`` lists the stage."""
    stage2, inter_class = config["stage2"], config["inter_class"]
    sampler = None
    if stage == 2 and stage2["sampling"] in ("pra", "prn"):
        scores = sampling_scores(config, cpa, counts)
        sampler = PixelSampler(keep_probabilities(scores.float(), stage2["eta"], stage2["floor"]))
    name = stage_loss_name(config, stage)
    weights = class_balanced_weights(counts["pixels"], config["losses"]["cb_beta"]) \
        if name == "class_balanced" else None
    return StageLoss(name=name, sampler=sampler, reduction=stage2["reduction"] if stage == 2 else "kept_mean",
                     class_weights=weights, focal_gamma=config["losses"]["focal_gamma"],
                     inter_class_weight=inter_class["weight"] if stage in inter_class["stages"] else 0.0,
                     inter_class_margin=inter_class["margin"])


def stage_lr(config: dict, stage: int) -> float:
    """The peak learning rate of ``stage`` (stage 2: ``stage2.lr``, else ``optim.lr``)."""
    return (config["stage2"]["lr"] if stage == 2 else None) or config["optim"]["lr"]


def apply_lr_change(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR,
                    lr: float) -> float | None:
    """Give a resumed schedule the configured peak ``lr`` (the checkpoint's would keep its own); the
    schedule continues from where it was. Returns the checkpoint's lr when it differed, else None."""
    old = scheduler.base_lrs[0]
    if old == lr:
        return None
    scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
    step = scheduler.last_epoch
    for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["initial_lr"], group["lr"] = lr, lr * factor(step)
    return old


def schedule_shape(optim: dict, steps_per_epoch: int, steps: int, **settings: Any) -> dict[str, Any]:
    """What a checkpoint keeps of a schedule (``settings``: the run's own), so that a resume can fit and
    report a changed one (``continue_schedule``)."""
    return {"steps_per_epoch": steps_per_epoch, "steps": steps, "schedule": optim["schedule"], **settings,
            **({"poly_power": optim["poly_power"]} if optim["schedule"] == "poly" else {}),
            **({"milestones": list(optim["milestones"])} if optim["schedule"] == "step" else {})}


def make_stage(model: torch.nn.Module, stage: int, config: dict, steps_per_epoch: int, cpa: torch.Tensor | None,
               counts: dict[str, torch.Tensor]) -> StageState:
    """Optimizer, schedule and loss for one stage (stage 2 freezes what it must first)."""
    base = unwrap_ddp(model)
    optim, stage1, stage2 = config["optim"], config["stage1"], config["stage2"]
    cycle_steps = 0
    if stage == 1:
        params, lr = list(base.parameters()), stage_lr(config, 1)
        epochs = stage1["schedule_epochs"] or stage1["epochs"]
        cycle_steps = config["self_correction"]["cycle_epochs"] * steps_per_epoch \
            if cycle_plan(config).cycles else 0
    else:
        params = base.freeze_for_stage2(None if stage2["trains"] == "auto" else stage2["trains"])
        epochs, lr = stage2["epochs"], stage_lr(config, 2)
    optimizer = make_optimizer(params, lr, optim["momentum"], optim["weight_decay"])
    warmup_steps = optim["warmup_steps"] or round(optim["warmup_epochs"] * steps_per_epoch)
    scheduler = make_scheduler(optimizer, epochs * steps_per_epoch, optim["schedule"], optim["poly_power"],
                               cycle_steps, cycle_lr_factor(config), optim["milestones"], warmup_steps,
                               optim["warmup_start"], optim["min_lr_factor"])
    schedule = schedule_shape(optim, steps_per_epoch, epochs * steps_per_epoch, cycle_steps=cycle_steps,
                              warmup_steps=warmup_steps, warmup_start=optim["warmup_start"],
                              min_lr_factor=optim["min_lr_factor"])
    return StageState(stage, optimizer, scheduler, make_stage_loss(config, stage, cpa, counts), schedule)


def continue_schedule(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR,
                      schedule: dict[str, Any], saved: dict[str, Any]) -> list[str]:
    """Fit a restored schedule position to this run's steps per epoch (a new batch size or number of
    processes: the schedule resumes at the same fraction of its length, not the same step count); returns
    how the schedule's shape ``schedule`` differs from the checkpoint's ``saved`` (empty for older ones)."""
    changes = [f"{key} {saved[key]} -> {value}" for key, value in schedule.items()
               if key in saved and saved[key] != value]
    old_steps, new_steps = saved.get("steps_per_epoch"), schedule["steps_per_epoch"]
    if old_steps and old_steps != new_steps:
        step = round(scheduler.last_epoch * new_steps / old_steps)
        scheduler.last_epoch = step
        for group, factor, base_lr in zip(optimizer.param_groups, scheduler.lr_lambdas, scheduler.base_lrs):
            group["lr"] = base_lr * factor(step)
    return changes


def resume_schedule(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, lr: float,
                    schedule: dict[str, Any], saved: dict[str, Any], path: Path) -> list[str]:
    """Continue a restored schedule (``saved``: its shape, from the checkpoint at ``path``) under this run's
    recipe (``apply_lr_change``, ``continue_schedule``); returns what that changed, one log line each."""
    notes = []
    old_lr = apply_lr_change(optimizer, scheduler, lr)
    if old_lr is not None:
        notes.append(f"peak lr {old_lr:g} -> {lr:g} from the resumed step on")
    changes = continue_schedule(optimizer, scheduler, schedule, saved)
    if changes:
        notes.append(f"schedule changed since {path} ({', '.join(changes)}): it continues at step "
                     f"{scheduler.last_epoch} of the new one")
    return notes


EXTRA_KEYS = ("name", "root", "split", "options")


def extra_dataset(spec: dict[str, Any], class_set: ClassSet) -> ParsingDataset:
    """One ``dataset.extra`` entry's training data, labels mapped to ``class_set``."""
    unknown = sorted(set(spec) - set(EXTRA_KEYS))
    if unknown or "name" not in spec or "root" not in spec:
        raise ValueError(f"dataset.extra entry {spec}: needs name and root, may have split and options "
                         f"(unknown: {', '.join(unknown) or 'none'})")
    return build_dataset(spec["name"], spec["root"], spec.get("split", "train"),
                         **{**spec.get("options", {}), "class_set": class_set.name})


def make_datasets(config: dict, class_set: ClassSet) -> tuple[ParsingDataset, ParsingDataset]:
    """(training set with the seeded augmentation, validation set: images resized to ``input.eval_size``, labels
    too if ``input.eval_labels`` is resized)."""
    data_spec, input_spec = config["dataset"], config["input"]
    augment = TrainTransform(tuple(input_spec["crop_size"]), tuple(input_spec["scale_range"]),
                             input_spec["max_rotation"], class_set.flip_permutation(), input_spec["jitter"])
    options = {**data_spec["options"], "class_set": class_set.name}  # labels mapped on load if it differs
    if data_spec["extra"]:
        parts = [build_dataset(data_spec["name"], data_spec["root"], data_spec["train_split"], **options)]
        parts += [extra_dataset(spec, class_set) for spec in data_spec["extra"]]
        train_set = ConcatParsingDataset(parts, augment, skip_unreadable=True, seed=config["seed"])
    else:
        train_set = build_dataset(data_spec["name"], data_spec["root"], data_spec["train_split"], augment,
                                  seed=config["seed"], skip_unreadable=True, **options)
    eval_size = tuple(input_spec["eval_size"]) if input_spec["eval_size"] else None
    resize_labels = eval_labels_resized(config)
    val_set = build_dataset(data_spec["name"], data_spec["root"], data_spec["val_split"],
                            EvalTransform(eval_size, resize_labels=resize_labels), **options)
    return train_set, val_set


def validation_statistics(val_set: ParsingDataset, split: str) -> dict[str, Any]:
    """``class_statistics`` of the validation split. A dataset that skips unreadable samples (MHPv2) has
    those left out of validation (substituting the next one would score that one twice); in any other an
    unreadable label stops the run naming the file."""
    try:
        stats = class_statistics(val_set)  # records out-of-range ids rather than raising
    except (OSError, ValueError) as error:
        raise UnreadableDataError(f"validation split '{split}': {error}") from None
    if stats["skipped"]:
        skipped = set(stats["skipped"])
        val_set.items = [item for item in val_set.items if item.id not in skipped]
    return stats


def eval_labels_resized(config: dict) -> bool:
    """Whether validation resizes the labels to ``input.eval_size`` (else they keep their own resolution)."""
    check_choice("input.eval_labels", config["input"]["eval_labels"], EVAL_LABELS)
    cycle_plan(config)
    return config["input"]["eval_labels"] == "resized"


def eval_flip_perm(config: dict, class_set: ClassSet) -> list[int] | None:
    """The flip permutation when ``input.eval_flip`` turns the flip test on, else None."""
    return class_set.flip_permutation() if config["input"]["eval_flip"] else None


def train_counts(stats: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Per-class training-set counts (float64 [C]): ``pixels`` and ``images`` (PRN's two readings)."""
    return {key: torch.tensor(stats[key], dtype=torch.float64) for key in ("pixels", "images")}


def restore_aggregated(checkpoint: dict | None, config: dict, num_classes: int,
                       device: torch.device) -> SegmentationModel | None:
    """Self-correction's aggregated model from ``checkpoint`` (None before the cycles began)."""
    if not checkpoint or checkpoint.get("aggregated") is None:
        return None
    aggregated = model_from_state(config, num_classes, checkpoint["aggregated"])
    return aggregated.to(device).to(memory_format=torch.channels_last).requires_grad_(False).eval()


def model_from_state(config: dict, num_classes: int, state: dict[str, torch.Tensor]) -> SegmentationModel:
    """The recipe's architecture holding ``state`` (no ImageNet download: the state has every weight)."""
    model = make_model(config["model"]["architecture"], without_download(config["model"]["args"]), num_classes)
    model.load_state_dict(state)
    return model


# ---- the run directory ----------------------------------------------------------------------------
def run_outputs(config: dict, out: Path) -> list[Path]:
    """The files and folders of ``out`` that a run with ``config`` writes and that exist now."""
    names = [*RUN_FILES, config["export"]["weights"], config["export"]["onnx"], "tensorboard"]
    found = [out / name for name in names if name and (out / name).exists()]
    return found + sorted(out.glob("checkpoint_epoch*.pt"))


def prepare_run_directory(config: dict, out: Path, resume: bool, overwrite: bool, delete: bool = True) -> None:
    """Refuse a new run into an earlier run's directory unless ``overwrite``, which deletes that run's files
    where ``delete`` (rank 0; every rank calls this, so that all refuse alike)."""
    existing = run_outputs(config, out)
    if resume or not existing:
        return
    if not overwrite:
        raise RunDirectoryError(
            f"{out}: holds an earlier run ({', '.join(p.name for p in existing[:4])}"
            f"{', ...' if len(existing) > 4 else ''}); --resume continues it, --overwrite deletes it and "
            "starts over, or choose another name=/output_dir=")
    if delete:
        for path in existing:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def trim_kept_pixels(path: Path, epochs_done: int) -> None:
    """Drop rows of epochs after ``epochs_done`` (written before a kill, repeated after the resume)."""
    if not path.exists():
        return
    header, *rows = path.read_text().splitlines(keepends=True)
    keep = [row for row in rows if int(row.split(",", 1)[0]) <= epochs_done]
    if len(keep) != len(rows):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(header + "".join(keep))
        tmp.replace(path)


def check_finite_model(model: torch.nn.Module, epoch: int) -> None:
    """``NonFiniteError`` naming the tensor when ``model`` holds NaN/Inf (never checkpointed or exported)."""
    bad = non_finite_tensor(model.state_dict())
    if bad:
        raise NonFiniteError(f"after epoch {epoch}: the model went non-finite ({bad}); nothing of this epoch was "
                             "saved: lower optim.lr or change amp, then --resume")


# ---- the run --------------------------------------------------------------------------------------
def run(config: dict, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train (or continue, ``resume``) the run that ``config`` describes; returns its final metrics and files.

    A new run refuses an output_dir that holds an earlier run's files unless ``overwrite``.
    """
    check_losses(config)
    torch.use_deterministic_algorithms(bool(config["deterministic"]), warn_only=True)
    dist_info, device = setup_distributed(config["device"])
    out = Path(config["output_dir"])
    prepare_run_directory(config, out, resume, overwrite, delete=dist_info.is_main)
    barrier(dist_info)
    out.mkdir(parents=True, exist_ok=True)
    data_spec, optim = config["dataset"], config["optim"]
    class_set = recipe_class_set(config)
    num_classes = class_set.num_classes
    train_set, val_set = make_datasets(config, class_set)
    val_stats = validation_statistics(val_set, data_spec["val_split"])  # before its loader
    check_label_ids(val_stats, num_classes)
    if val_stats["skipped"] and dist_info.is_main:
        print(f"[dtpr] warning: validation leaves out {len(val_stats['skipped'])} unreadable sample(s): "
              f"{', '.join(val_stats['skipped'][:5])}{' ...' if len(val_stats['skipped']) > 5 else ''}", flush=True)
    plan = cycle_plan(config)
    stage1_epochs, stage2_epochs = plan.epochs, config["stage2"]["epochs"]
    total_epochs = stage1_epochs + stage2_epochs
    cpa_epoch = min(config["stage1"]["cpa_epoch"], stage1_epochs)
    same_sizes = config["input"]["eval_size"] and eval_labels_resized(config)
    eval_batch_size = optim["eval_batch_size"] if same_sizes else 1  # label sizes differ otherwise
    flip_perm = eval_flip_perm(config, class_set)
    val_loader = make_eval_loader(val_set, eval_batch_size, optim["workers"], dist_info)
    steps_per_epoch = len(make_train_loader(train_set, optim["batch_size"], optim["workers"], config["seed"], 0,
                                            dist_info))

    checkpoint_path = out / "checkpoint.pt"
    checkpoint = load_checkpoint(checkpoint_path) if resume and checkpoint_path.exists() else None
    changed = resume_changes(checkpoint, config) if checkpoint else []
    if changed and dist_info.is_main:
        print(f"[dtpr] resuming with settings changed since {checkpoint_path}: {'; '.join(changed)}", flush=True)
    torch.manual_seed(config["seed"])
    model = make_model(config["model"]["architecture"], start_weights_args(config, checkpoint is not None),
                       num_classes)
    model = model.to(device).to(memory_format=torch.channels_last)
    if not checkpoint and config["model"]["init"]:
        init_from_weights(model, config["model"]["init"], config["model"]["architecture"], config["model"]["args"],
                          class_set)
    start_epoch = checkpoint["epoch"] if checkpoint else 0
    cpa = checkpoint["cpa"] if checkpoint else None
    cpa_train = checkpoint.get("cpa_train") if checkpoint else None
    if checkpoint and "image_counts" in checkpoint:
        counts = {"pixels": checkpoint["pixel_counts"], "images": checkpoint["image_counts"]}
    else:  # the first pass over the labels: an id outside the class set stops the run here, naming the file
        stats = class_statistics(train_set)
        check_label_ids(stats, num_classes)
        counts = train_counts(stats)
    history: list[dict] = checkpoint["history"] if checkpoint else []
    stage = 1 if start_epoch < stage1_epochs else 2
    if checkpoint:
        load_resumed_model(model, checkpoint, config, checkpoint_path)
    aggregated = restore_aggregated(checkpoint, config, num_classes, device)
    current = make_stage(model, stage, config, steps_per_epoch, cpa, counts) \
        if start_epoch < total_epochs else None
    scaler = torch.amp.GradScaler(device.type, enabled=config["amp"] == "fp16")
    if checkpoint and current is not None:
        # the scaler and the RNG carry over a stage boundary, as in an uninterrupted run; a run that did not
        # use fp16 saved an empty scaler state, so one that switches to fp16 starts its scaler afresh
        if checkpoint["scaler"]:
            scaler.load_state_dict(checkpoint["scaler"])
        restore_rng_states(checkpoint["rng"])
    if checkpoint and current is not None and checkpoint["stage"] == stage:  # else the new stage starts its own
        current.optimizer.load_state_dict(checkpoint["optimizer"])
        current.scheduler.load_state_dict(checkpoint["scheduler"])
        notes = resume_schedule(current.optimizer, current.scheduler, stage_lr(config, stage), current.schedule,
                                checkpoint.get("schedule") or {}, checkpoint_path)
        if dist_info.is_main:
            for note in notes:
                print(f"[dtpr] stage {stage} {note}", flush=True)
    if dist_info.is_main:
        print(f"[dtpr] {config['name']}: {len(train_set)} train / {len(val_set)} val images, "
              f"{num_classes} classes ({class_set.name}), stage 1 {stage1_epochs} + stage 2 {stage2_epochs} epochs, "
              f"{start_description(config, start_epoch)}, {device}, "
              f"{dist_info.world_size} process(es)", flush=True)
        overlap = validation_is_trained_on(config)
        if overlap:
            print(f"[dtpr] warning: {overlap}, so the validation figures of this run are not held out", flush=True)
    if dist_info.is_main:
        trim_kept_pixels(out / "kept_pixels.csv", start_epoch)
    writer = _tensorboard(config["log"]["tensorboard"] and dist_info.is_main, out, start_epoch)
    net = wrap_ddp(model, dist_info, device)
    del checkpoint  # restored into the model and optimizer: no second copy for the whole run
    for epoch in range(start_epoch, total_epochs):
        if epoch == stage1_epochs and current.stage == 1:
            current = make_stage(model, 2, config, steps_per_epoch, cpa, counts)
            net = wrap_ddp(model, dist_info, device)  # DDP must see the frozen parameters
        began = time.perf_counter()
        loader = make_train_loader(train_set, optim["batch_size"], optim["workers"], config["seed"], epoch,
                                   dist_info)
        cycle = plan.cycle(epoch) if current.stage == 1 else 0
        result = train_one_epoch(net, loader, current, scaler, device, dist_info, epoch, config["seed"], num_classes,
                                 amp=config["amp"], progress=config["log"]["progress"],
                                 max_nonfinite_steps=config["max_nonfinite_steps"],
                                 teacher=aggregated if cycle else None, cycle=cycle)
        record: dict[str, Any] = {"epoch": epoch + 1, "stage": current.stage, "loss": result["loss"],
                                  "lr": result["lr"], "seconds": time.perf_counter() - began}
        if result["nonfinite_steps"]:
            record["nonfinite_steps"] = result["nonfinite_steps"]
        if current.loss.sampler is not None:
            kept, total = result["kept"], result["total"]
            record["kept_fraction"] = float(kept.sum() / total.sum().clamp(min=1))
            if dist_info.is_main:
                _log_kept(out / "kept_pixels.csv", epoch + 1, kept, total, class_set.names)
        if current.stage == 1 and epoch + 1 == cpa_epoch:
            # the training data's CPA is free (this epoch's running confusion) and always kept, so that a
            # branch off this run may take either source
            cpa_train = cpa_for_sampling(result["train_confusion"].matrix.cpu())
            if config["stage1"]["cpa_source"] == "val":
                cpa = cpa_for_sampling(evaluate(net, val_loader, num_classes, device, amp=config["amp"]).matrix.cpu())
            else:
                cpa = cpa_train
            record["cpa_recorded"] = True
        m = plan.aggregates_after(epoch + 1) if current.stage == 1 else None
        if m is not None:
            batches = make_train_loader(train_set, optim["batch_size"], optim["workers"], config["seed"], epoch,
                                        dist_info)
            aggregated = update_aggregated(aggregated, model, m, (x.to(device) for x, _ in batches), dist_info)
            record["aggregated_models"] = m + 1
            if epoch + 1 == plan.epochs:  # the last cycle: the network becomes the aggregated model
                model.load_state_dict(aggregated.state_dict())
        if (epoch + 1) % config["eval_every"] == 0 or epoch + 1 == total_epochs:
            metrics = evaluate(net, val_loader, num_classes, device, amp=config["amp"], flip_perm=flip_perm).compute()
            record.update({key: float(metrics[key]) for key in METRICS})
        check_finite_model(model, epoch + 1)
        history.append(record)
        if dist_info.is_main:
            _log_epoch(writer, record)
            state = make_checkpoint(epoch + 1, current.stage, model, current.optimizer, current.scheduler, scaler,
                                    cpa, cpa_train, counts, capture_rng_states(), config, history, aggregated,
                                    current.schedule)
            if epoch + 1 in config["keep_checkpoints"]:  # first: a run killed between the two resumes after it
                save_checkpoint(state, out / f"checkpoint_epoch{epoch + 1:02d}.pt")
            save_checkpoint(state, checkpoint_path)
        barrier(dist_info)
    return _finish(model, val_loader, class_set, config, cpa, counts["pixels"], history, device, dist_info, out)


def _finish(model: SegmentationModel, val_loader: torch.utils.data.DataLoader, class_set: ClassSet, config: dict,
            cpa: torch.Tensor | None, pixel_counts: torch.Tensor, history: list[dict], device: torch.device,
            dist_info: DistInfo, out: Path) -> dict[str, Any]:
    """Final validation, and on rank 0 the class table, weights, ONNX, plots and JSON files."""
    metrics = evaluate(wrap_ddp(model, dist_info, device), val_loader, class_set.num_classes, device,
                       amp=config["amp"], flip_perm=eval_flip_perm(config, class_set)).compute()
    result = {"metrics": {key: float(metrics[key]) for key in METRICS}, "output_dir": str(out), "history": history}
    if not dist_info.is_main:
        return result
    write_class_table(metrics, list(class_set.names), out / "val_classes.csv", out / "val_classes.md")
    weights = export_weights(model, config, class_set, result["metrics"], out / config["export"]["weights"])
    result["weights"] = str(weights)
    if config["export"]["onnx"]:
        from training.export import export_onnx

        result["onnx"] = str(export_onnx(model, out / config["export"]["onnx"], tuple(config["input"]["crop_size"])))
    if cpa is not None:
        from training.plots import plot_cpa_vs_pixels

        plot_cpa_vs_pixels(cpa, pixel_counts, class_set.names, out / "cpa_vs_pixels.png",
                           config["stage1"]["cpa_epoch"])
    (out / "metrics.json").write_text(json.dumps(
        {**result["metrics"], "accuracy_definitions": "PA = correct / labelled pixels; MPA = mean over classes "
         "present in ground truth of CPA(i) = correct_i / predicted_i (the paper's); mean_recall = mean of "
         "correct_i / ground-truth_i"}, indent=2))
    (out / "history.json").write_text(json.dumps(history, indent=2))
    print(f"[dtpr] {config['name']} val: {format_summary(metrics)}; weights {weights}", flush=True)
    return result


def _tensorboard(enabled: bool, out: Path, epochs_done: int):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("[dtpr] tensorboard is not installed: no TensorBoard logs (pip install '.[train]')")
        return None
    # purge_step: TensorBoard drops the earlier events of epochs after the checkpoint (logged before a kill)
    return SummaryWriter(str(out / "tensorboard"), purge_step=epochs_done + 1 if epochs_done else None)


def _log_epoch(writer, record: dict) -> None:
    summary = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
    print(f"[dtpr] {summary}", flush=True)
    if writer is not None:
        for key in ("loss", "lr", "kept_fraction", "pixel_accuracy", "mean_pixel_accuracy", "mean_iou"):
            if key in record:
                writer.add_scalar(key, record[key], record["epoch"])
        writer.flush()


def _log_kept(path: Path, epoch: int, kept: torch.Tensor, total: torch.Tensor, names: Iterable[str]) -> None:
    new = not path.exists()
    with path.open("a") as f:
        if new:
            f.write("epoch,class_id,name,kept_pixels,gt_pixels,kept_fraction\n")
        for class_id, name in enumerate(names):
            if total[class_id] > 0:
                f.write(f"{epoch},{class_id},{name},{int(kept[class_id])},{int(total[class_id])},"
                        f"{float(kept[class_id] / total[class_id]):.6f}\n")
