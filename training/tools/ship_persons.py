"""Evaluate a multi-person run on the CCP-composite test set and install its weights with that evidence.

    python training/tools/ship_persons.py runs/ccp_composites_rprcnn/model.safetensors \
        human_parsing_ros/data/weights/persons_rprcnn.safetensors --root ../shared/data/ccp \
        --json results/persons_rprcnn.json

The test set: ``--count`` composites of CCP's test-split photos only (fixed frames, ``--seed``), at the
weights' input size. Reported: AP^p_50, AP^p_vol, PCP_50 (each detected person's own part map, as the MHP
evaluation scores them), and through the node's own parser (HumanParser, the weights' person threshold):
the merged map's mIoU and PA, and person recall at box IoU 0.5. Run it once, after the recipe was chosen
on validation.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # as ship_weights.py: `import training`

import torch
from torchvision.ops import box_iou

from human_parsing_ros.errors import add_debug_flag
from human_parsing_ros.parser import HumanParser
from human_parsing_ros.weights import load_weights, save_weights
from training.cli import run_training_cli
from training.instance_evaluate import evaluate_instances
from training.instances import InstanceDataset, build_instance_dataset, person_boxes
from training.metrics import ConfusionMatrix
from training.tools.ship_weights import training_seconds


def serving_metrics(weights: Path, dataset: InstanceDataset) -> dict:
    """mIoU / PA of the parser's merged labels and person recall (its persons' pixel boxes, IoU >= 0.5)."""
    parser = HumanParser(weights, device="cpu")
    confusion = ConfusionMatrix(dataset.class_set.num_classes)
    found = annotated = 0
    for index in range(len(dataset)):
        image, labels, persons = dataset.load(index)
        result = parser.parse(image)
        confusion.update(torch.from_numpy(result.labels).long(), torch.from_numpy(labels).long())
        truth, _ = person_boxes(persons)
        annotated += len(truth)
        kept = torch.tensor([[x0, y0, x1 + 1, y1 + 1] for x0, y0, x1, y1 in (p.bbox for p in result.persons)],
                            dtype=torch.float32).reshape(-1, 4)
        if len(truth) and len(kept):
            found += int((box_iou(truth, kept).max(1).values >= 0.5).sum())
    metrics = confusion.compute()
    return {"mean_iou": float(metrics["mean_iou"]), "pixel_accuracy": float(metrics["pixel_accuracy"]),
            "person_recall": found / annotated if annotated else float("nan"),
            "person_threshold": parser.person_threshold}


def ship(weights: Path, destination: Path, root: Path, split: str = "test", count: int = 150, seed: int = 1004,
         json_path: Path | None = None) -> dict:
    model, info = load_weights(weights)
    height, width = info.input_size
    dataset = build_instance_dataset("ccp_composites", root, split, class_set=info.class_set_name, seed=seed,
                                     count=count, size=(height, width), fixed=True)
    paper = evaluate_instances(model, dataset, min_score=info.recipe.get("min_score", 0.5),
                               short_side=info.recipe.get("test_short_side"))
    serving = serving_metrics(weights, dataset)
    result = {"test_set": f"{count} CCP composites of the {split} split's photos, seed {seed}, {height}x{width}, "
                          f"{paper['persons']} persons",
              "paper_metrics": {k: paper[k] for k in ("ap50", "ap_vol", "pcp50", "mean_iou", "person_recall")},
              "ap_by_threshold": {str(t): v for t, v in paper["ap"].items()}, "serving": serving}
    seconds = training_seconds(weights)
    info.recipe = {**info.recipe, "metrics": {**info.recipe.get("metrics", {}), split: result},
                   **({"train_seconds": round(seconds)} if seconds is not None else {})}
    save_weights(destination, model, info)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2))
    print(f"{weights} -> {destination}: " + "  ".join(f"{k} {100 * v:.1f}" for k, v in result["paper_metrics"].items())
          + f"; serving: mIoU {100 * serving['mean_iou']:.1f}, person recall {100 * serving['person_recall']:.1f}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path)
    parser.add_argument("destination", type=Path)
    parser.add_argument("--root", type=Path, default=Path("../shared/data/ccp"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--count", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1004)
    parser.add_argument("--json", type=Path, default=None)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    ship(args.weights, args.destination, args.root, args.split, args.count, args.seed, args.json)
    return 0


if __name__ == "__main__":
    run_training_cli(main, "ship_persons.py")
