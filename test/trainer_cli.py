"""Run training/train.py as a user does: one process, or two gloo processes under torchrun."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TRAIN = Path(__file__).resolve().parent.parent / "training" / "train.py"


def train_cli(config_path: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TRAIN), "--config", str(config_path), *extra], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600)


def train_on_two_processes(config_path: Path) -> subprocess.CompletedProcess:
    """torchrun with two CPU processes of one thread each; checks that both ran and the run ended well."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run([*torchrun, str(TRAIN), "--config", str(config_path)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    return proc
