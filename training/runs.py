"""The run spine every kind of run shares (DTPR's two stages in ``dtpr.py``, RP R-CNN's one in
``person_training.py``): building and starting the network, the start of a run (distributed set-up, run
directory, checkpoint and what a resume changes, seeding, model), the end of each epoch (finite check,
history, checkpoint, log line) and the end of the run (weights file, history.json, last log line).

Reproducibility: a run seeds the network's initialisation from ``seed`` right before building it and restores
the checkpoint's RNG states on resume, so a resumed run repeats the uninterrupted one bit for bit.
"""
from __future__ import annotations

import inspect
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from human_parsing_ros.class_sets import ClassSet, get_class_set
from human_parsing_ros.errors import UserError, flattened, one_line
from human_parsing_ros.models import ARCHITECTURES, SegmentationModel, build_model
from human_parsing_ros.weights import WeightsError, load_weights, non_finite_tensor
from training.checkpoint import CheckpointError, copy_checkpoint, load_checkpoint, plain_checkpoint, save_checkpoint
from training.config import Recipe, recipe_changes
from training.distributed import DistInfo, barrier, setup_distributed
from training.engine import NonFiniteError
from training.export import export_weights, weights_args
from training.recipe import DatasetSection, ModelSection
from training.schedules import resume_schedule
from training.seeding import restore_rng_states

# What a run writes into its output_dir (besides checkpoint_epochNN.pt and tensorboard/).
RUN_FILES = ("checkpoint.pt", "history.json", "metrics.json", "kept_pixels.csv", "val_classes.csv",
             "val_classes.md", "cpa_vs_pixels.png")
RESUME_IGNORED = ("output_dir", "model.args.encoder_weights")  # a copied run resumes where it is; no downloads
TENSORBOARD_KEYS = ("loss", "lr", "kept_fraction", "pixel_accuracy", "mean_pixel_accuracy", "mean_iou")


class RunDirectoryError(UserError, FileExistsError):
    """A new run asked to write into the directory of an earlier one."""


# ---- the network ----------------------------------------------------------------------------------
class ModelError(UserError, ValueError):
    """The recipe's network cannot be built: model.args (a value, an encoder weights file that is missing,
    unreadable or pickled code) or ImageNet weights that cannot be fetched; the message names the setting or
    file."""


def make_model(architecture: str, args: dict[str, Any], num_classes: int) -> SegmentationModel:
    """``build_model``; ``ModelError`` in one line for what the recipe's model settings cause (a hint when the
    ImageNet encoder weights cannot be fetched)."""
    try:
        return build_model(architecture, **{**args, "num_classes": num_classes})
    except ValueError as err:  # the models' refusals (an encoder weights file named in the message, a value)
        raise ModelError(f"model {architecture}: {flattened(err)}") from None
    except TypeError as err:
        if "unexpected keyword argument" not in str(err):
            raise
        raise ModelError(f"model.args of {architecture}: {err}") from None
    except (RuntimeError, OSError) as err:
        raise ModelError(
            f"building {architecture} failed: {one_line(err)}. Offline? Put torchvision's checkpoint in "
            "$TORCH_HOME/hub/checkpoints/ or set model.args.encoder_weights: null") from None


def architecture_args(architecture: str, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` with the architecture's defaults filled in, as a weights file stores them but without
    ``num_classes``: two argument dicts build the same network exactly when these agree."""
    signature = inspect.signature(ARCHITECTURES[architecture].__init__)
    defaults = {name: p.default for name, p in signature.parameters.items()
                if p.default is not inspect.Parameter.empty}
    stored = weights_args({**defaults, **args}, 0)
    del stored["num_classes"]
    return stored


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


def start_weights_args(model: ModelSection, resuming: bool) -> dict[str, Any]:
    """The run's model.args, without ImageNet encoder weights when a checkpoint (``resuming``) or
    ``model.init`` replaces every tensor anyway: a resumed run needs neither the network nor the file."""
    return without_download(model.args) if resuming or model.init else dict(model.args)


def recipe_class_set(data: DatasetSection) -> ClassSet:
    """The class set a recipe trains (``dataset.class_set``, else the dataset's own)."""
    return get_class_set(data.class_set or data.name)


def model_from_state(spec: ModelSection, num_classes: int, state: dict[str, torch.Tensor]) -> SegmentationModel:
    """The recipe's architecture holding ``state`` (no ImageNet download: the state has every weight)."""
    model = make_model(spec.architecture, without_download(spec.args), num_classes)
    model.load_state_dict(state)
    return model


def resume_changes(checkpoint: dict, config: Recipe) -> list[str]:
    """The settings in which ``config`` differs from the recipe ``checkpoint`` was trained with."""
    return recipe_changes(checkpoint["config"], config, ignore=RESUME_IGNORED)


def load_resumed_model(model: torch.nn.Module, checkpoint: dict, config: Recipe, path: Path) -> None:
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


def check_finite_model(model: torch.nn.Module, epoch: int) -> None:
    """``NonFiniteError`` naming the tensor when ``model`` holds NaN/Inf (never checkpointed or exported)."""
    bad = non_finite_tensor(model.state_dict())
    if bad:
        raise NonFiniteError(f"after epoch {epoch}: the model went non-finite ({bad}); nothing of this epoch was "
                             "saved: lower optim.lr or change amp, then --resume")


# ---- the run directory ----------------------------------------------------------------------------
def run_outputs(config: Recipe, out: Path) -> list[Path]:
    """The files and folders of ``out`` that a run with ``config`` writes and that exist now."""
    names = [*RUN_FILES, config.export.weights, config.export.onnx, "tensorboard"]
    found = [out / name for name in names if name and (out / name).exists()]
    return found + sorted(out.glob("checkpoint_epoch*.pt"))


def prepare_run_directory(config: Recipe, out: Path, resume: bool, overwrite: bool, delete: bool = True) -> None:
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


# ---- one run, start to end --------------------------------------------------------------------------
@dataclass
class Run:
    """One run while it trains: where (processes, device, output_dir), what it resumed from, its history."""

    config: Recipe
    tag: str                       # the log lines' prefix: [dtpr], [persons]
    dist_info: DistInfo
    device: torch.device
    out: Path
    checkpoint: dict | None        # the checkpoint resumed from; ``forget_checkpoint`` once restored
    history: list[dict] = field(default_factory=list)
    start_epoch: int = 0
    writer: Any = None             # TensorBoard's SummaryWriter (rank 0, log.tensorboard)

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def log(self, message: str) -> None:
        """One line on rank 0, prefixed with the run's tag."""
        if self.dist_info.is_main:
            print(f"[{self.tag}] {message}", flush=True)

    def start_description(self) -> str:
        """How the run starts, for its first log line."""
        if self.start_epoch:
            return f"resuming after epoch {self.start_epoch}"
        init = self.config.model.init
        return f"from {init}" if init else "from scratch"

    def build_model(self, class_set: ClassSet, channels_last: bool = False) -> SegmentationModel:
        """The recipe's network on the run's device, seeded from ``seed``: the checkpoint's tensors on resume,
        else ``model.init``'s weights file, else a fresh start (ImageNet encoder where the recipe asks)."""
        config = self.config
        torch.manual_seed(config.seed)
        model = make_model(config.model.architecture, start_weights_args(config.model, self.checkpoint is not None),
                           class_set.num_classes).to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.checkpoint:
            load_resumed_model(model, self.checkpoint, config, self.checkpoint_path)
        elif config.model.init:
            init_from_weights(model, config.model.init, config.model.architecture,
                              config.model.args, class_set)
        return model

    def restore_scaler_and_rng(self, scaler: torch.amp.GradScaler) -> None:
        """The gradient scaler and the RNG states of the checkpoint (a run that did not use fp16 saved an
        empty scaler state, so one that switches to fp16 starts its scaler afresh)."""
        if self.checkpoint["scaler"]:
            scaler.load_state_dict(self.checkpoint["scaler"])
        restore_rng_states(self.checkpoint["rng"])

    def restore_schedule(self, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR,
                         lr: float, schedule: dict[str, Any], note_prefix: str = "") -> None:
        """The checkpoint's optimizer and schedule, continued under this recipe's ``lr`` and ``schedule``
        shape; each change is logged."""
        optimizer.load_state_dict(self.checkpoint["optimizer"])
        scheduler.load_state_dict(self.checkpoint["scheduler"])
        for note in resume_schedule(optimizer, scheduler, lr, schedule, self.checkpoint.get("schedule") or {},
                                    self.checkpoint_path):
            self.log(f"{note_prefix}{note}")

    def forget_checkpoint(self) -> None:
        """Drop the resumed checkpoint (restored into the model and optimizer: no second copy for the run)."""
        self.checkpoint = None

    def checkpoint_state(self, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                         scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
                         **extra: Any) -> dict[str, Any]:
        """The checkpoint after ``epoch`` epochs: every run's keys (``plain_checkpoint``) and the kind's ``extra``."""
        return plain_checkpoint(epoch, model, optimizer, scheduler, scaler, self.config.to_dict(), self.history,
                                **extra)

    def end_epoch(self, model: torch.nn.Module, record: dict[str, Any], state: Callable[[], dict[str, Any]]) -> None:
        """After an epoch: refuse a non-finite model, add ``record`` to the history, and on rank 0 log it and
        write the checkpoint ``state()`` (with a kept copy where ``keep_checkpoints`` lists the epoch)."""
        epoch = record["epoch"]
        check_finite_model(model, epoch)
        self.history.append(record)
        if self.dist_info.is_main:
            self.log("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
            if self.writer is not None:
                for key in TENSORBOARD_KEYS:
                    if key in record:
                        self.writer.add_scalar(key, record[key], epoch)
                self.writer.flush()
            if epoch in self.config.keep_checkpoints:
                # the kept copy first: a run killed between the two resumes after this epoch
                kept = self.out / f"checkpoint_epoch{epoch:02d}.pt"
                save_checkpoint(state(), kept, intact=self.checkpoint_path)
                copy_checkpoint(kept, self.checkpoint_path)
            else:
                save_checkpoint(state(), self.checkpoint_path)
        barrier(self.dist_info)

    def finish(self, model: torch.nn.Module, class_set: ClassSet, recipe: dict[str, Any], metrics: dict[str, float],
               summary: str) -> dict[str, Any]:
        """The end of the run: on rank 0 the weights file (``recipe``: how it was made and scored), history.json
        and the last log line (``summary`` of the validation); returns metrics, output_dir, history, weights."""
        result: dict[str, Any] = {"metrics": metrics, "output_dir": str(self.out), "history": self.history}
        if not self.dist_info.is_main:
            return result
        weights = export_weights(model, self.config, class_set, recipe, self.out / self.config.export.weights,
                                 intact=self.checkpoint_path)
        result["weights"] = str(weights)
        (self.out / "history.json").write_text(json.dumps(self.history, indent=2))
        self.log(f"{self.config['name']} val: {summary}; weights {weights}")
        return result


def start_run(config: Recipe, tag: str, resume: bool, overwrite: bool) -> Run:
    """The start every run shares: deterministic algorithms, processes and device, the run directory (a new
    run refuses an earlier run's unless ``overwrite``), the checkpoint a ``resume`` continues (the settings it
    changes logged), and TensorBoard."""
    torch.use_deterministic_algorithms(bool(config.deterministic), warn_only=True)
    dist_info, device = setup_distributed(config.device)
    out = Path(config.output_dir)
    prepare_run_directory(config, out, resume, overwrite, delete=dist_info.is_main)
    barrier(dist_info)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "checkpoint.pt"
    checkpoint = load_checkpoint(path) if resume and path.exists() else None
    run = Run(config, tag, dist_info, device, out, checkpoint, checkpoint["history"] if checkpoint else [],
              checkpoint["epoch"] if checkpoint else 0)
    changed = resume_changes(checkpoint, config) if checkpoint else []
    if changed:
        run.log(f"resuming with settings changed since {path}: {'; '.join(changed)}")
    run.writer = _tensorboard(run, config.log.tensorboard and dist_info.is_main)
    if dist_info.is_main and not plotting_available():
        run.log("warning: matplotlib is not installed: the run's plots are skipped, its results are written "
                "(pip install '.[train]')")
    return run


def plotting_available() -> bool:
    """Whether matplotlib imports (the ``train`` extra): without it a run skips its plots, nothing else."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _tensorboard(run: Run, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        run.log("tensorboard is not installed: no TensorBoard logs (pip install '.[train]')")
        return None
    # purge_step: TensorBoard drops the earlier events of epochs after the checkpoint (logged before a kill)
    return SummaryWriter(str(run.out / "tensorboard"), purge_step=run.start_epoch + 1 if run.start_epoch else None)
