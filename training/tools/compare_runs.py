"""Per-class IoU of a baseline run against a DTPR run, sorted by class frequency.

    python training/tools/compare_runs.py runs/baseline runs/dtpr --out runs/compare

Reads each run's ``val_classes.csv``; writes ``iou_baseline_vs_dtpr.png`` and
``head_tail.md`` (mean IoU gain over the frequent half and the rare half of the
classes present in the baseline's ground truth).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a file (python training/tools/compare_runs.py), Python puts training/tools/ on sys.path, not the
    # repository root, so `import training` would fail: add the root. Script-only: never on import or with -m.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from human_parsing_ros.errors import UserError, add_debug_flag
from training.cli import run_training_cli
from training.plots import plot_iou_comparison, read_class_table


def head_tail_gains(baseline: dict[int, dict], dtpr: dict[int, dict]) -> dict[str, float]:
    """Mean IoU change (DTPR - baseline) over the head and tail halves by ground-truth pixels."""
    ids = [i for i in baseline if not math.isnan(float(baseline[i]["iou"] or "nan"))]
    ids.sort(key=lambda i: -float(baseline[i]["gt_pixels"]))
    half = len(ids) // 2

    def gain(group: list[int]) -> float:
        deltas = [float(dtpr[i]["iou"]) - float(baseline[i]["iou"]) for i in group]
        return sum(deltas) / len(deltas) if deltas else float("nan")

    return {"head": gain(ids[:half]), "tail": gain(ids[half:]), "classes": len(ids)}


def class_table(path: Path) -> dict[int, dict]:
    """A run's ``val_classes.csv``; UserError naming the file when it is not one."""
    try:
        table = read_class_table(path)
        for row in table.values():
            float(row["iou"] or "nan")
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not a run's class table (val_classes.csv: id, name, iou, ...): "
                        f"{type(error).__name__} {error}") from None
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", type=Path)
    parser.add_argument("dtpr", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    base_csv, dtpr_csv = args.baseline / "val_classes.csv", args.dtpr / "val_classes.csv"
    gains = head_tail_gains(class_table(base_csv), class_table(dtpr_csv))  # both read before any output
    args.out.mkdir(parents=True, exist_ok=True)
    plot_iou_comparison(base_csv, dtpr_csv, args.out / "iou_baseline_vs_dtpr.png")
    text = (f"| classes | head half IoU gain | tail half IoU gain |\n|---|---|---|\n"
            f"| {gains['classes']} | {100 * gains['head']:+.2f} | {100 * gains['tail']:+.2f} |\n")
    (args.out / "head_tail.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    run_training_cli(main, "compare_runs.py")
