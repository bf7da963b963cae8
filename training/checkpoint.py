"""The run's checkpoint: one plain dict, written atomically after every epoch.

Keys: ``format`` (``CHECKPOINT_FORMAT``), ``epoch`` (epochs done), ``stage``,
``model``, ``optimizer``, ``scheduler``, ``scaler`` (state dicts of the current
stage), ``cpa`` (PRA's scores, from the recipe's source), ``cpa_train`` (from the
training data, always), ``pixel_counts`` and ``image_counts`` (per class over the
training set: PRN's two readings; older checkpoints lack ``image_counts``), ``aggregated``
(self-correction's aggregated model or None), ``schedule`` (the current stage's
schedule shape: steps per epoch, length, kind; older checkpoints lack it), ``rng`` (global
RNG states), ``config`` and ``history`` (one record per epoch). A multi-person run's
checkpoint has no ``stage``, CPA, counts or aggregated model. It holds tensors
and plain Python values only, so ``torch.load(weights_only=True)`` reads it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from human_parsing_ros.errors import one_line
from human_parsing_ros.weights import non_finite_tensor
from training.seeding import capture_rng_states

CHECKPOINT_FORMAT = "dtpr-checkpoint/1"


def plain_checkpoint(epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler, config: dict,
                     history: list[dict], **extra: Any) -> dict[str, Any]:
    """The keys every run's checkpoint has (``model`` unwrapped from DDP; ``rng``: the global RNG states now),
    plus a kind of run's ``extra`` (DTPR: ``stage``, CPA, counts, ``aggregated``, ``schedule``)."""
    return {"format": CHECKPOINT_FORMAT, "epoch": epoch, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "rng": capture_rng_states(), "config": config, "history": history, **extra}


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Atomic: a crash while writing leaves the previous checkpoint intact (synced before the rename, so a
    power loss cannot leave an empty file in its place either)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as file:
        torch.save(checkpoint, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def copy_checkpoint(source: Path, path: Path) -> None:
    """``source``'s bytes to ``path``, as atomically as ``save_checkpoint`` writes."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    shutil.copyfile(source, tmp)
    with open(tmp, "rb+") as file:
        os.fsync(file.fileno())
    os.replace(tmp, path)


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the file and why."""


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``, on the CPU; refuses files of another format and non-finite models."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a zip, pickled code: one line naming the file
        raise CheckpointError(f"{path}: unreadable checkpoint ({one_line(error)})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
    bad = non_finite_tensor(checkpoint["model"])
    if bad:
        raise CheckpointError(f"{path}: non-finite model ({bad}); resume from an earlier checkpoint_epochNN.pt "
                              "copied to checkpoint.pt, or start over with --overwrite")
    return checkpoint
