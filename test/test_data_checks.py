"""The trainer checks every image and label of the splits it uses before its first epoch (#35 item 7): a
truncated validation photo or one whose size is not its label's stops the run at once in one line naming each
file (not at the first validation, with a traceback and the epoch lost); a dataset that skips unreadable
samples leaves them out with a warning."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from human_parsing_ros.samples import SAMPLES

ROOT = Path(__file__).resolve().parent.parent
IDS = [880, 900, 920, 940, 960, 980]


@pytest.fixture
def broken_ccp(tmp_path) -> Path:
    """A copy of the sample CCP photos where 0960.jpg is truncated and 0980.jpg is smaller than its label."""
    root = tmp_path / "ccp"
    shutil.copytree(SAMPLES, root)
    truncated = root / "photos" / "0960.jpg"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    resized = root / "photos" / "0980.jpg"
    with Image.open(resized) as img:
        img.resize((img.width // 2, img.height // 2)).save(resized, quality=90)
    return root


def train_cli(tmp_path: Path, config: dict) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``training/train.py --config`` on ``config`` (without HUMAN_PARSING_DEBUG), asserted to fail in one line."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {key: value for key, value in os.environ.items() if key != "HUMAN_PARSING_DEBUG"}
    result = subprocess.run([sys.executable, str(ROOT / "training" / "train.py"), "--config", str(path)],
                            capture_output=True, text=True, timeout=600, env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    return result, lines


def test_sample_problems_name_a_truncated_image_and_a_size_mismatch(broken_ccp):
    from training.datasets import build_dataset
    from training.sample_checks import image_size, sample_problem

    data = build_dataset("ccp", broken_ccp, "all", ids=IDS)
    problems = {item.id: sample_problem(item) for item in data.items}
    assert [key for key, problem in problems.items() if problem] == ["0960", "0980"]
    assert problems["0960"].startswith(f"{broken_ccp / 'photos' / '0960.jpg'}: unreadable image")
    assert problems["0980"].startswith(f"{broken_ccp / 'photos' / '0980.jpg'}: image is ")
    assert "label" in problems["0980"] and "0980.mat" in problems["0980"]
    with Image.open(SAMPLES / "photos" / "0880.jpg") as img:
        assert image_size(SAMPLES / "photos" / "0880.jpg") == (img.height, img.width)


def test_a_validation_set_that_skips_unreadable_samples_leaves_them_out_with_a_warning(broken_ccp):
    from training.datasets import build_dataset
    from training.label_statistics import check_files

    train = build_dataset("ccp", broken_ccp, "all", ids=IDS, skip_unreadable=True)
    val = build_dataset("ccp", broken_ccp, "all", ids=IDS, skip_unreadable=True)
    lines = check_files(train, val, "all", "all")
    assert len(lines) == 2 and "training split 'all': 2 sample(s)" in lines[0] and "0960.jpg" in lines[0]
    assert "validation split 'all' leaves out 2 sample(s)" in lines[1] and "0980.jpg" in lines[1]
    assert [item.id for item in val.items] == ["0880", "0900", "0920", "0940"]
    assert len(train.items) == 6  # the training loader substitutes the next readable sample itself


def test_the_trainer_refuses_bad_validation_files_before_its_first_epoch_in_one_line(tmp_path, broken_ccp):
    config = {"name": "tiny", "output_dir": str(tmp_path / "run"), "device": "cpu",
              "dataset": {"name": "ccp", "root": str(broken_ccp), "train_split": "all", "val_split": "all",
                          "options": {"ids": IDS}},
              "model": {"architecture": "deeplabv3plus",
                        "args": {"encoder": "mobilenet_v2", "encoder_weights": None, "decoder_channels": 16}},
              "input": {"crop_size": [64, 64], "eval_size": [96, 64]},
              "optim": {"batch_size": 2, "workers": 0}, "stage1": {"epochs": 1}, "stage2": {"epochs": 0},
              "log": {"tensorboard": False, "progress": False}}
    result, lines = train_cli(tmp_path, config)
    assert lines[0].startswith("train.py: validation split 'all': 2 sample(s) cannot be read: ")
    assert "0960.jpg: unreadable image" in lines[0] and "0980.jpg: image is " in lines[0]
    assert "loss" not in result.stdout  # no epoch ran
    assert not (tmp_path / "run").exists()


def _cihp_root(tmp_path: Path) -> Path:
    """CIHP's layout with three validation photos: 1 fine, 2 truncated, 3 with a person map of another size."""
    import numpy as np

    root = tmp_path / "cihp" / "Validation"
    for folder in ("Images", "Category_ids", "Human_ids"):
        (root / folder).mkdir(parents=True)
    (root / "val_id.txt").write_text("1\n2\n3\n")
    for name in ("1", "2", "3"):
        Image.fromarray(np.full((40, 30, 3), 90, np.uint8)).save(root / "Images" / f"{name}.jpg")
        Image.fromarray(np.ones((40, 30), np.uint8)).save(root / "Category_ids" / f"{name}.png")
        Image.fromarray(np.ones((40, 30), np.uint8)).save(root / "Human_ids" / f"{name}.png")
    truncated = root / "Images" / "2.jpg"
    truncated.write_bytes(truncated.read_bytes()[:200])
    Image.fromarray(np.ones((20, 30), np.uint8)).save(root / "Human_ids" / "3.png")
    return root.parent


def test_a_multi_person_run_refuses_bad_files_before_its_first_epoch_in_one_line(tmp_path):
    root = _cihp_root(tmp_path)
    config = {"name": "persons", "output_dir": str(tmp_path / "run"), "device": "cpu",
              "dataset": {"name": "cihp", "root": str(root), "train_split": "val", "val_split": "val",
                          "class_set": "hri"},
              "model": {"architecture": "rp_rcnn", "args": {"encoder": "mobilenet_v2", "encoder_weights": None}},
              "input": {"crop_size": [40, 32]}, "optim": {"batch_size": 1, "workers": 0},
              "multi_person": {"epochs": 1}, "log": {"tensorboard": False, "progress": False}}
    result, lines = train_cli(tmp_path, config)
    assert lines[0].startswith("train.py: cihp split 'val': 2 sample(s) cannot be read: ")
    assert "2.jpg: unreadable image" in lines[0] and "person map" in lines[0] and "3.png is 20x30" in lines[0]
    assert "loss" not in result.stdout
    assert not (tmp_path / "run").exists()
