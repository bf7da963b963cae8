"""Which images each rank sees, in which order: the training and evaluation loaders."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from training.config import RecipeError
from training.distributed import DistInfo
from training.seeding import seeded_generator


def epoch_order(num_items: int, seed: int, epoch: int, dist_info: DistInfo, batch_size: int) -> list[int]:
    """This rank's sample order for one epoch (whole batches only, equally many on every rank)."""
    order = torch.randperm(num_items, generator=seeded_generator(seed, epoch, 0x5A4D)).tolist()
    per_rank = (num_items // dist_info.world_size) // batch_size * batch_size
    if per_rank == 0:
        raise RecipeError(f"{num_items} training images cannot fill one batch of {batch_size} on "
                         f"{dist_info.world_size} ranks")
    return order[dist_info.rank::dist_info.world_size][:per_rank]


def make_train_loader(dataset: Dataset, batch_size: int, workers: int, seed: int, epoch: int,
                      dist_info: DistInfo, collate_fn: Callable | None = None) -> DataLoader:
    """This epoch's batches; ``dataset`` (with a ``set_epoch``) seeds each item's augmentation itself."""
    dataset.set_epoch(epoch)
    order = epoch_order(len(dataset), seed, epoch, dist_info, batch_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=order, num_workers=workers, drop_last=True,
                      persistent_workers=False, collate_fn=collate_fn)


def make_eval_loader(dataset: Dataset, batch_size: int, workers: int, dist_info: DistInfo) -> DataLoader:
    """This rank's shard of ``dataset``, in order (every rank's confusion matrix is summed afterwards)."""
    shard = list(range(dist_info.rank, len(dataset), dist_info.world_size))
    return DataLoader(dataset, batch_size=batch_size, sampler=shard, num_workers=workers)
