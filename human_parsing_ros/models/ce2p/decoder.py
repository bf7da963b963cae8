"""CE2P's heads as SCHP builds them: PSP context, the parsing decoder, the edge branch and the fusion.

Where SCHP has an in-place activated BatchNorm (BatchNorm, then leaky ReLU with slope 0.01) this has
``BatchNormLeaky``, one module in the same place, so that SCHP's state-dict keys map one to one.
Upsampling inside the network is bilinear with ``align_corners=True``, as SCHP's; pyramid pooling is
``BinPool`` (adaptive average pooling that exports to ONNX at any size).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import BinPool


class BatchNormLeaky(nn.BatchNorm2d):
    """BatchNorm followed by leaky ReLU (slope 0.01): SCHP's ``InPlaceABNSync`` without the in-place trick."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(super().forward(x), 0.01)


def conv_bn_leaky(in_ch: int, out_ch: int, kernel: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False), BatchNormLeaky(out_ch))


def _resize(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class PSPContext(nn.Module):
    """Pyramid pooling (bins 1, 2, 3, 6) of the last encoder map, reduced to ``channels``."""

    def __init__(self, in_ch: int, channels: int = 512, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.stages = nn.ModuleList([
            nn.Sequential(BinPool(size), nn.Conv2d(in_ch, channels, 1, bias=False),
                          BatchNormLeaky(channels))
            for size in bins])
        self.bottleneck = conv_bn_leaky(in_ch + len(bins) * channels, channels, kernel=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [_resize(stage(x), x.shape[-2:]) for stage in self.stages]
        return self.bottleneck(torch.cat([*pooled, x], dim=1))


class ParsingDecoder(nn.Module):
    """Context (upsampled to layer1's size, 256 channels) with layer1 reduced to 48, fused to 256."""

    def __init__(self, context_ch: int, low_ch: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_leaky(context_ch, 256)
        self.conv2 = conv_bn_leaky(low_ch, 48)
        self.conv3 = nn.Sequential(nn.Conv2d(256 + 48, 256, 1, bias=False), BatchNormLeaky(256),
                                   nn.Conv2d(256, 256, 1, bias=False), BatchNormLeaky(256))

    def forward(self, context: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        context = _resize(self.conv1(context), low.shape[-2:])
        return self.conv3(torch.cat([context, self.conv2(low)], dim=1))


class EdgeBranch(nn.Module):
    """layer1/2/3 to 256 channels each, one shared 3x3 to edge logits per level, fused by a 1x1."""

    def __init__(self, in_chs: tuple[int, int, int], channels: int = 256, edge_classes: int = 2) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = (conv_bn_leaky(in_ch, channels) for in_ch in in_chs)
        self.conv4 = nn.Conv2d(channels, edge_classes, 3, padding=1)
        self.conv5 = nn.Conv2d(edge_classes * 3, edge_classes, 1)

    def forward(self, l1: torch.Tensor, l2: torch.Tensor, l3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(edge logits, the three levels' 256-channel features), at layer1's size."""
        size = l1.shape[-2:]
        features = [self.conv1(l1), self.conv2(l2), self.conv3(l3)]
        edges = [self.conv4(feature) for feature in features]
        features = features[:1] + [_resize(feature, size) for feature in features[1:]]
        edges = edges[:1] + [_resize(edge, size) for edge in edges[1:]]
        return self.conv5(torch.cat(edges, dim=1)), torch.cat(features, dim=1)


class CE2PDecoder(nn.Module):
    """Encoder maps [l1, l2, l3, l4] -> [parsing features, edge logits, fusion features]."""

    def __init__(self, encoder_channels: tuple[int, ...], context_channels: int = 512, edge_classes: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__()
        c1, c2, c3, c4 = encoder_channels
        self.context_encoding = PSPContext(c4, context_channels)
        self.parsing = ParsingDecoder(context_channels, c1)
        self.edge = EdgeBranch((c1, c2, c3), 256, edge_classes)
        self.fusion = nn.Sequential(nn.Conv2d(256 + 3 * 256, 256, 1, bias=False), BatchNormLeaky(256),
                                    nn.Dropout2d(dropout))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        l1, l2, l3, l4 = features
        parsing = self.parsing(self.context_encoding(l4), l1)
        edge, edge_features = self.edge(l1, l2, l3)
        return [parsing, edge, self.fusion(torch.cat([parsing, edge_features], dim=1))]
