"""Export: the node's weights file carries the recipe; ONNX runs in ONNX Runtime like PyTorch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from human_parsing_ros.class_sets import get_class_set
from human_parsing_ros.models import build_model
from human_parsing_ros.weights import load_weights
from training.config import load_config
from training.export import export_onnx, export_weights, recipe_summary


def tiny_model(num_classes: int = 20):
    torch.manual_seed(0)
    model = build_model("deeplabv3plus", num_classes=num_classes, decoder_channels=16)
    with torch.no_grad():  # non-default BN statistics so that eval mode matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_exported_weights_load_in_the_node_format_with_the_recipe(tmp_path):
    config = load_config(overrides={"dataset": {"name": "lip"}, "model": {"args": {"decoder_channels": 16}},
                                    "stage2": {"sampling": "prn", "eta": 0.5}})
    model = tiny_model()
    recipe = recipe_summary(config, {"mean_iou": 0.25}, model.stage2_default)
    path = export_weights(model, config, get_class_set("lip"), recipe, tmp_path / "m.safetensors")
    loaded, info = load_weights(path)
    assert "encoder_weights" not in info.architecture_args  # never downloads at load time
    assert info.recipe["sampling"] == "prn" and info.recipe["stages"][1]["eta"] == 0.5
    assert info.recipe["metrics"]["val"]["mean_iou"] == 0.25 and info.input_size == (400, 400)
    x = torch.randn(1, 3, 64, 48)
    assert torch.equal(loaded(x), model(x))


def test_onnx_export_matches_pytorch_in_onnx_runtime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = tiny_model()
    path = export_onnx(model, tmp_path / "m.onnx", (96, 96))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 96, 96), (2, 3, 80, 64)):  # dynamic batch and size
        x = torch.randn(*shape)
        expected = model(x).detach().numpy()
        (got,) = session.run(None, {"image": x.numpy()})
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_compare_runs_plots_iou_and_head_tail_gains(tmp_path):
    pytest.importorskip("matplotlib")
    from training.metrics import compute_metrics, write_class_table
    from training.tools.compare_runs import main

    names = ["bg", "a", "b", "c", "d"]
    base = torch.tensor([[90, 5, 0, 0, 0], [5, 40, 5, 0, 0], [0, 5, 10, 0, 5], [0, 0, 0, 4, 4], [0, 0, 3, 0, 2]])
    better_tail = base.clone()
    better_tail[3] = torch.tensor([0, 0, 0, 8, 0])  # rare class c now right
    for name, matrix in (("base", base), ("dtpr", better_tail)):
        (tmp_path / name).mkdir()
        write_class_table(compute_metrics(matrix), names, tmp_path / name / "val_classes.csv")
    assert main([str(tmp_path / "base"), str(tmp_path / "dtpr"), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "iou_baseline_vs_dtpr.png").stat().st_size > 1000
    row = (tmp_path / "cmp" / "head_tail.md").read_text().splitlines()[-1]
    head, tail = (float(v) for v in row.strip("|").split("|")[1:])
    assert head == 0.0  # bg and a, the frequent half, are untouched
    assert tail > 0  # c and d (whose false positives went away) improved
