"""Pyramid pooling module (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017)."""
from __future__ import annotations

import torch
from torch import nn

from ..blocks import bin_pool, conv_bn_relu, upsample_like


class PyramidBranch(nn.Module):
    """Pool to ``bins`` x ``bins``, 1x1 conv, upsample back to the input's size.

    The 1x1 pooled (global) branch has no BatchNorm: in training it would normalise
    over batch-size values only (and fail at batch 1); it uses a bias instead.
    """

    def __init__(self, in_ch: int, out_ch: int, bins: int) -> None:
        super().__init__()
        self.bins = bins
        if bins == 1:
            self.conv = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), nn.ReLU(inplace=True))
        else:
            self.conv = conv_bn_relu(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(bin_pool(x, self.bins))
        if self.bins == 1:
            return pooled.expand(-1, -1, x.shape[-2], x.shape[-1])
        return upsample_like(pooled, x)


class PSPDecoder(nn.Module):
    """PPM on the deepest features -> concat with them -> 3x3 conv-BN-ReLU -> dropout."""

    def __init__(self, encoder_channels: tuple[int, ...], bins: tuple[int, ...] = (1, 2, 3, 6),
                 channels: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        in_ch = encoder_channels[-1]
        branch_ch = in_ch // len(bins)  # 512 for 2048 in and four bins, as in the paper
        self.branches = nn.ModuleList(PyramidBranch(in_ch, branch_ch, b) for b in bins)
        self.bottleneck = nn.Sequential(*conv_bn_relu(in_ch + branch_ch * len(bins), channels),
                                        nn.Dropout2d(dropout))
        self.out_channels = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        return self.bottleneck(torch.cat([x] + [branch(x) for branch in self.branches], dim=1))
