"""Every command-line entry point of the trainer answers a user's mistake (a missing or wrong file, a bad recipe
key or value, a dataset, weights or checkpoint it cannot use) with exactly one stderr line naming the thing, a
non-zero exit status and nothing left behind; --debug / HUMAN_PARSING_DEBUG=1 bring the traceback back (#31)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from human_parsing_ros.samples import SAMPLES

ROOT = Path(__file__).resolve().parent.parent


def command(module: str, *args, debug: bool = False) -> subprocess.CompletedProcess:
    """``python -m training.<module> args`` from the repository root, without HUMAN_PARSING_DEBUG."""
    env = {key: value for key, value in os.environ.items() if key != "HUMAN_PARSING_DEBUG"}
    if debug:
        env["HUMAN_PARSING_DEBUG"] = "1"
    return subprocess.run([sys.executable, "-m", f"training.{module}", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_one_line(result: subprocess.CompletedProcess, prog: str, *names: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: "), result.stderr[-3000:]
    assert all(str(name) in lines[0] for name in names), lines
    return lines[0]


def tiny_recipe(tmp_path: Path, **top) -> Path:
    recipe = {"name": "tiny", "output_dir": str(tmp_path / "runs" / "tiny"), "device": "cpu",
              "dataset": {"name": "ccp", "root": str(SAMPLES), "train_split": "all", "val_split": "all",
                          "options": {"ids": [880, 900]}},
              "model": {"architecture": "deeplabv3plus",
                        "args": {"encoder": "mobilenet_v2", "encoder_weights": None, "decoder_channels": 16}},
              "input": {"crop_size": [64, 64], "eval_size": [96, 64]},
              "optim": {"batch_size": 2, "workers": 0}, "stage1": {"epochs": 1}, "stage2": {"epochs": 0},
              **top}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def garbage(tmp_path) -> Path:
    path = tmp_path / "garbage.bin"
    path.write_bytes(b"PK\x03\x04 not what it claims" + bytes(40))
    return path


def test_train_names_a_missing_recipe_a_typo_and_a_bad_value_and_leaves_no_run_folder(tmp_path):
    typo = "training/configs/ccp_mobilenetv2.yml"
    line = assert_one_line(command("train", "--config", typo), "train.py", typo, "not found")
    assert "ccp_mobilenetv2.yaml" in line  # the file meant
    recipe = tiny_recipe(tmp_path)
    assert_one_line(command("train", "--config", recipe, "optim.lrr=0.1"), "train.py", "'optim.lrr'")
    assert_one_line(command("train", "--config", recipe, "stage2.sampling=most"), "train.py", "stage2.sampling",
                    "most")
    assert_one_line(command("train", "--config", recipe, "dataset.root=/no/such/ccp"), "train.py",
                    "/no/such/ccp", "github.com/bearpaw/clothing-co-parsing")
    assert_one_line(command("train", "--config", recipe, "dataset.name=lip", "dataset.root=/no/lip"), "train.py",
                    "/no/lip", "sysu-hcp.net/lip")
    not_yaml = tmp_path / "broken.yaml"
    not_yaml.write_text("name: [unclosed\n")
    assert_one_line(command("train", "--config", not_yaml), "train.py", not_yaml, "not a YAML recipe")
    assert not (tmp_path / "runs").exists()  # no half-made run folder (its parent made for it included)


def test_train_names_bad_weights_files_in_one_line(tmp_path, garbage):
    recipe = tiny_recipe(tmp_path)
    assert_one_line(command("train", "--config", recipe, f"model.init={tmp_path / 'no.safetensors'}"), "train.py",
                    tmp_path / "no.safetensors")
    assert_one_line(command("train", "--config", recipe, f"model.init={garbage}"), "train.py", garbage)
    assert not (tmp_path / "runs").exists()


def test_train_refuses_a_pickled_encoder_weights_file_in_one_line(tmp_path):
    import torch

    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    pickled = tmp_path / "encoder.pth"
    torch.save({"state_dict": {"w": Payload()}}, pickled)
    recipe = tiny_recipe(tmp_path, model={"architecture": "ce2p",
                                          "args": {"encoder": "resnet101_schp", "encoder_weights": str(pickled)}})
    result = command("train", "--config", recipe)
    assert_one_line(result, "train.py", pickled)
    assert "pickled code ran" not in result.stdout + result.stderr
    assert not (tmp_path / "runs").exists()


def test_debug_brings_the_traceback_back():
    for result in (command("train", "--config", "no_such.yaml", "--debug"),
                   command("train", "--config", "no_such.yaml", debug=True)):
        assert result.returncode != 0 and "Traceback" in result.stderr and "RecipeError" in result.stderr


def test_evaluate_names_missing_and_unreadable_files(tmp_path, garbage):
    assert_one_line(command("evaluate", "--weights", tmp_path / "w.safetensors", "--root", SAMPLES, "--split", "all"),
                    "evaluate.py", tmp_path / "w.safetensors")
    assert_one_line(command("evaluate", "--checkpoint", tmp_path / "c.pt", "--root", SAMPLES), "evaluate.py",
                    tmp_path / "c.pt", "not found")
    assert_one_line(command("evaluate", "--checkpoint", garbage, "--root", SAMPLES), "evaluate.py", garbage)
    assert_one_line(command("evaluate", "--weights", garbage, "--fold-to", "hri"), "evaluate.py", "--fold-to")
    table = tmp_path / "tables" / "t"
    assert_one_line(command("evaluate", "--weights", garbage, "--root", tmp_path / "nowhere", "--table", table),
                    "evaluate.py")
    assert not table.parent.exists()


def test_the_real_scene_tools_name_what_is_missing_or_wrong(tmp_path, garbage):
    from human_parsing_ros.resources import DEFAULT_WEIGHTS

    assert_one_line(command("evaluate_scenes", "--scenes", tmp_path / "nowhere"), "evaluate_scenes.py",
                    tmp_path / "nowhere", "annotation file not found")
    scenes = tmp_path / "scenes"
    (scenes / "images").mkdir(parents=True)
    (scenes / "annotations.json").write_text("{not json")
    assert_one_line(command("evaluate_scenes", "--scenes", scenes), "evaluate_scenes.py", "not a COCO instances file")
    empty = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    (scenes / "annotations.json").write_text(json.dumps(empty))
    out = tmp_path / "calibrated.safetensors"
    assert_one_line(command("tools.calibrate_persons", DEFAULT_WEIGHTS, "--scenes", scenes, "--out", out),
                    "calibrate_persons.py", "single-map weights")
    assert_one_line(command("tools.scene_sheet", "--scenes", scenes, "--photos", "none.jpg", "--weights", garbage,
                            "--out", tmp_path / "sheet.jpg"), "scene_sheet.py", garbage)
    assert not out.exists() and not (tmp_path / "sheet.jpg").exists()


def test_protocol_names_a_missing_file_and_a_missing_key(tmp_path):
    assert_one_line(command("protocol", "--config", tmp_path / "p.yaml"), "protocol.py", tmp_path / "p.yaml")
    partial = tmp_path / "partial.yaml"
    partial.write_text(yaml.safe_dump({"dataset": "ccp"}))
    assert_one_line(command("protocol", "--config", partial), "protocol.py", partial, "dataset_root")


def test_dataset_tools_name_a_missing_root_and_an_unknown_split(tmp_path):
    out = tmp_path / "stats"
    for module in ("tools.check_dataset", "tools.dataset_stats"):
        extra = ["--out", out] if module.endswith("stats") else []
        prog = module.split(".")[-1] + ".py"
        assert_one_line(command(module, "--dataset", "ccp", "--root", tmp_path / "none", "--split", "all", *extra),
                        prog, tmp_path / "none", "github.com/bearpaw/clothing-co-parsing")
        assert_one_line(command(module, "--dataset", "mhpv2", "--root", tmp_path / "none", "--split", "val",
                                *extra), prog, "lv-mhp.github.io")
        assert_one_line(command(module, "--dataset", "ccp", "--root", SAMPLES, "--split", "bogus", *extra), prog,
                        "bogus")
    assert not out.exists()


def test_compare_runs_names_missing_and_malformed_tables_and_writes_nothing(tmp_path):
    out = tmp_path / "compare"
    assert_one_line(command("tools.compare_runs", tmp_path / "a", tmp_path / "b", "--out", out), "compare_runs.py",
                    tmp_path / "a" / "val_classes.csv")
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "val_classes.csv").write_text("class,score\nnull,x\n")
    assert_one_line(command("tools.compare_runs", tmp_path / "a", tmp_path / "b", "--out", out), "compare_runs.py",
                    tmp_path / "a" / "val_classes.csv", "class table")
    assert not out.exists()


@pytest.mark.parametrize("module", ["tools.ship_weights", "tools.ship_persons"])
def test_ship_tools_name_missing_and_corrupt_weights_and_write_nothing(tmp_path, garbage, module):
    destination = tmp_path / "shipped" / "w.safetensors"
    prog = module.split(".")[-1] + ".py"
    assert_one_line(command(module, tmp_path / "w.safetensors", destination, "--root", SAMPLES), prog,
                    tmp_path / "w.safetensors")
    assert_one_line(command(module, garbage, destination, "--root", SAMPLES), prog, garbage)
    assert not destination.parent.exists()
