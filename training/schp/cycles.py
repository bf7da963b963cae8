"""SCHP's self-correction cycles inside the trainer's stage 1 (its losses are in ``training/schp/losses.py``).

After stage 1's main schedule (``stage1.epochs``), ``self_correction.cycles`` cycles of
``cycle_epochs`` each keep training the whole network with a cyclical learning rate (a cosine
from ``self_correction.lr``, default half the peak, to ``optim.min_lr_factor`` x the peak, default 0,
in every cycle). At the end of the main schedule the aggregated model starts as a copy of the
network (w_0); at the end of cycle m it becomes m/(m+1) w_{m-1} + 1/(m+1) w, and its BatchNorm
statistics are re-estimated over that epoch's training batches. During cycle m every parsing output
learns from soft targets, m/(m+1) x the aggregated model's prediction + 1/(m+1) x the one-hot labels
(KL term), and an edge output (CE2P) from the edges refined alike, as SCHP refines its labels.
After the last cycle the network *is* the aggregated model (SCHP ships it): the export, and DTPR's
stage 2 if the recipe has one, start from it (stage 2 then retrains the decoder on the aggregated
encoder, which is the better feature extractor of the cycles).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from training.config import Recipe, check_self_correction
from training.distributed import DistInfo, sum_over_ranks


@dataclass(frozen=True)
class CyclePlan:
    """Stage 1's epochs: ``main`` of the main schedule, then ``cycles`` x ``cycle_epochs``."""

    main: int
    cycles: int = 0
    cycle_epochs: int = 10

    @property
    def epochs(self) -> int:
        return self.main + self.cycles * self.cycle_epochs

    def cycle(self, epoch: int) -> int:
        """The self-correction cycle (1, 2, ...) that 0-based ``epoch`` belongs to; 0 in the main schedule."""
        return 0 if epoch < self.main else (epoch - self.main) // self.cycle_epochs + 1

    def aggregates_after(self, epochs_done: int) -> int | None:
        """After ``epochs_done`` epochs: None, or m where the aggregated model takes its m-th model
        (0 = it starts as a copy at the end of the main schedule, m = the end of cycle m)."""
        if not self.cycles or epochs_done < self.main or (epochs_done - self.main) % self.cycle_epochs:
            return None
        m = (epochs_done - self.main) // self.cycle_epochs
        return m if m <= self.cycles else None


def cycle_plan(config: Recipe) -> CyclePlan:
    """The plan of ``config`` (checked: self-correction needs a main schedule that ends and a CE loss)."""
    check_self_correction(config)
    spec = config.self_correction
    return CyclePlan(config.stage1.epochs, int(spec.cycles), int(spec.cycle_epochs))


def cycle_lr_factor(config: Recipe) -> float:
    """Each cycle's starting learning rate as a fraction of stage 1's peak (SCHP: one half)."""
    lr = config.self_correction.lr
    return 0.5 if lr is None else float(lr) / float(config.optim.lr)


@torch.no_grad()
def aggregate_weights(aggregated: nn.Module, model: nn.Module, cycle: int) -> None:
    """Online model aggregation after cycle m = ``cycle`` (1, 2, ...): w_m = m/(m+1) w_{m-1} + 1/(m+1) w, for
    every parameter (BatchNorm statistics are re-estimated afterwards, not averaged)."""
    if cycle < 1:
        raise ValueError(f"cycle must be 1 or more, not {cycle}")
    share = 1.0 / (cycle + 1)
    for target, source in zip(aggregated.parameters(), model.parameters(), strict=True):
        target.mul_(1 - share).add_(source, alpha=share)


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, images: Iterable[torch.Tensor]) -> None:
    """Recompute every BatchNorm's running statistics as the plain average over the batches of ``images``
    (momentum None), in train mode; momenta and the model's mode are restored afterwards."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    for batch in images:
        model(batch)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.train(was_training)


@torch.no_grad()
def update_aggregated(aggregated: nn.Module | None, model: nn.Module, m: int, images: Iterable[torch.Tensor],
                      dist_info: DistInfo) -> nn.Module:
    """The aggregated model after taking its m-th model (m = 0: a copy of ``model``), BatchNorm re-estimated
    over ``images`` (this rank's batches; under DDP the statistics are averaged over ranks)."""
    if m == 0 or aggregated is None:
        aggregated = copy.deepcopy(model)
        aggregated.requires_grad_(False)
    else:
        aggregate_weights(aggregated, model, m)
    reestimate_batchnorm(aggregated, images)
    if dist_info.world_size > 1:
        for norm in aggregated.modules():
            if isinstance(norm, nn.modules.batchnorm._BatchNorm):
                for buffer in (norm.running_mean, norm.running_var):
                    buffer.copy_(sum_over_ranks(buffer, dist_info) / dist_info.world_size)
    return aggregated.eval()
