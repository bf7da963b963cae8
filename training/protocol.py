"""Does DTPR beat normal training at an equal budget? One resumable command runs the whole protocol.

    python training/protocol.py --config training/configs/protocol_ccp.yaml
    python training/protocol.py --config ... --models mobilenetv2 --seeds 0   # a part of it
    python training/protocol.py --config ... --rows dtpr decoupled_ce         # some rows only
    python training/protocol.py --config ... --report                        # table and plots only

For every model and seed: the baseline trains N epochs normally; every other
row starts from the baseline's own checkpoint after ``split_epoch`` epochs and
spends the remaining epochs on its stage 2 (DTPR: frozen encoder, PRA pixels),
except a row marked ``own_budget: true``, which trains from scratch with its
recipe's own epochs (SCHP's main schedule and self-correction cycles).
Each finished run leaves ``<results_dir>/<model>/seed<k>/<row>.json`` with its
validation and test metrics, computed from the weights file it wrote
(``training/evaluate.py`` gives the same numbers). Those files are the state:
a run whose JSON exists is skipped, an interrupted run resumes from its
checkpoint, and a lost checkpoint is re-created by training (seeded, so
identically). Ablation rows are evaluated on validation only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    # Run as a file (python training/protocol.py), Python puts training/ on sys.path, not the repository root,
    # so `import training` would fail: add the root. Script-only: never runs on import or with -m.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import yaml

from human_parsing_ros.errors import UserError, add_debug_flag, flattened
from human_parsing_ros.weights import load_weights, save_weights
from training.cli import run_training_cli
from training.config import load_config, merge, recipe_of
from training.dtpr import run
from training.evaluate import EvalSplit, confusion_on_split, evaluate_weights
from training.metrics import METRICS, cpa_for_sampling, to_jsonable
from training.report import write_report
from training.runs import model_from_state, recipe_class_set


class ProtocolError(UserError, ValueError):
    """A protocol file, key, model or row this command cannot run; the message names it."""


def load_protocol(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ProtocolError(f"{path}: protocol file {'is a folder' if path.is_dir() else 'not found'}")
    try:
        protocol = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ProtocolError(f"{path}: not a YAML protocol ({flattened(error)})") from None
    if not isinstance(protocol, dict):
        raise ProtocolError(f"{path}: a protocol is a YAML mapping, not a {type(protocol).__name__}")
    for key in ("dataset", "dataset_root", "results_dir", "runs_dir", "epochs", "split_epoch", "seeds", "eval_size",
                "eval_labels", "models", "rows"):
        if key not in protocol:
            raise ProtocolError(f"{path}: protocol key '{key}' is missing")
    if not 0 < protocol["split_epoch"] < protocol["epochs"]:
        raise ProtocolError(f"{path}: split_epoch must lie between 0 and epochs")
    if protocol["eval_labels"] not in ("original", "resized"):
        raise ProtocolError(f"{path}: eval_labels must be original or resized, not {protocol['eval_labels']!r}")
    return protocol


def row_config(protocol: dict, model: str, seed: int, row: str, run_dir: Path) -> dict:
    """The trainer config of one run: the model's recipe, the protocol's budget, the row's changes."""
    epochs, split_epoch = protocol["epochs"], protocol["split_epoch"]
    model_spec = protocol["models"][model]
    spec = all_rows(protocol)[row]
    changes = {k: v for k, v in spec.items() if k not in ("cpa_from_epoch", "own_budget")}
    if spec.get("own_budget"):  # the recipe's own epochs (say, self-correction cycles), trained from scratch
        budget: dict = {}
    elif row == "baseline":
        budget = {"stage1": {"epochs": epochs, "schedule_epochs": epochs}, "stage2": {"epochs": 0}}
    else:
        budget = {"stage1": {"epochs": split_epoch, "schedule_epochs": epochs},
                  "stage2": {"epochs": epochs - split_epoch}}
    config = load_config(model_spec["recipe"], {
        "name": f"{model}_{row}_seed{seed}", "seed": seed, "output_dir": str(run_dir),
        "dataset": {"root": protocol["dataset_root"]}, "eval_every": epochs,
        "keep_checkpoints": checkpoint_epochs(protocol), "log": {"tensorboard": False, "progress": False}})
    return merge(merge(config.to_dict(), budget), changes)


def all_rows(protocol: dict) -> dict[str, dict]:
    """Headline rows, then ablations: {row name: its changes to the recipe}."""
    return {**protocol["rows"], **protocol.get("ablations", {})}


def checkpoint_epochs(protocol: dict) -> list[int]:
    """The baseline epochs whose checkpoints other rows start from or take CPA from."""
    wanted = {protocol["split_epoch"]} | {spec["cpa_from_epoch"] for spec in all_rows(protocol).values()
                                          if "cpa_from_epoch" in spec}
    return sorted(wanted)


class SeedRuns:
    """The runs of one model and seed on disk: where they live and how each is made."""

    def __init__(self, protocol: dict, model: str, seed: int) -> None:
        self.protocol, self.model, self.seed = protocol, model, seed
        self.runs = Path(protocol["runs_dir"]) / model / f"seed{seed}"
        self.results = Path(protocol["results_dir"]) / model / f"seed{seed}"

    def result_path(self, row: str) -> Path:
        return self.results / f"{row}.json"

    def checkpoint(self, epoch: int) -> Path:
        """The baseline's checkpoint after ``epoch`` epochs, training stage 1 again if it was lost."""
        name = f"checkpoint_epoch{epoch:02d}.pt"
        for folder in (self.runs / "baseline", self.runs / "stage1_partial"):
            if (folder / name).exists():
                return folder / name
        partial = self.runs / "stage1_partial"
        config = row_config(self.protocol, self.model, self.seed, "baseline", partial)
        config["stage1"]["epochs"] = max(checkpoint_epochs(self.protocol))
        print(f"[protocol] {self.model} seed {self.seed}: re-creating stage-1 checkpoints in {partial}", flush=True)
        run(config, resume=True)
        return partial / name

    def train(self, row: str) -> Path:
        """Train (or finish) ``row``; returns its weights file."""
        folder = self.runs / row
        config = row_config(self.protocol, self.model, self.seed, row, folder)
        weights = folder / config["export"]["weights"]
        if weights.exists():
            return weights
        branches = row != "baseline" and not all_rows(self.protocol)[row].get("own_budget")
        if branches and not (folder / "checkpoint.pt").exists():
            folder.mkdir(parents=True, exist_ok=True)
            source = self.checkpoint(self.protocol["split_epoch"])
            start = torch.load(source, map_location="cpu", weights_only=True)
            cpa_epoch = all_rows(self.protocol)[row].get("cpa_from_epoch")
            if cpa_epoch is not None:
                start["cpa"] = self._cpa_after(cpa_epoch, config)
            elif config["stage1"]["cpa_source"] == "train":  # the baseline recorded both sources at cpa_epoch
                if start.get("cpa_train") is None:
                    raise ProtocolError(f"{source}: holds no training-data CPA (written before the trainer kept it); "
                                     f"delete {self.runs} and run again to re-create it")
                start["cpa"] = start["cpa_train"]
            torch.save(start, folder / "checkpoint.pt")
        run(config, resume=True)
        return weights

    def _cpa_after(self, epoch: int, config: dict) -> torch.Tensor:
        """CPA on the validation split of the baseline after ``epoch`` epochs (the paper records epoch 3)."""
        state = torch.load(self.checkpoint(epoch), map_location="cpu", weights_only=True)
        recipe = recipe_of(config)
        data_spec = recipe.dataset
        num_classes = recipe_class_set(recipe.dataset).num_classes
        model = model_from_state(recipe.model, num_classes, state["model"])
        size = recipe.input.eval_size
        data = EvalSplit(data_spec.name, data_spec.root, data_spec.val_split, tuple(size) if size else None,
                         workers=0, resize_labels=self.protocol["eval_labels"] == "resized")
        return cpa_for_sampling(confusion_on_split(model, data))

    def finish(self, row: str, test: bool) -> dict:
        """Train ``row`` if needed, evaluate its weights and write its result file."""
        path = self.result_path(row)
        if path.exists():
            return json.loads(path.read_text())
        weights = self.train(row)
        root, size = self.protocol["dataset_root"], tuple(self.protocol["eval_size"])
        labels = self.protocol["eval_labels"]
        result: dict[str, Any] = {"model": self.model, "seed": self.seed, "row": row,
                                  "changes": all_rows(self.protocol)[row], "weights": str(weights),
                                  "eval_labels": labels}
        for split in ("val", "test") if test else ("val",):
            metrics = to_jsonable(evaluate_weights(weights, EvalSplit(self.protocol["dataset"], root, split, size,
                                                                      resize_labels=labels == "resized")))
            result[split] = {k: metrics[k] for k in (*METRICS, "iou", "class_pixel_accuracy",
                                                      "gt_pixels")}
        history = json.loads((weights.parent / "history.json").read_text())
        result["train_seconds"] = sum(h["seconds"] for h in history)
        if row == "baseline":
            state = torch.load(self.checkpoint(self.protocol["split_epoch"]), map_location="cpu", weights_only=True)
            result["cpa_recorded"] = state["cpa"].tolist()
            result["train_pixels"] = state["pixel_counts"].tolist()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
        print(f"[protocol] {self.model} seed {self.seed} {row}: " + "  ".join(
            f"{split} mIoU {100 * result[split]['mean_iou']:.2f} MPA {100 * result[split]['mean_pixel_accuracy']:.2f}"
            for split in ("val", "test") if split in result), flush=True)
        return result


def run_protocol(protocol: dict, models: list[str], seeds: list[int], rows: list[str] | None = None) -> None:
    """Row by row over the seeds (headline rows complete first), then the ablations on the first seed."""
    wanted = rows or [*protocol["rows"], *protocol.get("ablations", {})]
    for model in models:
        for row in (r for r in protocol["rows"] if r in wanted):
            for seed in seeds:
                SeedRuns(protocol, model, seed).finish(row, test=True)
        for row in (r for r in protocol.get("ablations", {}) if r in wanted):
            SeedRuns(protocol, model, seeds[0]).finish(row, test=False)


def ship(protocol: dict, model: str, row: str, destination: str | Path) -> Path:
    """Copy the ``row`` run of ``model`` with the best validation mIoU over seeds to ``destination``.

    The metadata gains the run's test metrics and how it was chosen; the
    tensors are the run's own, so ``training/evaluate.py`` on the shipped file
    reproduces the run's row in the table.
    """
    results = [json.loads(p.read_text()) for p in Path(protocol["results_dir"]).glob(f"{model}/seed*/{row}.json")]
    if not results:
        raise ProtocolError(f"no finished '{row}' run of {model} under {protocol['results_dir']}")
    best = max(results, key=lambda r: r["val"]["mean_iou"])
    weights = SeedRuns(protocol, model, best["seed"]).train(row)  # re-created if this machine lacks it
    net, info = load_weights(weights)
    metrics = {split: {k: best[split][k] for k in METRICS} for split in ("val", "test")}
    info.recipe = {**info.recipe, "metrics": metrics, "protocol_row": row, "eval_size": protocol["eval_size"],
                   "selected": f"best validation mIoU of seeds {sorted(r['seed'] for r in results)}"}
    path = save_weights(destination, net, info)
    print(f"[protocol] shipped {model} {row} seed {best['seed']} (val mIoU {100 * metrics['val']['mean_iou']:.2f}, "
          f"test mIoU {100 * metrics['test']['mean_iou']:.2f}) as {path}", flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path, help="protocol YAML (training/configs/protocol_*.yaml)")
    parser.add_argument("--models", nargs="*", help="default: all of the protocol's models")
    parser.add_argument("--seeds", nargs="*", type=int, help="default: the protocol's seeds")
    parser.add_argument("--rows", nargs="*", help="default: every row, then every ablation")
    parser.add_argument("--report", action="store_true", help="only write the table and plots from the results")
    parser.add_argument("--ship", type=Path, default=None, metavar="FILE",
                        help="also write the first model's best DTPR run (by validation mIoU) to FILE")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    protocol = load_protocol(args.config)
    models = args.models or list(protocol["models"])
    for model in models:
        if model not in protocol["models"]:
            raise ProtocolError(f"unknown model '{model}' (protocol has: {', '.join(protocol['models'])})")
    known = [*protocol["rows"], *protocol.get("ablations", {})]
    for row in args.rows or []:
        if row not in known:
            raise ProtocolError(f"unknown row '{row}' (protocol has: {', '.join(known)})")
    if not args.report:
        run_protocol(protocol, models, args.seeds or list(protocol["seeds"]), args.rows)
    write_report(protocol)
    if args.ship is not None:
        ship(protocol, models[0], "dtpr", args.ship)
    return 0


if __name__ == "__main__":
    run_training_cli(main, "protocol.py")
