"""A full disk while the trainer writes a checkpoint, a kept checkpoint, the weights file or ONNX: one line naming
the file and the checkpoint left intact, exit status 1, no temporary file, and ``--resume`` afterwards ends with
the weights of an uninterrupted run. The failure is injected at the writer (torch.save's RuntimeError, the
OSError of safetensors' file write) in a subprocess running training/train.py."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_trainer import tiny_config

ROOT = Path(__file__).resolve().parent.parent

# Runs train.py with the n-th write of the file named ``target`` failing as a full disk does: torch.save after a
# few bytes with its RuntimeError (whose text carries the errno message), safetensors with OSError ENOSPC.
DRIVER = r"""
import errno, runpy, sys
import safetensors.torch, torch
target, nth, train = sys.argv[1], int(sys.argv[2]), sys.argv[3]
seen = {"count": 0}

def due(name):
    if not str(name).split("/")[-1].startswith(target):
        return False
    seen["count"] += 1
    return seen["count"] == nth

real_save = torch.save
def save(obj, f, *args, **kwargs):
    if due(getattr(f, "name", f)):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed (No space left on device)")
    return real_save(obj, f, *args, **kwargs)
torch.save = save

real_save_file = safetensors.torch.save_file
def save_file(tensors, filename, *args, **kwargs):
    if due(filename):
        open(filename, "wb").write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", filename)
    return real_save_file(tensors, filename, *args, **kwargs)
safetensors.torch.save_file = save_file

sys.argv = [train, *sys.argv[4:]]
runpy.run_path(train, run_name="__main__")
"""


def recipe(tmp_path: Path, name: str) -> Path:
    """test_trainer's tiny recipe on four photos, keeping its epoch-2 checkpoint, written as a file."""
    config = tiny_config(tmp_path / name)
    config["dataset"]["options"]["ids"] = [880, 900, 920, 940]
    config.update(name=name, keep_checkpoints=[2], log={"tensorboard": False, "progress": False})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def train(config: Path, *extra: str, fail: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "HUMAN_PARSING_DEBUG"}
    if fail is None:
        command = [sys.executable, str(ROOT / "training" / "train.py")]
    else:
        command = [sys.executable, "-c", DRIVER, fail[0], str(fail[1]), str(ROOT / "training" / "train.py")]
    return subprocess.run([*command, "--config", str(config), *extra], capture_output=True, text=True, env=env,
                          timeout=600, cwd=ROOT)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("whole")
    result = train(recipe(tmp, "whole"))
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "whole"


# (file whose write fails, which write of it, the epoch of the checkpoint left intact)
CASES = {"checkpoint": ("checkpoint.pt", 2, 2),        # after epoch 3 (epoch 2 writes the kept copy, then copies)
         "kept": ("checkpoint_epoch02.pt", 1, 1),      # epoch 2's kept copy
         "weights": ("model.safetensors", 1, 3)}       # the end of the run


@pytest.mark.parametrize("case", list(CASES))
def test_a_full_disk_is_one_line_leaves_no_temporary_file_and_resume_finishes_the_same(tmp_path, whole, case):
    target, nth, intact_epoch = CASES[case]
    config = recipe(tmp_path, "run")
    out = tmp_path / "run"
    failed = train(config, fail=(target, nth))
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 1 and len(lines) == 1, failed.stderr[-3000:]
    assert lines[0] == (f"train.py: no space left on device writing {out / target}; the previous checkpoint "
                        f"{out / 'checkpoint.pt'} is intact; free space and run the same command with --resume")
    assert not list(out.rglob("*.tmp")) and not (out / "model.safetensors").exists()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == intact_epoch
    resumed = train(config, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = weights(whole), weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (out / "metrics.json").is_file() and (out / "history.json").is_file()


def test_a_full_disk_at_the_first_checkpoint_says_no_checkpoint_exists_and_leaves_no_folder(tmp_path):
    config = recipe(tmp_path, "run")
    failed = train(config, "stage1.epochs=1", "stage2.epochs=0", fail=("checkpoint.pt", 1))
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 1 and len(lines) == 1, failed.stderr[-3000:]
    assert lines[0].startswith(f"train.py: no space left on device writing {tmp_path / 'run' / 'checkpoint.pt'}; "
                               "no checkpoint of this run was written yet; free space and run the same command")
    assert not (tmp_path / "run").exists()


def test_onnx_export_on_a_full_disk_names_the_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    from human_parsing_ros.models import build_model
    from training.checkpoint import DiskFullError
    from training.export import export_onnx

    def full(model, args, path, **kwargs):
        Path(path).write_bytes(b"half an onnx file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", full)
    model = build_model("deeplabv3plus", encoder="mobilenet_v2", encoder_weights=None, decoder_channels=16,
                        num_classes=3)
    (tmp_path / "checkpoint.pt").write_bytes(b"a checkpoint")
    with pytest.raises(DiskFullError) as error:
        export_onnx(model, tmp_path / "model.onnx", (64, 64), intact=tmp_path / "checkpoint.pt")
    assert str(error.value) == (f"no space left on device writing {tmp_path / 'model.onnx'}; the previous checkpoint "
                                f"{tmp_path / 'checkpoint.pt'} is intact; free space and run the same command with "
                                "--resume")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_disk_full_is_recognised_in_every_form_and_nothing_else_is():
    from training.checkpoint import is_disk_full

    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0: "
                                     "No space left on device"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("file write failed") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)
    assert not is_disk_full(RuntimeError("file write failed"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
