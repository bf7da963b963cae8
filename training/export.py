"""From a trained model to what ships: the node's weights file, and ONNX."""
from __future__ import annotations

from pathlib import Path

import torch

from human_parsing_ros.class_sets import ClassSet
from human_parsing_ros.models import SegmentationModel
from human_parsing_ros.weights import WeightsInfo, save_weights
from training.checkpoint import disk_full_error, is_disk_full, writing
from training.config import Recipe
from training.datasets import SHARED_IMAGE_FOLDER
from training.recipe import DatasetSection, ModelSection


def init_record(model: ModelSection) -> dict[str, str]:
    """``{"init": file}`` for a run fine-tuned from a weights file (``model.init``), else nothing."""
    return {"init": str(model.init)} if model.init else {}


def validation_is_trained_on(data: DatasetSection) -> str | None:
    """Why the run also trains on its validation images (its validation figures are then not held out), or
    None: ``dataset.options.ids`` picks the same images for both (where the splits share one image folder),
    both splits have one name, or a ``dataset.extra`` entry is the validation split itself, the same dataset
    at the same root."""
    if "ids" in data.options and data.name in SHARED_IMAGE_FOLDER:
        return "dataset.options.ids picks the same images for training and validation"
    if data.train_split == data.val_split:
        return f"train_split and val_split are both '{data['val_split']}'"
    if any(spec["name"] == data.name and spec.get("split", "train") == data.val_split
           and _same_path(spec["root"], data.root) for spec in data.extra):
        return f"dataset.extra trains on the validation split '{data['val_split']}' too"
    return None


def _same_path(a: str, b: str) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _extra_part(spec: dict) -> str:
    return Path(spec["root"]).name if spec["name"] == "coco_persons" else spec.get("split", "train")


def training_splits(data: DatasetSection) -> dict:
    """The splits a run trained and validated on; ``extra`` lists the ``dataset.extra`` data as ``name:split``
    (``coco_persons``, a folder without splits: ``name:<the folder's name>``), and ``val_held_out`` is false when
    the run also trains on its validation images (``validation_is_trained_on``)."""
    splits = {"train": data.train_split, "val": data.val_split}
    if data.extra:
        splits["extra"] = [f"{spec['name']}:{_extra_part(spec)}" for spec in data.extra]
    if validation_is_trained_on(data):
        splits["val_held_out"] = False
    return splits


def recipe_summary(config: Recipe, metrics: dict, stage2_default: str = "decoder") -> dict:
    """What the weights file says about how it was made (docs/weights.md: the recipe entry)."""
    stage1, stage2 = config.stage1, config.stage2
    stages = [{"stage": 1, "epochs": stage1.epochs,
               "schedule_epochs": stage1.schedule_epochs or stage1.epochs, "loss": stage1.loss,
               "cpa_epoch": stage1.cpa_epoch, "cpa_source": stage1.cpa_source}]
    if stage2.epochs:
        trains = stage2_default if stage2.trains == "auto" else stage2.trains
        stages.append({"stage": 2, "epochs": stage2.epochs, "trains": trains, "sampling": stage2.sampling,
                       "loss": stage2.loss, "eta": stage2.eta, "floor": stage2.floor,
                       "reduction": stage2.reduction,
                       **({"prn_counts": stage2.prn_counts} if stage2.sampling == "prn" else {})})
    inter_class = config.inter_class
    for stage in stages:
        if inter_class.weight > 0 and stage["stage"] in inter_class.stages:
            stage["inter_class"] = {"weight": inter_class.weight, "margin": inter_class.margin}
    cycles = config.self_correction.cycles
    if cycles:
        stages[0]["self_correction"] = {"cycles": cycles, "cycle_epochs": config.self_correction.cycle_epochs}
    return {"untrained": False, "dataset": config.dataset.name, "paper": config.paper,
            "schedule": config.optim.schedule, "eval_labels": config.input.eval_labels,
            "splits": training_splits(config.dataset),
            "recipe": config.name, "stages": stages, "sampling": stage2.sampling if stage2.epochs else "none",
            "crop_size": list(config.input.crop_size), "batch_size": config.optim.batch_size,
            "lr": config.optim.lr, "seed": config.seed, "metrics": {"val": metrics}, **init_record(config.model)}


def weights_args(args: dict, num_classes: int) -> dict:
    """The architecture arguments a weights file stores: the recipe's ``model.args`` without
    ``encoder_weights`` (what the untrained encoder started from; every tensor is in the file), with
    ``num_classes``. The one place this rule is written."""
    return {**{k: v for k, v in args.items() if k != "encoder_weights"}, "num_classes": num_classes}


def export_weights(model: torch.nn.Module, config: Recipe, class_set: ClassSet, recipe: dict,
                   path: str | Path, intact: Path | None = None) -> Path:
    """Write the node's safetensors weights file for ``model`` (any kind of run); ``recipe``: what the file says
    about how it was made and how it scored (``recipe_summary`` for DTPR runs). A full disk raises
    ``DiskFullError`` naming the file and the run's checkpoint left ``intact`` (save_weights leaves no
    temporary file)."""
    info = WeightsInfo.for_class_set(config.model.architecture, weights_args(config.model.args,
                                                                                  class_set.num_classes),
                                     class_set, tuple(config.export.input_size or config.input.crop_size),
                                     recipe)
    try:
        return save_weights(path, model, info)
    except Exception as error:
        if is_disk_full(error):
            raise disk_full_error(Path(path), intact) from error
        raise


def export_onnx(model: SegmentationModel, path: str | Path, input_hw: tuple[int, int],
                intact: Path | None = None) -> Path:
    """ONNX with a dynamic batch and image size; outputs full-resolution logits. Written atomically; a full
    disk raises ``DiskFullError`` naming the file and the run's checkpoint left ``intact``."""
    path = Path(path)
    model = model.eval().float().to(memory_format=torch.contiguous_format)
    dummy = torch.zeros(1, 3, *input_hw, device=next(model.parameters()).device)  # a GPU run's model stays there

    def write(tmp: Path) -> None:
        torch.onnx.export(model, (dummy,), str(tmp), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                        "logits": {0: "batch", 2: "height", 3: "width"}},
                          opset_version=17, dynamo=False)

    writing(path, write, intact)
    return path
