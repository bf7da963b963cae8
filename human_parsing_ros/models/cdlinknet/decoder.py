"""C-DLinkNet decoder: ASPP centre, LinkNet decoder blocks with additive skips, Smooth fusion."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import conv_bn_relu, upsample_to


class ImagePooling(nn.Module):
    """Global context branch. No BatchNorm: it would see one value per channel and image."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.relu(self.conv(x.mean(dim=(2, 3), keepdim=True)))
        return pooled.expand(-1, -1, x.shape[-2], x.shape[-1])


class ASPPCentre(nn.Module):
    """Centre block on the deepest features: C -> C/2 (1x1) -> ASPP (1x1, dilated 3x3 at ``rates``,
    image pooling; ``branch_channels`` each) -> concat -> 1x1 to C/2 -> 1x1 to C."""

    def __init__(self, channels: int, branch_channels: int = 256, rates: tuple[int, ...] = (12, 24, 36)) -> None:
        super().__init__()
        mid = channels // 2
        self.reduce = conv_bn_relu(channels, mid, 1)
        branches = [conv_bn_relu(mid, branch_channels, 1)]
        branches += [conv_bn_relu(mid, branch_channels, 3, dilation=rate) for rate in rates]
        branches.append(ImagePooling(mid, branch_channels))
        self.branches = nn.ModuleList(branches)
        self.project = conv_bn_relu(branch_channels * len(branches), mid, 1)
        self.expand = conv_bn_relu(mid, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        x = self.project(torch.cat([branch(x) for branch in self.branches], dim=1))
        return self.expand(x)


class LinkNetBlock(nn.Module):
    """LinkNet decoder block: 1x1 to in/4, x2 upsampling (bilinear to the skip's size) + 3x3 conv, 1x1 to out.

    Bilinear resizing to the skip's exact size (instead of a stride-2 transposed conv)
    keeps odd input sizes and dynamic-size ONNX export exact.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = in_ch // 4
        self.reduce = conv_bn_relu(in_ch, mid, 1)
        self.conv = conv_bn_relu(mid, mid, 3)
        self.expand = conv_bn_relu(mid, out_ch, 1)

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        return self.expand(self.conv(upsample_to(self.reduce(x), size)))


class Smooth(nn.Module):
    """Upsample every decoder level to the finest one, concatenate, 3x3 conv-BN-ReLU."""

    def __init__(self, level_channels: tuple[int, ...], out_ch: int) -> None:
        super().__init__()
        self.conv = conv_bn_relu(sum(level_channels), out_ch, 3)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        size = levels[-1].shape[-2:]
        return self.conv(torch.cat([upsample_to(level, size) for level in levels[:-1]] + [levels[-1]], dim=1))


class CDLinkNetDecoder(nn.Module):
    """ASPP centre on the stride-32 features, then one LinkNet block per shallower encoder level
    (each adds that level's features), then Smooth over all decoder levels (at stride 4).

    Returns every decoder level (deepest first, read by the deep-supervision heads), then the
    Smooth output (read by the classifier).
    """

    def __init__(self, encoder_channels: tuple[int, ...], aspp_channels: int = 256,
                 atrous_rates: tuple[int, ...] = (12, 24, 36), smooth_channels: int = 64) -> None:
        super().__init__()
        channels = tuple(encoder_channels)
        self.centre = ASPPCentre(channels[-1], aspp_channels, atrous_rates)
        # Deepest first: channels[-1] -> channels[-2], ..., channels[1] -> channels[0].
        deepest_first = range(len(channels) - 1, 0, -1)
        self.blocks = nn.ModuleList(LinkNetBlock(channels[i], channels[i - 1]) for i in deepest_first)
        self.level_channels = tuple(channels[i - 1] for i in deepest_first)
        self.smooth = Smooth(self.level_channels, smooth_channels)
        self.out_channels = smooth_channels

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        x = self.centre(features[-1])
        levels = []
        for block, skip in zip(self.blocks, reversed(features[:-1])):
            x = block(x, skip.shape[-2:]) + skip
            levels.append(x)
        return levels + [self.smooth(levels)]
