"""tools/set_palette: a weights file gets its class set's palette and keeps every tensor and other metadata."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from human_parsing_ros.class_sets import get_class_set, voc_palette
from human_parsing_ros.tools.random_weights import make_random_weights
from human_parsing_ros.tools.set_palette import read_raw, set_palette
from human_parsing_ros.weights import WeightsError, load_weights, read_weights_info


def old_hri_file(path):
    """An hri weights file as written before hri had its own palette (VOC's colours)."""
    make_random_weights(path, "hri", input_size=(64, 64))
    metadata, tensors = read_raw(path)
    metadata["palette"] = json.dumps(voc_palette(11).tolist())
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_the_palette_is_rewritten_and_nothing_else(tmp_path):
    path = old_hri_file(tmp_path / "w.safetensors")
    path.chmod(0o640)
    metadata, tensors = read_raw(path)
    assert set_palette(path) is True
    new_metadata, new_tensors = read_raw(path)
    assert new_tensors.keys() == tensors.keys()
    assert all(torch.equal(new_tensors[k], tensors[k]) and new_tensors[k].dtype == tensors[k].dtype for k in tensors)
    assert {k: v for k, v in new_metadata.items() if k != "palette"} == {k: v for k, v in metadata.items()
                                                                          if k != "palette"}
    assert read_weights_info(path).palette == get_class_set("hri").palette.tolist()
    assert path.stat().st_mode & 0o777 == 0o640 and not list(tmp_path.glob("*.tmp"))
    load_weights(path)  # still a loadable weights file
    assert set_palette(path) is False  # already current: left alone


def test_a_file_of_other_classes_is_refused_and_left_alone(tmp_path):
    path = make_random_weights(tmp_path / "ccp.safetensors", "ccp", input_size=(64, 64))
    before = path.read_bytes()
    with pytest.raises(WeightsError, match="not those of class set hri"):
        set_palette(path, "hri")
    assert path.read_bytes() == before


def test_the_command_says_what_it_did_or_one_line_on_a_missing_file(tmp_path):
    path = old_hri_file(tmp_path / "w.safetensors")
    script = [sys.executable, "-m", "human_parsing_ros.tools.set_palette"]
    done = subprocess.run([*script, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "palette rewritten" in done.stdout
    missing = subprocess.run([*script, str(tmp_path / "nope.safetensors")], capture_output=True, text=True,
                             timeout=300)
    lines = missing.stderr.strip().splitlines()
    assert missing.returncode == 1 and len(lines) == 1 and "nope.safetensors" in lines[0], lines
