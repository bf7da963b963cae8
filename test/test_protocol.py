"""The CCP protocol runner on real CCP photos: rows from the baseline's own checkpoint, resumable, one table."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from human_parsing_ros.samples import SAMPLES
from human_parsing_ros.weights import load_weights, read_weights_info

# The bundled photos (all from CCP's test range) renamed into a miniature of the protocol's three splits.
LAYOUT = {1: 880, 2: 900, 3: 920, 4: 940, 705: 960, 706: 980, 855: 1000, 856: 880}


def miniature_ccp(root: Path) -> Path:
    (root / "photos").mkdir(parents=True)
    (root / "annotations").mkdir()
    for number, source in LAYOUT.items():
        (root / "photos" / f"{number:04d}.jpg").symlink_to(SAMPLES / "photos" / f"{source:04d}.jpg")
        (root / "annotations" / f"{number:04d}.mat").symlink_to(SAMPLES / "annotations" / f"{source:04d}.mat")
    return root


def write_protocol(tmp: Path) -> Path:
    recipe = {
        "name": "tiny", "device": "cpu", "dataset": {"name": "ccp"},
        "model": {"architecture": "deeplabv3plus",
                  "args": {"encoder": "mobilenet_v2", "encoder_weights": None, "decoder_channels": 16}},
        "input": {"crop_size": [64, 64], "eval_size": [96, 64]},
        "optim": {"lr": 0.02, "batch_size": 2, "workers": 0},
        "stage1": {"cpa_epoch": 1, "cpa_source": "val"},
        "stage2": {"trains": "decoder", "sampling": "pra", "eta": "min"},
    }
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    protocol = {
        "dataset": "ccp", "dataset_root": str(miniature_ccp(tmp / "ccp")), "results_dir": str(tmp / "results"),
        "runs_dir": str(tmp / "runs"), "epochs": 2, "split_epoch": 1, "cpa_epoch": 1, "seeds": [0, 1],
        "eval_size": [96, 64], "eval_labels": "original", "models": {"tiny": {"recipe": str(tmp / "recipe.yaml")}},
        "rows": {"baseline": {}, "dtpr": {"stage2": {"sampling": "pra"}},
                 "focal": {"stage2": {"sampling": "none", "loss": "focal"}}},
        "ablations": {"dtpr_cpa_epoch2": {"stage2": {"sampling": "pra"}, "cpa_from_epoch": 2},
                      "dtpr_cpa_train": {"stage1": {"cpa_source": "train"}, "stage2": {"sampling": "pra"}}},
    }
    path = tmp / "protocol.yaml"
    path.write_text(yaml.safe_dump(protocol))
    return path


def encoder_state(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("encoder.")}


def test_protocol_runs_every_row_from_the_baseline_checkpoint_and_resumes(tmp_path):
    from training.evaluate import EvalSplit, evaluate_weights
    from training.protocol import main

    config = write_protocol(tmp_path)
    assert main(["--config", str(config)]) == 0
    results = tmp_path / "results" / "tiny"
    for seed in (0, 1):
        for row in ("baseline", "dtpr", "focal"):
            result = json.loads((results / f"seed{seed}" / f"{row}.json").read_text())
            assert set(result) >= {"val", "test"} and len(result["test"]["iou"]) == 59
    ablation = json.loads((results / "seed0" / "dtpr_cpa_epoch2.json").read_text())
    assert "test" not in ablation  # ablations never see the test split
    assert not (results / "seed1" / "dtpr_cpa_epoch2.json").exists()

    # DTPR starts from the baseline's own epoch-1 checkpoint and keeps its encoder.
    runs = tmp_path / "runs" / "tiny" / "seed0"
    start = torch.load(runs / "baseline" / "checkpoint_epoch01.pt", weights_only=True)["model"]
    dtpr_model, _ = load_weights(runs / "dtpr" / "model.safetensors")
    for name, value in encoder_state(dtpr_model.state_dict()).items():
        assert torch.equal(value, start[name]), name
    baseline_model, _ = load_weights(runs / "baseline" / "model.safetensors")
    assert not all(torch.equal(v, start[k]) for k, v in encoder_state(baseline_model.state_dict()).items())
    stages = read_weights_info(runs / "dtpr" / "model.safetensors").recipe["stages"]
    assert stages[0]["epochs"] == 1 and stages[0]["schedule_epochs"] == 2 and stages[1]["sampling"] == "pra"

    # The baseline kept both CPA sources at cpa_epoch; a row asking for the training data's gets that one.
    recorded = torch.load(runs / "baseline" / "checkpoint_epoch01.pt", weights_only=True)
    dtpr_cpa = torch.load(runs / "dtpr" / "checkpoint.pt", weights_only=True)["cpa"]
    train_cpa = torch.load(runs / "dtpr_cpa_train" / "checkpoint.pt", weights_only=True)["cpa"]
    assert torch.equal(dtpr_cpa.nan_to_num(-1), recorded["cpa"].nan_to_num(-1))
    assert torch.equal(train_cpa.nan_to_num(-1), recorded["cpa_train"].nan_to_num(-1))
    assert not torch.equal(train_cpa.nan_to_num(-1), dtpr_cpa.nan_to_num(-1))

    # A row's numbers are what the evaluation command gives for its weights file, in the protocol's mode.
    dtpr = json.loads((results / "seed0" / "dtpr.json").read_text())
    assert dtpr["eval_labels"] == "original"
    again = evaluate_weights(runs / "dtpr" / "model.safetensors", EvalSplit("ccp", tmp_path / "ccp", "test", (96, 64)))
    assert again["mean_iou"] == pytest.approx(dtpr["test"]["mean_iou"], abs=1e-12)

    table = (tmp_path / "results" / "table.md").read_text()
    assert "| dtpr |" in table and "(n=2)" in table and "dtpr_cpa_epoch2" in table
    assert (tmp_path / "results" / "tiny_head_tail.png").stat().st_size > 0

    # Checkpoints lost (a new machine): the missing row is trained again, identically.
    import shutil

    shutil.rmtree(tmp_path / "runs")
    (results / "seed0" / "dtpr.json").unlink()
    assert main(["--config", str(config), "--seeds", "0"]) == 0
    redone = json.loads((results / "seed0" / "dtpr.json").read_text())
    assert redone["test"]["mean_iou"] == dtpr["test"]["mean_iou"]
    assert torch.equal(torch.tensor(redone["val"]["iou"]).nan_to_num(-1),
                       torch.tensor(dtpr["val"]["iou"]).nan_to_num(-1))
    assert not (tmp_path / "runs" / "tiny" / "seed0" / "baseline").exists()  # finished rows were not re-run


def test_ship_writes_the_best_validation_seed_with_its_test_metrics(tmp_path):
    from training.evaluate import EvalSplit, evaluate_weights
    from training.protocol import main

    config = write_protocol(tmp_path)
    shipped = tmp_path / "default.safetensors"
    assert main(["--config", str(config), "--ship", str(shipped)]) == 0
    runs = [json.loads((tmp_path / "results" / "tiny" / f"seed{s}" / "dtpr.json").read_text()) for s in (0, 1)]
    best = max(runs, key=lambda r: r["val"]["mean_iou"])
    info = read_weights_info(shipped)
    assert info.recipe["metrics"]["test"]["mean_iou"] == best["test"]["mean_iou"]
    assert info.recipe["seed"] == best["seed"] and info.recipe["dataset"] == "ccp"
    again = evaluate_weights(shipped, EvalSplit("ccp", tmp_path / "ccp", "test", (96, 64)))
    assert again["mean_iou"] == pytest.approx(best["test"]["mean_iou"], abs=1e-12)


def test_gains_are_paired_per_seed_against_the_chosen_reference():
    from training.metrics import METRICS
    from training.report import format_gains

    def runs(*miou):
        return {seed: {"test": {m: (v if m == "mean_iou" else 0.5) for m in METRICS}} for seed, v in enumerate(miou)}

    rows = {"baseline": runs(0.10, 0.20), "decoupled_ce": runs(0.12, 0.23), "dtpr": runs(0.13, 0.22)}
    against_baseline = format_gains(rows, ["baseline", "decoupled_ce", "dtpr"], ("test",))
    against_decoupled = format_gains(rows, ["baseline", "decoupled_ce", "dtpr"], ("test",), reference="decoupled_ce")
    assert against_baseline[0].startswith("| row - baseline (same seed) |")
    assert [line.split(" | ")[0] for line in against_baseline[2:]] == ["| decoupled_ce", "| dtpr"]
    # dtpr - baseline: +3 and +2 points; dtpr - decoupled_ce: +1 and -1 points (paired by seed, not by mean)
    assert against_baseline[-1].endswith("| 2.50 ± 0.71 (n=2) |")
    assert against_decoupled[2:] == ["| dtpr | 0.00 ± 0.00 (n=2) | 0.00 ± 0.00 (n=2) | 0.00 ± 0.00 (n=2) "
                                     "| 0.00 ± 1.41 (n=2) |"]
    assert format_gains(rows, ["dtpr"], ("test",), reference="focal") == []
    assert format_gains({"baseline": rows["baseline"]}, ["baseline", "dtpr"], ("test",)) == []  # nothing to compare


def test_an_own_budget_row_trains_from_scratch_and_references_are_reported_beside(tmp_path):
    from training.protocol import main

    first = write_protocol(tmp_path)
    assert main(["--config", str(first), "--rows", "baseline", "--seeds", "0"]) == 0
    assert not (tmp_path / "results" / "tiny_head_tail.png").exists()  # a baseline alone: no gains to draw
    protocol = yaml.safe_load(first.read_text())
    protocol.update({
        "results_dir": str(tmp_path / "sc_results"), "runs_dir": str(tmp_path / "sc_runs"), "seeds": [0],
        "design": "Self-correction against a plain run.", "references": {"tiny": protocol["results_dir"]},
        "models": {"sc": protocol["models"]["tiny"]}, "ablations": {}, "per_seed": ["baseline", "self_correction"],
        "rows": {"baseline": {},
                 "self_correction": {"own_budget": True, "stage1": {"epochs": 1}, "stage2": {"epochs": 0},
                                     "self_correction": {"cycles": 1, "cycle_epochs": 1}}}})
    second = tmp_path / "sc.yaml"
    second.write_text(yaml.safe_dump(protocol))
    assert main(["--config", str(second)]) == 0

    runs = tmp_path / "sc_runs" / "sc" / "seed0"
    recipe = read_weights_info(runs / "self_correction" / "model.safetensors").recipe
    stage1 = recipe["stages"][0]
    assert len(recipe["stages"]) == 1 and stage1["self_correction"] == {"cycles": 1, "cycle_epochs": 1}
    assert stage1["epochs"] == 1 and stage1["schedule_epochs"] == 1  # the row's own schedule, not the protocol's
    history = json.loads((runs / "self_correction" / "history.json").read_text())
    assert [h["aggregated_models"] for h in history] == [1, 2]  # one main epoch, then one cycle
    assert not (runs / "stage1_partial").exists()  # nothing branched from the baseline
    table = (tmp_path / "sc_results" / "table.md").read_text()
    assert "Self-correction against a plain run." in table
    assert f"## tiny (from {tmp_path / 'results'})" in table and "| self_correction |" in table
    reference = table.split("## tiny (from")[1].split("## sc")[0]
    assert "| baseline |" in reference and "(n=1)" in reference and "dtpr" not in reference
    assert "row - baseline" not in reference  # the reference has no other row: no empty gains table
    assert "| self_correction | 0 |" in table.split("## sc")[1]  # the per-seed rows the protocol asks for
    # plots only of what exists: no DTPR row, so no IoU-by-frequency figure or link
    assert "sc_head_tail.png" in table and (tmp_path / "sc_results" / "sc_head_tail.png").is_file()
    assert "iou_by_frequency" not in table and not list((tmp_path / "sc_results").glob("*iou_by_frequency*"))
