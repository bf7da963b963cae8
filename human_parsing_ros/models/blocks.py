"""Building blocks shared by the zoo: conv-BN(-ReLU), the auxiliary head, resizing."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
            groups: int = 1) -> nn.Sequential:
    """Conv (no bias, padding that keeps the size at stride 1) -> BatchNorm."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride, dilation * (kernel // 2), dilation, groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_ch))


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
                 groups: int = 1) -> nn.Sequential:
    """``conv_bn`` -> ReLU."""
    return nn.Sequential(*conv_bn(in_ch, out_ch, kernel, stride, dilation, groups), nn.ReLU(inplace=True))


class AuxHead(nn.Module):
    """Auxiliary head on an intermediate feature map: 3x3 conv-BN-ReLU, dropout, 1x1 to classes."""

    def __init__(self, in_ch: int, mid_ch: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = conv_bn_relu(in_ch, mid_ch)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(mid_ch, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))


class OnLastFeature(nn.Sequential):
    """An ``nn.Sequential`` applied to the last map of a feature list: the decoder of the
    networks whose encoder ends in the one map the classifier reads."""

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return super().forward(features[-1])


def upsample_to(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize to ``size`` (H, W), corners not aligned: every resize in the model zoo."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def upsample_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``upsample_to`` the spatial size of ``like``."""
    return upsample_to(x, like.shape[-2:])


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


class BinPool(nn.Module):
    """``bin_pool`` as a module (ONNX-exportable adaptive average pooling to ``bins`` x ``bins``)."""

    def __init__(self, bins: int) -> None:
        super().__init__()
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bin_pool(x, self.bins)
