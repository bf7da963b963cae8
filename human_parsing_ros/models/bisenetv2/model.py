"""BiSeNet V2 (Yu et al., "BiSeNet V2: Bilateral Network with Guided Aggregation for
Real-time Semantic Segmentation", IJCV 2021), written from the paper.

Detail branch (wide, shallow, stride 8, 64/64/128 channels) + semantic branch (narrow,
deep, stride 32: stem, gather-and-expansion layers, context embedding), bilateral guided
aggregation at stride 8, then a segmentation head (3x3 conv -> 1x1 classifier).
Booster (auxiliary) heads read the semantic branch after the stem and stages 3, 4, 5.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import register_architecture
from ..base import SegmentationHead, SegmentationModel
from ..heads import upsample_like


def conv_bn(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1,
            relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DetailBranch(nn.Module):
    """S1: 2 convs (64, first stride 2); S2: 3 convs (64); S3: 3 convs (128). Stride 8."""

    def __init__(self, channels: tuple[int, int, int] = (64, 64, 128)) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.s1 = nn.Sequential(conv_bn(3, c1, stride=2), conv_bn(c1, c1))
        self.s2 = nn.Sequential(conv_bn(c1, c2, stride=2), conv_bn(c2, c2), conv_bn(c2, c2))
        self.s3 = nn.Sequential(conv_bn(c2, c3, stride=2), conv_bn(c3, c3), conv_bn(c3, c3))
        self.out_channels = c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.s3(self.s2(self.s1(x)))


class StemBlock(nn.Module):
    """3x3/2 conv, then [1x1 -> 3x3/2] || [3x3/2 max pool], concatenated and fused by a 3x3 conv. Stride 4."""

    def __init__(self, out_ch: int = 16) -> None:
        super().__init__()
        self.conv = conv_bn(3, out_ch, stride=2)
        self.left = nn.Sequential(conv_bn(out_ch, out_ch // 2, kernel=1), conv_bn(out_ch // 2, out_ch, stride=2))
        self.right = nn.MaxPool2d(3, stride=2, padding=1)
        self.fuse = conv_bn(2 * out_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))


class GatherExpansion(nn.Module):
    """Gather-and-expansion layer (paper Fig. 5 b/c), expansion ratio ``expand``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, expand: int = 6) -> None:
        super().__init__()
        mid = in_ch * expand
        self.gather = conv_bn(in_ch, in_ch)
        if stride == 1:
            assert in_ch == out_ch
            self.expand = conv_bn(in_ch, mid, groups=in_ch, relu=False)
            self.shortcut = nn.Identity()
        else:
            self.expand = nn.Sequential(
                conv_bn(in_ch, mid, stride=2, groups=in_ch, relu=False),
                conv_bn(mid, mid, groups=mid, relu=False),
            )
            self.shortcut = nn.Sequential(
                conv_bn(in_ch, in_ch, stride=2, groups=in_ch, relu=False),
                conv_bn(in_ch, out_ch, kernel=1, relu=False),
            )
        self.project = conv_bn(mid, out_ch, kernel=1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.project(self.expand(self.gather(x))) + self.shortcut(x))


class ContextEmbedding(nn.Module):
    """Global average pooling -> 1x1 conv, broadcast-added to the input, then a 3x3 conv.

    The paper puts BatchNorm on the pooled vector; here the pooled path has none (a BN over
    1x1 maps sees one value per channel and image), the 1x1 conv has a bias instead.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool_conv = nn.Conv2d(channels, channels, 1)
        self.fuse = conv_bn(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = F.relu(self.pool_conv(x.mean(dim=(2, 3), keepdim=True)))
        return self.fuse(x + context)


class SemanticBranch(nn.Module):
    """Stem (16, /4), S3 (32, /8), S4 (64, /16), S5 (128, /32: 4 GE layers + context embedding)."""

    def __init__(self, channels: tuple[int, int, int, int] = (16, 32, 64, 128), expand: int = 6) -> None:
        super().__init__()
        c2, c3, c4, c5 = channels
        self.stem = StemBlock(c2)
        self.s3 = nn.Sequential(GatherExpansion(c2, c3, 2, expand), GatherExpansion(c3, c3, 1, expand))
        self.s4 = nn.Sequential(GatherExpansion(c3, c4, 2, expand), GatherExpansion(c4, c4, 1, expand))
        self.s5 = nn.Sequential(GatherExpansion(c4, c5, 2, expand),
                                *[GatherExpansion(c5, c5, 1, expand) for _ in range(3)])
        self.context = ContextEmbedding(c5)
        self.channels = tuple(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[stem, S3, S4, S5 (before context embedding), context-embedded S5]."""
        f2 = self.stem(x)
        f3 = self.s3(f2)
        f4 = self.s4(f3)
        f5 = self.s5(f4)
        return [f2, f3, f4, f5, self.context(f5)]


class BilateralGuidedAggregation(nn.Module):
    """Detail (stride 8) and semantic (stride 32) features guide each other (paper Fig. 6)."""

    def __init__(self, channels: int = 128) -> None:
        super().__init__()
        self.detail_keep = nn.Sequential(conv_bn(channels, channels, groups=channels, relu=False),
                                         nn.Conv2d(channels, channels, 1, bias=False))
        self.detail_down = nn.Sequential(conv_bn(channels, channels, stride=2, relu=False),
                                         nn.AvgPool2d(3, stride=2, padding=1))
        self.semantic_keep = nn.Sequential(conv_bn(channels, channels, groups=channels, relu=False),
                                           nn.Conv2d(channels, channels, 1, bias=False))
        self.semantic_up = conv_bn(channels, channels, relu=False)
        self.fuse = conv_bn(channels, channels)

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        low = self.detail_down(detail)  # stride 32, same size as ``semantic`` by construction
        left = self.detail_keep(detail) * torch.sigmoid(upsample_like(self.semantic_up(semantic), detail))
        right = upsample_like(low * torch.sigmoid(self.semantic_keep(semantic)), detail)
        return self.fuse(left + right)


class BiSeNetV2Encoder(nn.Module):
    """Both branches + aggregation: image -> 128-channel features at stride 8."""

    def __init__(self, expand: int = 6) -> None:
        super().__init__()
        self.detail = DetailBranch()
        self.semantic = SemanticBranch(expand=expand)
        self.aggregation = BilateralGuidedAggregation(self.detail.out_channels)
        self.out_channels = self.detail.out_channels

    def forward_with_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Aggregated features and the semantic stages the booster heads read (stem, S3, S4, S5)."""
        detail = self.detail(x)
        semantic = self.semantic(x)
        return self.aggregation(detail, semantic[-1]), semantic[:4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_stages(x)[0]


class AuxHead(nn.Module):
    """Booster head: 3x3 conv-BN-ReLU -> 1x1 classifier."""

    def __init__(self, in_ch: int, mid_ch: int, num_classes: int) -> None:
        super().__init__()
        self.conv = conv_bn(in_ch, mid_ch)
        self.classifier = nn.Conv2d(mid_ch, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv(x))


@register_architecture("bisenetv2")
class BiSeNetV2(SegmentationModel):
    """BiSeNet V2; logits at stride 8. ``aux`` adds the four booster heads (training only)."""

    stage2_default = "classifier"

    def __init__(self, num_classes: int, encoder_weights: str | None = None, aux: bool = False,
                 head_channels: int = 1024, aux_channels: int = 128, dropout: float = 0.1,
                 expand: int = 6) -> None:
        super().__init__()
        if encoder_weights is not None:
            raise ValueError(f"bisenetv2 is trained from scratch: encoder_weights must be None, "
                             f"not '{encoder_weights}'")
        self.encoder = BiSeNetV2Encoder(expand=expand)
        layers: list[nn.Module] = [conv_bn(self.encoder.out_channels, head_channels)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.decoder = nn.Sequential(*layers)
        self.segmentation_head = SegmentationHead(head_channels, num_classes)
        if aux:
            self.aux_heads = nn.ModuleList(
                AuxHead(ch, aux_channels, num_classes) for ch in self.encoder.semantic.channels)
            self.aux_weights = (1.0,) * len(self.aux_heads)
        else:
            self.aux_heads = None
            self.aux_weights = ()

    def forward(self, x: torch.Tensor, with_aux: bool = False):
        features, stages = self.encoder.forward_with_stages(x)
        return self.at_input_size(self.segmentation_head(self.decoder(features)), x, with_aux,
                                  zip(self.aux_heads or (), stages))
