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

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from human_parsing_ros.class_sets import ClassSet, get_class_set
from human_parsing_ros.models.rprcnn.model import LOSS_WEIGHTS
from human_parsing_ros.weights import WeightsInfo, save_weights
from training.checkpoint import load_checkpoint, plain_checkpoint, save_checkpoint
from training.distributed import DistInfo, barrier, setup_distributed, sum_over_ranks, unwrap_ddp, wrap_ddp
from training.dtpr import (
    check_finite_model,
    init_from_weights,
    load_resumed_model,
    make_model,
    make_optimizer,
    make_scheduler,
    prepare_run_directory,
    resume_changes,
    resume_schedule,
    schedule_shape,
    start_description,
    start_weights_args,
)
from training.engine import NonFiniteError, autocast, loss_is_finite
from training.export import init_record
from training.instance_evaluate import evaluate_instances
from training.instances import InstanceDataset, InstanceTrainTransform, build_instance_dataset, collate_instances
from training.loaders import make_train_loader
from training.seeding import capture_rng_states, mix_seed, restore_rng_states

EVAL_KEYS = ("ap50", "ap_vol", "pcp50", "mean_iou", "person_recall")


def loss_weights(config: dict) -> dict[str, float]:
    """The paper's loss weights with the recipe's changes; an unknown loss name is refused."""
    changes = config["multi_person"]["loss_weights"]
    unknown = sorted(set(changes) - set(LOSS_WEIGHTS))
    if unknown:
        raise ValueError(f"multi_person.loss_weights: unknown loss {unknown[0]} (known: {', '.join(LOSS_WEIGHTS)})")
    return {**LOSS_WEIGHTS, **{k: float(v) for k, v in changes.items()}}


def person_class_set(config: dict) -> ClassSet:
    spec = config["dataset"]
    default = "ccp" if spec["name"] == "ccp_composites" else spec["name"]
    return get_class_set(spec["class_set"] or default)


def make_person_datasets(config: dict, class_set: ClassSet) -> tuple[InstanceDataset, InstanceDataset]:
    spec, settings = config["dataset"], config["multi_person"]
    transform = InstanceTrainTransform(settings["short_sides"], settings["max_size"],
                                       class_set.flip_permutation())
    train = build_instance_dataset(spec["name"], spec["root"], spec["train_split"], transform,
                                   class_set=class_set.name, seed=config["seed"], **spec["options"])
    val = build_instance_dataset(spec["name"], spec["root"], spec["val_split"], class_set=class_set.name,
                                 seed=config["seed"], **settings["val_options"])
    return train, val


def train_person_epoch(net: torch.nn.Module, loader, optimizer, scheduler, scaler, weights: dict[str, float],
                       device: torch.device, dist_info: DistInfo, epoch: int, seed: int, amp: str,
                       max_nonfinite_steps: int) -> dict[str, Any]:
    """One epoch; the weighted loss and each loss's mean over finite steps (summed over ranks)."""
    net.train()
    torch.manual_seed(mix_seed(seed, epoch, dist_info.rank, 0xD80))  # RoI sampling, dropout
    names = list(weights)
    sums = torch.zeros(len(names) + 2, dtype=torch.float64, device=device)  # each loss, total, steps
    skipped = 0
    for step, (images, targets) in enumerate(loader):
        images = images.to(device, non_blocking=True)
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        with autocast(amp, device):
            losses = net(images, targets)
        loss = sum(weights[name] * losses[name].float() for name in losses)
        optimizer.zero_grad(set_to_none=True)
        if not loss_is_finite(loss, dist_info):
            skipped += 1
            if skipped > max_nonfinite_steps:
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


def run_persons(config: dict, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train (or continue, ``resume``) the multi-person run that ``config`` describes."""
    torch.use_deterministic_algorithms(bool(config["deterministic"]), warn_only=True)
    weights = loss_weights(config)
    if config["export"]["onnx"]:
        raise ValueError("export.onnx: ONNX export is for single-map parsers; multi-person weights ship as "
                         ".safetensors only")
    dist_info, device = setup_distributed(config["device"])
    out = Path(config["output_dir"])
    prepare_run_directory(config, out, resume, overwrite, delete=dist_info.is_main)
    barrier(dist_info)
    out.mkdir(parents=True, exist_ok=True)
    optim, epochs = config["optim"], config["stage1"]["epochs"]
    class_set = person_class_set(config)
    train_set, val_set = make_person_datasets(config, class_set)
    steps_per_epoch = len(make_train_loader(train_set, optim["batch_size"], optim["workers"], config["seed"], 0,
                                            dist_info, collate_instances))
    checkpoint_path = out / "checkpoint.pt"
    checkpoint = load_checkpoint(checkpoint_path) if resume and checkpoint_path.exists() else None
    changed = resume_changes(checkpoint, config) if checkpoint else []
    if changed and dist_info.is_main:
        print(f"[persons] resuming with settings changed since {checkpoint_path}: {'; '.join(changed)}", flush=True)
    torch.manual_seed(config["seed"])
    model = make_model(config["model"]["architecture"], start_weights_args(config, checkpoint is not None),
                       class_set.num_classes).to(device)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], optim["lr"], optim["momentum"],
                               optim["weight_decay"])
    scheduler = make_scheduler(optimizer, epochs * steps_per_epoch, optim["schedule"], optim["poly_power"],
                               milestones=optim["milestones"], warmup_steps=optim["warmup_steps"])
    schedule = schedule_shape(optim, steps_per_epoch, epochs * steps_per_epoch, warmup_steps=optim["warmup_steps"])
    scaler = torch.amp.GradScaler(device.type, enabled=config["amp"] == "fp16")
    history: list[dict] = checkpoint["history"] if checkpoint else []
    start_epoch = checkpoint["epoch"] if checkpoint else 0
    if checkpoint:
        load_resumed_model(model, checkpoint, config, checkpoint_path)
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        notes = resume_schedule(optimizer, scheduler, optim["lr"], schedule, checkpoint.get("schedule") or {},
                                checkpoint_path)
        if dist_info.is_main:
            for note in notes:
                print(f"[persons] {note}", flush=True)
        scaler.load_state_dict(checkpoint["scaler"])
        restore_rng_states(checkpoint["rng"])
    elif config["model"]["init"]:
        init_from_weights(model, config["model"]["init"], config["model"]["architecture"], config["model"]["args"],
                          class_set)
    if dist_info.is_main:
        print(f"[persons] {config['name']}: {len(train_set)} train / {len(val_set)} val images, "
              f"{class_set.num_classes} classes ({class_set.name}), {epochs} epochs, "
              f"{start_description(config, start_epoch)}, {device}, "
              f"{dist_info.world_size} process(es)", flush=True)
    net = wrap_ddp(model, dist_info, device)
    settings = config["multi_person"]
    for epoch in range(start_epoch, epochs):
        began = time.perf_counter()
        loader = make_train_loader(train_set, optim["batch_size"], optim["workers"], config["seed"], epoch,
                                   dist_info, collate_instances)
        record = {"epoch": epoch + 1, **train_person_epoch(net, loader, optimizer, scheduler, scaler, weights,
                                                           device, dist_info, epoch, config["seed"], config["amp"],
                                                           config["max_nonfinite_steps"])}
        record["seconds"] = time.perf_counter() - began
        if dist_info.is_main and ((epoch + 1) % config["eval_every"] == 0 or epoch + 1 == epochs):
            metrics = evaluate_instances(unwrap_ddp(net), val_set, settings["min_score"], device=str(device),
                                         short_side=settings["test_short_side"], max_size=settings["max_size"])
            record.update({key: float(metrics[key]) for key in EVAL_KEYS})
        check_finite_model(model, epoch + 1)
        history.append(record)
        if dist_info.is_main:
            print("[persons] " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in record.items()), flush=True)
            save_checkpoint(plain_checkpoint(epoch + 1, model, optimizer, scheduler, scaler, capture_rng_states(),
                                             config, history, schedule=schedule), checkpoint_path)
            if epoch + 1 in config["keep_checkpoints"]:
                shutil.copyfile(checkpoint_path, out / f"checkpoint_epoch{epoch + 1:02d}.pt")
        barrier(dist_info)
    result: dict[str, Any] = {"output_dir": str(out), "history": history}
    if dist_info.is_main:
        metrics = {key: history[-1][key] for key in EVAL_KEYS if key in history[-1]} if history else {}
        result["metrics"] = metrics
        result["weights"] = str(export_person_weights(model, config, class_set, metrics,
                                                      out / config["export"]["weights"]))
        (out / "history.json").write_text(json.dumps(history, indent=2))
        print(f"[persons] {config['name']} val: " + "  ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items())
              + f"; weights {result['weights']}", flush=True)
    return result


def export_person_weights(model: torch.nn.Module, config: dict, class_set: ClassSet, metrics: dict,
                          path: str | Path) -> Path:
    """The node's weights file for a multi-person run (``recipe`` says how it was made and how it scored)."""
    args = {k: v for k, v in config["model"]["args"].items() if k != "encoder_weights"}
    args["num_classes"] = class_set.num_classes
    spec = config["dataset"]
    recipe = {"untrained": False, "dataset": spec["name"], "paper": config["paper"], "recipe": config["name"],
              "splits": {"train": spec["train_split"], "val": spec["val_split"]}, "epochs": config["stage1"]["epochs"],
              "schedule": config["optim"]["schedule"], "batch_size": config["optim"]["batch_size"],
              "lr": config["optim"]["lr"], "seed": config["seed"], "loss_weights": loss_weights(config),
              "min_score": config["multi_person"]["min_score"],
              "test_short_side": config["multi_person"]["test_short_side"], "metrics": {"val": metrics},
              **init_record(config)}
    size = config["export"]["input_size"] or config["input"]["crop_size"]
    info = WeightsInfo.for_class_set(config["model"]["architecture"], args, class_set, tuple(size), recipe)
    return save_weights(path, model, info)
