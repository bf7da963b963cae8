"""DeepLabv3+ decoder: ASPP on the deepest features, refined with stride-4 features."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def separable_conv(in_ch: int, out_ch: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3x3 (dilated) + pointwise 1x1, each followed by BN and ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, padding=dilation, dilation=dilation, groups=in_ch, bias=False),
        nn.BatchNorm2d(in_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_ch, out_ch, 1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class ImagePooling(nn.Module):
    """Global context branch. No BatchNorm: it would see one value per channel at batch 1."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.relu(self.conv(F.adaptive_avg_pool2d(x, 1)))
        return pooled.expand(-1, -1, x.shape[-2], x.shape[-1])


class ASPP(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        branches = [conv_bn_relu(in_ch, out_ch)]
        branches += [separable_conv(in_ch, out_ch, rate) for rate in rates]
        branches.append(ImagePooling(in_ch, out_ch))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(conv_bn_relu(out_ch * len(branches), out_ch), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class DeepLabV3PlusDecoder(nn.Module):
    def __init__(
        self,
        encoder_channels: tuple[int, ...],
        channels: int = 128,
        low_level_channels: int = 48,
        atrous_rates: tuple[int, ...] = (6, 12, 18),
    ) -> None:
        super().__init__()
        self.aspp = ASPP(encoder_channels[-1], channels, tuple(atrous_rates))
        self.low_level = conv_bn_relu(encoder_channels[0], low_level_channels)
        self.fuse = nn.Sequential(
            separable_conv(channels + low_level_channels, channels),
            separable_conv(channels, channels),
        )
        self.out_channels = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        low = self.low_level(features[0])
        high = F.interpolate(self.aspp(features[-1]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([high, low], dim=1))
