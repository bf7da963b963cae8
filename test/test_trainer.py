"""The DTPR trainer end to end on real CCP photos: both stages, freezing, bit-exact resume, DDP."""
from __future__ import annotations

import inspect
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from trainer_cli import train_cli, train_on_two_processes

from human_parsing_ros.models import ARCHITECTURES, semantic_architectures
from human_parsing_ros.parser import HumanParser
from human_parsing_ros.resources import DEFAULT_WEIGHTS
from human_parsing_ros.samples import SAMPLES, load_rgb, sample_photos
from human_parsing_ros.weights import WeightsError, read_weights_info
from training.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parent.parent
TRAIN_IDS = [880, 900, 920, 940, 960, 980]


def tiny_config(out: Path, **changes) -> dict:
    """A model and data small enough for seconds on a CPU; everything else as a real recipe."""
    config = {
        "name": "tiny", "seed": 3, "output_dir": str(out), "device": "cpu",
        "dataset": {"name": "ccp", "root": str(SAMPLES), "train_split": "all", "val_split": "all",
                    "options": {"ids": TRAIN_IDS}},
        "model": {"architecture": "deeplabv3plus",
                  "args": {"encoder": "mobilenet_v2", "encoder_weights": None, "decoder_channels": 16}},
        "input": {"crop_size": [64, 64], "eval_size": [96, 64]},
        "optim": {"lr": 0.02, "batch_size": 2, "workers": 0, "eval_batch_size": 2},
        "stage1": {"epochs": 2, "cpa_epoch": 1, "cpa_source": "train"},
        "stage2": {"epochs": 1, "trains": "decoder", "sampling": "pra", "eta": "median"},
        "log": {"tensorboard": True, "progress": False},
    }
    for key, value in changes.items():
        section, name = key.split(".")
        config[section][name] = value
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


# Every command-line entry point of the trainer, as a file and as a module (repository root as cwd).
SCRIPTS = ["training/train.py", "training/evaluate.py", "training/protocol.py", "training/tools/check_dataset.py",
           "training/tools/compare_runs.py", "training/tools/dataset_stats.py", "training/tools/ship_weights.py"]


def test_every_entry_point_runs_as_a_file_from_anywhere_and_as_a_module():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # `training` is not installed
    commands = [([sys.executable, str(ROOT / script), "--help"], ROOT / "test") for script in SCRIPTS]
    commands += [([sys.executable, "-m", script.removesuffix(".py").replace("/", "."), "--help"], ROOT)
                 for script in SCRIPTS]
    commands.append(([sys.executable, str(ROOT / "benchmarks" / "bench_training.py"), "--help"], ROOT / "test"))
    procs = [(command, subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)) for command, cwd in commands]
    for command, proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0 and output.startswith("usage: "), (command, output[-2000:])


def test_no_library_module_edits_sys_path():
    """``import training.x`` leaves sys.path alone: only a file run's guarded bootstrap may add the root."""
    code = ("import sys; before = list(sys.path); import training.train, training.evaluate, training.protocol, "
            "training.tools.check_dataset, training.tools.compare_runs, training.tools.dataset_stats, "
            "training.tools.ship_weights; "
            "assert sys.path == before, set(sys.path) ^ set(before)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_two_stage_run_writes_weights_that_the_parser_loads(tmp_path):
    from training.config import load_config
    from training.dtpr import run

    result = run(load_config(write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "run"))))
    out = Path(result["output_dir"])
    history = result["history"]
    assert [h["stage"] for h in history] == [1, 1, 2]
    assert history[0].get("cpa_recorded") and 0 < history[2]["kept_fraction"] <= 1
    info = read_weights_info(result["weights"])
    assert not info.untrained and info.class_set_name == "ccp" and len(info.class_names) == 59
    assert [s["stage"] for s in info.recipe["stages"]] == [1, 2] and info.recipe["sampling"] == "pra"
    assert info.recipe["metrics"]["val"]["mean_iou"] == pytest.approx(result["metrics"]["mean_iou"])
    parsed = HumanParser(result["weights"], device="cpu").parse(load_rgb(sample_photos()[0]))
    assert parsed.labels.shape == load_rgb(sample_photos()[0]).shape[:2]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert set(ckpt) == {"format", "epoch", "stage", "model", "optimizer", "scheduler", "scaler", "cpa",
                         "cpa_train", "pixel_counts", "image_counts", "rng", "config", "history",
                         "aggregated", "schedule"} and \
        ckpt["format"] == "dtpr-checkpoint/1"
    assert ckpt["schedule"]["steps"] == ckpt["scheduler"]["last_epoch"]  # stage 2's whole schedule, done
    assert ckpt["epoch"] == 3 and ckpt["stage"] == 2 and ckpt["cpa"].shape == (59,)
    for name in ("val_classes.csv", "val_classes.md", "kept_pixels.csv", "cpa_vs_pixels.png", "metrics.json"):
        assert (out / name).is_file(), name
    assert "mean CPA" in (out / "val_classes.md").read_text() or "CPA" in (out / "val_classes.md").read_text()
    assert list((out / "tensorboard").iterdir())


@pytest.mark.parametrize("trains", ["decoder", "classifier"])
def test_stage2_leaves_frozen_parameters_and_bn_statistics_bit_identical(tmp_path, trains):
    from training.config import load_config
    from training.dtpr import run

    out = tmp_path / "run"
    run(load_config(overrides=tiny_config(out, **{"stage2.epochs": 0})))
    before = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    # DTPR continues the baseline's own checkpoint with stage 2.
    run(load_config(overrides=tiny_config(out, **{"stage2.trains": trains})), resume=True)
    after = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    trained_prefixes = ("segmentation_head.",) if trains == "classifier" else ("decoder.", "segmentation_head.")
    frozen = [k for k in before if not k.startswith(trained_prefixes)]
    assert any("running_mean" in k for k in frozen)
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["segmentation_head.weight"], after["segmentation_head.weight"])
    if trains == "classifier":
        assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))


def kill_after_first_checkpoint(config_path: Path, checkpoint: Path, log: Path) -> int:
    """Start train.py, SIGKILL it as soon as its first epoch checkpoint appears; returns its exit code."""
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "training" / "train.py"), "--config", str(config_path)],
                                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        try:
            while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
    return proc.returncode


def _without_wall_clock(value, run_dirs: tuple[str, ...]):
    """``value`` with what must differ between two runs removed: epoch ``seconds`` and the runs' own paths."""
    if isinstance(value, dict):
        return {k: _without_wall_clock(v, run_dirs) for k, v in value.items() if k != "seconds"}
    if isinstance(value, (list, tuple)):
        return [_without_wall_clock(v, run_dirs) for v in value]
    if isinstance(value, str):
        for run_dir in run_dirs:
            value = value.replace(run_dir, "<run>")
    return value


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num()))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _safetensors_contents(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        metadata = {key: json.loads(value) for key, value in f.metadata().items()}  # JSON values
        return {"metadata": metadata, "tensors": {k: f.get_tensor(k) for k in f.keys()}}  # noqa: SIM118


def assert_same_outputs(whole: Path, resumed: Path) -> None:
    """Every file a run wrote equals the uninterrupted run's: bytes, or (JSON, checkpoints) the same contents
    apart from wall-clock seconds and the run directory's path; weights files by tensors and metadata (their
    header's order varies between processes). TensorBoard logs hold wall times: not compared."""
    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "tensorboard" not in p.parts}

    assert files(whole) == files(resumed)
    for name in sorted(files(whole)):
        a, b = whole / name, resumed / name
        if name.endswith(".json"):
            load = json.loads
            a_value, b_value = load(a.read_text()), load(b.read_text())
        elif name.endswith(".pt"):
            a_value, b_value = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
        elif name.endswith(".safetensors"):  # the header's metadata order varies between processes
            a_value, b_value = _safetensors_contents(a), _safetensors_contents(b)
        else:
            assert a.read_bytes() == b.read_bytes(), name
            continue
        dirs = (str(whole), str(resumed))
        assert _same(_without_wall_clock(a_value, dirs), _without_wall_clock(b_value, dirs)), name


def test_resume_after_a_kill_mid_run_is_bit_exact(tmp_path):
    config = tiny_config(tmp_path / "whole", **{"stage1.epochs": 2, "stage2.epochs": 1})
    config["log"]["tensorboard"] = False
    whole = train_cli(write_config(tmp_path / "whole.yaml", config))
    assert whole.returncode == 0, whole.stderr[-2000:]
    config["output_dir"] = str(tmp_path / "killed")
    killed_cfg = write_config(tmp_path / "killed.yaml", config)
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    code = kill_after_first_checkpoint(killed_cfg, checkpoint, tmp_path / "killed.log")
    assert code == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]  # killed, not finished
    epoch = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= epoch < 3 and not (tmp_path / "killed" / "model.safetensors").exists()
    resumed = train_cli(killed_cfg, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming after epoch {epoch}" in resumed.stdout
    a = load_file(tmp_path / "whole" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert_same_outputs(tmp_path / "whole", tmp_path / "killed")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted 2 + 2 epoch run that also kept its epoch-3 checkpoint (the middle of stage 2)."""
    from training.config import load_config
    from training.dtpr import run

    config = tiny_config(tmp_path_factory.mktemp("finished") / "run", **{"stage2.epochs": 2})
    config["keep_checkpoints"] = [3]
    config["log"]["tensorboard"] = False
    run(load_config(overrides=config))
    return Path(config["output_dir"]), config


def test_ship_weights_adds_serving_metrics_and_training_time_to_the_same_tensors(tmp_path, finished_run):
    from training.evaluate import serving_confusion
    from training.metrics import compute_metrics
    from training.tools.ship_weights import ship

    out, _ = finished_run
    metrics = ship(out / "model.safetensors", tmp_path / "shipped.safetensors", "ccp", SAMPLES, "all",
                   "a test", table=tmp_path / "table")
    expected = compute_metrics(serving_confusion(out / "model.safetensors", "ccp", SAMPLES, "all"))
    assert metrics["mean_iou"] == pytest.approx(expected["mean_iou"], abs=1e-12)
    info = read_weights_info(tmp_path / "shipped.safetensors")
    recipe = info.recipe
    assert recipe["metrics"]["all_serving"] == metrics and recipe["selected"] == "a test"
    assert "val" in recipe["metrics"]  # the run's own validation metrics stay
    history = json.loads((out / "history.json").read_text())
    assert recipe["train_seconds"] == round(sum(h["seconds"] for h in history))
    shipped, trained = (_safetensors_contents(path)["tensors"] for path in (tmp_path / "shipped.safetensors",
                                                                            out / "model.safetensors"))
    assert shipped.keys() == trained.keys() and all(torch.equal(shipped[k], trained[k]) for k in trained)
    assert (tmp_path / "table.md").is_file()


def test_evaluate_scores_a_checkpoint_as_the_weights_file_it_became(finished_run, capsys):
    """``evaluate.py --checkpoint`` rebuilds the network from the checkpoint's recipe with the export's class
    set and normalisation: the final checkpoint scores exactly what the exported weights score; a checkpoint
    without the asked-for model is one error line naming the file."""
    from training import evaluate

    out, _ = finished_run
    data = evaluate.EvalSplit("ccp", SAMPLES, "all", (96, 64))
    expected = evaluate.evaluate_weights(out / "model.safetensors", data)
    model, class_set_name = evaluate.model_from_checkpoint(out / "checkpoint.pt")
    assert class_set_name == "ccp"
    assert _same(evaluate.evaluate_model(model, class_set_name, data), expected)
    model, _ = evaluate.model_from_checkpoint(out / "checkpoint_epoch03.pt")  # the middle of stage 2
    assert evaluate.evaluate_model(model, class_set_name, data)["pred_pixels"].ne(expected["pred_pixels"]).any()

    common = ["--dataset", "ccp", "--root", str(SAMPLES), "--split", "all", "--eval-size", "96", "64"]
    assert evaluate.main(["--checkpoint", str(out / "checkpoint.pt"), *common]) == 0
    assert f"{out / 'checkpoint.pt'} (model) on ccp all" in capsys.readouterr().out
    with pytest.raises(CheckpointError) as refused:  # its command line prints it in one line (run_cli)
        evaluate.main(["--checkpoint", str(out / "checkpoint.pt"), "--state", "aggregated", *common])
    error = str(refused.value)
    assert len(error.splitlines()) == 1 and str(out / "checkpoint.pt") in error and "no aggregated model" in error


@pytest.mark.parametrize("killed_in", ["stage2_validation", "export"])
def test_every_output_equals_the_uninterrupted_runs_after_a_kill_and_resume(tmp_path, finished_run, killed_in):
    """What a kill leaves on disk, rebuilt exactly: killed while validating epoch 4 (its kept_pixels rows
    written, its checkpoint not), or while exporting (weights written, metrics not). Resume repairs both."""
    import shutil

    from training.config import load_config
    from training.dtpr import run

    whole, config = finished_run
    killed = tmp_path / "run"
    shutil.copytree(whole, killed)
    if killed_in == "stage2_validation":
        shutil.copyfile(killed / "checkpoint_epoch03.pt", killed / "checkpoint.pt")
        for name in ("model.safetensors", "metrics.json", "history.json", "val_classes.csv", "val_classes.md",
                     "cpa_vs_pixels.png"):
            (killed / name).unlink()
        assert "\n4," in (killed / "kept_pixels.csv").read_text()  # epoch 4's rows, written before the kill
    else:
        (killed / "metrics.json").unlink()
        (killed / "history.json").unlink()
    run(load_config(overrides={**config, "output_dir": str(killed)}), resume=True)
    rows = (killed / "kept_pixels.csv").read_text().splitlines()[1:]
    assert len(rows) == len(set(rows)) == len((whole / "kept_pixels.csv").read_text().splitlines()) - 1
    assert_same_outputs(whole, killed)


def test_a_new_run_into_an_earlier_runs_directory_is_refused_without_overwrite(tmp_path, finished_run):
    import shutil

    whole, config = finished_run
    out = tmp_path / "run"
    shutil.copytree(whole, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    path = write_config(tmp_path / "c.yaml", {**config, "output_dir": str(out)})
    refused = train_cli(path)
    assert refused.returncode == 1
    assert f"{out}: holds an earlier run" in refused.stderr and "--overwrite" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched
    again = train_cli(path, "--overwrite")
    assert again.returncode == 0, again.stderr[-2000:]
    assert_same_outputs(whole, out)  # a fresh run: no rows or files of the earlier one left over


def test_a_resume_names_the_settings_it_changes_and_refuses_another_network(tmp_path, finished_run, capsys):
    import shutil

    from training.checkpoint import CheckpointError
    from training.config import load_config
    from training.dtpr import run

    whole, config = finished_run
    out = tmp_path / "run"
    out.mkdir()
    shutil.copyfile(whole / "checkpoint_epoch03.pt", out / "checkpoint.pt")
    before = (out / "checkpoint.pt").read_bytes()
    other_network = {**config, "output_dir": str(out),
                     "model": {**config["model"], "args": {**config["model"]["args"], "decoder_channels": 8}}}
    with pytest.raises(CheckpointError) as refused:
        run(load_config(overrides=other_network), resume=True)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(
        f"{out / 'checkpoint.pt'}: its network does not fit this recipe's (model.args.decoder_channels 16 -> 8)")
    assert (out / "checkpoint.pt").read_bytes() == before

    capsys.readouterr()
    run(load_config(overrides={**config, "output_dir": str(out), "optim": {**config["optim"], "lr": 0.01}}),
        resume=True)
    lines = [line for line in capsys.readouterr().out.splitlines() if "settings changed" in line]
    assert len(lines) == 1 and lines[0].endswith(f"{out / 'checkpoint.pt'}: optim.lr 0.02 -> 0.01")


def test_a_non_finite_checkpoint_is_refused_naming_file_and_tensor(tmp_path, finished_run):
    import shutil

    whole, config = finished_run
    out = tmp_path / "run"
    shutil.copytree(whole, out)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    key = "decoder.project.0.weight" if "decoder.project.0.weight" in checkpoint["model"] \
        else next(k for k, v in checkpoint["model"].items() if v.is_floating_point())
    poisoned = checkpoint["model"][key].contiguous().clone()
    poisoned.view(-1)[0] = float("nan")
    checkpoint["model"][key] = poisoned
    torch.save(checkpoint, out / "checkpoint.pt")
    path = write_config(tmp_path / "c.yaml", {**config, "output_dir": str(out)})
    refused = train_cli(path, "--resume")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert str(out / "checkpoint.pt") in line and key in line and "1 NaN" in line
    shutil.copyfile(out / "checkpoint_epoch03.pt", out / "checkpoint.pt")  # the last good one, as the error says
    resumed = train_cli(path, "--resume")
    assert resumed.returncode == 0 and "resuming after epoch 3" in resumed.stdout, resumed.stderr[-2000:]
    assert_same_outputs(whole, out)


def test_a_diverging_loss_stops_the_run_at_its_step_and_resume_continues(tmp_path):
    config = tiny_config(tmp_path / "run", **{"stage1.epochs": 2, "stage1.schedule_epochs": 2, "stage2.epochs": 0})
    config["log"]["tensorboard"] = False
    path = write_config(tmp_path / "c.yaml", config)
    first = train_cli(path, "stage1.epochs=1")  # epoch 1 of the 2-epoch schedule: the last good checkpoint
    assert first.returncode == 0, first.stderr[-2000:]
    (tmp_path / "run" / "model.safetensors").unlink()
    diverged = train_cli(path, "--resume", "optim.lr=1.0e+12")  # a new peak lr applies to the resumed stage
    assert diverged.returncode == 1, diverged.stdout[-2000:] + diverged.stderr[-2000:]
    assert "stage 1 peak lr 0.02 -> 1e+12" in diverged.stdout
    line = diverged.stderr.strip().splitlines()[-1]
    assert re.search(r"^train.py: epoch 2 \(stage 1\) step \d+: the loss is (nan|inf)", line), line
    assert "max_nonfinite_steps 0" in line and "Traceback" not in diverged.stderr
    assert not (tmp_path / "run" / "model.safetensors").exists()  # nothing non-finite exported
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["epoch"] == 1  # the last good one
    resumed = train_cli(path, "--resume")
    assert resumed.returncode == 0 and "resuming after epoch 1" in resumed.stdout, resumed.stderr[-2000:]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and all(math.isfinite(h["loss"]) for h in history)
    assert read_weights_info(tmp_path / "run" / "model.safetensors").recipe["metrics"]["val"]


def test_a_missing_dataset_is_refused_in_one_line_naming_it(tmp_path):
    config = tiny_config(tmp_path / "run")
    config["dataset"]["root"] = str(tmp_path / "no_such_dataset")
    refused = train_cli(write_config(tmp_path / "c.yaml", config))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert refused.stderr.strip().splitlines() == [
        f"train.py: ccp root not found: {tmp_path / 'no_such_dataset'} "
        "(download the dataset from github.com/bearpaw/clothing-co-parsing)"]
    assert not (tmp_path / "run").exists()  # a run that fails its start-up checks leaves no folder


def test_tolerated_non_finite_steps_are_skipped_and_counted():
    """A class weight of NaN makes exactly the batches holding that class non-finite: those steps are skipped
    (the model is not touched) up to max_nonfinite_steps, and the next one stops the epoch naming its step."""
    from human_parsing_ros.class_sets import get_class_set
    from training.config import load_config
    from training.distributed import DistInfo
    from training.dtpr import make_datasets
    from training.engine import EpochSettings, NonFiniteError, StageLoss, StageState, train_one_epoch
    from training.loaders import make_train_loader
    from training.runs import make_model
    from training.schedules import make_optimizer, make_scheduler

    config = load_config(overrides=tiny_config(Path("unused")))
    class_set = get_class_set("ccp")
    train_set, _ = make_datasets(config, class_set)
    loader = make_train_loader(train_set, 2, 0, config["seed"], 0, DistInfo())
    targets = [target for _, target in loader]
    present = [torch.unique(t) for t in targets]
    poisoned = next(int(c) for c in torch.cat(present).unique() if 0 < sum(bool((p == c).any()) for p in present)
                    < len(targets))  # a class in some batches but not all
    bad_steps = [step for step, p in enumerate(present) if bool((p == poisoned).any())]
    weights = torch.ones(59)
    weights[poisoned] = float("nan")

    def epoch(max_nonfinite_steps: int) -> tuple[torch.nn.Module, dict]:
        torch.manual_seed(0)
        model = make_model("deeplabv3plus", config["model"]["args"], 59)
        optimizer = make_optimizer(model.parameters(), 0.01, 0.9, 0.0)
        state = StageState(1, optimizer, make_scheduler(optimizer, len(targets)),
                           StageLoss(name="class_balanced", class_weights=weights))
        result = train_one_epoch(model, loader, state, torch.amp.GradScaler("cpu", enabled=False), 0,
                                 EpochSettings(torch.device("cpu"), DistInfo(), config["seed"], 59,
                                               max_nonfinite_steps=max_nonfinite_steps))
        return model, result

    model, result = epoch(len(bad_steps))
    assert result["nonfinite_steps"] == len(bad_steps) and math.isfinite(result["loss"])
    assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())
    with pytest.raises(NonFiniteError, match=rf"epoch 1 \(stage 1\) step {bad_steps[-1] + 1}: the loss is nan"):
        epoch(len(bad_steps) - 1)


def test_ddp_on_two_cpu_processes_all_reduces_the_metrics(tmp_path):
    pytest.importorskip("torch.distributed")
    config = tiny_config(tmp_path / "ddp", **{"stage1.epochs": 1, "stage2.epochs": 1})
    config["optim"]["batch_size"] = 1
    config["log"]["tensorboard"] = False
    path = write_config(tmp_path / "ddp.yaml", config)
    train_on_two_processes(path)
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    # The same weights evaluated by one process give the same all-reduced confusion matrix.
    from human_parsing_ros.weights import load_weights
    from training.datasets import build_dataset
    from training.distributed import DistInfo
    from training.engine import evaluate
    from training.loaders import make_eval_loader
    from training.transforms import EvalTransform

    model, _ = load_weights(tmp_path / "ddp" / "model.safetensors")
    val = build_dataset("ccp", SAMPLES, "all", EvalTransform((96, 64)), ids=TRAIN_IDS)
    single = evaluate(model, make_eval_loader(val, 2, 0, DistInfo()), 59, torch.device("cpu")).compute()
    assert float(single["mean_iou"]) == pytest.approx(metrics["mean_iou"], abs=1e-6)
    assert float(single["pixel_accuracy"]) == pytest.approx(metrics["pixel_accuracy"], abs=1e-6)


def test_ce2p_self_correction_cycles_run_under_ddp_and_bf16(tmp_path):
    """SCHP's training as a user would scale it: CE2P with its losses, one cycle, two gloo processes, bf16."""
    pytest.importorskip("torch.distributed")
    config = tiny_config(tmp_path / "sc", **{"stage1.epochs": 1, "stage1.loss": "ce_lovasz", "stage2.epochs": 0})
    config["model"] = {"architecture": "ce2p", "args": {"encoder": "mobilenet_v2", "encoder_weights": None}}
    config["self_correction"] = {"cycles": 1, "cycle_epochs": 1}
    config.update(amp="bf16", log={"tensorboard": False, "progress": False})
    config["optim"]["batch_size"] = 2  # the PSP bin of 1x1 needs two samples per BatchNorm
    path = write_config(tmp_path / "sc.yaml", config)
    train_on_two_processes(path)
    history = json.loads((tmp_path / "sc" / "history.json").read_text())
    assert [h["aggregated_models"] for h in history] == [1, 2]
    assert all(math.isfinite(h["loss"]) for h in history)
    last = torch.load(tmp_path / "sc" / "checkpoint.pt", weights_only=True)
    shipped = _safetensors_contents(tmp_path / "sc" / "model.safetensors")["tensors"]
    assert shipped and all(torch.equal(shipped[k], last["aggregated"][k]) for k in shipped)  # the aggregated model


@pytest.mark.parametrize("changes", [
    {"stage1.loss": "focal"},
    {"stage1.loss": "class_balanced"},
    {"stage1.loss": "ce_lovasz"},
    {"inter_class.weight": 0.1},
    {"stage2.sampling": "prn", "stage2.eta": "q50"},
    {"stage2.sampling": "none", "stage2.loss": "focal"},
    {"stage2.sampling": "none", "stage2.loss": "class_balanced"},
    {"amp": "bf16"},
], ids=["focal", "class_balanced", "ce_lovasz", "inter_class", "prn", "stage2_focal", "stage2_class_balanced",
        "bf16_autocast"])
def test_loss_variants_and_amp_train_to_finite_losses(tmp_path, changes):
    from training.config import load_config
    from training.dtpr import run

    top = {k: v for k, v in changes.items() if "." not in k}
    nested = {k: v for k, v in changes.items() if "." in k}
    config = tiny_config(tmp_path / "run", **{k: v for k, v in nested.items() if not k.startswith("inter_class")},
                         **{"stage1.epochs": 1, "stage1.cpa_epoch": 1})
    if "inter_class.weight" in changes:
        config["inter_class"] = {"weight": changes["inter_class.weight"]}
    config.update(top)
    config["log"]["tensorboard"] = False
    result = run(load_config(overrides=config))
    losses = [h["loss"] for h in result["history"]]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    stages = read_weights_info(result["weights"]).recipe["stages"]
    assert stages[0]["loss"] == config["stage1"].get("loss", "ce")
    assert stages[1]["loss"] == config["stage2"].get("loss", "ce")


def test_stage2_refuses_a_loss_that_pixel_sampling_cannot_use(tmp_path):
    from training.config import load_config
    from training.dtpr import run

    config = tiny_config(tmp_path / "run", **{"stage1.epochs": 1, "stage2.loss": "focal"})
    with pytest.raises(ValueError, match="stage2.loss 'focal' needs stage2.sampling: none"):
        run(load_config(overrides=config))
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("changes, message", [
    ({"stage2.sampling": "PRA"}, "stage2.sampling 'PRA'"),
    ({"stage2.trains": "decoders"}, "stage2.trains 'decoders'"),
    ({"stage1.cpa_source": "validation"}, "stage1.cpa_source 'validation'"),
    ({"stage2.eta": "avg"}, "stage2 eta 'avg'"),
    ({"stage2.floor": 2.0}, "floor 2.0"),
    ({"stage1.cpa_epoch": 0}, "stage1.cpa_epoch must be 1 or more"),
    ({"run.eval_every": 0}, "eval_every must be a whole number"),
], ids=["sampling", "trains", "cpa_source", "eta", "floor", "cpa_epoch", "eval_every"])
def test_settings_that_would_fail_after_stage_1_are_refused_before_it(tmp_path, changes, message):
    """Stage 2's settings are used only after all of stage 1 (70 epochs in the paper's recipes): a typo must
    stop the run before its first step, naming the key, not days later or (a sampling) never."""
    from training.config import load_config
    from training.dtpr import run

    config = tiny_config(tmp_path / "run")
    for key, value in changes.items():
        section, name = key.split(".")
        (config if section == "run" else config[section])[name] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        run(load_config(overrides=config))
    assert not (tmp_path / "run").exists()


def test_fp16_resumes_across_the_stage_boundary_and_a_run_may_switch_to_fp16(tmp_path):
    """The gradient scaler carries over from stage 1 to stage 2 in an uninterrupted run, so a run resumed at that
    boundary restores it too (same files); a run that did not use fp16 saved no scaler state, and resumed with
    amp fp16 it starts a fresh scaler instead of failing."""
    from training.config import load_config
    from training.dtpr import run

    config = tiny_config(tmp_path / "whole", **{"stage1.epochs": 1})
    config.update(amp="fp16", keep_checkpoints=[1], log={"tensorboard": False, "progress": False})
    run(load_config(overrides=config))
    resume_from_kept_checkpoint(tmp_path / "whole", 1, config, tmp_path / "resumed")

    two_epochs = {**config["stage1"], "epochs": 2}  # resumed after epoch 1: in the middle of stage 1
    plain = {**config, "amp": "none", "stage1": two_epochs, "output_dir": str(tmp_path / "plain")}
    run(load_config(overrides=plain))
    switched = tmp_path / "switched"
    switched.mkdir()
    shutil.copyfile(tmp_path / "plain" / "checkpoint_epoch01.pt", switched / "checkpoint.pt")
    result = run(load_config(overrides={**plain, "amp": "fp16", "output_dir": str(switched)}), resume=True)
    assert math.isfinite(result["history"][-1]["loss"])
    assert torch.load(switched / "checkpoint.pt", weights_only=True)["scaler"]["scale"] > 0


def test_the_node_loads_what_the_trainer_wrote(tmp_path):
    pytest.importorskip("rclpy")
    import rclpy

    from human_parsing_msgs.msg import ClassInfo
    from human_parsing_ros.resources import share_file
    from human_parsing_ros.ros.interface import class_info_from_msg
    from human_parsing_ros.tools.harness import Client, NodeProcess
    from training.config import load_config
    from training.dtpr import run

    config = tiny_config(tmp_path / "run", **{"stage1.epochs": 1, "stage2.epochs": 1})
    config["log"]["tensorboard"] = False
    weights = run(load_config(overrides=config))["weights"]
    rclpy.init()
    node = NodeProcess(share_file("config", "parser.yaml"), "/trained_ns", {"image": "/trained_cam/image_raw"},
                       {"weights": weights, "device": "cpu"}, log_path=tmp_path / "node.log")
    node.start()
    client = Client("/trained_cam/image_raw", {"class_info": ClassInfo}, "/trained_ns", name="trained_probe")
    try:
        client.wait_for_node()
        client.wait_for(lambda: client.received.get("class_info"), 10.0, "class_info")
        info = class_info_from_msg(client.received.get("class_info")[0])
        assert info.weights == weights and not info.untrained and info.class_set == "ccp"
        assert "UNTRAINED" not in node.log()
    finally:
        client.close()
        node.stop()
        rclpy.try_shutdown()


def test_fine_tuning_starts_from_a_weights_file_and_refuses_one_that_does_not_fit(tmp_path, monkeypatch):
    """model.init: with lr 0 every parameter of the exported file is the shipped default's (BatchNorm statistics
    moved: the epoch ran); a file whose classes, model.args or architecture are not the run's is refused in one
    line."""
    import torchvision.models._api

    from training.config import load_config
    from training.dtpr import run

    info = read_weights_info(DEFAULT_WEIGHTS)
    config = tiny_config(tmp_path / "tuned", **{"stage1.epochs": 1, "stage2.epochs": 0})
    config["dataset"]["class_set"] = info.class_set_name

    # encoder_weights: imagenet as a recipe has it: with model.init torchvision is never asked for them
    def no_fetch(url, *args, **kwargs):
        raise AssertionError(f"fetched {url}")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_fetch)
    config["model"] = {"architecture": info.architecture, "init": str(DEFAULT_WEIGHTS),
                       "args": {**info.architecture_args, "encoder_weights": "imagenet"}}
    config["optim"]["lr"] = 0.0
    config["log"]["tensorboard"] = False
    weights = run(load_config(overrides=config))["weights"]
    assert read_weights_info(weights).recipe["init"] == str(DEFAULT_WEIGHTS)  # the file says where it started
    start, tuned = load_file(DEFAULT_WEIGHTS), load_file(weights)
    assert start.keys() == tuned.keys()
    statistics = [key for key in start if key.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(start[key], tuned[key]) for key in start if key not in statistics)
    assert any(not torch.equal(start[key], tuned[key]) for key in statistics)

    other_classes = {**config, "output_dir": str(tmp_path / "ccp"), "dataset": {**config["dataset"], "class_set": None}}
    with pytest.raises(WeightsError, match=rf"{DEFAULT_WEIGHTS}: classes of 'hri' \(11\), the run trains 'ccp' \(59\)"):
        run(load_config(overrides=other_classes))
    narrow = {**config, "output_dir": str(tmp_path / "narrow"),
              "model": {**config["model"], "args": {**config["model"]["args"], "decoder_channels": 16}}}
    with pytest.raises(WeightsError, match=rf"{DEFAULT_WEIGHTS}: model.args differ: decoder_channels 128 \(file\) "
                                           r"vs 16 \(run\)$"):
        run(load_config(overrides=narrow))
    # same tensor shapes, another network: output stride 8 is refused too, not loaded silently
    strided = {**config, "output_dir": str(tmp_path / "strided"),
               "model": {**config["model"], "args": {**config["model"]["args"], "output_stride": 8}}}
    with pytest.raises(WeightsError, match=r"model.args differ: output_stride 16 \(file\) vs 8 \(run\)$"):
        run(load_config(overrides=strided))
    other_network = {**config, "output_dir": str(tmp_path / "pspnet"),
                     "model": {**config["model"], "architecture": "pspnet"}}
    with pytest.raises(WeightsError, match=rf"{DEFAULT_WEIGHTS}: architecture 'deeplabv3plus', the run trains "
                                           r"'pspnet'$"):
        run(load_config(overrides=other_network))


# The ResNet-101 networks train here on MobileNetV2 (same decoder code, a fraction of the time).
LIGHT_ENCODER = {"ce2p": {"encoder": "mobilenet_v2"}, "cdlinknet": {"encoder": "mobilenet_v2"}}


def aux_args(name: str) -> dict:
    """``{"aux": True}`` where the architecture has optional aux heads (C-DLinkNet refuses it: built in)."""
    if "aux" not in inspect.signature(ARCHITECTURES[name].__init__).parameters:
        return {}
    try:
        ARCHITECTURES[name](num_classes=2, aux=True, **LIGHT_ENCODER.get(name, {}))
    except ValueError:
        return {}
    return {"aux": True}


@pytest.mark.parametrize("name", semantic_architectures())
def test_every_architecture_trains_through_both_stages_and_parses(tmp_path, name):
    """Each network of the zoo: stage 1 (with its aux heads when it has them), stage 2, weights, parse."""
    from training.config import load_config
    from training.dtpr import run

    config = tiny_config(tmp_path / "run", **{"stage1.epochs": 1, "stage2.epochs": 1})
    config["model"] = {"architecture": name,
                       "args": {"encoder_weights": None, **aux_args(name), **LIGHT_ENCODER.get(name, {})}}
    config["stage2"]["trains"] = "auto"
    config["log"]["tensorboard"] = False
    result = run(load_config(overrides=config))
    assert [h["stage"] for h in result["history"]] == [1, 2]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result["history"])
    info = read_weights_info(result["weights"])
    assert info.architecture == name
    assert info.recipe["stages"][1]["trains"] == ARCHITECTURES[name].stage2_default
    parsed = HumanParser(result["weights"], device="cpu", input_size=(96, 64)).parse(load_rgb(sample_photos()[1]))
    assert parsed.labels.shape == load_rgb(sample_photos()[1]).shape[:2]


def test_self_correction_schedule_and_plan():
    from training.schedules import Schedule, make_scheduler
    from training.schp import CyclePlan

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make_scheduler(optimizer, 4, Schedule(cycle_steps=2, cycle_factor=0.5))
    factors = [scheduler.lr_lambdas[0](step) for step in range(9)]
    # main cosine over 4 steps, then every 2 steps a cosine restarting at one half
    assert factors == pytest.approx([1.0, 0.853553, 0.5, 0.146447, 0.5, 0.25, 0.5, 0.25, 0.5], abs=1e-6)
    plan = CyclePlan(main=3, cycles=2, cycle_epochs=2)
    assert plan.epochs == 7 and [plan.cycle(e) for e in range(7)] == [0, 0, 0, 1, 1, 2, 2]
    assert [plan.aggregates_after(done) for done in range(1, 8)] == [None, None, 0, None, 1, None, 2]


def test_self_correction_aggregates_refines_and_resumes_bit_exactly(tmp_path):
    """Stage 1 of 1 epoch + 2 cycles of 1: the aggregated model starts as epoch 1's network, after cycle 1 it
    is the mean of epochs 1 and 2 (parameters; BatchNorm statistics re-estimated), after cycle 2 the network
    becomes it and is exported; a run resumed from epoch 2 ends with the same files."""
    from human_parsing_ros.models import build_model
    from training.config import load_config
    from training.dtpr import run
    from training.evaluate import EvalSplit, evaluate_model, evaluate_weights, model_from_checkpoint

    config = tiny_config(tmp_path / "whole", **{"stage1.epochs": 1, "stage2.epochs": 0})
    config["self_correction"] = {"cycles": 2, "cycle_epochs": 1}
    config["keep_checkpoints"] = [1, 2]
    config["log"]["tensorboard"] = False
    result = run(load_config(overrides=config))
    assert [h.get("aggregated_models") for h in result["history"]] == [1, 2, 3]
    whole = tmp_path / "whole"
    first, second, last = (torch.load(path, weights_only=True) for path in (
        whole / "checkpoint_epoch01.pt", whole / "checkpoint_epoch02.pt", whole / "checkpoint.pt"))
    params = {name for name, _ in build_model("deeplabv3plus", num_classes=59, encoder="mobilenet_v2",
                                              decoder_channels=16).named_parameters()}
    for name in params:
        torch.testing.assert_close(first["aggregated"][name], first["model"][name])
        torch.testing.assert_close(second["aggregated"][name], (first["model"][name] + second["model"][name]) / 2)
    means = [k for k in second["model"] if k.endswith("running_mean")]
    assert not all(torch.equal(second["aggregated"][k], second["model"][k]) for k in means)  # re-estimated
    shipped = _safetensors_contents(whole / "model.safetensors")["tensors"]
    assert all(torch.equal(shipped[k], last["aggregated"][k]) for k in shipped)
    # evaluate.py --checkpoint --state aggregated scores the shipped model
    data = EvalSplit("ccp", SAMPLES, "all", (96, 64))
    assert _same(evaluate_model(*model_from_checkpoint(whole / "checkpoint.pt", "aggregated"), data),
                 evaluate_weights(whole / "model.safetensors", data))
    assert all(torch.equal(last["model"][k], last["aggregated"][k]) for k in shipped)

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    for name in ("checkpoint.pt", "checkpoint_epoch02.pt"):
        shutil.copyfile(whole / "checkpoint_epoch02.pt", resumed / name)
    shutil.copyfile(whole / "checkpoint_epoch01.pt", resumed / "checkpoint_epoch01.pt")
    config["output_dir"] = str(resumed)
    run(load_config(overrides=config), resume=True)
    assert_same_outputs(whole, resumed)


def resume_from_kept_checkpoint(whole: Path, epoch: int, config: dict, out: Path) -> None:
    """Resume ``config``'s run in ``out`` from the checkpoint that the finished run ``whole`` kept after
    ``epoch`` (what a kill after that epoch leaves) and check that every output equals ``whole``'s."""
    from training.config import load_config
    from training.dtpr import run

    out.mkdir()
    kept = whole / f"checkpoint_epoch{epoch:02d}.pt"
    shutil.copyfile(kept, out / "checkpoint.pt")
    shutil.copyfile(kept, out / kept.name)
    run(load_config(overrides={**config, "output_dir": str(out)}), resume=True)
    assert_same_outputs(whole, out)


def test_ce2p_resumes_mid_cycle_bit_exactly_and_stage2_starts_from_the_aggregated_model(tmp_path):
    """CE2P with SCHP's losses: 1 epoch, one cycle of 2 epochs, then DTPR stage 2. Resumed after epoch 2 (in the
    middle of the cycle, with the teacher's refined labels in use) the run ends with the same files; at the end
    of the cycle the network becomes the aggregated model, and stage 2 keeps its encoder frozen."""
    from training.config import load_config
    from training.dtpr import run

    config = tiny_config(tmp_path / "whole", **{"stage1.epochs": 1, "stage1.loss": "ce_lovasz"})
    config["model"] = {"architecture": "ce2p", "args": {"encoder": "mobilenet_v2", "encoder_weights": None}}
    config["self_correction"] = {"cycles": 1, "cycle_epochs": 2}
    config["keep_checkpoints"] = [2, 3]
    config["log"]["tensorboard"] = False
    result = run(load_config(overrides=config))
    assert [h["stage"] for h in result["history"]] == [1, 1, 1, 2]
    assert [h.get("aggregated_models") for h in result["history"]] == [1, None, 2, None]
    whole = tmp_path / "whole"
    cycle_end = torch.load(whole / "checkpoint_epoch03.pt", weights_only=True)
    shipped = _safetensors_contents(whole / "model.safetensors")["tensors"]
    encoder = [k for k in shipped if k.startswith("encoder.")]
    assert encoder and all(torch.equal(shipped[k], cycle_end["aggregated"][k]) for k in encoder)
    assert any(not torch.equal(shipped[k], cycle_end["aggregated"][k]) for k in shipped if k.startswith("decoder."))

    resume_from_kept_checkpoint(whole, 2, config, tmp_path / "resumed")


def test_a_resumed_run_no_longer_needs_its_imagenet_file(tmp_path):
    """A run that started from an ImageNet encoder file (SCHP's ResNet-101 layout here) resumes after the file
    is gone, to the same outputs: the checkpoint replaces every tensor, so the network is built without it."""
    from human_parsing_ros.models.ce2p.encoder import SCHPResNet
    from training.config import load_config
    from training.dtpr import run

    torch.manual_seed(4)
    imagenet = tmp_path / "resnet101-imagenet.pth"
    torch.save({k: v for k, v in SCHPResNet().state_dict().items() if not k.endswith("num_batches_tracked")},
               imagenet)
    config = tiny_config(tmp_path / "whole", **{"stage1.epochs": 2, "stage2.epochs": 0})
    config["model"] = {"architecture": "ce2p",
                       "args": {"encoder": "resnet101_schp", "encoder_weights": str(imagenet)}}
    config["keep_checkpoints"] = [1]
    config["log"]["tensorboard"] = False
    run(load_config(overrides=config))
    whole = tmp_path / "whole"
    imagenet.unlink()
    resume_from_kept_checkpoint(whole, 1, config, tmp_path / "resumed")


def test_schps_schedule_warm_up_floor_and_cycles():
    """SCHP's: a warm-up from 1/100 (it multiplies the cosine), the cosine down to 1/100, then cycles from one
    half down to 1/100. Without the new options the schedule is the one above, unchanged."""
    from training.schedules import Schedule, make_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make_scheduler(optimizer, 4, Schedule(cycle_steps=2, cycle_factor=0.5, warmup_steps=2,
                                                      warmup_start=0.01, min_lr_factor=0.01))
    factors = [scheduler.lr_lambdas[0](step) for step in range(7)]
    cosine = [1.0, 0.853553, 0.5, 0.146447]
    expected = [0.01 * 1.0, 0.505 * (0.01 + 0.99 * cosine[1]), 0.01 + 0.99 * 0.5, 0.01 + 0.99 * cosine[3],
                0.5, 0.01 + 0.49 * 0.5, 0.5]
    assert factors == pytest.approx(expected, abs=1e-6)


def test_a_resume_with_other_steps_per_epoch_continues_at_the_same_fraction_of_the_stage():
    """A new batch size (or number of processes) on --resume: the restored step count is rescaled so that the
    schedule resumes where the stage was (it would otherwise jump ahead or back); the change is reported."""
    from training.engine import StageState
    from training.schedules import continue_schedule, make_scheduler

    parameter = torch.nn.Parameter(torch.zeros(1))

    def stage(steps_per_epoch: int) -> StageState:
        optimizer = torch.optim.SGD([parameter], lr=0.1)
        scheduler = make_scheduler(optimizer, 28 * steps_per_epoch)
        return StageState(1, optimizer, scheduler, None, {"steps_per_epoch": steps_per_epoch,
                                                          "steps": 28 * steps_per_epoch, "schedule": "cosine"})

    before = stage(88)
    for _ in range(10 * 88):  # ten epochs of 88 steps
        before.optimizer.step()
        before.scheduler.step()
    lr_then = before.optimizer.param_groups[0]["lr"]
    for steps_per_epoch, expected_changes in ((44, ["steps_per_epoch 88 -> 44", "steps 2464 -> 1232"]), (88, [])):
        resumed = stage(steps_per_epoch)
        resumed.optimizer.load_state_dict(before.optimizer.state_dict())
        resumed.scheduler.load_state_dict(before.scheduler.state_dict())
        assert continue_schedule(resumed.optimizer, resumed.scheduler, resumed.schedule,
                                 before.schedule) == expected_changes
        assert resumed.scheduler.last_epoch == 10 * steps_per_epoch
        assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(lr_then)
    old = stage(44)  # a checkpoint from before the schedule was kept: the position is left as restored
    old.scheduler.load_state_dict(before.scheduler.state_dict())
    assert continue_schedule(old.optimizer, old.scheduler, old.schedule, {}) == []
    assert old.scheduler.last_epoch == 880


def test_schedule_options_are_checked_before_training(tmp_path):
    from training.config import load_config
    from training.dtpr import run

    for changes, message in (({"optim.warmup_steps": 10, "optim.warmup_epochs": 1}, "not both"),
                             ({"optim.min_lr_factor": 1.5}, "min_lr_factor must be in")):
        with pytest.raises(ValueError, match=message):
            run(load_config(overrides=tiny_config(tmp_path / "bad", **changes)))
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()


def test_ce2p_self_correction_cycles_train_under_fp16_with_loss_scaling(tmp_path):
    """fp16 autocast and the gradient scaler through a cycle (CPU autocast here; the same code path on a GPU):
    the losses stay finite, the scaler's state is checkpointed, and the shipped model is the aggregated one."""
    from training.config import load_config
    from training.dtpr import run

    config = tiny_config(tmp_path / "fp16", **{"stage1.epochs": 1, "stage1.loss": "ce_lovasz", "stage2.epochs": 0})
    config["model"] = {"architecture": "ce2p", "args": {"encoder": "mobilenet_v2", "encoder_weights": None}}
    config["self_correction"] = {"cycles": 1, "cycle_epochs": 1}
    config.update(amp="fp16")
    config["log"]["tensorboard"] = False
    result = run(load_config(overrides=config))
    assert [h["aggregated_models"] for h in result["history"]] == [1, 2]
    assert all(math.isfinite(h["loss"]) for h in result["history"])
    last = torch.load(tmp_path / "fp16" / "checkpoint.pt", weights_only=True)
    assert last["scaler"]["scale"] > 0
    shipped = _safetensors_contents(tmp_path / "fp16" / "model.safetensors")["tensors"]
    assert all(torch.equal(shipped[k], last["aggregated"][k]) for k in shipped)
