"""GSE-FPN (RP R-CNN, section 3.3): an FPN whose levels are summed with one global semantic feature.

P2..P6 are upsampled to P2's size, each aligned by a 1x1 256 convolution and
summed; four 3x3 256 convolutions make the global semantic feature G (a 1x1
convolution on G predicts the semantic parts map, trained by L_sem). G is
brought to every level's size (adaptive average pooling: the paper says
"down-sampled" without the method) and added to it: S2..S6. Group normalisation + ReLU
follow every convolution, as the paper says.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

LEVELS = ("p2", "p3", "p4", "p5", "p6")


def gn_groups(channels: int) -> int:
    return 32 if channels % 32 == 0 else 1


def conv_gn_relu(in_ch: int, out_ch: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    """Conv (no bias, size kept) -> GroupNorm (32 groups where the width allows) -> ReLU."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False)
    return nn.Sequential(conv, nn.GroupNorm(gn_groups(out_ch), out_ch), nn.ReLU(inplace=True))


class GlobalSemantic(nn.Module):
    """Pyramid -> (global semantic feature at P2's size, semantic logits at P2's size)."""

    def __init__(self, channels: int, num_classes: int, levels: int = len(LEVELS)) -> None:
        super().__init__()
        self.align = nn.ModuleList(conv_gn_relu(channels, channels, 1) for _ in range(levels))
        self.context = nn.Sequential(*(conv_gn_relu(channels, channels, 3) for _ in range(4)))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, pyramid: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        size = pyramid[0].shape[-2:]
        fused = sum(align(F.interpolate(level, size=size, mode="bilinear", align_corners=False)
                          if level.shape[-2:] != size else level)
                    for align, level in zip(self.align, pyramid))
        feature = self.context(fused)
        return feature, self.classifier(feature)


class GSEFPN(nn.Module):
    """Encoder feature list (strides 4..32) -> OrderedDict S2..S6 (256 channels) and semantic logits."""

    def __init__(self, in_channels: tuple[int, ...], num_classes: int, channels: int = 256,
                 global_semantic: bool = True) -> None:
        super().__init__()
        self.fpn = FeaturePyramidNetwork(list(in_channels), channels, extra_blocks=LastLevelMaxPool())
        self.semantic = GlobalSemantic(channels, num_classes) if global_semantic else None
        self.out_channels = channels

    def forward(self, features: list[torch.Tensor]) -> tuple[OrderedDict[str, torch.Tensor], torch.Tensor | None]:
        pyramid = list(self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features))).values())
        if self.semantic is None:
            return OrderedDict(zip(LEVELS, pyramid)), None
        feature, logits = self.semantic(pyramid)
        enhanced = [level + (feature if level.shape[-2:] == feature.shape[-2:] else
                             F.adaptive_avg_pool2d(feature, level.shape[-2:]))
                    for level in pyramid]
        return OrderedDict(zip(LEVELS, enhanced)), logits
