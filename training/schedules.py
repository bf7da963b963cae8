"""The optimizer and the per-iteration learning-rate schedule every run trains with, and how a resumed run
continues a schedule recorded in its checkpoint (a changed peak lr, batch size or number of processes)."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.config import SCHEDULES, check_choice


def make_optimizer(params: Iterable[torch.nn.Parameter], lr: float, momentum: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


@dataclass(frozen=True)
class Schedule:
    """The shape of one stage's learning-rate factor (``make_scheduler``); the defaults are a plain cosine."""

    kind: str = "cosine"               # cosine | poly | step (optim.schedule)
    poly_power: float = 0.9
    cycle_steps: int = 0               # self-correction's cycles after the main schedule (0: none)
    cycle_factor: float = 0.5          # each cycle's first factor
    milestones: Sequence[float] = ()   # step: x 0.1 at each of these fractions of the main schedule
    warmup_steps: int = 0
    warmup_start: float | None = None  # the warm-up's first factor; None: 1/3
    min_lr_factor: float = 0.0         # where the schedule and each cycle end


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int,
                   shape: Schedule = Schedule()) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration learning-rate factor over one stage: cosine annealing (DTPR's CosineAnnealing),
    poly, (1 - step / total_steps) ** poly_power (C-DLinkNet's), or step, x 0.1 at each milestone (fractions of
    ``total_steps``; RP R-CNN's), over ``total_steps``, from 1 down to ``min_lr_factor`` (SCHP: 0.01);
    ``warmup_steps``: first a linear ramp from ``warmup_start`` (default 1/3) that multiplies the schedule.
    After them, with ``cycle_steps``, self-correction's cyclical schedule: a cosine from ``cycle_factor`` to
    ``min_lr_factor`` every cycle (SCHP's)."""
    check_choice("optim.schedule", shape.kind, SCHEDULES)
    steps = max(1, total_steps)
    start, rise = (1 / 3, 2 / 3) if shape.warmup_start is None else (shape.warmup_start, 1 - shape.warmup_start)
    floor, warmup_steps, cycle_steps = shape.min_lr_factor, shape.warmup_steps, shape.cycle_steps

    def main(step: int) -> float:
        if shape.kind == "poly":
            return (1.0 - min(step, steps) / steps) ** shape.poly_power
        if shape.kind == "step":
            return 0.1 ** sum(step >= fraction * steps for fraction in shape.milestones)
        return 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))

    def factor(step: int) -> float:
        if not cycle_steps or step < steps:
            ramp = 1.0 if step >= warmup_steps else start + rise * step / warmup_steps
            return ramp * (floor + (1 - floor) * main(step))
        within = (step - steps) % cycle_steps
        return floor + (shape.cycle_factor - floor) * 0.5 * (1.0 + math.cos(math.pi * within / cycle_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def schedule_shape(optim: Any, steps_per_epoch: int, steps: int, **settings: Any) -> dict[str, Any]:
    """What a checkpoint keeps of a schedule (``optim``: the recipe's optim section; ``settings``: the run's
    own), so that a resume can fit and report a changed one (``continue_schedule``)."""
    kind = optim.schedule
    return {"steps_per_epoch": steps_per_epoch, "steps": steps, "schedule": kind, **settings,
            **({"poly_power": optim.poly_power} if kind == "poly" else {}),
            **({"milestones": list(optim.milestones)} if kind == "step" else {})}


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
