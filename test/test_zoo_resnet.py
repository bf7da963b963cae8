"""Architecture-specific checks for the ResNet parsers: PSPNet, DANet, C-DLinkNet.

The shared tester (test_models.py) covers forward/backward, weights, freezing and ONNX
for every registered architecture with default arguments; here: what each one claims
(output stride, auxiliary outputs and weights, sizes of the parts), and the pieces
that are easy to get subtly wrong (bin pooling, attention).
"""
import model_tester
import pytest
import torch
import torch.nn.functional as F

from human_parsing_ros.models import build_model
from human_parsing_ros.models.blocks import bin_pool
from human_parsing_ros.models.danet.decoder import ChannelAttention, PositionAttention

RESNET50_TRUNK = 23_508_032  # torchvision ResNet-50 without its fc layer
RESNET101_TRUNK = 42_500_160  # torchvision ResNet-101 without its fc layer


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build(name, **kwargs):
    torch.manual_seed(0)
    return build_model(name, num_classes=20, encoder_weights=None, **kwargs)


@pytest.mark.parametrize("size", [(8, 8), (8, 6), (9, 6), (17, 13), (4, 5), (60, 60)])
def test_bin_pool_matches_adaptive_avg_pool(size):
    x = torch.randn(2, 3, *size)
    for bins in (1, 2, 3, 6):
        torch.testing.assert_close(bin_pool(x, bins), F.adaptive_avg_pool2d(x, bins))


@pytest.mark.parametrize("name,size,expected", [
    ("pspnet", (64, 48), (8, 6)), ("pspnet", (65, 47), (9, 6)),
    ("danet", (64, 48), (8, 6)), ("danet", (65, 47), (9, 6)),
    ("cdlinknet", (64, 48), (32, 24)), ("cdlinknet", (65, 47), (33, 24)),
])
def test_decoder_resolution(name, size, expected):
    """PSPNet and DANet: output stride 8 (dilated ResNet); C-DLinkNet: stride 2 (D2, the finest decoder level)."""
    model = _build(name).eval()
    with torch.no_grad():
        assert model.forward_lowres(torch.zeros(1, 3, *size)).shape[-2:] == expected


@pytest.mark.parametrize("name", ["pspnet", "danet"])
def test_aux_head_only_when_asked(name):
    plain = _build(name).eval()
    assert len(plain.aux_heads) == 0 and plain.aux_weights == ()
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        logits, aux = plain(x, with_aux=True)
    assert aux == []

    model = _build(name, aux=True)
    assert model.aux_weights == (0.4,) and model.aux_features == (2,)  # encoder feature 2: layer3
    assert _params(model) - _params(plain) == _params(model.aux_heads)
    assert model.aux_heads[0].conv[0].in_channels == 1024  # layer3 of ResNet-50
    # The aux head is trained in stage 1 only: not a stage-2 module in either mode.
    for mode in ("decoder", "classifier"):
        kept = {id(p) for m in model.stage2_modules(mode) for p in m.parameters()}
        assert not any(id(p) in kept for p in model.aux_heads.parameters())
    # Aux-on forward/backward (the shared tester only builds the defaults).
    model_tester.check_forward_backward(name, {"num_classes": 20, "encoder_weights": None, "aux": True},
                                        sizes=[(65, 47)])
    # Same main logits with and without with_aux; aux outputs at the input size.
    model.eval()
    with torch.no_grad():
        logits, aux = model(x, with_aux=True)
        torch.testing.assert_close(logits, model(x))
    assert len(aux) == 1 and aux[0].shape == logits.shape


def test_cdlinknet_is_the_papers():
    """ResNet-101 with E5 dilated (output stride 16), decoder blocks D5..D2 (D2 at stride 2), deep supervision
    heads 3x3 + 3x3 + 1x1 with weight 0.5 each, Smooth reducing to 512 channels at D2's size."""
    model = _build("cdlinknet").eval()
    assert model.stage2_default == "decoder"
    assert _params(model.encoder) == RESNET101_TRUNK
    assert model.decoder.level_channels == (1024, 512, 256, 64) and model.decoder.level_strides == (16, 8, 4, 2)
    assert len(model.aux_heads) == 4 and model.aux_weights == (0.5, 0.5, 0.5, 0.5)
    # The feature list: 5 encoder maps (E1 = the stem before max pooling), then D5..D2 and Smooth.
    assert model.aux_features == (5, 6, 7, 8)
    for head in model.aux_heads:
        kinds = [m.kernel_size for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
        assert kinds == [(3, 3), (3, 3), (1, 1)]
    for block in model.decoder.blocks:  # 1x1 to C/4, transposed convolution, 1x1
        assert block.reduce[0].out_channels == block.reduce[0].in_channels // 4
        assert isinstance(block.up[0], torch.nn.ConvTranspose2d)
    assert [block.up[0].stride for block in model.decoder.blocks] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    assert model.decoder.out_channels == 512 and model.segmentation_head.in_channels == 512
    x = torch.randn(1, 3, 65, 47)
    with torch.no_grad():
        features = model.encoder(x)
        assert [f.shape[-2:] for f in features] == [(33, 24), (17, 12), (9, 6), (5, 3), (5, 3)]  # E5 dilated
        logits, aux = model(x, with_aux=True)
        torch.testing.assert_close(logits, model(x))
        *level_maps, out = model.decoder(features)
    assert [m.shape[-2:] for m in level_maps] == [(5, 3), (9, 6), (17, 12), (33, 24)]
    assert out.shape[1:] == (512, 33, 24)
    assert len(aux) == 4
    for head, level, extra in zip(model.aux_heads, level_maps, aux):
        assert extra.shape == logits.shape
        torch.testing.assert_close(extra, F.interpolate(head(level), size=(65, 47), mode="bilinear",
                                                        align_corners=False))
    # The supervision heads are outside decoder and head, so stage 2 freezes them.
    trainable = model.freeze_for_stage2()
    assert not any(p.requires_grad for p in model.aux_heads.parameters())
    assert {id(p) for p in trainable} == {id(p) for p in model.decoder.parameters()} | {
        id(p) for p in model.segmentation_head.parameters()}
    assert {"centre", "blocks", "smooth"} <= {n for n, _ in model.decoder.named_children()}


def test_cdlinknet_decoder_block_crops_to_the_skip():
    """At odd sizes the transposed convolution's doubled output loses its last row/column, nothing else."""
    from human_parsing_ros.models.cdlinknet.decoder import DecoderBlock

    torch.manual_seed(0)
    block = DecoderBlock(16, 8, factor=2).eval()
    x = torch.randn(1, 16, 5, 4)
    with torch.no_grad():
        full = block(x, (10, 8))
        assert full.shape[-2:] == (10, 8)
        torch.testing.assert_close(block(x, (9, 7)), full[..., :9, :7])


def test_cdlinknet_onnx_is_exact_at_odd_sizes(tmp_path):
    """The crops after the transposed convolutions follow the input size in ONNX too (65 x 47, 97 x 47)."""
    model_tester.check_onnx_export("cdlinknet", {"num_classes": 20, "encoder_weights": None,
                                                 "encoder": "mobilenet_v2"}, tmp_path, size=(65, 47))


def test_cdlinknet_rejects_what_it_does_not_have():
    with pytest.raises(ValueError, match="aux"):
        build_model("cdlinknet", num_classes=20, aux=True)
    with pytest.raises(ValueError, match="output_stride"):
        build_model("cdlinknet", num_classes=20, output_stride=4)


def test_danet_attention():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 5, 7)
    pam, cam = PositionAttention(16), ChannelAttention()
    # gamma starts at 0: both modules start as the identity.
    torch.testing.assert_close(pam(x), x)
    torch.testing.assert_close(cam(x), x)
    with torch.no_grad():
        pam.gamma.fill_(1.0)
        cam.gamma.fill_(1.0)
    # Position attention is non-local: changing one corner changes the opposite corner.
    y = x.clone()
    y[:, :, 0, 0] += 3.0
    with torch.no_grad():
        assert not torch.allclose(pam(x)[:, :, -1, -1], pam(y)[:, :, -1, -1])
        # Attention rows sum to 1: a spatially constant value map passes through unchanged (+ residual).
        const = torch.zeros_like(x)
        torch.testing.assert_close(pam(const), const + pam.value(const))
        # Channel attention mixes channels: output channel 0 depends on input channel 1 (small
        # inputs: with large ones softmax(A A^T) saturates onto its diagonal).
        small = 0.1 * x
        z = small.clone()
        z[:, 1] += 0.1
        assert not torch.allclose(cam(small)[:, 0], cam(z)[:, 0])
        # ... and its attention rows sum to 1: equal channels stay equal.
        same = small[:, :1].expand(-1, 16, -1, -1)
        torch.testing.assert_close(cam(same), 2 * same)


def test_parameter_counts_59_classes():
    """Sizes at 59 classes (LIP/CIHP-style), aux off, computed from the architectures.

    PSPNet PPM: 4 x (2048x512 1x1) + 3x3 (4096 -> 512); DANet: 2 x 3x3 (2048 -> 512),
    2 x 3x3 (512 -> 512), PAM q/k (512 -> 64) and v (512 -> 512); C-DLinkNet: centre
    2048 -> 1024 -> 5 x 256 -> 1024 -> 2048, decoder blocks D5..D2, Smooth (4 x 64 -> 512 -> 512) on
    ResNet-101 (the paper's), with its four deep-supervision heads.
    """
    counts = {}
    for name in ("pspnet", "danet", "cdlinknet"):
        model = build_model(name, num_classes=59)
        counts[name] = _params(model)
        print(f"{name}: {counts[name] / 1e6:.3f}M parameters "
              f"(decoder {_params(model.decoder) / 1e6:.3f}M)")
        assert _params(model.encoder) == (RESNET101_TRUNK if name == "cdlinknet" else RESNET50_TRUNK)

    psp = build_model("pspnet", num_classes=59)
    ppm = 4 * 2048 * 512 + 512 + 3 * 2 * 512  # convs + bias of the global branch + BN of the others
    bottleneck = 4096 * 512 * 9 + 2 * 512
    assert _params(psp.decoder) == ppm + bottleneck
    assert _params(psp.segmentation_head) == 512 * 59 + 59
    assert 46.0e6 < counts["pspnet"] < 47.0e6  # 46.61M; 48.99M with the aux head

    dan = build_model("danet", num_classes=59)
    convs = 2 * (2048 * 512 * 9) + 2 * (512 * 512 * 9) + 4 * 2 * 512
    pam = 2 * (512 * 64 + 64) + 512 * 512 + 512 + 1
    assert _params(dan.decoder) == convs + pam + 1  # + CAM gamma
    assert 47.0e6 < counts["danet"] < 48.0e6  # 47.46M

    cdl = build_model("cdlinknet", num_classes=59)
    smooth_reduce = (4 * 64 * 512 * 9 + 2 * 512) + (512 * 512 * 9 + 2 * 512)
    assert _params(cdl.decoder.smooth.reduce) == smooth_reduce
    assert 73.0e6 < counts["cdlinknet"] < 74.0e6  # 73.47M, 6.0M of them in the supervision heads
