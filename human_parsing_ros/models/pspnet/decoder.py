"""Pyramid pooling module (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017)."""
from __future__ import annotations

import torch
from torch import nn

from ..blocks import conv_bn_relu, upsample_like


def _bin_weights(size, bins: int, like: torch.Tensor) -> torch.Tensor:
    """(bins, size) averaging matrix with adaptive-average-pooling bin edges.

    Bin ``i`` covers [floor(i*size/bins), ceil((i+1)*size/bins)), as in
    ``F.adaptive_avg_pool2d``. Built from tensor ops on the (traced) size, so an ONNX
    export with a dynamic image size pools correctly at every size, which a fixed
    AveragePool kernel would not.
    """
    idx = torch.arange(bins, device=like.device)
    start = torch.div(idx * size, bins, rounding_mode="floor")
    end = torch.div((idx + 1) * size + bins - 1, bins, rounding_mode="floor")
    pos = torch.arange(size, device=like.device)
    mask = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return mask.to(like.dtype) / (end - start).to(like.dtype)[:, None]


def bin_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Same result as ``F.adaptive_avg_pool2d(x, bins)``, as two matrix products."""
    if bins == 1:
        return x.mean(dim=(2, 3), keepdim=True)
    rows = _bin_weights(x.shape[-2], bins, x)  # (bins, H)
    cols = _bin_weights(x.shape[-1], bins, x)  # (bins, W)
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


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
