"""C-DLinkNet's decoder as its paper builds it: ASPP centre, LinkNet blocks D5..D2 with additive skips, Smooth.

The encoder gives five maps E1..E5 (strides 2, 4, 8, 16, 16 for a ResNet at output stride 16: E5 dilated).
Block D5 maps the centre's output to E4's channels and size and adds E4; D4, D3 and D2 follow, D2 at
stride 2 (E1, the stem before max pooling). Smooth brings every decoder level to D2's size with decoder
blocks, concatenates them and reduces them with two 3x3 convolutions to 512 channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import conv_bn_relu


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
    image pooling; ``branch_channels`` each) -> concat -> 1x1 to C/2 -> 1x1 to C (the paper's
    2048 -> 1024 -> 256 -> 1024 -> 2048)."""

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


def upsampling_conv(channels: int, factor: int) -> nn.Sequential:
    """Transposed convolution that multiplies the size by ``factor`` exactly (kernel 2 x factor, padding
    factor / 2; a 3x3 at factor 1, where a dilated encoder level left the size alone), BN, ReLU."""
    if factor == 1:
        conv = nn.ConvTranspose2d(channels, channels, 3, stride=1, padding=1, bias=False)
    else:
        conv = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    """LinkNet decoder block: 1x1 to in/4, transposed convolution x ``factor``, 1x1 to ``out_ch``.

    The output is cropped to ``size``: at an odd size the encoder's stride-2 convolution rounded up
    and doubling gives one row or column more; dropping the last keeps output pixel i over encoder
    pixel i. In ONNX the crop is a Slice on the traced sizes, so export stays exact at any size.
    """

    def __init__(self, in_ch: int, out_ch: int, factor: int) -> None:
        super().__init__()
        mid = in_ch // 4
        self.reduce = conv_bn_relu(in_ch, mid, 1)
        self.up = upsampling_conv(mid, factor)
        self.expand = conv_bn_relu(mid, out_ch, 1)

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        return self.expand(self.up(self.reduce(x)))[..., :size[0], :size[1]]


class Projection(nn.Module):
    """A chain of decoder blocks taking one decoder level to the finest level's size and channels,
    through the channels and strides of the levels in between."""

    def __init__(self, channels: tuple[int, ...], strides: tuple[int, ...]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(DecoderBlock(channels[i], channels[i + 1], strides[i] // strides[i + 1])
                                    for i in range(len(channels) - 1))

    def forward(self, x: torch.Tensor, sizes: list) -> torch.Tensor:
        for block, size in zip(self.blocks, sizes):
            x = block(x, size)
        return x


class Smooth(nn.Module):
    """Every decoder level projected to the finest one's size, concatenated, two 3x3 conv-BN-ReLU."""

    def __init__(self, level_channels: tuple[int, ...], level_strides: tuple[int, ...], out_ch: int = 512) -> None:
        super().__init__()
        last = len(level_channels) - 1
        self.projections = nn.ModuleList(Projection(level_channels[i:], level_strides[i:]) for i in range(last))
        self.reduce = nn.Sequential(conv_bn_relu(level_channels[-1] * len(level_channels), out_ch, 3),
                                    conv_bn_relu(out_ch, out_ch, 3))

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        sizes = [level.shape[-2:] for level in levels]
        projected = [projection(level, sizes[i + 1:]) for i, (projection, level)
                     in enumerate(zip(self.projections, levels))]
        return self.reduce(torch.cat([*projected, levels[-1]], dim=1))


class CDLinkNetDecoder(nn.Module):
    """ASPP centre on the deepest encoder map, one decoder block per shallower encoder map (each adds
    that map), then Smooth over all decoder levels (at the finest encoder map's stride).

    Returns every decoder level (deepest first, read by the deep-supervision heads), then the Smooth
    output (read by the classifier).
    """

    def __init__(self, encoder_channels: tuple[int, ...], encoder_strides: tuple[int, ...],
                 aspp_channels: int = 256, atrous_rates: tuple[int, ...] = (12, 24, 36),
                 smooth_channels: int = 512) -> None:
        super().__init__()
        channels, strides = tuple(encoder_channels), tuple(encoder_strides)
        self.centre = ASPPCentre(channels[-1], aspp_channels, atrous_rates)
        deepest_first = range(len(channels) - 1, 0, -1)
        self.blocks = nn.ModuleList(DecoderBlock(channels[i], channels[i - 1], strides[i] // strides[i - 1])
                                    for i in deepest_first)
        self.level_channels = tuple(channels[i - 1] for i in deepest_first)
        self.level_strides = tuple(strides[i - 1] for i in deepest_first)
        self.smooth = Smooth(self.level_channels, self.level_strides, smooth_channels)
        self.out_channels = smooth_channels

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        x = self.centre(features[-1])
        levels = []
        for block, skip in zip(self.blocks, reversed(features[:-1])):
            x = block(x, skip.shape[-2:]) + skip
            levels.append(x)
        return levels + [self.smooth(levels)]
