"""RP R-CNN through the trainer: training/train.py dispatches to the multi-person run, which resumes bit-exactly
and writes a weights file the contract loads, with the paper's metrics recorded."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch
import yaml
from safetensors.torch import load_file
from trainer_cli import train_on_two_processes

from human_parsing_ros.resources import SAMPLES
from human_parsing_ros.weights import load_weights
from training.config import load_config
from training.person_training import loss_weights, run_persons
from training.schedules import Schedule, make_scheduler

SMALL = {"encoder": "mobilenet_v2", "encoder_weights": None, "channels": 64, "parsing_dim": 64, "parsing_convs": 1,
         "parsing_rois": 4, "box_rois": 64, "box_dim": 64, "proposals": [50, 20], "detections": 10}


def tiny(tmp_path, name="run"):
    return {"name": name, "output_dir": str(tmp_path / name), "device": "cpu",
            "dataset": {"name": "ccp_composites", "root": str(SAMPLES), "train_split": "all", "val_split": "test",
                        "class_set": "hri", "options": {"count": 4, "size": [96, 128], "persons": [1, 3]}},
            "model": {"architecture": "rp_rcnn", "args": SMALL},
            "input": {"crop_size": [96, 128]},
            "optim": {"lr": 0.005, "batch_size": 2, "workers": 0, "schedule": "step", "milestones": [0.75],
                      "warmup_steps": 2},
            "eval_every": 2, "keep_checkpoints": [1],
            "multi_person": {"epochs": 2, "min_score": 0.05, "short_sides": [80, 96],
                             "val_options": {"count": 2, "fixed": True, "size": [96, 128]}},
            "log": {"tensorboard": False, "progress": False}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from training.train import main

    tmp_path = tmp_path_factory.mktemp("persons")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny(tmp_path)))
    main(["--config", str(path)])
    return tmp_path / "run", tmp_path


def test_train_py_runs_a_multi_person_recipe_and_writes_its_weights(finished):
    out, _ = finished
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(key in history[-1] for key in ("ap50", "ap_vol", "pcp50", "mean_iou", "person_recall"))
    assert all(key in history[0] for key in ("loss_parsing", "loss_semantic", "loss_rescoring", "loss_objectness"))
    assert history[0]["lr"] != history[1]["lr"]  # after the warm-up, then after the step at 3 of 4 steps
    model, info = load_weights(out / "model.safetensors")
    assert info.architecture == "rp_rcnn" and info.class_set_name == "hri" and model.multi_person
    assert info.recipe["min_score"] == 0.05 and info.recipe["loss_weights"]["loss_parsing"] == 2.0
    assert set(info.recipe["metrics"]["val"]) == {"ap50", "ap_vol", "pcp50", "mean_iou", "person_recall"}


def test_a_resumed_multi_person_run_equals_the_uninterrupted_one(finished, monkeypatch):
    """The resumed recipe asks for ImageNet encoder weights that cannot be loaded: the checkpoint replaces every
    tensor, so the resumed run builds its network without them."""
    from torchvision.models._api import WeightsEnum

    def unavailable(*args, **kwargs):
        raise AssertionError("a resumed run loaded ImageNet encoder weights")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", unavailable)
    out, tmp_path = finished
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copyfile(out / "checkpoint_epoch01.pt", resumed / "checkpoint.pt")
    recipe = tiny(tmp_path, "resumed")
    recipe["model"]["args"] = {**SMALL, "encoder_weights": "imagenet"}
    run_persons(load_config(overrides=recipe), resume=True)
    a, b = load_file(out / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((out / "history.json").read_text())[-1]["loss"] == \
        json.loads((resumed / "history.json").read_text())[-1]["loss"]


def test_a_resume_with_another_batch_size_and_lr_continues_at_the_same_point_and_says_so(finished, capsys):
    """Batch 2 -> 1 doubles the steps per epoch: the restored step is rescaled (the step schedule neither jumps
    ahead nor back), the new peak lr applies from there, and both changes are printed with the settings."""
    out, tmp_path = finished
    resumed = tmp_path / "rebatched"
    resumed.mkdir()
    shutil.copyfile(out / "checkpoint_epoch01.pt", resumed / "checkpoint.pt")
    recipe = tiny(tmp_path, "rebatched")
    recipe["optim"] = {**recipe["optim"], "batch_size": 1, "lr": 0.01}
    recipe["model"]["args"] = {**SMALL, "min_box_score": 0.1}  # a network setting that no tensor depends on
    capsys.readouterr()
    run_persons(load_config(overrides=recipe), resume=True)
    printed = capsys.readouterr().out
    assert "optim.batch_size 2 -> 1" in printed and "optim.lr 0.005 -> 0.01" in printed
    assert "model.args.min_box_score (unset) -> 0.1" in printed
    assert "[persons] peak lr 0.005 -> 0.01 from the resumed step on" in printed
    assert (f"[persons] schedule changed since {resumed / 'checkpoint.pt'} (steps_per_epoch 2 -> 4, steps 4 -> 8): "
            "it continues at step 4") in printed
    checkpoint = torch.load(resumed / "checkpoint.pt", weights_only=True)
    assert checkpoint["schedule"]["steps_per_epoch"] == 4 and checkpoint["scheduler"]["last_epoch"] == 8
    assert json.loads((resumed / "history.json").read_text())[-1]["lr"] == pytest.approx(0.01 * 0.1)


def test_a_multi_person_checkpoint_is_refused_by_the_semantic_evaluation_in_one_line(finished, capsys):
    from human_parsing_ros.errors import UserError
    from training.evaluate import main

    out, _ = finished
    with pytest.raises(UserError) as refused:  # its command line prints the message in one line (run_cli)
        main(["--checkpoint", str(out / "checkpoint.pt"), "--root", str(SAMPLES)])
    assert str(refused.value).startswith(f"{out / 'checkpoint.pt'}: a multi") and "\n" not in str(refused.value)


def test_a_multi_person_run_fine_tunes_from_a_weights_file(tmp_path, finished):
    """model.init with lr 0: every learned tensor of the new file is the finished run's (not this seed's start)."""
    out, _ = finished
    config = tiny(tmp_path, "tuned")
    config["model"]["init"] = str(out / "model.safetensors")
    config["optim"]["lr"] = 0.0
    config["multi_person"]["epochs"], config["eval_every"], config["keep_checkpoints"] = 1, 1, []
    run_persons(load_config(overrides=config))
    start, tuned = load_file(out / "model.safetensors"), load_file(tmp_path / "tuned" / "model.safetensors")
    learned = [key for key in start if not key.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert start.keys() == tuned.keys() and all(torch.equal(start[key], tuned[key]) for key in learned)
    assert load_weights(tmp_path / "tuned" / "model.safetensors")[1].recipe["init"] == config["model"]["init"]


def test_loss_weights_are_the_papers_unless_the_recipe_changes_them(tmp_path):
    config = load_config(overrides=tiny(tmp_path))
    weights = loss_weights(config.multi_person)
    assert weights["loss_parsing"] == 2.0 and weights["loss_semantic"] == 2.0
    config = replace(config, multi_person=replace(config.multi_person, loss_weights={"loss_rescoring": 0.0}))
    assert loss_weights(config.multi_person)["loss_rescoring"] == 0.0
    config = replace(config, multi_person=replace(config.multi_person, loss_weights={"loss_parse": 1.0}))
    with pytest.raises(ValueError, match="unknown loss loss_parse"):
        loss_weights(config.multi_person)


def test_what_multi_person_runs_cannot_do_is_refused_in_one_line(tmp_path, finished):
    from training.evaluate import EvalSplit, evaluate_weights

    config = load_config(overrides={**tiny(tmp_path), "export": {"onnx": "model.onnx"}})
    with pytest.raises(ValueError, match="export.onnx: ONNX export is for single-map parsers"):
        run_persons(config)
    out, _ = finished
    with pytest.raises(ValueError, match="multi-person weights .* --serving"):
        evaluate_weights(out / "model.safetensors", EvalSplit("ccp", SAMPLES, "all"))


def test_step_schedule_with_warmup():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    scheduler = make_scheduler(optimizer, 10, Schedule("step", milestones=[0.5, 0.8], warmup_steps=3))
    factors = [scheduler.lr_lambdas[0](step) for step in range(10)]
    expected = [1 / 3, 1 / 3 + 2 / 9, 1 / 3 + 4 / 9, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01]
    assert factors == pytest.approx(expected)


def test_shipping_multi_person_weights_records_the_test_metrics(tmp_path):
    from person_weights import make_person_weights

    from training.tools.ship_persons import ship

    weights = make_person_weights(tmp_path / "run" / "model.safetensors", input_size=(96, 128))
    result = ship(weights, tmp_path / "shipped.safetensors", SAMPLES, "test", count=2, seed=5,
                  json_path=tmp_path / "persons.json")
    _, info = load_weights(tmp_path / "shipped.safetensors")
    assert info.recipe["metrics"]["test"] == json.loads((tmp_path / "persons.json").read_text()) == result
    assert set(result["paper_metrics"]) == {"ap50", "ap_vol", "pcp50", "mean_iou", "person_recall"}
    assert 0.0 <= result["serving"]["person_recall"] <= 1.0 and result["serving"]["person_threshold"] == 0.3
    assert "test split" in result["test_set"]


def test_a_multi_person_run_on_two_ddp_processes(tmp_path):
    pytest.importorskip("torch.distributed")
    config = tiny(tmp_path, "ddp")
    config["optim"]["batch_size"] = 1
    config["multi_person"]["epochs"] = 1
    config["eval_every"] = 1
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    train_on_two_processes(path)
    history = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert len(history) == 1 and "ap_vol" in history[0] and history[0]["loss"] > 0
    assert load_weights(tmp_path / "ddp" / "model.safetensors")[1].architecture == "rp_rcnn"


def test_an_older_multi_person_recipe_with_stage1_epochs_loads_with_a_one_line_note(capsys):
    from training.person_training import person_epochs

    old = load_config(overrides={"model": {"architecture": "rp_rcnn"}, "stage1": {"epochs": 5}})
    note = capsys.readouterr().out.strip().splitlines()
    assert person_epochs(old) == 5 and len(note) == 1 and "set multi_person.epochs instead" in note[0]
    new = load_config(overrides={"model": {"architecture": "rp_rcnn"}, "multi_person": {"epochs": 4}})
    assert person_epochs(new) == 4 and capsys.readouterr().out == ""
