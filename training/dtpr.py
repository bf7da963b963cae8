"""The two-stage DTPR loop: one run from a config.

Stage 1 trains the whole network and records CPA at ``stage1.cpa_epoch``;
stage 2 freezes the encoder and trains the decoder (or classifier) on the
pixels PRA/PRN keeps. Then evaluation and export. ``run`` builds the pieces
(datasets, loaders, model, per-stage optimizer and loss), calls the epoch loops
of ``training/engine.py``, and writes a checkpoint after every epoch.

Reproducibility: the data order, every sample's augmentation, dropout and the
PRA draws are all seeded from (seed, epoch, index/step, rank), so a run resumed
from its last epoch checkpoint repeats the uninterrupted run bit for bit.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from human_parsing_ros.class_sets import ClassSet
from human_parsing_ros.models import SegmentationModel
from training.config import PRN_COUNTS, Recipe, RecipeError, check_choice, recipe_of
from training.datasets import ConcatParsingDataset, ParsingDataset, build_dataset
from training.distributed import unwrap_ddp, wrap_ddp
from training.engine import EpochSettings, StageLoss, StageState, evaluate, train_one_epoch
from training.export import export_onnx, recipe_summary, validation_is_trained_on
from training.label_statistics import UnreadableDataError, check_files, check_label_ids, class_statistics
from training.loaders import make_eval_loader, make_train_loader
from training.losses import class_balanced_weights
from training.metrics import METRICS, cpa_for_sampling, format_summary, write_class_table
from training.person_labels import coco_persons
from training.recipe import InputSection, Stage2Section
from training.runs import Run, model_from_state, plotting_available, recipe_class_set, start_run
from training.sampling import PixelSampler, keep_probabilities
from training.scene_frames import scene_frames
from training.schedules import Schedule, make_optimizer, make_scheduler, schedule_shape
from training.schp.cycles import cycle_lr_factor, cycle_plan, update_aggregated
from training.transforms import EvalTransform, TrainTransform


def sampling_scores(stage2: Stage2Section, cpa: torch.Tensor | None, counts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The x_i that stage 2's sampler divides eta by: PRA's CPA, or PRN's training-set counts per class
    (``stage2.prn_counts``: images containing the class, or its pixels)."""
    if stage2.sampling == "pra":
        if cpa is None:
            raise RecipeError("stage2.sampling pra needs CPA: stage1.cpa_epoch must lie within stage 1")
        return cpa
    check_choice("stage2.prn_counts", stage2.prn_counts, PRN_COUNTS)
    return counts[stage2.prn_counts]


def make_stage_loss(config: Recipe, stage: int, cpa: torch.Tensor | None, counts: dict[str, torch.Tensor]) -> StageLoss:
    """The loss of ``stage``: PRA (scores = ``cpa``) or PRN (``counts``) sampling in stage 2, or
    ``stage<N>.loss`` on every pixel; the inter-class term where ``inter_class.stages`` lists the stage."""
    stage2, inter_class = config.stage2, config.inter_class
    sampler = None
    if stage == 2 and stage2.sampling in ("pra", "prn"):
        scores = sampling_scores(stage2, cpa, counts)
        sampler = PixelSampler(keep_probabilities(scores.float(), stage2.eta, stage2.floor))
    name = getattr(config, f"stage{stage}").loss
    weights = class_balanced_weights(counts["pixels"], config.losses.cb_beta) \
        if name == "class_balanced" else None
    return StageLoss(name=name, sampler=sampler, reduction=stage2.reduction if stage == 2 else "kept_mean",
                     class_weights=weights, focal_gamma=config.losses.focal_gamma,
                     inter_class_weight=inter_class.weight if stage in inter_class.stages else 0.0,
                     inter_class_margin=inter_class.margin)


def stage_lr(config: Recipe, stage: int) -> float:
    """The peak learning rate of ``stage`` (stage 2: ``stage2.lr``, else ``optim.lr``)."""
    return (config.stage2.lr if stage == 2 else None) or config.optim.lr


def make_stage(model: torch.nn.Module, stage: int, config: Recipe, steps_per_epoch: int, cpa: torch.Tensor | None,
               counts: dict[str, torch.Tensor]) -> StageState:
    """Optimizer, schedule and loss for one stage (stage 2 freezes what it must first)."""
    base = unwrap_ddp(model)
    optim, stage1, stage2 = config.optim, config.stage1, config.stage2
    cycle_steps = 0
    if stage == 1:
        params, lr = list(base.parameters()), stage_lr(config, 1)
        epochs = stage1.schedule_epochs or stage1.epochs
        cycle_steps = config.self_correction.cycle_epochs * steps_per_epoch \
            if cycle_plan(config).cycles else 0
    else:
        params = base.freeze_for_stage2(None if stage2.trains == "auto" else stage2.trains)
        epochs, lr = stage2.epochs, stage_lr(config, 2)
    optimizer = make_optimizer(params, lr, optim.momentum, optim.weight_decay)
    warmup_steps = optim.warmup_steps or round(optim.warmup_epochs * steps_per_epoch)
    scheduler = make_scheduler(optimizer, epochs * steps_per_epoch, Schedule(
        optim.schedule, optim.poly_power, cycle_steps, cycle_lr_factor(config), optim.milestones,
        warmup_steps, optim.warmup_start, optim.min_lr_factor))
    schedule = schedule_shape(optim, steps_per_epoch, epochs * steps_per_epoch, cycle_steps=cycle_steps,
                              warmup_steps=warmup_steps, warmup_start=optim.warmup_start,
                              min_lr_factor=optim.min_lr_factor)
    return StageState(stage, optimizer, scheduler, make_stage_loss(config, stage, cpa, counts), schedule)


EXTRA_KEYS = ("name", "root", "split", "options")


def extra_dataset(spec: dict[str, Any], class_set: ClassSet) -> ParsingDataset:
    """One ``dataset.extra`` entry's training data, labels mapped to ``class_set``."""
    unknown = sorted(set(spec) - set(EXTRA_KEYS))
    if unknown or "name" not in spec or "root" not in spec:
        raise RecipeError(f"dataset.extra entry {spec}: needs name and root, may have split and options "
                         f"(unknown: {', '.join(unknown) or 'none'})")
    if spec["name"] == "ccp_composites":
        return scene_frames(spec["root"], spec.get("split", "train"), class_set, dict(spec.get("options", {})))
    if spec["name"] == "coco_persons":
        return coco_persons(spec["root"], class_set, dict(spec.get("options", {})))
    return build_dataset(spec["name"], spec["root"], spec.get("split", "train"),
                         **{**spec.get("options", {}), "class_set": class_set.name})


def make_datasets(config: Recipe, class_set: ClassSet) -> tuple[ParsingDataset, ParsingDataset]:
    """(training set with the seeded augmentation, validation set: images resized to ``input.eval_size``, labels
    too if ``input.eval_labels`` is resized)."""
    data_spec, input_spec = config.dataset, config.input
    augment = TrainTransform(tuple(input_spec.crop_size), tuple(input_spec.scale_range),
                             input_spec.max_rotation, class_set.flip_permutation(), input_spec.jitter)
    options = {**data_spec.options, "class_set": class_set.name}  # labels mapped on load if it differs
    if data_spec.extra:
        parts = [build_dataset(data_spec.name, data_spec.root, data_spec.train_split, **options)]
        parts += [extra_dataset(spec, class_set) for spec in data_spec.extra]
        train_set = ConcatParsingDataset(parts, augment, skip_unreadable=True, seed=config.seed)
    else:
        train_set = build_dataset(data_spec.name, data_spec.root, data_spec.train_split, augment,
                                  seed=config.seed, skip_unreadable=True, **options)
    eval_size = tuple(input_spec.eval_size) if input_spec.eval_size else None
    resize_labels = eval_labels_resized(input_spec)
    val_options = {k: v for k, v in options.items() if k != "background_margin"}  # validation scores every pixel
    val_set = build_dataset(data_spec.name, data_spec.root, data_spec.val_split,
                            EvalTransform(eval_size, resize_labels=resize_labels), **val_options)
    return train_set, val_set


def validation_statistics(val_set: ParsingDataset, split: str) -> dict[str, Any]:
    """``class_statistics`` of the validation split. A dataset that skips unreadable samples (MHPv2) has
    those left out of validation (substituting the next one would score that one twice); in any other an
    unreadable label stops the run naming the file."""
    try:
        stats = class_statistics(val_set)  # records out-of-range ids rather than raising
    except (OSError, ValueError) as error:
        raise UnreadableDataError(f"validation split '{split}': {error}") from None
    if stats["skipped"]:
        skipped = set(stats["skipped"])
        val_set.items = [item for item in val_set.items if item.id not in skipped]
    return stats


def eval_labels_resized(input_spec: InputSection) -> bool:
    """Whether validation resizes the labels to ``input.eval_size`` (else they keep their own resolution)."""
    return input_spec.eval_labels == "resized"


def eval_flip_perm(input_spec: InputSection, class_set: ClassSet) -> list[int] | None:
    """The flip permutation when ``input.eval_flip`` turns the flip test on, else None."""
    return class_set.flip_permutation() if input_spec.eval_flip else None


def train_counts(stats: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Per-class training-set counts (float64 [C]): ``pixels`` and ``images`` (PRN's two readings)."""
    return {key: torch.tensor(stats[key], dtype=torch.float64) for key in ("pixels", "images")}


def restore_aggregated(checkpoint: dict | None, config: Recipe, num_classes: int,
                       device: torch.device) -> SegmentationModel | None:
    """Self-correction's aggregated model from ``checkpoint`` (None before the cycles began)."""
    if not checkpoint or checkpoint.get("aggregated") is None:
        return None
    aggregated = model_from_state(config.model, num_classes, checkpoint["aggregated"])
    return aggregated.to(device).to(memory_format=torch.channels_last).requires_grad_(False).eval()


def trim_kept_pixels(path: Path, epochs_done: int) -> None:
    """Drop rows of epochs after ``epochs_done`` (written before a kill, repeated after the resume)."""
    if not path.exists():
        return
    header, *rows = path.read_text().splitlines(keepends=True)
    keep = [row for row in rows if int(row.split(",", 1)[0]) <= epochs_done]
    if len(keep) != len(rows):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(header + "".join(keep))
        tmp.replace(path)


# ---- the run --------------------------------------------------------------------------------------
def run(config: Recipe, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train (or continue, ``resume``) the run that ``config`` describes; returns its final metrics and files.

    A new run refuses an output_dir that holds an earlier run's files unless ``overwrite``.
    """
    config = recipe_of(config)  # a recipe built with merge() (protocol rows) is checked and frozen here
    current_run = start_run(config, "dtpr", resume, overwrite)
    dist_info, device, out = current_run.dist_info, current_run.device, current_run.out
    optim = config.optim
    class_set = recipe_class_set(config.dataset)
    num_classes = class_set.num_classes
    train_set, val_set = make_datasets(config, class_set)
    for line in check_files(train_set, val_set, config.dataset.val_split, config.dataset.train_split):
        current_run.log(line)  # before any epoch: a bad validation file would stop the run at its first
    val_stats = validation_statistics(val_set, config.dataset.val_split)  # before its loader
    check_label_ids(val_stats, num_classes)
    if val_stats["skipped"]:
        current_run.log(f"warning: validation leaves out {len(val_stats['skipped'])} unreadable sample(s): "
                        f"{', '.join(val_stats['skipped'][:5])}{' ...' if len(val_stats['skipped']) > 5 else ''}")
    plan = cycle_plan(config)
    stage1_epochs, stage2_epochs = plan.epochs, config.stage2.epochs
    total_epochs = stage1_epochs + stage2_epochs
    cpa_epoch = min(config.stage1.cpa_epoch, stage1_epochs)
    same_sizes = config.input.eval_size and eval_labels_resized(config.input)
    eval_batch_size = optim.eval_batch_size if same_sizes else 1  # label sizes differ otherwise
    flip_perm = eval_flip_perm(config.input, class_set)
    val_loader = make_eval_loader(val_set, eval_batch_size, optim.workers, dist_info)
    steps_per_epoch = len(make_train_loader(train_set, optim.batch_size, optim.workers, config.seed, 0,
                                            dist_info))

    model = current_run.build_model(class_set, channels_last=True)
    checkpoint, start_epoch = current_run.checkpoint, current_run.start_epoch
    cpa = checkpoint["cpa"] if checkpoint else None
    cpa_train = checkpoint.get("cpa_train") if checkpoint else None
    if checkpoint and "image_counts" in checkpoint:
        counts = {"pixels": checkpoint["pixel_counts"], "images": checkpoint["image_counts"]}
    else:  # the first pass over the labels: an id outside the class set stops the run here, naming the file
        stats = class_statistics(train_set)
        check_label_ids(stats, num_classes)
        counts = train_counts(stats)
    stage = 1 if start_epoch < stage1_epochs else 2
    aggregated = restore_aggregated(checkpoint, config, num_classes, device)
    current = make_stage(model, stage, config, steps_per_epoch, cpa, counts) \
        if start_epoch < total_epochs else None
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    if checkpoint and current is not None:
        current_run.restore_scaler_and_rng(scaler)  # they carry over a stage boundary, as in an uninterrupted run
    if checkpoint and current is not None and checkpoint["stage"] == stage:  # else the new stage starts its own
        current_run.restore_schedule(current.optimizer, current.scheduler, stage_lr(config, stage), current.schedule,
                                     note_prefix=f"stage {stage} ")
    current_run.log(f"{config['name']}: {len(train_set)} train / {len(val_set)} val images, "
                    f"{num_classes} classes ({class_set.name}), stage 1 {stage1_epochs} + stage 2 {stage2_epochs} "
                    f"epochs, {current_run.start_description()}, {device}, {dist_info.world_size} process(es)")
    overlap = validation_is_trained_on(config.dataset)
    if overlap:
        current_run.log(f"warning: {overlap}, so the validation figures of this run are not held out")
    if dist_info.is_main:
        trim_kept_pixels(out / "kept_pixels.csv", start_epoch)
    net = wrap_ddp(model, dist_info, device)
    current_run.forget_checkpoint()
    del checkpoint  # restored into the model and optimizer: no second copy for the whole run
    settings = EpochSettings(device, dist_info, config.seed, num_classes, config.amp,
                             config.log.progress, config.max_nonfinite_steps)
    for epoch in range(start_epoch, total_epochs):
        if epoch == stage1_epochs and current.stage == 1:
            current = make_stage(model, 2, config, steps_per_epoch, cpa, counts)
            net = wrap_ddp(model, dist_info, device)  # DDP must see the frozen parameters
        began = time.perf_counter()
        loader = make_train_loader(train_set, optim.batch_size, optim.workers, config.seed, epoch,
                                   dist_info)
        cycle = plan.cycle(epoch) if current.stage == 1 else 0
        result = train_one_epoch(net, loader, current, scaler, epoch, settings,
                                 teacher=aggregated if cycle else None, cycle=cycle)
        record: dict[str, Any] = {"epoch": epoch + 1, "stage": current.stage, "loss": result["loss"],
                                  "lr": result["lr"], "seconds": time.perf_counter() - began}
        if result["nonfinite_steps"]:
            record["nonfinite_steps"] = result["nonfinite_steps"]
        if current.loss.sampler is not None:
            kept, total = result["kept"], result["total"]
            record["kept_fraction"] = float(kept.sum() / total.sum().clamp(min=1))
            if dist_info.is_main:
                _log_kept(out / "kept_pixels.csv", epoch + 1, kept, total, class_set.names)
        if current.stage == 1 and epoch + 1 == cpa_epoch:
            # the training data's CPA is free (this epoch's running confusion) and always kept, so that a
            # branch off this run may take either source
            cpa_train = cpa_for_sampling(result["train_confusion"].matrix.cpu())
            if config.stage1.cpa_source == "val":
                cpa = cpa_for_sampling(evaluate(net, val_loader, num_classes, device, amp=config.amp).matrix.cpu())
            else:
                cpa = cpa_train
            record["cpa_recorded"] = True
        m = plan.aggregates_after(epoch + 1) if current.stage == 1 else None
        if m is not None:
            batches = make_train_loader(train_set, optim.batch_size, optim.workers, config.seed, epoch,
                                        dist_info)
            aggregated = update_aggregated(aggregated, model, m, (x.to(device) for x, _ in batches), dist_info)
            record["aggregated_models"] = m + 1
            if epoch + 1 == plan.epochs:  # the last cycle: the network becomes the aggregated model
                model.load_state_dict(aggregated.state_dict())
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == total_epochs:
            metrics = evaluate(net, val_loader, num_classes, device, amp=config.amp, flip_perm=flip_perm).compute()
            record.update({key: float(metrics[key]) for key in METRICS})
        current_run.end_epoch(model, record, partial(
            current_run.checkpoint_state, epoch + 1, model, current.optimizer, current.scheduler, scaler,
            stage=current.stage, cpa=cpa, cpa_train=cpa_train, pixel_counts=counts["pixels"],
            image_counts=counts["images"], aggregated=None if aggregated is None else aggregated.state_dict(),
            schedule=current.schedule or {}))
    return _finish(current_run, model, val_loader, class_set, cpa, counts["pixels"])


def _finish(current_run: Run, model: SegmentationModel, val_loader: torch.utils.data.DataLoader,
            class_set: ClassSet, cpa: torch.Tensor | None, pixel_counts: torch.Tensor) -> dict[str, Any]:
    """Final validation, and on rank 0 the class table, ONNX, plots and metrics.json (``Run.finish``: the
    weights file and history.json)."""
    config, out, dist_info, device = current_run.config, current_run.out, current_run.dist_info, current_run.device
    metrics = evaluate(wrap_ddp(model, dist_info, device), val_loader, class_set.num_classes, device,
                       amp=config.amp, flip_perm=eval_flip_perm(config.input, class_set)).compute()
    values = {key: float(metrics[key]) for key in METRICS}
    if dist_info.is_main:
        write_class_table(metrics, list(class_set.names), out / "val_classes.csv", out / "val_classes.md")
    result = current_run.finish(model, class_set, recipe_summary(config, values, model.stage2_default), values,
                                format_summary(metrics))
    if not dist_info.is_main:
        return result
    if config.export.onnx:
        result["onnx"] = str(export_onnx(model, out / config.export.onnx, tuple(config.input.crop_size),
                                         intact=current_run.checkpoint_path))
    (out / "metrics.json").write_text(json.dumps(
        {**values, "accuracy_definitions": "PA = correct / labelled pixels; MPA = mean over classes "
         "present in ground truth of CPA(i) = correct_i / predicted_i (the paper's); mean_recall = mean of "
         "correct_i / ground-truth_i"}, indent=2))
    if cpa is not None:  # the plot last: a missing plot library never costs the run's results
        if plotting_available():
            from training.plots import plot_cpa_vs_pixels

            plot_cpa_vs_pixels(cpa, pixel_counts, class_set.names, out / "cpa_vs_pixels.png",
                               config.stage1.cpa_epoch)
        else:
            current_run.log(f"note: matplotlib is not installed: no {out / 'cpa_vs_pixels.png'} "
                            "(pip install '.[train]')")
    return result


def _log_kept(path: Path, epoch: int, kept: torch.Tensor, total: torch.Tensor, names: Iterable[str]) -> None:
    new = not path.exists()
    with path.open("a") as f:
        if new:
            f.write("epoch,class_id,name,kept_pixels,gt_pixels,kept_fraction\n")
        for class_id, name in enumerate(names):
            if total[class_id] > 0:
                f.write(f"{epoch},{class_id},{name},{int(kept[class_id])},{int(total[class_id])},"
                        f"{float(kept[class_id] / total[class_id]):.6f}\n")
