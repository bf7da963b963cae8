"""The two-stage DTPR loop: stage 1 trains normally and records CPA; stage 2 freezes the
encoder and trains the decoder (or classifier) on PRA-resampled pixels.

Reproducibility: the data order, every sample's augmentation, dropout and the PRA
draws are all seeded from (seed, epoch, index/step, rank), so a run resumed from
its last epoch checkpoint repeats the uninterrupted run bit for bit.
"""
from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from human_parsing_ros.models import SegmentationModel, build_model

from .losses import PixelSampler, focal_loss, inter_class_loss, kept_pixel_counts, masked_cross_entropy
from .metrics import ConfusionMatrix

CHECKPOINT_FORMAT = "dtpr-checkpoint/1"


def mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (deterministic, order-sensitive)."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value * 6364136223846793005 + int(part) + 1442695040888963407) % (1 << 63)
    return value


def generator(*parts: int, device: str | torch.device = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(mix_seed(*parts))
    return gen


# ---- distributed ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_spec: str) -> tuple[Dist, torch.device]:
    """torchrun sets RANK/WORLD_SIZE/LOCAL_RANK: one process per GPU (gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device_spec in ("auto", "cuda")
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world, local), device


def teardown_distributed() -> None:
    """Destroy the process group before exit: left to interpreter teardown, a gloo rank can abort."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ---- data ----------------------------------------------------------------------------------------
def epoch_order(n: int, seed: int, epoch: int, d: Dist, batch_size: int) -> list[int]:
    """This rank's sample order for one epoch (whole batches only, equal across ranks)."""
    order = torch.randperm(n, generator=generator(seed, epoch, 0x5A4D)).tolist()
    per_rank = (n // d.world) // batch_size * batch_size
    if per_rank == 0:
        raise ValueError(f"{n} training images cannot fill one batch of {batch_size} on {d.world} ranks")
    return order[d.rank::d.world][:per_rank]


def make_train_loader(dataset, config: dict, d: Dist, epoch: int) -> DataLoader:
    """This epoch's batches; ``dataset`` seeds each item's augmentation from (seed, epoch, index)."""
    dataset.set_epoch(epoch)
    batch = config["optim"]["batch_size"]
    order = epoch_order(len(dataset), config["seed"], epoch, d, batch)
    return DataLoader(dataset, batch_size=batch, sampler=order, num_workers=config["optim"]["workers"],
                      drop_last=True, persistent_workers=False)


def make_eval_loader(dataset, config: dict, d: Dist) -> DataLoader:
    """This rank's shard of ``dataset`` (built with an EvalTransform)."""
    shard = list(range(d.rank, len(dataset), d.world))
    batch = config["optim"]["eval_batch_size"] if config["input"]["eval_size"] else 1
    return DataLoader(dataset, batch_size=batch, sampler=shard, num_workers=config["optim"]["workers"])


# ---- model and optimisation ---------------------------------------------------------------------
def model_args(config: dict, num_classes: int) -> dict:
    return {**config["model"]["args"], "num_classes": num_classes}


def make_model(config: dict, num_classes: int) -> SegmentationModel:
    try:
        return build_model(config["model"]["architecture"], **model_args(config, num_classes))
    except (RuntimeError, OSError) as err:  # ImageNet weights could not be fetched
        raise RuntimeError(
            f"building {config['model']['architecture']} failed: {err}. Offline? Put torchvision's checkpoint in "
            "$TORCH_HOME/hub/checkpoints/ or set model.args.encoder_weights: null") from None


def make_optimizer(params, lr: float, config: dict) -> torch.optim.Optimizer:
    o = config["optim"]
    return torch.optim.SGD(params, lr=lr, momentum=o["momentum"], weight_decay=o["weight_decay"])


def make_scheduler(optimizer, total_steps: int):
    """Cosine annealing per iteration over one stage."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps))))


def unwrap(model: torch.nn.Module) -> SegmentationModel:
    return model.module if hasattr(model, "module") else model


def wrap(model: SegmentationModel, d: Dist, device: torch.device) -> torch.nn.Module:
    if d.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def autocast(config: dict, device: torch.device):
    amp = config["amp"]
    if amp == "none":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


# ---- one epoch -----------------------------------------------------------------------------------
STAGE_LOSSES = ("ce", "focal", "class_balanced")


@dataclass
class StageState:
    stage: int
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: PixelSampler | None
    class_weights: torch.Tensor | None


def stage_loss(config: dict, stage: int) -> str:
    name = config[f"stage{stage}"]["loss"]
    if name not in STAGE_LOSSES:
        raise ValueError(f"stage{stage}.loss '{name}' is not one of {', '.join(STAGE_LOSSES)}")
    return name


def compute_loss(logits, target, state: StageState, config: dict, gen) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The stage's loss and, in stage 2 with sampling, the PRA/PRN pixel mask."""
    mask = None
    if state.stage == 2 and state.sampler is not None:
        mask = state.sampler(target, gen)
        loss = masked_cross_entropy(logits, target, mask)
    elif stage_loss(config, state.stage) == "focal":
        loss = focal_loss(logits, target, gamma=config["losses"]["focal_gamma"])
    elif stage_loss(config, state.stage) == "class_balanced":
        loss = masked_cross_entropy(logits, target, None, weight=state.class_weights)
    else:
        loss = masked_cross_entropy(logits, target, None)
    ic = config["inter_class"]
    if ic["weight"] > 0 and state.stage in ic["stages"]:
        loss = loss + ic["weight"] * inter_class_loss(logits, target, margin=ic["margin"], mask=mask)
    return loss, mask


def train_one_epoch(model, loader, state: StageState, scaler, config: dict, device: torch.device, d: Dist,
                    epoch: int, num_classes: int, progress: bool) -> dict:
    model.train()
    torch.manual_seed(mix_seed(config["seed"], epoch, d.rank, 0xD80))  # dropout
    confusion = ConfusionMatrix(num_classes, device=device)
    kept = torch.zeros(num_classes, dtype=torch.long, device=device)
    total = torch.zeros(num_classes, dtype=torch.long, device=device)
    loss_sum, steps, sample_s = 0.0, 0, 0.0
    fault = _fault_point()
    bar = _progress(loader, progress and d.main, f"epoch {epoch + 1} stage {state.stage}")
    for step, (images, target) in enumerate(bar):
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        target = target.to(device, non_blocking=True)
        with autocast(config, device):
            logits, aux = model(images, with_aux=True) if state.stage == 1 else (model(images), [])
        gen = generator(config["seed"], epoch, step, d.rank, device=device)
        start = time.perf_counter()
        loss, mask = compute_loss(logits.float(), target, state, config, gen)
        sample_s += time.perf_counter() - start
        for weight, extra in zip(unwrap(model).aux_weights, aux):
            loss = loss + weight * masked_cross_entropy(extra.float(), target, None)
        state.optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(state.optimizer)
        scaler.update()
        state.scheduler.step()
        confusion.update(logits.detach().argmax(1), target)
        if mask is not None:
            k, t = kept_pixel_counts(target, mask, num_classes)
            kept += k
            total += t
        loss_sum += float(loss.detach())
        steps += 1
        if fault == (epoch, step):
            os.kill(os.getpid(), signal.SIGKILL)
    confusion.all_reduce()
    stats = torch.stack([kept, total]).float()
    if d.world > 1:
        dist.all_reduce(stats)
        sums = torch.tensor([loss_sum, steps], device=device, dtype=torch.float64)
        dist.all_reduce(sums)
        loss_sum, steps = float(sums[0]), int(sums[1])
    return {"loss": loss_sum / max(1, steps), "lr": state.optimizer.param_groups[0]["lr"],
            "train_confusion": confusion, "kept": stats[0].cpu(), "total": stats[1].cpu(),
            "sampling_s": sample_s}


@torch.inference_mode()
def evaluate(model: torch.nn.Module, loader: DataLoader, num_classes: int, device: torch.device,
             config: dict, progress: bool = False) -> ConfusionMatrix:
    model.eval()
    confusion = ConfusionMatrix(num_classes, device=device)
    for images, target in _progress(loader, progress, "eval"):
        images = images.to(device).contiguous(memory_format=torch.channels_last)
        target = target.to(device)
        with autocast(config, device):
            logits = model(images)
        confusion.update(logits.argmax(1), target)
    confusion.all_reduce()
    return confusion


def _fault_point() -> tuple[int, int] | None:
    """DTPR_KILL_AT=epoch:step makes the process SIGKILL itself there: the resume test's crash."""
    spec = os.environ.get("DTPR_KILL_AT")
    if not spec:
        return None
    epoch, step = spec.split(":")
    return int(epoch), int(step)


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)


# ---- checkpoints ---------------------------------------------------------------------------------
def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic: a crash while writing leaves the previous checkpoint intact."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
    return state


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
