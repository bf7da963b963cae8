"""DDRNet-23 / DDRNet-23-slim (Hong et al., "Deep Dual-resolution Networks for Real-time and
Accurate Semantic Segmentation of Road Scenes", 2021), written from the paper.

A shared stem (conv1, conv2 at /4, conv3 at /8) splits into a high-resolution branch that
stays at /8 and a low-resolution branch going to /16, /32 and /64, with bilateral fusion
after conv4 and conv5_1 (low -> high: 1x1 conv + upsample; high -> low: strided 3x3 convs).
DAPPM on the /64 features, added to the high-resolution branch, then the segmentation head
(BN-ReLU-3x3 conv-BN-ReLU -> 1x1 classifier) at /8.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import SegmentationHead, SegmentationModel
from ..blocks import OnLastFeature, conv_bn, upsample_like
from ..registry import register_architecture

VARIANTS: dict[str, tuple[int, int]] = {"23-slim": (32, 64), "23": (64, 128)}  # planes, head planes


def bn_relu_conv(in_ch: int, out_ch: int, kernel: int = 1) -> nn.Sequential:
    """Pre-activation conv used throughout DAPPM."""
    return nn.Sequential(nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True),
                         nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, last_relu: bool = True) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = conv_bn(in_ch, planes, 3, stride)
        self.conv2 = conv_bn(planes, out_ch, 3)
        self.shortcut = conv_bn(in_ch, out_ch, 1, stride) if stride != 1 or in_ch != out_ch else nn.Identity()
        self.last_relu = last_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x))) + self.shortcut(x)
        return F.relu(out) if self.last_relu else out


class Bottleneck(nn.Module):
    expansion = 2

    def __init__(self, in_ch: int, planes: int, stride: int = 1, last_relu: bool = True) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = conv_bn(in_ch, planes, 1)
        self.conv2 = conv_bn(planes, planes, 3, stride)
        self.conv3 = conv_bn(planes, out_ch, 1)
        self.shortcut = conv_bn(in_ch, out_ch, 1, stride) if stride != 1 or in_ch != out_ch else nn.Identity()
        self.last_relu = last_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(F.relu(self.conv2(F.relu(self.conv1(x))))) + self.shortcut(x)
        return F.relu(out) if self.last_relu else out


def make_layer(block: type, in_ch: int, planes: int, count: int, stride: int = 1) -> nn.Sequential:
    """``count`` residual blocks; the last one leaves out its final ReLU (applied by the consumer,
    so the branches are fused before the activation)."""
    blocks = []
    for i in range(count):
        blocks.append(block(in_ch, planes, stride if i == 0 else 1, last_relu=i < count - 1))
        in_ch = planes * block.expansion
    return nn.Sequential(*blocks)


class DAPPM(nn.Module):
    """Deep aggregation pyramid pooling: average pools 5/2, 9/4, 17/8 and global, each
    1x1-projected, upsampled and added to the previous scale before a 3x3 conv (hierarchical
    residual fusion), then concatenated, compressed and added to a 1x1 shortcut.
    The global branch has no BatchNorm (one value per channel and image); ReLU -> 1x1 conv.
    """

    def __init__(self, in_ch: int, branch_ch: int, out_ch: int) -> None:
        super().__init__()
        self.pools = [(5, 2, 2), (9, 4, 4), (17, 8, 8)]  # kernel, stride, padding
        self.scale0 = bn_relu_conv(in_ch, branch_ch)
        self.scales = nn.ModuleList(bn_relu_conv(in_ch, branch_ch) for _ in self.pools)
        self.global_scale = nn.Conv2d(in_ch, branch_ch, 1, bias=False)
        self.process = nn.ModuleList(bn_relu_conv(branch_ch, branch_ch, 3) for _ in range(len(self.pools) + 1))
        self.compression = bn_relu_conv(branch_ch * (len(self.pools) + 2), out_ch)
        self.shortcut = bn_relu_conv(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scales = [self.scale0(x)]
        for (kernel, stride, padding), scale, process in zip(self.pools, self.scales, self.process):
            pooled = F.avg_pool2d(x, kernel_size=kernel, stride=stride, padding=padding)
            scales.append(process(upsample_like(scale(pooled), x) + scales[-1]))
        pooled = self.global_scale(F.relu(x.mean(dim=(2, 3), keepdim=True)))
        scales.append(self.process[-1](pooled.expand_as(scales[-1]) + scales[-1]))
        return self.compression(torch.cat(scales, dim=1)) + self.shortcut(x)


class DDRNetEncoder(nn.Module):
    """Both branches up to the sum of the high-resolution output and the upsampled DAPPM output (/8).

    Returns the high-resolution features after conv4's fusion (/8, what the aux head reads),
    then that sum.
    """

    def __init__(self, planes: int, spp_planes: int = 128) -> None:
        super().__init__()
        width1, width2, width4, width8 = planes, 2 * planes, 4 * planes, 8 * planes
        self.stem = nn.Sequential(conv_bn(3, width1, 3, 2), nn.ReLU(inplace=True),
                                  conv_bn(width1, width1, 3, 2), nn.ReLU(inplace=True))
        self.layer1 = make_layer(BasicBlock, width1, width1, 2)          # conv2, /4
        self.layer2 = make_layer(BasicBlock, width1, width2, 2, 2)       # conv3, /8
        self.layer3 = make_layer(BasicBlock, width2, width4, 2, 2)       # conv4 low, /16
        self.layer3_high = make_layer(BasicBlock, width2, width2, 2)     # conv4 high, /8
        self.down3 = conv_bn(width2, width4, 3, 2)
        self.compress3 = conv_bn(width4, width2, 1)
        self.layer4 = make_layer(BasicBlock, width4, width8, 2, 2)       # conv5_1 low, /32
        self.layer4_high = make_layer(BasicBlock, width2, width2, 2)
        self.down4 = nn.Sequential(conv_bn(width2, width4, 3, 2), nn.ReLU(inplace=True),
                                   conv_bn(width4, width8, 3, 2))
        self.compress4 = conv_bn(width8, width2, 1)
        self.layer5 = make_layer(Bottleneck, width8, width8, 1, 2)       # conv5_2 low, /64
        self.layer5_high = make_layer(Bottleneck, width2, width2, 1)
        self.spp = DAPPM(2 * width8, spp_planes, width4)
        self.out_channels = (width2, width4)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stride8 = self.layer2(F.relu(self.layer1(self.stem(x))))  # each layer ends before its last ReLU
        low = self.layer3(F.relu(stride8))
        high = self.layer3_high(F.relu(stride8))
        low, high = low + self.down3(F.relu(high)), high + upsample_like(self.compress3(F.relu(low)), high)
        high_after_conv4 = high
        low = self.layer4(F.relu(low))
        high = self.layer4_high(F.relu(high))
        low, high = low + self.down4(F.relu(high)), high + upsample_like(self.compress4(F.relu(low)), high)
        high = self.layer5_high(F.relu(high))
        low = upsample_like(self.spp(self.layer5(F.relu(low))), high)
        return [high_after_conv4, high + low]


def head_block(in_ch: int, mid_ch: int) -> nn.Sequential:
    """The segment head's feature part: BN-ReLU-3x3 conv-BN-ReLU."""
    return nn.Sequential(nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True),
                         nn.Conv2d(in_ch, mid_ch, 3, padding=1, bias=False),
                         nn.BatchNorm2d(mid_ch), nn.ReLU(inplace=True))


@register_architecture("ddrnet")
class DDRNet(SegmentationModel):
    """DDRNet-23-slim / DDRNet-23; logits at /8. ``aux`` adds the high-resolution head after conv4."""

    stage2_default = "classifier"
    legacy_aux_keys = {"aux_head.": "aux_heads.0."}

    def __init__(self, num_classes: int, encoder_weights: str | None = None, aux: bool = False,
                 variant: str = "23-slim") -> None:
        super().__init__()
        if encoder_weights is not None:
            raise ValueError(f"ddrnet is trained from scratch: encoder_weights must be None, not '{encoder_weights}'")
        if variant not in VARIANTS:
            raise ValueError(f"ddrnet: unknown variant '{variant}' (known: {', '.join(VARIANTS)})")
        planes, head_planes = VARIANTS[variant]
        self.encoder = DDRNetEncoder(planes)
        self.decoder = OnLastFeature(*head_block(self.encoder.out_channels[-1], head_planes))
        self.segmentation_head = SegmentationHead(head_planes, num_classes)
        if aux:
            aux_head = nn.Sequential(head_block(self.encoder.out_channels[0], head_planes),
                                     nn.Conv2d(head_planes, num_classes, 1))
            self.add_aux_head(aux_head, feature=0, weight=0.4)
