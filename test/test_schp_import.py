"""SCHP's CE2P in the zoo and the importer of SCHP's checkpoints, checked against SCHP's own key names
and shapes (test/data: facts read from SCHP's network code) without SCHP's code itself."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import model_tester
import numpy as np
import pytest
import torch

from human_parsing_ros.models import build_model
from human_parsing_ros.parser import HumanParser
from human_parsing_ros.samples import load_rgb, sample_photos
from human_parsing_ros.tools.import_schp import SchpImportError, ce2p_key, import_schp
from human_parsing_ros.weights import load_weights

MANIFEST = json.loads((Path(__file__).parent / "data" / "schp_ce2p_lip_state_dict.json").read_text())["state_dict"]


def fake_schp_checkpoint(path: Path, num_classes: int = 20, seed: int = 0) -> Path:
    """A file shaped like SCHP's published ones: {"state_dict": {"module.<key>": tensor}} with SCHP's keys."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in MANIFEST.items():
        if key.startswith("fushion.3.") or key.startswith("decoder.conv4."):
            shape = [num_classes, *shape[1:]]
        tensor = torch.randn(shape, generator=generator) * 0.05
        if key.endswith("running_var"):
            tensor = tensor.abs() + 0.5
        state[f"module.{key}"] = tensor
    torch.save({"state_dict": state, "epoch": 150}, path)
    return path


def test_schp_keys_map_completely_onto_ce2p_with_the_same_shapes():
    ours = {k: list(v.shape) for k, v in build_model("ce2p", num_classes=20).state_dict().items()}
    mapped = {ce2p_key(key): shape for key, shape in MANIFEST.items()}
    assert None not in mapped
    assert all(ours[key] == shape for key, shape in mapped.items()), [k for k in mapped if ours.get(k) != mapped[k]]
    assert set(ours) - set(mapped) == {k for k in ours if k.endswith("num_batches_tracked")}  # ABN has none
    assert len(MANIFEST) == 603


def test_ce2p_resnet101_has_schps_parameter_count_and_strides():
    model = build_model("ce2p", num_classes=20).eval()
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 66.7  # SCHP's network: 66.7 M
    with torch.no_grad():
        features = model.feature_maps(torch.zeros(1, 3, 96, 64))
    assert [tuple(f.shape[1:]) for f in features[:4]] == [(256, 24, 16), (512, 12, 8), (1024, 6, 4), (2048, 6, 4)]
    assert features[5].shape[1] == 2 and model.forward_lowres(torch.zeros(1, 3, 96, 64)).shape == (1, 20, 24, 16)


def test_imported_checkpoint_parses_a_real_photo(tmp_path):
    weights = import_schp(fake_schp_checkpoint(tmp_path / "schp_lip.pth"), tmp_path / "lip.safetensors", "lip")
    parser = HumanParser(weights, device="cpu")
    assert parser.class_set.name == "lip" and parser.network_hw == (473, 473)
    assert parser.info.mean == (0.485, 0.456, 0.406) and parser.info.architecture == "ce2p"
    photo = load_rgb(sample_photos()[0])
    labels = parser.parse(photo).labels
    assert labels.shape == photo.shape[:2] and labels.max() < 20


def test_bgr_to_rgb_is_the_first_convolution_reversed(tmp_path):
    source = fake_schp_checkpoint(tmp_path / "schp.pth")
    model, _ = load_weights(import_schp(source, tmp_path / "w.safetensors", "lip"))
    schp = torch.load(source, weights_only=True)["state_dict"]
    assert torch.equal(model.encoder.conv1.weight, schp["module.conv1.weight"].flip(1))
    assert torch.equal(model.segmentation_head.weight, schp["module.fushion.3.weight"])
    assert torch.equal(model.aux_heads[0].weight, schp["module.decoder.conv4.weight"])


def test_batchnorms_compute_what_schps_in_place_abn_computes(tmp_path):
    """SCHP's in-place ABN scales by |w| + eps, not by w (its CPU and CUDA kernels alike), so a channel trained
    to a negative weight acts as |w|: every imported BatchNorm computes that, written out here by hand."""
    source = fake_schp_checkpoint(tmp_path / "schp.pth")  # about half of its BatchNorm weights are negative
    model, _ = load_weights(import_schp(source, tmp_path / "w.safetensors", "lip"))
    schp = {k.removeprefix("module."): v for k, v in torch.load(source, weights_only=True)["state_dict"].items()}
    ours = model.state_dict()
    batchnorms = [key.removesuffix(".running_mean") for key in schp if key.endswith(".running_mean")]
    assert len(batchnorms) > 100 and (schp["bn1.weight"] < 0).any()
    for prefix in batchnorms:
        assert torch.equal(ours[ce2p_key(f"{prefix}.weight")], schp[f"{prefix}.weight"].abs() + 1e-5), prefix
        assert torch.equal(ours[ce2p_key(f"{prefix}.bias")], schp[f"{prefix}.bias"]), prefix
    x = torch.randn(2, 64, 5, 7, generator=torch.Generator().manual_seed(1))
    weight, bias, mean, var = (schp[f"bn1.{name}"].view(1, -1, 1, 1)
                               for name in ("weight", "bias", "running_mean", "running_var"))
    abn = (x - mean) * torch.rsqrt(var + 1e-5) * (weight.abs() + 1e-5) + bias  # SCHP's forward, eval mode
    with torch.no_grad():
        torch.testing.assert_close(model.encoder.bn1.eval()(x), abn, rtol=1e-5, atol=1e-6)


def test_the_console_script_refuses_bad_files_in_one_line(tmp_path):
    script = [sys.executable, "-m", "human_parsing_ros.tools.import_schp"]
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    atr = fake_schp_checkpoint(tmp_path / "atr.pth", num_classes=18)
    stemless = fake_schp_checkpoint(tmp_path / "stemless.pth")
    checkpoint = torch.load(stemless, weights_only=True)
    del checkpoint["state_dict"]["module.conv1.weight"]
    torch.save(checkpoint, stemless)
    for source, dataset, expected in ((garbage, "lip", "not a readable checkpoint"),
                                      (atr, "lip", "18 classes, but SCHP's lip has 20: wrong --dataset?"),
                                      (stemless, "lip", "no 4-D tensor conv1.weight")):
        result = subprocess.run([*script, str(source), str(tmp_path / "out.safetensors"), "--dataset", dataset],
                                capture_output=True, text=True, timeout=300)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and str(source) in lines[0] and expected in lines[0], lines
        assert not (tmp_path / "out.safetensors").exists()
    with pytest.raises(SchpImportError, match="dataset must be one of"):
        import_schp(atr, tmp_path / "x.safetensors", "cityscapes")
    with pytest.raises(SchpImportError, match="18 classes, but SCHP's pascal has 7"):
        import_schp(atr, tmp_path / "x.safetensors", "pascal")
    pascal = fake_schp_checkpoint(tmp_path / "pascal.pth", num_classes=7)
    import_schp(pascal, tmp_path / "pascal.safetensors", "pascal")
    parser = HumanParser(tmp_path / "pascal.safetensors", device="cpu")
    assert parser.class_set.name == "pascal_person_part" and parser.class_set.names[2] == "torso"
    assert np.array_equal(parser.network_hw, (512, 512))
    ok = subprocess.run([*script, str(atr), str(tmp_path / "atr.safetensors"), "--dataset", "atr"],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "atr classes, input 512x512" in ok.stdout
    assert np.array_equal(HumanParser(tmp_path / "atr.safetensors", device="cpu").network_hw, (512, 512))


def test_schps_resnet101_network_exports_to_onnx(tmp_path):
    """The network imported files run (SCHP's stem, dilated layer4) through the zoo's ONNX check, not only the
    MobileNetV2 variant that test_models.py uses."""
    model_tester.check_onnx_export("ce2p", {"num_classes": 20, "encoder": "resnet101_schp"}, tmp_path)


def test_ce2p_trains_from_schps_imagenet_resnet101_file(tmp_path):
    """``encoder_weights`` = the path of SCHP's resnet101-imagenet.pth (its keys: the three-convolution stem,
    layer1..4, fc): every encoder tensor comes from the file, the first convolution reversed to RGB. Files of
    another network, torchvision's "imagenet" and unreadable files are refused naming what is wrong."""
    import torchvision

    from human_parsing_ros.models.ce2p.encoder import SCHPResNet

    torch.manual_seed(4)
    state = {k: v for k, v in SCHPResNet().state_dict().items() if not k.endswith("num_batches_tracked")}
    batchnorm_weights = {k.replace("running_mean", "weight") for k in state if k.endswith("running_mean")}
    state.update({k: torch.randn_like(state[k]) for k in batchnorm_weights})  # some negative
    state.update({"fc.weight": torch.randn(1000, 2048), "fc.bias": torch.randn(1000)})
    path = tmp_path / "resnet101-imagenet.pth"
    torch.save(state, path)
    model = build_model("ce2p", num_classes=20, encoder="resnet101_schp", encoder_weights=str(path))
    encoder = model.encoder.state_dict()
    assert torch.equal(encoder["conv1.weight"], state["conv1.weight"].flip(1))
    # SCHP loads the file into in-place ABN, which scales by |w| + eps: the BatchNorms start from that
    assert all(torch.equal(encoder[k], state[k].abs() + 1e-5) for k in batchnorm_weights)
    assert all(torch.equal(encoder[k], v) for k, v in state.items()
               if k != "conv1.weight" and k not in batchnorm_weights and not k.startswith("fc"))

    torchvision_file = tmp_path / "torchvision.pth"
    torch.save(torchvision.models.resnet101().state_dict(), torchvision_file)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"no")
    for weights, message in ((torchvision_file, "not SCHP's ResNet-101"), (garbage, "not a readable"),
                             ("imagenet", "no torchvision weights")):
        with pytest.raises(ValueError, match=message) as error:
            build_model("ce2p", num_classes=20, encoder="resnet101_schp", encoder_weights=str(weights))
        assert len(str(error.value).splitlines()) == 1


@pytest.mark.parametrize("damage, expected", [
    ("int64", "tensor conv1.weight is int64; an SCHP checkpoint holds floating-point tensors only"),
    ("nan", "tensor bn1.weight holds NaN or Inf values"),
    ("inf", "tensor layer4.2.conv3.weight holds NaN or Inf values"),
])
def test_integer_and_non_finite_tensors_are_refused_in_one_line_and_nothing_is_written(tmp_path, damage, expected):
    source = fake_schp_checkpoint(tmp_path / "schp.pth")
    checkpoint = torch.load(source, weights_only=True)
    state = checkpoint["state_dict"]
    if damage == "int64":
        state.update({key: value.to(torch.int64) for key, value in state.items()})  # every tensor, as the probe did
    elif damage == "nan":
        state["module.bn1.weight"][3] = float("nan")
    else:
        state["module.layer4.2.conv3.weight"][0, 0, 0, 0] = float("inf")
    torch.save(checkpoint, source)
    output = tmp_path / "out.safetensors"
    result = subprocess.run([sys.executable, "-m", "human_parsing_ros.tools.import_schp", str(source), str(output),
                             "--dataset", "lip"], capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and f"{source}: {expected}" in lines[0], lines
    assert not output.exists()
