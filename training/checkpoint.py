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

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from human_parsing_ros.errors import UserError, one_line
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


class DiskFullError(UserError, OSError):
    """The disk filled while the run wrote a file; the message names it, says what is still intact and how
    to go on (free space, ``--resume``). ``errno`` is ENOSPC; ``str()`` is the message alone."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.errno = errno.ENOSPC


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is a full disk or quota: an OSError with ENOSPC or
    EDQUOT, or a library's error whose text carries the errno message (torch.save raises RuntimeError, and
    safetensors its own type)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(error) for text in ("No space left on device", "Disk quota exceeded", "StorageFull")):
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_error(path: Path, intact: Path | None) -> DiskFullError:
    """The one line for a full disk while writing ``path``; ``intact``: the run's checkpoint that the failed
    write left as it was (None: the run has none yet)."""
    if intact is not None and intact.exists():
        state = f"the previous checkpoint {intact} is intact"
        then = "run the same command with --resume"
    else:
        state = "no checkpoint of this run was written yet"
        then = "run the same command again"
    return DiskFullError(f"no space left on device writing {path}; {state}; free space and {then}")


def writing(path: Path, write: Callable[[Path], object], intact: Path | None) -> None:
    """``write(tmp)`` then ``tmp`` renamed to ``path`` (atomic); on any failure ``tmp`` is removed, and a full
    disk becomes ``DiskFullError`` (one line naming ``path`` and the checkpoint left ``intact``)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, Exception) and is_disk_full(error):
            raise disk_full_error(path, intact) from error
        raise


def save_checkpoint(checkpoint: dict[str, Any], path: Path, intact: Path | None = None) -> None:
    """Atomic: a crash while writing leaves the previous checkpoint intact (synced before the rename, so a
    power loss cannot leave an empty file in its place either). A full disk raises ``DiskFullError`` naming
    ``path`` and the checkpoint still ``intact`` (default: ``path`` itself) and leaves no temporary file."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())

    writing(path, write, path if intact is None else intact)


def copy_checkpoint(source: Path, path: Path) -> None:
    """``source``'s bytes to ``path``, as atomically as ``save_checkpoint`` writes."""
    def write(tmp: Path) -> None:
        shutil.copyfile(source, tmp)
        with open(tmp, "rb+") as file:
            os.fsync(file.fileno())

    writing(path, write, path)


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be resumed from; the message names the file and why."""


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``, on the CPU; refuses files of another format and non-finite models."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: checkpoint {'is a folder' if Path(path).is_dir() else 'not found'}")
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
