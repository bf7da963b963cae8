"""Evaluate a finished run's weights through the node's own parser and install them with that evidence.

    python training/tools/ship_weights.py runs/ccp_hri_mobilenetv2/model.safetensors \
        human_parsing_ros/data/weights/default.safetensors --dataset ccp --root ../shared/data/ccp \
        --split test --table results/hri_default

The copy holds the same tensors; its metadata gains the metrics of ``--split`` through the serving path
(``training/evaluate.py --serving``: letterbox at the weights' input size, labels at each photo's
resolution), the run's training time (from its ``history.json``) and ``--selected`` (how it was chosen).
Run it once, on the test split, after the recipe was chosen on validation.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a file (python training/tools/ship_weights.py), Python puts training/tools/ on sys.path, not the
    # repository root, so `import training` would fail: add the root. Script-only: never on import or with -m.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from human_parsing_ros.errors import add_debug_flag
from human_parsing_ros.weights import load_weights, save_weights
from training.cli import run_training_cli
from training.evaluate import serving_confusion
from training.metrics import METRICS, compute_metrics, format_summary, write_class_table


def training_seconds(weights: Path) -> float | None:
    """Seconds the run spent in its epochs, from the ``history.json`` beside its weights (None without one)."""
    history = weights.parent / "history.json"
    if not history.exists():
        return None
    return float(sum(record["seconds"] for record in json.loads(history.read_text())))


def ship(weights: Path, destination: Path, dataset: str, root: Path, split: str, selected: str,
         table: Path | None = None) -> dict:
    """Write ``weights`` to ``destination`` with its serving-path metrics on ``split``; returns those metrics."""
    result = compute_metrics(serving_confusion(weights, dataset, root, split))
    model, info = load_weights(weights)
    metrics = {key: float(result[key]) for key in METRICS}
    seconds = training_seconds(weights)
    info.recipe = {**info.recipe, "metrics": {**info.recipe.get("metrics", {}), f"{split}_serving": metrics},
                   "selected": selected, **({"train_seconds": round(seconds)} if seconds is not None else {})}
    save_weights(destination, model, info)
    if table is not None:
        write_class_table(result, list(info.class_names), table.with_suffix(".csv"), table.with_suffix(".md"))
    print(f"{weights} -> {destination}: {dataset} {split} through the serving path: {format_summary(result)}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path, help="the run's model.safetensors")
    parser.add_argument("destination", type=Path)
    parser.add_argument("--dataset", default="ccp")
    parser.add_argument("--root", type=Path, default=Path("../shared/data/ccp"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--selected", default="the recipe's only run, chosen on validation",
                        help="how these weights were chosen (stored in the metadata)")
    parser.add_argument("--table", type=Path, default=None, help="also write the per-class table (.csv and .md)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    ship(args.weights, args.destination, args.dataset, args.root, args.split, args.selected, args.table)
    return 0


if __name__ == "__main__":
    run_training_cli(main, "ship_weights.py")
