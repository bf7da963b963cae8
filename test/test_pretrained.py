"""ImageNet initialisation through torchvision's own weights API, offline from ../shared/weights."""
from __future__ import annotations

import shutil

import pytest
import torch
from conftest import SHARED

CHECKPOINT = SHARED / "weights" / "mobilenet_v2-b0353104.pth"


def test_mobilenet_v2_encoder_loads_imagenet_weights_offline(tmp_path, monkeypatch):
    if not CHECKPOINT.is_file():
        pytest.skip(f"{CHECKPOINT} not available")
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    shutil.copy(CHECKPOINT, hub / CHECKPOINT.name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    from human_parsing_ros.models import build_model

    model = build_model("deeplabv3plus", num_classes=59, encoder_weights="imagenet")
    reference = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    first_conv = model.encoder.stages[0][0][0].weight
    assert torch.equal(first_conv, reference["features.0.0.weight"])
    last = model.encoder.stages[3][-1]
    assert torch.equal(last.conv[-1].running_mean, reference["features.17.conv.3.running_mean"])
