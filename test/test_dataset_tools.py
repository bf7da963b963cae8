"""Dataset tools: class statistics against brute force, integrity problems found, CLI exit codes."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from human_parsing_ros.samples import SAMPLES
from training.datasets import build_dataset
from training.label_statistics import class_statistics
from training.tools import check_dataset as check_tool
from training.tools import dataset_stats
from training.tools.check_dataset import check_dataset

REPO = Path(__file__).resolve().parents[1]


def write_lip(root: Path, labels: dict[str, np.ndarray], image_hw: dict[str, tuple[int, int]] | None = None) -> None:
    """LIP's val layout: val_images/<id>.jpg, val_segmentations/<id>.png, val_id.txt."""
    rng = np.random.default_rng(0)
    (root / "val_images").mkdir(parents=True, exist_ok=True)
    (root / "val_segmentations").mkdir(parents=True, exist_ok=True)
    for sample_id, label in labels.items():
        hw = (image_hw or {}).get(sample_id, label.shape)
        Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(root / "val_images" / f"{sample_id}.jpg")
        Image.fromarray(label).save(root / "val_segmentations" / f"{sample_id}.png")
    (root / "val_id.txt").write_text("\n".join(labels) + "\n")


def test_statistics_equal_brute_force_counts(tmp_path):
    rng = np.random.default_rng(1)
    labels = {f"s{k}": rng.integers(0, 12, (10 + k, 9), dtype=np.uint8) for k in range(4)}
    labels["s0"][0, :3] = 255
    labels["s1"][:] = np.where(labels["s1"] == 3, 7, labels["s1"])
    labels["s2"][1, 1] = 40  # out of range for LIP's 20 classes
    labels["s3"][2, 2] = 19  # a single pixel of a class no other image has
    write_lip(tmp_path, labels)
    stats = class_statistics(build_dataset("lip", tmp_path, "val"))
    stacked = [v.ravel() for v in labels.values()]
    assert stats["num_images"] == 4 and len(stats["pixels"]) == 20
    for class_id in range(20):
        assert stats["pixels"][class_id] == sum(int((v == class_id).sum()) for v in stacked)
        assert stats["images"][class_id] == sum(int((v == class_id).any()) for v in stacked)
    assert stats["images"][3] == 3 and stats["pixels"][15] == 0
    assert stats["images"][19] == 1 and stats["pixels"][19] == 1
    assert stats["ignored_pixels"] == 3 and stats["out_of_range_pixels"] == 1
    assert stats["total_pixels"] == sum(v.size for v in stacked)
    assert stats["labelled_pixels"] == stats["total_pixels"] - 4
    assert sum(stats["pixel_fraction"]) == pytest.approx(1.0)


def test_stats_cli_writes_csv_and_plot(tmp_path):
    out = tmp_path / "out"
    assert dataset_stats.main(["--dataset", "ccp", "--root", str(SAMPLES), "--split", "all", "--out", str(out)]) == 0
    stats = class_statistics(build_dataset("ccp", SAMPLES, "all"))
    with open(out / "class_stats.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 59 and rows[0]["name"] == "null"
    assert [int(r["pixels"]) for r in rows] == stats["pixels"]
    assert [int(r["images"]) for r in rows] == stats["images"]
    assert float(rows[0]["pixel_fraction"]) > 0.5  # background dominates CCP
    with Image.open(out / "long_tail.png") as plot:
        assert plot.size[0] > 300 and plot.size[1] > 200
    missing = ["--dataset", "ccp", "--root", str(tmp_path / "none"), "--split", "all", "--out", str(out)]
    with pytest.raises(FileNotFoundError, match="ccp root not found: .*clothing-co-parsing"):
        dataset_stats.main(missing)  # the command line prints it in one line (test_training_cli.py)


@pytest.fixture()
def broken_lip(tmp_path):
    good = np.full((12, 10), 5, np.uint8)
    labels = {"good": good, "small": good.copy(), "range": good.copy(), "corrupt": good.copy(), "nolabel": good}
    labels["range"][3, 3] = 20  # LIP ids are 0-19
    labels["range"][4, 4] = 255  # ignore: not a problem
    write_lip(tmp_path, labels, image_hw={"small": (11, 10)})
    (tmp_path / "val_images" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage, not a JPEG")
    (tmp_path / "val_segmentations" / "nolabel.png").unlink()
    return tmp_path


def test_check_dataset_names_each_problem(broken_lip):
    problems = check_dataset(build_dataset("lip", broken_lip, "val"))
    found = {(p.sample_id, p.kind) for p in problems}
    assert found == {("small", "size-mismatch"), ("range", "label-out-of-range"),
                     ("corrupt", "unreadable-image"), ("nolabel", "missing-label")}
    by_kind = {p.kind: p for p in problems}
    assert "[20]" in by_kind["label-out-of-range"].detail
    assert by_kind["unreadable-image"].path.endswith("corrupt.jpg")
    assert "10x11" in by_kind["size-mismatch"].detail


def test_check_dataset_clean_real_samples():
    assert check_dataset(build_dataset("ccp", SAMPLES, "all")) == []


def test_check_cli_exit_codes(broken_lip, capsys):
    args = ["--dataset", "lip", "--root", str(broken_lip), "--split", "val"]
    assert check_tool.main(args) == 0
    assert "4 problems" in capsys.readouterr().out
    assert check_tool.main(args + ["--strict", "--ids", "good"]) == 0
    assert "0 problems" in capsys.readouterr().out
    script = REPO / "training" / "tools" / "check_dataset.py"
    result = subprocess.run([sys.executable, str(script), *args, "--strict"], cwd=broken_lip,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "corrupt.jpg" in result.stdout and "size-mismatch" in result.stdout


def test_check_dataset_reports_an_out_of_range_id_in_a_real_ccp_annotation(tmp_path, capsys):
    import shutil

    from scipy.io import loadmat, savemat

    root = tmp_path / "ccp"
    shutil.copytree(SAMPLES, root)
    bad = root / "annotations" / "0940.mat"
    label = np.asarray(loadmat(bad)["groundtruth"]).astype(np.uint8)
    label[5, 5] = 200
    label[6, 6] = 255
    savemat(bad, {"groundtruth": label})
    assert check_tool.main(["--dataset", "ccp", "--root", str(root), "--split", "all", "--strict"]) == 1
    out = capsys.readouterr().out
    assert f"label-out-of-range: {bad}: values [200]" in out and "1 problems" in out
