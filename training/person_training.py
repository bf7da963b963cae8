"""Train a multi-person parser (RP R-CNN) and write the node's weights file.

``training/train.py`` sends here every recipe whose architecture parses each
person apart (``rp_rcnn``). One stage: SGD on L = sum of the network's losses
times ``multi_person.loss_weights`` over the paper's, with the recipe's
schedule (``optim.schedule: step`` with ``milestones`` and ``warmup_steps``
is the paper's); AMP and DDP as in DTPR runs; a checkpoint after every epoch
that ``--resume`` continues bit-exactly. Validation (on rank 0) reports
AP^p_50, AP^p_vol, PCP_50, mIoU and person recall (``instance_evaluate``).
"""
from __future__ import annotations

import time
from functools import partial
from typing import Any

import torch

from human_parsing_ros.class_sets import ClassSet, get_class_set
from human_parsing_ros.models.rprcnn.model import LOSS_WEIGHTS
from training.config import Recipe, RecipeError, recipe_of
from training.distributed import sum_over_ranks, unwrap_ddp, wrap_ddp
from training.engine import EpochSettings, NonFiniteError, autocast, loss_is_finite
from training.export import init_record
from training.instance_evaluate import evaluate_instances
from training.instances import InstanceDataset, InstanceTrainTransform, build_instance_dataset, collate_instances
from training.label_statistics import UnreadableDataError, listed
from training.loaders import make_train_loader
from training.recipe import DatasetSection, MultiPersonSection
from training.runs import start_run
from training.sample_checks import instance_sample_problem
from training.schedules import Schedule, make_optimizer, make_scheduler, schedule_shape
from training.seeding import mix_seed

EVAL_KEYS = ("ap50", "ap_vol", "pcp50", "mean_iou", "person_recall")


def loss_weights(settings: MultiPersonSection) -> dict[str, float]:
    """The paper's loss weights with the recipe's changes; an unknown loss name is refused."""
    changes = settings.loss_weights
    unknown = sorted(set(changes) - set(LOSS_WEIGHTS))
    if unknown:
        raise RecipeError(f"multi_person.loss_weights: unknown loss {unknown[0]} (known: {', '.join(LOSS_WEIGHTS)})")
    return {**LOSS_WEIGHTS, **{k: float(v) for k, v in changes.items()}}


def person_class_set(spec: DatasetSection) -> ClassSet:
    default = "ccp" if spec.name == "ccp_composites" else spec.name
    return get_class_set(spec.class_set or default)


def make_person_datasets(config: Recipe, class_set: ClassSet) -> tuple[InstanceDataset, InstanceDataset]:
    spec, settings = config.dataset, config.multi_person
    transform = InstanceTrainTransform(settings.short_sides, settings.max_size,
                                       class_set.flip_permutation())
    train = build_instance_dataset(spec.name, spec.root, spec.train_split, transform,
                                   class_set=class_set.name, seed=config.seed, **spec.options)
    val = build_instance_dataset(spec.name, spec.root, spec.val_split, class_set=class_set.name,
                                 seed=config.seed, **settings.val_options)
    return train, val


def check_person_files(train_set: InstanceDataset, val_set: InstanceDataset, spec: DatasetSection) -> None:
    """Every image, part map and person map of both splits readable and of one size (headers only), or
    ``UnreadableDataError`` naming the files: the multi-person loader substitutes no other sample."""
    for split, dataset in ((spec.train_split, train_set), (spec.val_split, val_set)):
        bad = [(item.id, problem) for item in dataset.items if (problem := instance_sample_problem(item))]
        if bad:
            raise UnreadableDataError(f"{spec.name} split '{split}': {len(bad)} sample(s) cannot be read: "
                                      f"{listed(bad)}")


def train_person_epoch(net: torch.nn.Module, loader, optimizer: torch.optim.Optimizer,
                       scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
                       weights: dict[str, float], epoch: int, settings: EpochSettings) -> dict[str, Any]:
    """One epoch; the weighted loss and each loss's mean over finite steps (summed over ranks)."""
    device, dist_info = settings.device, settings.dist_info
    net.train()
    torch.manual_seed(mix_seed(settings.seed, epoch, dist_info.rank, 0xD80))  # RoI sampling, dropout
    names = list(weights)
    sums = torch.zeros(len(names) + 2, dtype=torch.float64, device=device)  # each loss, total, steps
    skipped = 0
    for step, (images, targets) in enumerate(loader):
        images = images.to(device, non_blocking=True)
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        with autocast(settings.amp, device):
            losses = net(images, targets)
        loss = sum(weights[name] * losses[name].float() for name in losses)
        optimizer.zero_grad(set_to_none=True)
        if not loss_is_finite(loss, dist_info):
            skipped += 1
            if skipped > settings.max_nonfinite_steps:
                raise NonFiniteError(f"epoch {epoch + 1} step {step + 1}: the loss is {float(loss.detach()):.4g}; "
                                     "nothing of this epoch was saved: lower optim.lr or change amp, then --resume")
            continue
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        sums += torch.tensor([float(losses[n].detach()) if n in losses else 0.0 for n in names]
                             + [float(loss.detach()), 1.0], dtype=torch.float64, device=device)
    sums = sum_over_ranks(sums, dist_info)
    steps = max(1.0, float(sums[-1]))
    return {"loss": float(sums[-2]) / steps, **{n: float(sums[i]) / steps for i, n in enumerate(names)},
            "lr": optimizer.param_groups[0]["lr"], "nonfinite_steps": skipped}


def run_persons(config: Recipe, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train (or continue, ``resume``) the multi-person run that ``config`` describes."""
    config = recipe_of(config)
    weights = loss_weights(config.multi_person)
    if config.export.onnx:
        raise RecipeError("export.onnx: ONNX export is for single-map parsers; multi-person weights ship as "
                         ".safetensors only")
    current_run = start_run(config, "persons", resume, overwrite)
    dist_info, device = current_run.dist_info, current_run.device
    optim, epochs = config.optim, person_epochs(config)
    class_set = person_class_set(config.dataset)
    train_set, val_set = make_person_datasets(config, class_set)
    check_person_files(train_set, val_set, config.dataset)  # before any epoch, as DTPR runs do
    steps_per_epoch = len(make_train_loader(train_set, optim.batch_size, optim.workers, config.seed, 0,
                                            dist_info, collate_instances))
    model = current_run.build_model(class_set)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], optim.lr, optim.momentum,
                               optim.weight_decay)
    scheduler = make_scheduler(optimizer, epochs * steps_per_epoch, Schedule(
        optim.schedule, optim.poly_power, milestones=optim.milestones, warmup_steps=optim.warmup_steps))
    schedule = schedule_shape(optim, steps_per_epoch, epochs * steps_per_epoch, warmup_steps=optim.warmup_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    if current_run.checkpoint:
        current_run.restore_schedule(optimizer, scheduler, optim.lr, schedule)
        current_run.restore_scaler_and_rng(scaler)
        current_run.forget_checkpoint()
    current_run.log(f"{config['name']}: {len(train_set)} train / {len(val_set)} val images, "
                    f"{class_set.num_classes} classes ({class_set.name}), {epochs} epochs, "
                    f"{current_run.start_description()}, {device}, {dist_info.world_size} process(es)")
    net = wrap_ddp(model, dist_info, device)
    settings = config.multi_person
    epoch_settings = EpochSettings(device, dist_info, config.seed, class_set.num_classes, config.amp,
                                   max_nonfinite_steps=config.max_nonfinite_steps)
    for epoch in range(current_run.start_epoch, epochs):
        began = time.perf_counter()
        loader = make_train_loader(train_set, optim.batch_size, optim.workers, config.seed, epoch,
                                   dist_info, collate_instances)
        record = {"epoch": epoch + 1, **train_person_epoch(net, loader, optimizer, scheduler, scaler, weights, epoch,
                                                           epoch_settings)}
        record["seconds"] = time.perf_counter() - began
        if dist_info.is_main and ((epoch + 1) % config.eval_every == 0 or epoch + 1 == epochs):
            metrics = evaluate_instances(unwrap_ddp(net), val_set, settings.min_score, device=str(device),
                                         short_side=settings.test_short_side, max_size=settings.max_size)
            record.update({key: float(metrics[key]) for key in EVAL_KEYS})
        current_run.end_epoch(model, record, partial(current_run.checkpoint_state, epoch + 1, model, optimizer,
                                                     scheduler, scaler, schedule=schedule))
    history = current_run.history
    metrics = {key: history[-1][key] for key in EVAL_KEYS if key in history[-1]} if history else {}
    return current_run.finish(model, class_set, person_recipe(config, metrics), metrics,
                              "  ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items()))


def person_epochs(config: Recipe) -> int:
    """A multi-person run's epochs: ``multi_person.epochs``, else ``stage1.epochs`` (what older recipes set;
    ``load_config`` notes it)."""
    epochs = config.multi_person.epochs
    return config.stage1.epochs if epochs is None else epochs


def person_recipe(config: Recipe, metrics: dict) -> dict[str, Any]:
    """What a multi-person weights file says about how it was made and how it scored."""
    spec, optim = config.dataset, config.optim
    return {"untrained": False, "dataset": spec.name, "paper": config.paper, "recipe": config.name,
            "splits": {"train": spec.train_split, "val": spec.val_split}, "epochs": person_epochs(config),
            "schedule": optim.schedule, "batch_size": optim.batch_size, "lr": optim.lr,
            "seed": config.seed, "loss_weights": loss_weights(config.multi_person),
            "min_score": config.multi_person.min_score,
            "test_short_side": config.multi_person.test_short_side, "metrics": {"val": metrics},
            **init_record(config.model)}
