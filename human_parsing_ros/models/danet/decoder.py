"""Dual attention head (Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019)."""
from __future__ import annotations

import torch
from torch import nn

from ..blocks import conv_bn_relu


class PositionAttention(nn.Module):
    """Spatial self-attention: E = softmax_j(B^T C) over the N = H*W positions, out = gamma * D E^T + A."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, channels // reduction, 1)
        self.key = nn.Conv2d(channels, channels // reduction, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.query(x).flatten(2)  # (B, C', N)
        k = self.key(x).flatten(2)  # (B, C', N)
        v = self.value(x).flatten(2)  # (B, C, N)
        attention = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)  # (B, N_i, N_j), rows sum to 1
        out = torch.bmm(v, attention.transpose(1, 2))  # out_i = sum_j s_ij v_j
        return self.gamma * out.reshape(x.shape) + x


class ChannelAttention(nn.Module):
    """Channel self-attention on the features themselves: X = softmax_j(A A^T), out = gamma * X A + A."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.flatten(2)  # (B, C, N)
        attention = torch.softmax(torch.bmm(a, a.transpose(1, 2)), dim=-1)  # (B, C, C)
        out = torch.bmm(attention, a)
        return self.gamma * out.reshape(x.shape) + x


class DANetDecoder(nn.Module):
    """Two branches on the deepest features, each: 3x3 reduction to ``channels`` -> attention -> 3x3 conv.

    Their sum goes through dropout to the classifier.
    """

    def __init__(self, encoder_channels: tuple[int, ...], channels: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        in_ch = encoder_channels[-1]
        self.reduce_pam = conv_bn_relu(in_ch, channels)
        self.pam = PositionAttention(channels)
        self.conv_pam = conv_bn_relu(channels, channels)
        self.reduce_cam = conv_bn_relu(in_ch, channels)
        self.cam = ChannelAttention()
        self.conv_cam = conv_bn_relu(channels, channels)
        self.dropout = nn.Dropout2d(dropout)
        self.out_channels = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        pam = self.conv_pam(self.pam(self.reduce_pam(x)))
        cam = self.conv_cam(self.cam(self.reduce_cam(x)))
        return self.dropout(pam + cam)
