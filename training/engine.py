"""The epoch loops: ``train_one_epoch`` (one stage's optimisation over one epoch) and ``evaluate``.

What a stage trains with comes in as a ``StageState`` (optimizer, schedule and
``StageLoss``); ``training/dtpr.py`` builds them and runs the two stages.
Every random draw here is seeded from (seed, epoch, step, rank)
(``training.seeding``), which is what makes a resumed run bit-exact.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from human_parsing_ros.class_sets import IGNORE_INDEX
from human_parsing_ros.errors import UserError
from human_parsing_ros.inference import merge_flipped
from training.config import PARSING_LOSSES, REDUCTIONS, STAGE_LOSSES, RecipeError
from training.distributed import DistInfo, sum_over_ranks, unwrap_ddp
from training.losses import (
    AUX_LOSSES,
    AuxContext,
    ce_lovasz,
    focal_loss,
    inter_class_loss,
    masked_cross_entropy,
    parsing_loss,
)
from training.metrics import ConfusionMatrix
from training.person_labels import person_loss, split_person_labels
from training.sampling import PixelSampler, kept_pixel_counts
from training.schp.losses import SoftTargets, refined_targets
from training.seeding import mix_seed, seeded_generator

AMP_MODES = ("none", "bf16", "fp16")


class NonFiniteError(UserError, RuntimeError):
    """A NaN/Inf loss (more steps than tolerated) or model: the run stops before anything of it is saved."""


@dataclass
class StageLoss:
    """One stage's loss: ``name`` on every pixel, or CE on the pixels ``sampler`` keeps; plus inter-class."""

    name: str = "ce"                           # one of STAGE_LOSSES
    sampler: PixelSampler | None = None        # PRA/PRN (stage 2): CE over the kept pixels only
    reduction: str = "kept_mean"               # of the sampled CE: kept_mean | sum (losses.masked_cross_entropy)
    class_weights: torch.Tensor | None = None  # class_balanced
    focal_gamma: float = 2.0
    inter_class_weight: float = 0.0            # 0: no inter-class term in this stage
    inter_class_margin: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in STAGE_LOSSES:
            raise RecipeError(f"loss '{self.name}' is not one of {', '.join(STAGE_LOSSES)}")
        if self.reduction not in REDUCTIONS:
            raise RecipeError(f"reduction '{self.reduction}' is not one of {', '.join(REDUCTIONS)}")


@dataclass
class StageState:
    """What one stage trains with; stage 1 also trains the auxiliary heads."""

    stage: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss: StageLoss
    schedule: dict[str, Any] = field(default_factory=dict)  # the schedule's shape, kept in the checkpoint


@dataclass(frozen=True)
class EpochSettings:
    """What every training epoch of a run shares: where it runs, its seed, classes and numerics."""

    device: torch.device
    dist_info: DistInfo
    seed: int
    num_classes: int = 0
    amp: str = "none"                # none | bf16 | fp16
    progress: bool = False           # a progress bar on rank 0
    max_nonfinite_steps: int = 0     # NaN/Inf steps tolerated per epoch


def autocast(amp: str, device: torch.device) -> torch.autocast:
    """Mixed precision for ``amp`` (none | bf16 | fp16) on ``device``'s type."""
    if amp not in AMP_MODES:
        raise RecipeError(f"amp '{amp}' is not one of {', '.join(AMP_MODES)}")
    if amp == "none":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def compute_loss(logits: torch.Tensor, target: torch.Tensor, loss: StageLoss,
                 generator: torch.Generator | None,
                 soft: SoftTargets | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The stage's loss of one batch and, with a sampler, the PRA/PRN pixel mask (drawn from ``generator``).

    The inter-class term sees every valid pixel: RIM feeds its ILM the heat maps and the ground truth,
    not the RBSM-sampled pixels (those only enter the main loss). ``soft``: self-correction's soft
    targets, which replace the cross-entropy term by their KL term (``ce`` and ``ce_lovasz`` only).
    """
    mask = None
    if soft is not None:
        value = parsing_loss(logits, target, loss.name, soft)
    elif loss.sampler is not None:
        mask = loss.sampler(target, generator)
        value = masked_cross_entropy(logits, target, mask, reduction=loss.reduction)
    elif loss.name == "focal":
        value = focal_loss(logits, target, gamma=loss.focal_gamma)
    elif loss.name == "class_balanced":
        value = masked_cross_entropy(logits, target, None, weight=loss.class_weights)
    elif loss.name == "ce_lovasz":
        value = ce_lovasz(logits, target)
    else:
        value = masked_cross_entropy(logits, target, None)
    if loss.inter_class_weight > 0:
        value = value + loss.inter_class_weight * inter_class_loss(logits, target, margin=loss.inter_class_margin)
    return value, mask


def aux_loss_terms(model: torch.nn.Module) -> list[tuple[float, str]]:
    """(weight, loss name in ``AUX_LOSSES``) of each auxiliary head of ``model`` (DDP-wrapped or not), in order."""
    base = unwrap_ddp(model)
    return list(zip(base.aux_weights, base.aux_losses))


def batch_loss(logits: torch.Tensor, aux: list[torch.Tensor], target: torch.Tensor, loss: StageLoss,
               aux_terms: list[tuple[float, str]], generator: torch.Generator | None,
               soft: SoftTargets | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``compute_loss`` on the main output plus each auxiliary head's weighted loss (``aux_loss_terms``).

    Pixels labelled ``PERSON_INDEX`` (a person, part unknown: ``training/person_labels.py``) are ignored by
    those and add ``person_loss`` on the main output."""
    logits, aux = logits.float(), [extra.float() for extra in aux]
    target, person = split_person_labels(target)
    value, mask = compute_loss(logits, target, loss, generator, soft)
    value = value + person_loss(logits, person, target != IGNORE_INDEX)
    parsing = (logits, *(extra for (_, name), extra in zip(aux_terms, aux) if name in PARSING_LOSSES))
    context = AuxContext(parsing, soft)
    for (weight, name), extra in zip(aux_terms, aux):
        value = value + weight * AUX_LOSSES[name](extra, target, context)
    return value, mask


def teacher_targets(teacher: torch.nn.Module, images: torch.Tensor, target: torch.Tensor, cycle: int,
                    amp: str, device: torch.device) -> SoftTargets:
    """Self-correction's refined labels for cycle ``cycle`` from the aggregated model ``teacher`` (eval mode)."""
    with torch.no_grad(), autocast(amp, device):
        logits, aux = teacher(images, with_aux=True)
    names = unwrap_ddp(teacher).aux_losses
    edges = next((extra.float() for extra, name in zip(aux, names) if name == "edge"), None)
    return refined_targets(logits.float(), edges, target, cycle)


def loss_is_finite(loss: torch.Tensor, dist_info: DistInfo) -> bool:
    """True when the loss is finite on every rank (all ranks must agree to skip a step, or DDP hangs)."""
    bad = (~torch.isfinite(loss.detach())).to(torch.float64).reshape(1)
    return float(sum_over_ranks(bad, dist_info)[0]) == 0


def train_one_epoch(model: torch.nn.Module, loader: DataLoader, state: StageState, scaler: torch.amp.GradScaler,
                    epoch: int, settings: EpochSettings, teacher: torch.nn.Module | None = None,
                    cycle: int = 0) -> dict[str, Any]:
    """One epoch of ``state``'s stage; loss, kept pixels and the training confusion summed over ranks.

    ``teacher`` (self-correction's aggregated model, in eval mode) and ``cycle`` m >= 1: the parsing outputs
    learn from ``schp.soft_targets`` (m/(m+1) x the teacher's prediction + 1/(m+1) x the labels), an edge
    output from the teacher's edges refined alike (``schp.refined_targets``).

    A step whose loss is NaN/Inf is skipped (no update); after ``max_nonfinite_steps`` such
    steps in this epoch, ``NonFiniteError`` names the step (nothing of this epoch is saved).
    Returns ``loss`` (mean over finite steps), ``lr`` (at the end), ``train_confusion``,
    ``kept`` and ``total`` (per-class pixels the sampler kept / saw, CPU), ``sampling_s``
    (this rank's seconds spent in the losses, auxiliary heads' included, and sampling) and ``nonfinite_steps``.
    """
    device, dist_info, seed, num_classes = settings.device, settings.dist_info, settings.seed, settings.num_classes
    amp, max_nonfinite_steps = settings.amp, settings.max_nonfinite_steps
    model.train()
    torch.manual_seed(mix_seed(seed, epoch, dist_info.rank, 0xD80))  # dropout
    confusion = ConfusionMatrix(num_classes, device=device)
    kept = torch.zeros(num_classes, dtype=torch.long, device=device)
    total = torch.zeros(num_classes, dtype=torch.long, device=device)
    loss_sum, steps, sampling_s, skipped = 0.0, 0, 0.0, 0
    aux_terms = aux_loss_terms(model)
    batches = _progress(loader, settings.progress and dist_info.is_main, f"epoch {epoch + 1} stage {state.stage}")
    for step, (images, target) in enumerate(batches):
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        target = target.to(device, non_blocking=True)
        with autocast(amp, device):
            logits, aux = model(images, with_aux=True) if state.stage == 1 else (model(images), [])
        soft = None if teacher is None else teacher_targets(teacher, images, split_person_labels(target)[0], cycle,
                                                            amp, device)  # part-unknown pixels: no one-hot
        generator = seeded_generator(seed, epoch, step, dist_info.rank, device=device)
        started = time.perf_counter()
        loss, mask = batch_loss(logits, aux, target, state.loss, aux_terms, generator, soft)
        sampling_s += time.perf_counter() - started
        state.optimizer.zero_grad(set_to_none=True)
        if not loss_is_finite(loss, dist_info):
            skipped += 1
            if skipped > max_nonfinite_steps:
                raise NonFiniteError(
                    f"epoch {epoch + 1} (stage {state.stage}) step {step + 1}: the loss is {float(loss.detach()):.4g} "
                    f"({skipped} non-finite steps this epoch, max_nonfinite_steps {max_nonfinite_steps}); "
                    f"nothing of this epoch was saved: lower optim.lr or change amp, then --resume")
            continue
        scaler.scale(loss).backward()
        scaler.step(state.optimizer)
        scaler.update()
        state.scheduler.step()
        confusion.update(logits.detach().argmax(1), split_person_labels(target)[0])
        if mask is not None:
            kept_now, total_now = kept_pixel_counts(target, mask, num_classes)
            kept += kept_now
            total += total_now
        loss_sum += float(loss.detach())
        steps += 1
    confusion.all_reduce()
    pixel_stats = sum_over_ranks(torch.stack([kept, total]).float(), dist_info)
    loss_stats = sum_over_ranks(torch.tensor([loss_sum, steps], device=device, dtype=torch.float64), dist_info)
    return {"loss": float(loss_stats[0]) / max(1, int(loss_stats[1])), "lr": state.optimizer.param_groups[0]["lr"],
            "train_confusion": confusion, "kept": pixel_stats[0].cpu(), "total": pixel_stats[1].cpu(),
            "sampling_s": sampling_s, "nonfinite_steps": skipped}


def eval_logits(model: torch.nn.Module, images: torch.Tensor, label_size: tuple[int, int],
                flip_perm: torch.Tensor | None = None) -> torch.Tensor:
    """Class scores of ``images`` at ``label_size``: the network's logits (with ``flip_perm``, the flip test:
    averaged with the mirrored input's, left/right classes swapped, as the node's flip TTA), upsampled
    bilinearly when the labels are larger than the network input (evaluation at the labels' resolution)."""
    if flip_perm is None:
        logits = model(images).float()
    else:
        both = model(torch.cat([images, images.flip(-1)]))
        logits = merge_flipped(both[:len(images)], both[len(images):], flip_perm)
    if tuple(logits.shape[-2:]) != tuple(label_size):
        logits = F.interpolate(logits, size=label_size, mode="bilinear", align_corners=False)
    return logits


@torch.inference_mode()
def evaluate(model: torch.nn.Module, loader: DataLoader, num_classes: int, device: torch.device,
             amp: str = "none", progress: bool = False, flip_perm: list[int] | None = None) -> ConfusionMatrix:
    """The confusion matrix of ``model`` over ``loader``, summed over ranks.

    Labels may be larger than the images (``EvalTransform(resize_labels=False)``): the logits are
    upsampled to them. ``flip_perm`` (the class set's flip permutation) turns the flip test on.
    """
    model.eval()
    perm = None if flip_perm is None else torch.as_tensor(list(flip_perm), device=device)
    confusion = ConfusionMatrix(num_classes, device=device)
    for images, target in _progress(loader, progress, "eval"):
        images = images.to(device).contiguous(memory_format=torch.channels_last)
        target = target.to(device)
        with autocast(amp, device):
            logits = eval_logits(model, images, tuple(target.shape[-2:]), perm)
        confusion.update(logits.argmax(1), target)
    confusion.all_reduce()
    return confusion


def _progress(iterable: Iterable, enabled: bool, desc: str) -> Iterable:
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)
