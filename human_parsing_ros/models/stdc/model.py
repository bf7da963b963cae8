"""STDC-Seg (Fan et al., "Rethinking BiSeNet For Real-time Semantic Segmentation", CVPR 2021),
written from the paper.

STDC backbone (short-term dense concatenation modules, 4 blocks each; STDC1 = [2, 2, 2]
modules in stages 3-5, STDC2 = [4, 5, 3]), attention refinement modules on the stride-16
and stride-32 features plus a global context vector, a feature fusion module with the
stride-8 features, and a segmentation head (3x3 conv -> 1x1 classifier) at stride 8.
The detail-guidance (Laplacian) loss of the paper is not implemented: it is a training-time
loss only, the inference network is unchanged without it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import register_architecture
from ..base import SegmentationHead, SegmentationModel
from ..heads import upsample_like

VARIANTS: dict[str, tuple[int, int, int]] = {"stdc1": (2, 2, 2), "stdc2": (4, 5, 3)}


def conv_bn(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1,
            relu: bool = True) -> nn.Sequential:
    """ConvX of the paper: conv -> BN -> ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class STDCModule(nn.Module):
    """Blocks of N/2, N/4, N/8, N/8 channels (1x1 then 3x3 convs), outputs concatenated to N.

    With stride 2 the second block's input is downsampled by a 3x3/2 depthwise conv + BN,
    and the first block's output joins the concatenation through a 3x3/2 average pool.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, blocks: int = 4) -> None:
        super().__init__()
        widths = [out_ch // 2 ** (i + 1) for i in range(blocks - 1)]
        widths.append(widths[-1])
        assert sum(widths) == out_ch
        self.blocks = nn.ModuleList()
        prev = in_ch
        for i, width in enumerate(widths):
            self.blocks.append(conv_bn(prev, width, kernel=1 if i == 0 else 3))
            prev = width
        self.stride = stride
        if stride == 2:
            self.down = conv_bn(widths[0], widths[0], stride=2, groups=widths[0], relu=False)
            self.skip = nn.AvgPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.blocks[0](x)
        if self.stride == 2:
            outputs = [self.skip(first)]
            x = self.down(first)
        else:
            outputs = [first]
            x = first
        for block in self.blocks[1:]:
            x = block(x)
            outputs.append(x)
        return torch.cat(outputs, dim=1)


class STDCBackbone(nn.Module):
    """Stage 1-2: ConvX 32 /2, ConvX 64 /2; stages 3-5: STDC modules of 256, 512, 1024 channels."""

    def __init__(self, layers: tuple[int, int, int], base: int = 64) -> None:
        super().__init__()
        self.stage1 = conv_bn(3, base // 2, stride=2)
        self.stage2 = conv_bn(base // 2, base, stride=2)
        stages = []
        prev = base
        for i, count in enumerate(layers):
            width = base * 4 * 2 ** i
            modules = [STDCModule(prev, width, stride=2)]
            modules += [STDCModule(width, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*modules))
            prev = width
        self.stage3, self.stage4, self.stage5 = stages
        self.out_channels = (base // 2, base, base * 4, base * 8, base * 16)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features at strides 2, 4, 8, 16, 32."""
        f2 = self.stage1(x)
        f4 = self.stage2(f2)
        f8 = self.stage3(f4)
        f16 = self.stage4(f8)
        return [f2, f4, f8, f16, self.stage5(f16)]


class AttentionRefinement(nn.Module):
    """3x3 conv, then channel attention from global pooling -> 1x1 conv -> sigmoid.

    No BatchNorm on the pooled vector (one value per channel and image); the 1x1 conv has a bias.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = conv_bn(in_ch, out_ch)
        self.attention = nn.Conv2d(out_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x * torch.sigmoid(self.attention(x.mean(dim=(2, 3), keepdim=True)))


class FeatureFusion(nn.Module):
    """Concatenate, 1x1 conv-BN-ReLU, then a squeeze-excitation style reweighting added back."""

    def __init__(self, in_ch: int, out_ch: int, reduction: int = 4) -> None:
        super().__init__()
        self.conv = conv_bn(in_ch, out_ch, kernel=1)
        self.attention = nn.Sequential(
            nn.Conv2d(out_ch, out_ch // reduction, 1), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch // reduction, out_ch, 1), nn.Sigmoid())

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        x = self.conv(torch.cat([low, high], dim=1))
        return x + x * self.attention(x.mean(dim=(2, 3), keepdim=True))


class STDCEncoder(nn.Module):
    """Backbone + context path (ARMs on /16 and /32, global context) + FFM: image -> 256 ch at /8."""

    def __init__(self, variant: str, context_channels: int = 128, fusion_channels: int = 256) -> None:
        super().__init__()
        self.backbone = STDCBackbone(VARIANTS[variant])
        _, _, c8, c16, c32 = self.backbone.out_channels
        self.global_context = nn.Conv2d(c32, context_channels, 1)  # on the pooled vector, no BN
        self.arm32 = AttentionRefinement(c32, context_channels)
        self.arm16 = AttentionRefinement(c16, context_channels)
        self.refine32 = conv_bn(context_channels, context_channels)
        self.refine16 = conv_bn(context_channels, context_channels)
        self.fusion = FeatureFusion(c8 + context_channels, fusion_channels)
        self.out_channels = fusion_channels
        self.context_channels = context_channels

    def forward_with_paths(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Fused /8 features, and the outputs of the /32 path (at /16) and the /16 path (at /8)."""
        _, _, f8, f16, f32 = self.backbone(x)
        context = F.relu(self.global_context(f32.mean(dim=(2, 3), keepdim=True)))
        up32 = self.refine32(upsample_like(self.arm32(f32) + context, f16))
        up16 = self.refine16(upsample_like(self.arm16(f16) + up32, f8))
        return self.fusion(f8, up16), [up16, up32]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_paths(x)[0]


class AuxHead(nn.Module):
    def __init__(self, in_ch: int, mid_ch: int, num_classes: int) -> None:
        super().__init__()
        self.conv = conv_bn(in_ch, mid_ch)
        self.classifier = nn.Conv2d(mid_ch, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv(x))


@register_architecture("stdc")
class STDCSeg(SegmentationModel):
    """STDC1-Seg / STDC2-Seg; logits at stride 8. ``aux`` adds heads on the /16 and /32 paths."""

    stage2_default = "classifier"

    def __init__(self, num_classes: int, encoder_weights: str | None = None, aux: bool = False,
                 variant: str = "stdc1", head_channels: int = 256, aux_channels: int = 64,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if encoder_weights is not None:
            raise ValueError(f"stdc is trained from scratch: encoder_weights must be None, not '{encoder_weights}'")
        if variant not in VARIANTS:
            raise ValueError(f"stdc: unknown variant '{variant}' (known: {', '.join(VARIANTS)})")
        self.encoder = STDCEncoder(variant)
        layers: list[nn.Module] = [conv_bn(self.encoder.out_channels, head_channels)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.decoder = nn.Sequential(*layers)
        self.segmentation_head = SegmentationHead(head_channels, num_classes)
        if aux:
            ch = self.encoder.context_channels
            self.aux_heads = nn.ModuleList([AuxHead(ch, aux_channels, num_classes),
                                            AuxHead(ch, aux_channels, num_classes)])
            self.aux_weights = (1.0, 1.0)
        else:
            self.aux_heads = None
            self.aux_weights = ()

    def forward(self, x: torch.Tensor, with_aux: bool = False):
        features, paths = self.encoder.forward_with_paths(x)
        return self.at_input_size(self.segmentation_head(self.decoder(features)), x, with_aux,
                                  zip(self.aux_heads or (), paths))
