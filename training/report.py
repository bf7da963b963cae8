"""The protocol's table and plots from its result files (``training/protocol.py`` writes them)."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from human_parsing_ros.class_sets import get_class_set
from training.metrics import METRICS
from training.plots import plot_cpa_vs_pixels, plot_group_gains, plot_iou_by_frequency

# Headline rows that the ablations vary, shown next to them (validation split).
ABLATION_REFERENCES = ["dtpr", "decoupled_ce", "prn", "class_balanced"]
LABELS = {"pixel_accuracy": "PA", "mean_pixel_accuracy": "MPA", "mean_recall": "mRecall", "mean_iou": "mIoU"}


def load_results(results_dir: str | Path) -> dict[str, dict[str, dict[int, dict]]]:
    """{model: {row: {seed: result}}} from ``<results_dir>/<model>/seed<k>/<row>.json``."""
    out: dict = {}
    for path in sorted(Path(results_dir).glob("*/seed*/*.json")):
        result = json.loads(path.read_text())
        out.setdefault(result["model"], {}).setdefault(result["row"], {})[result["seed"]] = result
    return out


def mean_spread(values: list[float]) -> str:
    """'mean ± sample standard deviation (n)' in percent; a single value has no spread."""
    if not values:
        return "-"
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f} (n=1)"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f} (n={len(values)})"


def paired_gain(row: dict[int, dict], baseline: dict[int, dict], split: str, metric: str) -> list[float]:
    """Per-seed difference row - baseline, over the seeds both have."""
    return [row[s][split][metric] - baseline[s][split][metric]
            for s in sorted(row) if s in baseline and split in row[s]]


def format_table(rows: dict[str, dict[int, dict]], order: list[str], splits: tuple[str, ...]) -> list[str]:
    header = " | ".join(f"{split} {LABELS[m]}" for split in splits for m in METRICS)
    lines = [f"| row | {header} |", "|---|" + "---:|" * (len(splits) * len(METRICS))]
    for row in order:
        if row not in rows:
            continue
        cells = [mean_spread([r[split][m] for r in rows[row].values() if split in r]) for split in splits
                 for m in METRICS]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def format_gains(rows: dict[str, dict[int, dict]], order: list[str], splits: tuple[str, ...],
                 reference: str = "baseline") -> list[str]:
    """Each row minus ``reference`` of the same seed: the baseline is the comparison the protocol is
    about; ``decoupled_ce`` separates what a stage-2 method adds from retraining the decoder at all."""
    compared = [row for row in order if row in rows and row not in ("baseline", reference)]
    if reference not in rows or not compared:
        return []
    header = " | ".join(f"{split} Δ{LABELS[m]}" for split in splits for m in METRICS)
    lines = [f"| row - {reference} (same seed) | {header} |", "|---|" + "---:|" * (len(splits) * len(METRICS))]
    for row in compared:
        cells = [mean_spread(paired_gain(rows[row], rows[reference], split, m)) for split in splits for m in METRICS]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def format_per_seed(rows: dict[str, dict[int, dict]], order: list[str], split: str) -> list[str]:
    """Every seed's own numbers, so that one run (the shipped one, say) can be checked against the table."""
    header = " | ".join(f"{split} {LABELS[m]}" for m in METRICS)
    lines = [f"| row | seed | {header} |", "|---|---:|" + "---:|" * len(METRICS)]
    for row in order:
        for seed, result in sorted(rows.get(row, {}).items()):
            if split in result:
                cells = " | ".join(f"{100 * result[split][m]:.2f}" for m in METRICS)
                lines.append(f"| {row} | {seed} | {cells} |")
    return lines


def class_groups(pixels: list[float], parts: int = 3) -> list[list[int]]:
    """Classes with training pixels, most frequent first, cut into ``parts`` groups (head ... tail)."""
    ids = sorted((i for i, p in enumerate(pixels) if p > 0), key=lambda i: -pixels[i])
    size = math.ceil(len(ids) / parts)
    return [ids[k:k + size] for k in range(0, len(ids), size)]


def mean_per_class(results: dict[int, dict], split: str, key: str) -> list[float]:
    """Per-class value averaged over seeds (NaN where a class is absent from the split)."""
    runs = [r[split][key] for r in results.values() if split in r]
    return [statistics.fmean(v[i] for v in runs) if all(not _nan(v[i]) for v in runs) else math.nan
            for i in range(len(runs[0]))]


def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def group_gains(rows: dict[str, dict[int, dict]], pixels: list[float], split: str, key: str) -> dict[str, list[float]]:
    """Mean per-class gain over the baseline in each frequency group, per row."""
    base = mean_per_class(rows["baseline"], split, key)
    out = {}
    for row, results in rows.items():
        if row == "baseline" or not any(split in r for r in results.values()):
            continue
        values = mean_per_class(results, split, key)
        out[row] = [statistics.fmean([values[i] - base[i] for i in group if not (_nan(values[i]) or _nan(base[i]))]
                                     or [math.nan]) for group in class_groups(pixels)]
    return out


def reference_results(protocol: dict) -> dict[str, dict[str, dict[int, dict]]]:
    """Rows of another protocol's models shown beside this one's (``references: {model: results_dir}``):
    only the rows this protocol also has, read from the other's result files, never re-run."""
    out = {}
    for model, results_dir in (protocol.get("references") or {}).items():
        rows = load_results(results_dir).get(model, {})
        out[f"{model} (from {results_dir})"] = {r: seeds for r, seeds in rows.items() if r in protocol["rows"]}
    return out


def write_report(protocol: dict) -> Path:
    """``<results_dir>/table.md`` and, per model, the plots; returns the table's path."""
    out = Path(protocol["results_dir"])
    out.mkdir(parents=True, exist_ok=True)
    names = list(get_class_set(protocol["dataset"]).names)
    rows_order, ablations = list(protocol["rows"]), list(protocol.get("ablations", {}))
    per_seed = list(protocol.get("per_seed", ["baseline", "dtpr"]))
    references = reference_results(protocol)
    results = {**references, **load_results(out)}
    design = protocol.get("design") or (
        f"N = {protocol['epochs']} epochs; rows other than the baseline train stage 2 for the last "
        f"{protocol['epochs'] - protocol['split_epoch']} of them from the baseline's epoch-"
        f"{protocol['split_epoch']} checkpoint.")
    intro = (f"{design} Percent, mean ± sample standard deviation over seeds. "
             "MPA is the paper's (mean class pixel accuracy = precision); mRecall is the mean of "
             "correct / ground-truth pixels (the usual mean accuracy); see training/metrics.py.")
    lines = [f"# {protocol['dataset'].upper()} protocol results", "", intro, ""]
    for model, rows in results.items():
        lines += [f"## {model}", "", *format_table(rows, rows_order, ("val", "test")), "",
                  *format_gains(rows, rows_order, ("val", "test")), "",
                  *format_gains(rows, rows_order, ("val", "test"), reference="decoupled_ce"), "",
                  "Per seed (test):", "", *format_per_seed(rows, per_seed, "test"), ""]
        if any(r in rows for r in ablations):
            lines += ["Ablations (validation split only; the test split is not used for them):", "",
                      *format_table(rows, ["baseline", *ABLATION_REFERENCES, *ablations], ("val",)), "",
                      *format_gains(rows, [*ABLATION_REFERENCES, *ablations], ("val",)), ""]
        if "baseline" not in rows or model in references:  # a reference's plots are in its own report
            continue
        first = rows["baseline"][min(rows["baseline"])]
        pixels = first["train_pixels"]
        plot_cpa_vs_pixels(first["cpa_recorded"], pixels, names, out / f"{model}_cpa_vs_pixels.png",
                           protocol.get("cpa_epoch", 3))
        images = [f"![CPA vs pixels]({model}_cpa_vs_pixels.png)"]
        if "dtpr" in rows:
            plot_iou_by_frequency(names, pixels, mean_per_class(rows["baseline"], "test", "iou"),
                                  mean_per_class(rows["dtpr"], "test", "iou"), out / f"{model}_iou_by_frequency.png")
            images.append(f"![IoU by frequency]({model}_iou_by_frequency.png)")
        gains = {key: group_gains(rows, pixels, "test", key) for key in ("iou", "class_pixel_accuracy")}
        if gains["iou"]:  # rows besides the baseline with test results
            plot_group_gains(gains, out / f"{model}_head_tail.png")
            images.append(f"![head and tail]({model}_head_tail.png)")
            lines += [("Per-class test gains over the baseline by class frequency (classes with training "
                       "pixels, thirds, most frequent first), mean over seeds, points:"), "",
                      "| row | IoU head | IoU middle | IoU tail | CPA head | CPA middle | CPA tail |",
                      "|---|---:|---:|---:|---:|---:|---:|"]
            for row in gains["iou"]:
                cells = [f"{100 * v:+.2f}" for key in ("iou", "class_pixel_accuracy") for v in gains[key][row]]
                lines.append(f"| {row} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += [*images, ""]
    table = out / "table.md"
    table.write_text("\n".join(lines) + "\n")
    print(f"[protocol] wrote {table}", flush=True)
    return table
