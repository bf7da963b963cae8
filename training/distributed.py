"""Distributed data parallel plumbing: which process this is, the process group, the DDP wrapper.

torchrun starts one process per GPU (gloo on CPU) and sets RANK, WORLD_SIZE and
LOCAL_RANK; a plain ``python training/train.py`` is rank 0 of a world of 1.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from human_parsing_ros.models import SegmentationModel


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0


def setup_distributed(device_spec: str) -> tuple[DistInfo, torch.device]:
    """Read torchrun's environment, pick this process's device and join the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device_spec in ("auto", "cuda")
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return DistInfo(rank, world_size, local_rank), device


def teardown_distributed() -> None:
    """Destroy the process group before exit: left to interpreter teardown, a gloo rank can abort."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(dist_info: DistInfo) -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if dist_info.world_size > 1:
        dist.barrier()


def sum_over_ranks(values: torch.Tensor, dist_info: DistInfo) -> torch.Tensor:
    """``values`` summed over all ranks, in place (unchanged in a single process)."""
    if dist_info.world_size > 1:
        dist.all_reduce(values)
    return values


def wrap_ddp(model: SegmentationModel, dist_info: DistInfo, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when there are several ranks, else ``model`` itself.

    Wrap again after freezing parameters: DDP records which parameters need gradients.
    """
    if dist_info.world_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap_ddp(model: torch.nn.Module) -> SegmentationModel:
    """The model inside a DistributedDataParallel wrapper (or ``model`` when not wrapped)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
