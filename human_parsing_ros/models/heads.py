"""Heads shared by several architectures."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AuxHead(nn.Sequential):
    """The usual auxiliary head on an intermediate feature map: 3x3 conv-BN-ReLU, dropout, 1x1 to classes."""

    def __init__(self, in_channels: int, num_classes: int, mid_channels: int = 256) -> None:
        super().__init__(
            nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Conv2d(mid_channels, num_classes, 1),
        )


def upsample_to(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize to ``size`` (H, W), corners not aligned: every resize in the model zoo."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def upsample_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``upsample_to`` the spatial size of ``like``."""
    return upsample_to(x, like.shape[-2:])
