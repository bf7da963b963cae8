"""A run without the ``train`` extra's optional libraries (matplotlib, TensorBoard) warns once at start-up and
still writes every result: a missing plot library never costs metrics.json or history.json (#35)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from human_parsing_ros.samples import SAMPLES

ROOT = Path(__file__).resolve().parent.parent

# train.py with matplotlib and TensorBoard unimportable, as in an install without the train extra.
WITHOUT_PLOTS = r"""
import importlib.abc, runpy, sys

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("matplotlib", "tensorboard") or name == "torch.utils.tensorboard":
            raise ImportError(f"No module named '{name}'")
        return None

sys.meta_path.insert(0, Blocker())
train = sys.argv[1]
sys.argv = [train, *sys.argv[2:]]
runpy.run_path(train, run_name="__main__")
"""


def test_a_run_without_matplotlib_and_tensorboard_warns_at_start_and_writes_its_results(tmp_path):
    out = tmp_path / "run"
    config = {"name": "tiny", "seed": 3, "output_dir": str(out), "device": "cpu",
              "dataset": {"name": "ccp", "root": str(SAMPLES), "train_split": "all", "val_split": "all",
                          "options": {"ids": [880, 900, 920, 940]}},
              "model": {"architecture": "deeplabv3plus",
                        "args": {"encoder": "mobilenet_v2", "encoder_weights": None, "decoder_channels": 16}},
              "input": {"crop_size": [64, 64], "eval_size": [96, 64]},
              "optim": {"batch_size": 2, "workers": 0, "eval_batch_size": 2},
              "stage1": {"epochs": 1, "cpa_epoch": 1, "cpa_source": "train"}, "stage2": {"epochs": 0},
              "log": {"tensorboard": True, "progress": False}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-c", WITHOUT_PLOTS, str(ROOT / "training" / "train.py"), "--config",
                             str(path)], capture_output=True, text=True, timeout=600,
                            env={k: v for k, v in os.environ.items() if k != "HUMAN_PARSING_DEBUG"})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert sum("matplotlib is not installed: the run's plots are skipped" in line for line in lines) == 1
    assert sum("tensorboard is not installed" in line for line in lines) == 1
    assert any(f"no {out / 'cpa_vs_pixels.png'}" in line for line in lines)
    assert json.loads((out / "metrics.json").read_text())["mean_iou"] >= 0
    assert [record["epoch"] for record in json.loads((out / "history.json").read_text())] == [1]
    assert (out / "model.safetensors").is_file() and not (out / "cpa_vs_pixels.png").exists()
