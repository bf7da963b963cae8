"""DeepLabv3+ decoder: ASPP on the deepest features, refined with stride-4 features."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import conv_bn_relu, upsample_like


def separable_conv(in_ch: int, out_ch: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3x3 (dilated) + pointwise 1x1, each followed by BN and ReLU."""
    return nn.Sequential(*conv_bn_relu(in_ch, in_ch, 3, dilation=dilation, groups=in_ch),
                         *conv_bn_relu(in_ch, out_ch, 1))


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
        branches = [conv_bn_relu(in_ch, out_ch, 1)]
        branches += [separable_conv(in_ch, out_ch, rate) for rate in rates]
        branches.append(ImagePooling(in_ch, out_ch))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(conv_bn_relu(out_ch * len(branches), out_ch, 1), nn.Dropout(0.1))

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
        self.low_level = conv_bn_relu(encoder_channels[0], low_level_channels, 1)
        self.fuse = nn.Sequential(
            separable_conv(channels + low_level_channels, channels),
            separable_conv(channels, channels),
        )
        self.out_channels = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        low = self.low_level(features[0])
        high = upsample_like(self.aspp(features[-1]), low)
        return self.fuse(torch.cat([high, low], dim=1))
