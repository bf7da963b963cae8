"""Architecture-specific checks for the real-time parsers: BiSeNetV2, STDC-Seg, DDRNet."""
import model_tester
import pytest
import torch
from torch import nn

from human_parsing_ros.models import build_model

# name, extra arguments, aux count, aux weights
AUX = [
    ("bisenetv2", {}, (1.0, 1.0, 1.0, 1.0)),
    ("stdc", {"variant": "stdc1", "detail": False}, (1.0, 1.0)),
    ("ddrnet", {"variant": "23-slim"}, (0.4,)),
]
ALL = [("bisenetv2", {}), ("stdc", {"variant": "stdc1"}), ("stdc", {"variant": "stdc2"}),
       ("ddrnet", {"variant": "23-slim"}), ("ddrnet", {"variant": "23"})]


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name,extra", ALL)
def test_output_stride_is_8(name, extra):
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, **extra).eval()
    assert model.stage2_default == "classifier"
    with torch.no_grad():
        assert model.forward_lowres(torch.zeros(1, 3, 64, 96)).shape == (1, 5, 8, 12)
        # odd sizes: every stride-2 step rounds up
        assert model.forward_lowres(torch.zeros(1, 3, 65, 47)).shape == (1, 5, 9, 6)


@pytest.mark.parametrize("name,extra,weights", AUX)
def test_aux_heads_only_with_aux(name, extra, weights):
    x = torch.randn(2, 3, 33, 71)
    torch.manual_seed(0)
    plain = build_model(name, num_classes=6, **extra)
    assert plain.aux_weights == ()
    logits, aux = plain(x, with_aux=True)
    assert aux == [] and logits.shape == (2, 6, 33, 71)

    torch.manual_seed(0)
    model = build_model(name, num_classes=6, aux=True, **extra)
    assert tuple(model.aux_weights) == weights
    logits, aux = model(x, with_aux=True)
    assert len(aux) == len(weights)
    assert all(a.shape == logits.shape for a in aux)
    # the aux heads are extra modules: the main path (and its parameters) are the same as without aux
    assert plain.state_dict().keys() <= model.state_dict().keys()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in plain.state_dict()})
    plain.eval(), model.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x))
    # aux heads live outside encoder / decoder / classifier, so stage 2 leaves them frozen
    inside = {id(p) for m in (model.encoder, model.decoder, model.segmentation_head) for p in m.parameters()}
    extra_params = [p for p in model.parameters() if id(p) not in inside]
    assert extra_params
    model.freeze_for_stage2("decoder")
    assert not any(p.requires_grad for p in extra_params)


@pytest.mark.parametrize("name,extra,weights", AUX)
def test_aux_forward_backward(name, extra, weights):
    model_tester.check_forward_backward(name, {"num_classes": 20, "encoder_weights": None, "aux": True, **extra},
                                        sizes=[(33, 71)])


@pytest.mark.parametrize("name,extra", [("stdc", {"variant": "stdc2"}), ("ddrnet", {"variant": "23"})])
def test_other_variant_round_trip_and_freeze(name, extra, tmp_path):
    args = {"num_classes": 20, "encoder_weights": None, **extra}
    model_tester.check_weights_round_trip(name, args, tmp_path)
    model_tester.check_encoder_freeze(name, args, mode="classifier")


@pytest.mark.parametrize("name", ["bisenetv2", "stdc", "ddrnet"])
def test_pretrained_encoder_rejected(name):
    with pytest.raises(ValueError, match=name):
        build_model(name, num_classes=20, encoder_weights="imagenet")


@pytest.mark.parametrize("name", ["stdc", "ddrnet"])
def test_unknown_variant_rejected(name):
    with pytest.raises(ValueError, match="variant"):
        build_model(name, num_classes=20, variant="nope")


def test_stdc1_and_stdc2_depth():
    from human_parsing_ros.models.stdc.model import STDCModule
    counts = {}
    for variant in ("stdc1", "stdc2"):
        model = build_model("stdc", num_classes=19, variant=variant)
        backbone = model.encoder.backbone
        counts[variant] = [len(stage) for stage in (backbone.stage3, backbone.stage4, backbone.stage5)]
        assert sum(isinstance(m, STDCModule) for m in model.modules()) == sum(counts[variant])
        assert all(len(m.blocks) == 4 for m in model.modules() if isinstance(m, STDCModule))
    assert counts == {"stdc1": [2, 2, 2], "stdc2": [4, 5, 3]}


# Published parameter counts at 19 classes (Cityscapes). Ours leave out training-only heads.
PUBLISHED = [
    ("ddrnet", {"variant": "23-slim"}, 5.7e6, 0.15),
    ("ddrnet", {"variant": "23"}, 20.1e6, 0.15),
    ("bisenetv2", {"head_channels": 1024}, 3.4e6, 0.25),
    ("stdc", {"variant": "stdc1", "detail": False}, 8.4e6, 0.25),
    ("stdc", {"variant": "stdc2", "detail": False}, 12.5e6, 0.25),
]


@pytest.mark.parametrize("name,extra,published,tolerance", PUBLISHED)
def test_parameter_count_near_published(name, extra, published, tolerance):
    count = _params(build_model(name, num_classes=19, **extra))
    print(f"{name} {extra}: {count / 1e6:.2f}M parameters (published {published / 1e6:.1f}M)")
    assert abs(count - published) <= tolerance * published, f"{name} {extra}: {count / 1e6:.2f}M"


def test_ddrnet_slim_is_smaller():
    slim = _params(build_model("ddrnet", num_classes=19, variant="23-slim"))
    full = _params(build_model("ddrnet", num_classes=19, variant="23"))
    assert 3 < full / slim < 4.5  # channels double: about 4x in the convs


def test_bisenetv2_head_channels_argument():
    small = build_model("bisenetv2", num_classes=19, head_channels=128)
    big = build_model("bisenetv2", num_classes=19)
    assert small.decoder[0][0].out_channels == 128 and big.decoder[0][0].out_channels == 1024
    assert small.segmentation_head.in_channels == 128
    assert _params(big) - _params(small) == (1024 - 128) * (128 * 9 + 2 + 19)  # 3x3 conv + BN weight/bias + 1x1


def test_onnx_export_ignores_aux_heads(tmp_path):
    pytest.importorskip("onnxruntime")
    model_tester.check_onnx_export("ddrnet", {"num_classes": 20, "encoder_weights": None, "aux": True}, tmp_path)


def test_stdc_detail_head_is_a_training_head():
    """The paper's STDC trains a detail head on the stride-8 backbone features (BCE + Dice on Laplacian
    boundaries); it is an auxiliary head: the parse (plain forward) never depends on it."""
    x = torch.randn(2, 3, 33, 71)
    torch.manual_seed(0)
    model = build_model("stdc", num_classes=6, variant="stdc1")
    assert model.aux_losses == ("detail",) and model.aux_weights == (1.0,) and model.aux_features == (2,)
    logits, (detail,) = model(x, with_aux=True)
    assert detail.shape == (2, 1, 33, 71)
    assert model.aux_heads[0][0][0].in_channels == 256  # stage 3 of the backbone, stride 8
    both = build_model("stdc", num_classes=6, variant="stdc1", aux=True)
    assert both.aux_losses == ("ce", "ce", "detail")
    plain = build_model("stdc", num_classes=6, variant="stdc1", detail=False)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in plain.state_dict()})
    plain.eval(), model.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x))
    model.freeze_for_stage2()  # stage 2 trains the classifier only: the detail head stays frozen
    assert not any(p.requires_grad for p in model.aux_heads.parameters())
