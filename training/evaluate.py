"""Evaluate a weights file on one split of a dataset: PA, MPA, mean recall, mIoU and a per-class table.

    python training/evaluate.py --weights human_parsing_ros/data/weights/default.safetensors \
        --dataset ccp --root ../shared/data/ccp --split test --eval-size 412 275 [--flip] [--resize-labels]
    python training/evaluate.py --weights W --dataset ccp --root ../shared/data/ccp --split test --serving
    python training/evaluate.py --weights W ... --serving --fold-to hri   # a finer model, folded to hri
    python training/evaluate.py --checkpoint runs/R/checkpoint_epoch07.pt [--state aggregated] ...   # mid-run

``--serving`` runs the node's own HumanParser (letterbox at the weights' input size, labels at
each photo's resolution): the numbers are what the node delivers. Ground truth in another class
set than the weights' is mapped to theirs (class_mappings); ``--fold-to`` maps both to a coarser set.
``--checkpoint`` evaluates a trainer's checkpoint instead of a weights file: its network (``--state model``)
or self-correction's aggregated model (``--state aggregated``), in the recipe's class set with ImageNet
normalisation, as the trainer's export would.

The protocol's results table (training/protocol.py) is computed by this same
function from the weights files it wrote, so a row can be checked by hand.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    # Run as a file (python training/evaluate.py), Python puts training/ on sys.path, not the repository root,
    # so `import training` would fail: add the root. Script-only: never runs on import or with -m.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from human_parsing_ros.backends import BACKENDS
from human_parsing_ros.class_mappings import mapping_table
from human_parsing_ros.class_sets import get_class_set
from human_parsing_ros.errors import UserError, add_debug_flag
from human_parsing_ros.models import SegmentationModel, is_multi_person
from human_parsing_ros.onnx_model import read_model_info
from human_parsing_ros.parser import HumanParser
from human_parsing_ros.weights import load_weights, read_weights_info
from training.checkpoint import CheckpointError, load_checkpoint
from training.cli import run_training_cli
from training.config import saved_recipe
from training.datasets import build_dataset
from training.engine import evaluate
from training.metrics import ConfusionMatrix, compute_metrics, format_summary, write_class_table
from training.runs import model_from_state, recipe_class_set
from training.transforms import EvalTransform


@dataclass(frozen=True)
class EvalSplit:
    """What to score a network on: ``split`` of ``dataset`` at ``root`` (``options``: build_dataset's), images
    resized to ``eval_size`` if given, labels at their own resolution unless ``resize_labels`` resizes them
    to ``eval_size`` too (nearest); ``flip``: the flip test; fp32, batch 1, on ``device``."""

    dataset: str
    root: str | Path
    split: str
    eval_size: tuple[int, int] | None = None
    device: str = "cpu"
    options: dict[str, Any] | None = None
    workers: int = 1
    resize_labels: bool = False
    flip: bool = False


def confusion_on_split(model: torch.nn.Module, data: EvalSplit, mean: tuple[float, ...] | None = None,
                       std: tuple[float, ...] | None = None, flip_perm: list[int] | None = None) -> torch.Tensor:
    """The [C, C] confusion matrix of ``model`` (already on ``data.device``) over ``data``'s split, images
    normalised with ``mean`` / ``std`` (the ImageNet statistics when not given); the logits are upsampled to each
    label's own resolution unless the labels are resized. ``flip_perm``: the flip test (``data.flip`` is not read).
    """
    normalisation = {} if mean is None else {"mean": mean, "std": std}
    transform = EvalTransform(data.eval_size, resize_labels=data.resize_labels, **normalisation)
    dataset = build_dataset(data.dataset, data.root, data.split, transform, **(data.options or {}))
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=data.workers)
    return evaluate(model.eval(), loader, model.num_classes, torch.device(data.device), amp="none",
                    flip_perm=flip_perm).matrix


def evaluate_model(model: SegmentationModel, class_set_name: str, data: EvalSplit,
                   mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> dict[str, Any]:
    """``compute_metrics`` of ``model`` (in class set ``class_set_name``) on ``data``; ground truth mapped to
    the model's class set when the dataset's differs."""
    model = model.to(data.device).to(memory_format=torch.channels_last)
    data = replace(data, options={**(data.options or {}), "class_set": class_set_name})
    flip_perm = get_class_set(class_set_name).flip_permutation() if data.flip else None
    return compute_metrics(confusion_on_split(model, data, mean, std, flip_perm))


class EvaluateError(UserError, ValueError):
    """Weights or a checkpoint this command cannot score as asked; the message names the file."""


def evaluate_weights(weights: str | Path, data: EvalSplit) -> dict[str, Any]:
    """``evaluate_model`` for the network of a weights file, with its normalisation."""
    model, info = load_weights(weights)
    if getattr(model, "multi_person", False):
        raise EvaluateError(f"{weights}: multi-person weights ({info.architecture}): evaluate the merged map with "
                         "--serving, or persons with training/tools/ship_persons.py (AP^p, PCP)")
    return evaluate_model(model, info.class_set_name, data, info.mean, info.std)


def model_from_checkpoint(path: str | Path, state: str = "model") -> tuple[SegmentationModel, str]:
    """The network a trainer's checkpoint holds (``state``: ``model``, or ``aggregated``: self-correction's
    aggregated model) and its class set's name."""
    if state not in ("model", "aggregated"):
        raise EvaluateError(f"state {state!r}: model or aggregated")
    checkpoint = load_checkpoint(Path(path))
    if checkpoint.get(state) is None:
        raise CheckpointError(f"{path}: no {state} model (self-correction's aggregated model exists once the "
                              "main schedule has ended)")
    config = saved_recipe(checkpoint["config"])
    if is_multi_person(config.model.architecture):
        raise EvaluateError(f"{path}: a multi-person run's checkpoint ({config.model.architecture}): evaluate "
                         "the weights file it exports (--weights W --serving), or persons with "
                         "training/tools/ship_persons.py")
    class_set = recipe_class_set(config.dataset)
    return model_from_state(config.model, class_set.num_classes, checkpoint[state]), class_set.name


def serving_confusion(weights: str | Path, dataset: str, root: str | Path, split: str, device: str = "cpu",
                      options: dict[str, Any] | None = None, fold_to: str | None = None,
                      backend: str = "torch") -> torch.Tensor:
    """The confusion matrix of what the node delivers: ``HumanParser.parse`` of every photo of ``split``
    against its ground truth, both at the photo's resolution, in the weights' class set or ``fold_to``;
    ``backend`` runs the network (an exported .onnx file needs onnxruntime, openvino or auto)."""
    parser = HumanParser(weights, device=device, backend=backend)
    target = fold_to or parser.class_set.name
    data = build_dataset(dataset, root, split, None, **{**(options or {}), "class_set": target})
    fold = mapping_table(parser.class_set.name, target) if target != parser.class_set.name else None
    confusion = ConfusionMatrix(data.class_set.num_classes)
    for index in range(len(data)):
        image, label = data.load(index)
        predicted = parser.parse(image).labels
        confusion.update(torch.from_numpy(predicted if fold is None else fold[predicted]), torch.from_numpy(label))
    return confusion.matrix


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="a .safetensors file the trainer wrote")
    source.add_argument("--checkpoint", help="a trainer's checkpoint (checkpoint.pt, checkpoint_epochNN.pt)")
    parser.add_argument("--state", choices=("model", "aggregated"), default="model",
                        help="with --checkpoint: its network, or self-correction's aggregated model")
    parser.add_argument("--dataset", default="ccp", help="mhpv2 | lip | cihp | atr | ccp")
    parser.add_argument("--root", default="../shared/data/ccp", help="the dataset's folder")
    parser.add_argument("--split", default="val")
    parser.add_argument("--eval-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="resize every image to H x W (logits upsampled to the labels); default: as stored")
    parser.add_argument("--resize-labels", action="store_true",
                        help="with --eval-size: resize the labels (nearest) instead, the faster, older mode; its "
                             "numbers are not comparable with papers'")
    parser.add_argument("--flip", action="store_true", help="flip test (left/right classes swapped)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--serving", action="store_true",
                        help="through the node's HumanParser: letterbox at the weights' input size, labels at each "
                             "photo's resolution (what the node delivers)")
    parser.add_argument("--backend", default="torch", choices=BACKENDS,
                        help="with --serving: what runs the network (docs/backends.md); a .onnx --weights file needs "
                             "onnxruntime, openvino or auto")
    parser.add_argument("--fold-to", default=None, help="with --serving: map predictions and ground truth to this "
                        "class set (e.g. hri) before counting")
    parser.add_argument("--table", type=Path, default=None, help="write the per-class table here (.csv and .md)")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.fold_to and not args.serving:
        raise EvaluateError("--fold-to needs --serving")
    if args.backend != "torch" and not args.serving:
        raise EvaluateError("--backend needs --serving (the other modes run the PyTorch network)")
    if args.checkpoint and args.serving:
        raise EvaluateError("--serving needs --weights (the node loads weights files, not checkpoints)")
    result, names = _evaluate(args)
    mode = f"serving path{', folded to ' + args.fold_to if args.fold_to else ''}" if args.serving else \
        f"network, labels {'resized' if args.resize_labels and args.eval_size else 'at their resolution'}" \
        f"{', flip test' if args.flip else ''}"
    source = args.weights or f"{args.checkpoint} ({args.state})"
    print(f"{source} on {args.dataset} {args.split} ({mode}): {format_summary(result)}")
    if args.table is not None:
        write_class_table(result, names, args.table.with_suffix(".csv"), args.table.with_suffix(".md"))
    return 0


def _evaluate(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The metrics that ``args`` ask for and the class names of their table."""
    size = tuple(args.eval_size) if args.eval_size else None
    data = EvalSplit(args.dataset, args.root, args.split, size, args.device, resize_labels=args.resize_labels,
                     flip=args.flip)
    if args.checkpoint:
        model, class_set_name = model_from_checkpoint(args.checkpoint, args.state)
        result = evaluate_model(model, class_set_name, data)
        return result, list(get_class_set(class_set_name).names)
    if args.serving:
        result = compute_metrics(serving_confusion(args.weights, args.dataset, args.root, args.split, args.device,
                                                   fold_to=args.fold_to, backend=args.backend))
        return result, list(get_class_set(args.fold_to).names if args.fold_to
                            else read_model_info(args.weights).class_names)
    result = evaluate_weights(args.weights, data)
    return result, list(read_weights_info(args.weights).class_names)

if __name__ == "__main__":
    run_training_cli(main, "evaluate.py")
