"""Choose a multi-person weights file's person threshold on real validation photos and write it into the file.

    python training/tools/calibrate_persons.py runs/ccp_scenes_rprcnn/model.safetensors \
        --scenes data/real_scenes/validation --out persons_calibrated.safetensors

The threshold is the lowest score at which the weights report at most ``--max-false`` persons per
people-free photo (default 0.2), which keeps the most persons found within that budget of persons that are
not there. It becomes the file's ``min_score`` (the node's default ``person_threshold``), with the
precision and recall it gives on the validation photos recorded beside it. Validation photos only: the
evaluation set must not choose anything.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from human_parsing_ros.errors import UserError, add_debug_flag, run_cli
from training.scene_metrics import SceneTally

CANDIDATES = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 .. 0.95


class CalibrationError(UserError, ValueError):
    """Weights that cannot be calibrated (single-map weights, no threshold within the budget)."""


def choose_threshold(tally: SceneTally, max_false: float) -> tuple[float, dict]:
    """(the lowest ``CANDIDATES`` threshold with at most ``max_false`` persons per people-free photo, its
    summary); ``CalibrationError`` if even 0.95 reports more."""
    for threshold in CANDIDATES:
        summary = tally.summary(threshold)
        per_photo = summary["persons_per_people_free_photo"]
        if per_photo is not None and per_photo <= max_false:
            return threshold, summary
    raise CalibrationError(f"no threshold up to {CANDIDATES[-1]} keeps persons per people-free photo at or "
                           f"under {max_false}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="calibrate_persons.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--scenes", type=Path, required=True, help="validation photos (images/, annotations.json)")
    parser.add_argument("--out", type=Path, required=True, help="the calibrated weights file to write")
    parser.add_argument("--max-false", type=float, default=0.2, help="persons per people-free photo allowed")
    parser.add_argument("--device", default="cpu")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from human_parsing_ros.parser import HumanParser
    from human_parsing_ros.weights import load_weights, save_weights
    from training.evaluate_scenes import score_parser
    from training.scene_set import load_scene_set

    args = parse_args(argv)
    parser = HumanParser(args.weights, device=args.device)
    if not parser.multi_person:
        raise CalibrationError(f"{args.weights}: single-map weights have no person score to calibrate")
    tally = score_parser(parser, load_scene_set(args.scenes), ["network"])["network"]
    threshold, summary = choose_threshold(tally, args.max_false)
    model, info = load_weights(args.weights)
    info.recipe = {**info.recipe, "min_score": threshold,
                   "calibration": {"scenes": str(args.scenes), "max_false_per_people_free_photo": args.max_false,
                                   **{k: summary[k] for k in ("precision", "recall", "recall_at_least_20pct",
                                                              "persons_per_people_free_photo", "recall_by_size")}}}
    save_weights(args.out, model, info)
    print(f"{args.weights} -> {args.out}: person threshold {threshold:.2f}: precision "
          f"{100 * (summary['precision'] or 0):.0f}%, recall {100 * (summary['recall'] or 0):.0f}% "
          f"({100 * (summary['recall_at_least_20pct'] or 0):.0f}% of persons at least 20% of the height), "
          f"{summary['persons_per_people_free_photo']:.2f} persons per people-free photo")
    return 0


if __name__ == "__main__":
    run_cli(main, prog="calibrate_persons.py")
