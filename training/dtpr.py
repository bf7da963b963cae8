"""One DTPR run from a config: stage 1, CPA at the recorded epoch, stage 2, evaluation, export."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from human_parsing_ros.class_sets import get_class_set

from .datasets import build_dataset
from .engine import (
    CHECKPOINT_FORMAT,
    Dist,
    StageState,
    evaluate,
    load_checkpoint,
    make_eval_loader,
    make_model,
    make_optimizer,
    make_scheduler,
    make_train_loader,
    restore_rng,
    rng_states,
    save_checkpoint,
    setup_distributed,
    stage_loss,
    train_one_epoch,
    unwrap,
    wrap,
)
from .export import export_weights
from .losses import PixelSampler, class_balanced_weights, keep_probabilities
from .metrics import cpa_for_sampling, format_summary, write_class_table
from .tools.dataset_stats import compute_statistics
from .transforms import EvalTransform, TrainTransform


def pixel_counts(dataset) -> torch.Tensor:
    """Ground-truth pixels per class over the training set (PRN's x_i, class-balanced weights)."""
    return torch.tensor(compute_statistics(dataset)["pixels"], dtype=torch.float64)


def stage_state(model, stage: int, config: dict, steps_per_epoch: int, scores: dict) -> StageState:
    """Optimizer, schedule and sampler for one stage (stage 2 freezes what it must first)."""
    base = unwrap(model)
    s2 = config["stage2"]
    if stage == 1:
        params, lr = [p for p in base.parameters()], config["optim"]["lr"]
        epochs = config["stage1"]["schedule_epochs"] or config["stage1"]["epochs"]
    else:
        params = base.freeze_for_stage2(None if s2["trains"] == "auto" else s2["trains"])
        epochs, lr = s2["epochs"], s2["lr"] or config["optim"]["lr"]
    optimizer = make_optimizer(params, lr, config)
    scheduler = make_scheduler(optimizer, epochs * steps_per_epoch)
    sampler, weights = None, None
    if stage == 2 and s2["sampling"] in ("pra", "prn"):
        source = scores["cpa"] if s2["sampling"] == "pra" else scores["pixels"]
        sampler = PixelSampler(keep_probabilities(source.float(), s2["eta"], s2["floor"]))
    if stage_loss(config, stage) == "class_balanced":
        weights = class_balanced_weights(scores["pixels"], config["losses"]["cb_beta"])
    return StageState(stage, optimizer, scheduler, sampler, weights)


def check_losses(config: dict) -> None:
    """Refuse loss settings that cannot work before any time is spent training."""
    s2 = config["stage2"]
    for stage in (1, 2):
        stage_loss(config, stage)
    if s2["sampling"] != "none" and s2["loss"] != "ce":
        raise ValueError(f"stage2.loss '{s2['loss']}' needs stage2.sampling: none (PRA/PRN sample for CE)")


def run(config: dict, resume: bool = False) -> dict[str, Any]:
    """Train (or continue) the run that ``config`` describes; returns its final metrics and files."""
    check_losses(config)
    torch.use_deterministic_algorithms(bool(config["deterministic"]), warn_only=True)
    d, device = setup_distributed(config["device"])
    out = Path(config["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    data, inp = config["dataset"], config["input"]
    class_set = get_class_set(data["class_set"] or data["name"])
    num_classes = class_set.num_classes
    augment = TrainTransform(tuple(inp["crop_size"]), tuple(inp["scale_range"]), inp["max_rotation"],
                             class_set.flip_permutation(), inp["jitter"])
    train_set = build_dataset(data["name"], data["root"], data["train_split"], augment, seed=config["seed"],
                            skip_unreadable=True, **data["options"])
    val_set = build_dataset(data["name"], data["root"], data["val_split"],
                            EvalTransform(tuple(inp["eval_size"]) if inp["eval_size"] else None),
                            skip_unreadable=True, **data["options"])
    e1, e2 = config["stage1"]["epochs"], config["stage2"]["epochs"]
    cpa_epoch = min(config["stage1"]["cpa_epoch"], e1)
    val_loader = make_eval_loader(val_set, config, d)
    steps_per_epoch = len(make_train_loader(train_set, config, d, 0))

    torch.manual_seed(config["seed"])
    model = make_model(config, num_classes).to(device).to(memory_format=torch.channels_last)
    ckpt_path = out / "checkpoint.pt"
    state_dict = load_checkpoint(ckpt_path) if resume and ckpt_path.exists() else None
    start = state_dict["epoch"] if state_dict else 0
    scores = {"cpa": state_dict["cpa"] if state_dict else None,
              "pixels": state_dict["pixel_counts"] if state_dict else pixel_counts(train_set)}
    history: list[dict] = state_dict["history"] if state_dict else []
    stage = 1 if start < e1 else 2
    if state_dict:
        unwrap(model).load_state_dict(state_dict["model"])
    current = stage_state(model, stage, config, steps_per_epoch, scores) if start < e1 + e2 else None
    scaler = torch.amp.GradScaler(device.type, enabled=config["amp"] == "fp16")
    if state_dict and current is not None and state_dict["stage"] == stage:
        current.optimizer.load_state_dict(state_dict["optimizer"])
        current.scheduler.load_state_dict(state_dict["scheduler"])
        scaler.load_state_dict(state_dict["scaler"])
        restore_rng(state_dict["rng"])
    if d.main:
        print(f"[dtpr] {config['name']}: {len(train_set)} train / {len(val_set)} val images, "
              f"{num_classes} classes ({class_set.name}), stage 1 {e1} + stage 2 {e2} epochs, "
              f"{'resuming after epoch ' + str(start) if start else 'from scratch'}, {device}, "
              f"{d.world} process(es)", flush=True)
    writer = _tensorboard(config, out, d)
    net = wrap(unwrap(model), d, device)
    for epoch in range(start, e1 + e2):
        if epoch == e1 and current.stage == 1:
            current = stage_state(model, 2, config, steps_per_epoch, scores)
            net = wrap(unwrap(model), d, device)  # DDP must see the frozen parameters
        began = time.perf_counter()
        loader = make_train_loader(train_set, config, d, epoch)
        result = train_one_epoch(net, loader, current, scaler, config, device, d, epoch, num_classes,
                                 config["log"]["progress"])
        record: dict[str, Any] = {"epoch": epoch + 1, "stage": current.stage, "loss": result["loss"],
                                  "lr": result["lr"], "seconds": time.perf_counter() - began}
        if current.stage == 2 and current.sampler is not None:
            kept, total = result["kept"], result["total"]
            record["kept_fraction"] = float(kept.sum() / total.sum().clamp(min=1))
            _log_kept(out / "kept_pixels.csv", epoch + 1, kept, total, class_set.names, d)
        if current.stage == 1 and epoch + 1 == cpa_epoch:
            matrix = (evaluate(net, val_loader, num_classes, device, config).matrix
                      if config["stage1"]["cpa_source"] == "val" else result["train_confusion"].matrix)
            scores["cpa"] = cpa_for_sampling(matrix.cpu())
            record["cpa_recorded"] = True
        if (epoch + 1) % config["eval_every"] == 0 or epoch + 1 == e1 + e2:
            metrics = evaluate(net, val_loader, num_classes, device, config).compute()
            record.update({k: float(metrics[k]) for k in ("pixel_accuracy", "mean_pixel_accuracy",
                                                          "mean_recall", "mean_iou")})
        history.append(record)
        _log_epoch(writer, record, d)
        if d.main:
            save_checkpoint(ckpt_path, {
                "format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "stage": current.stage,
                "model": unwrap(model).state_dict(), "optimizer": current.optimizer.state_dict(),
                "scheduler": current.scheduler.state_dict(), "scaler": scaler.state_dict(),
                "cpa": scores["cpa"], "pixel_counts": scores["pixels"], "rng": rng_states(),
                "config": config, "history": history})
            if epoch + 1 in config["keep_checkpoints"]:
                shutil.copyfile(ckpt_path, out / f"checkpoint_epoch{epoch + 1:02d}.pt")
        if d.world > 1:
            torch.distributed.barrier()
    return _finish(model, val_loader, class_set, config, scores, history, device, d, out)


def _finish(model, val_loader, class_set, config, scores, history, device, d: Dist, out: Path) -> dict:
    metrics = evaluate(wrap(unwrap(model), d, device) if d.world > 1 else model, val_loader,
                       class_set.num_classes, device, config).compute()
    result = {"metrics": {k: float(metrics[k]) for k in ("pixel_accuracy", "mean_pixel_accuracy",
                                                          "mean_recall", "mean_iou")},
              "output_dir": str(out), "history": history}
    if not d.main:
        return result
    write_class_table(metrics, list(class_set.names), out / "val_classes.csv", out / "val_classes.md")
    weights = export_weights(unwrap(model), config, class_set, result["metrics"], out / config["export"]["weights"])
    result["weights"] = str(weights)
    if config["export"]["onnx"]:
        from .export import export_onnx

        result["onnx"] = str(export_onnx(unwrap(model), out / config["export"]["onnx"],
                                         tuple(config["input"]["crop_size"])))
    if scores["cpa"] is not None:
        from .plots import plot_cpa_vs_pixels

        plot_cpa_vs_pixels(scores["cpa"], scores["pixels"], class_set.names, out / "cpa_vs_pixels.png",
                           config["stage1"]["cpa_epoch"])
    (out / "metrics.json").write_text(json.dumps(
        {**result["metrics"], "accuracy_definitions": "PA = correct / labelled pixels; MPA = mean over classes "
         "present in ground truth of CPA(i) = correct_i / predicted_i (the paper's); mean_recall = mean of "
         "correct_i / ground-truth_i"}, indent=2))
    (out / "history.json").write_text(json.dumps(history, indent=2))
    print(f"[dtpr] {config['name']} val: {format_summary(metrics)}; weights {weights}", flush=True)
    return result


def _tensorboard(config: dict, out: Path, d: Dist):
    if not (config["log"]["tensorboard"] and d.main):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("[dtpr] tensorboard is not installed: no TensorBoard logs (pip install '.[train]')")
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _log_epoch(writer, record: dict, d: Dist) -> None:
    if not d.main:
        return
    summary = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
    print(f"[dtpr] {summary}", flush=True)
    if writer is not None:
        for key in ("loss", "lr", "kept_fraction", "pixel_accuracy", "mean_pixel_accuracy", "mean_iou"):
            if key in record:
                writer.add_scalar(key, record[key], record["epoch"])
        writer.flush()


def _log_kept(path: Path, epoch: int, kept: torch.Tensor, total: torch.Tensor, names, d: Dist) -> None:
    if not d.main:
        return
    new = not path.exists()
    with path.open("a") as f:
        if new:
            f.write("epoch,class_id,name,kept_pixels,gt_pixels,kept_fraction\n")
        for cid, name in enumerate(names):
            if total[cid] > 0:
                f.write(f"{epoch},{cid},{name},{int(kept[cid])},{int(total[cid])},"
                        f"{float(kept[cid] / total[cid]):.6f}\n")
