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

from ..base import SegmentationHead, SegmentationModel
from ..blocks import AuxHead, OnLastFeature, conv_bn, conv_bn_relu, upsample_like
from ..registry import register_architecture


class DetailBranch(nn.Module):
    """S1: 2 convs (64, first stride 2); S2: 3 convs (64); S3: 3 convs (128). Stride 8."""

    def __init__(self, channels: tuple[int, int, int] = (64, 64, 128)) -> None:
        super().__init__()
        # s1..s3 are the paper's stage names (and the weights' keys).
        width1, width2, width3 = channels
        self.s1 = nn.Sequential(conv_bn_relu(3, width1, stride=2), conv_bn_relu(width1, width1))
        self.s2 = nn.Sequential(conv_bn_relu(width1, width2, stride=2), conv_bn_relu(width2, width2),
                                conv_bn_relu(width2, width2))
        self.s3 = nn.Sequential(conv_bn_relu(width2, width3, stride=2), conv_bn_relu(width3, width3),
                                conv_bn_relu(width3, width3))
        self.out_channels = width3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.s3(self.s2(self.s1(x)))


class StemBlock(nn.Module):
    """3x3/2 conv, then [1x1 -> 3x3/2] || [3x3/2 max pool], concatenated and fused by a 3x3 conv. Stride 4."""

    def __init__(self, out_ch: int = 16) -> None:
        super().__init__()
        self.conv = conv_bn_relu(3, out_ch, stride=2)
        self.left = nn.Sequential(conv_bn_relu(out_ch, out_ch // 2, kernel=1),
                                  conv_bn_relu(out_ch // 2, out_ch, stride=2))
        self.right = nn.MaxPool2d(3, stride=2, padding=1)
        self.fuse = conv_bn_relu(2 * out_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))


class GatherExpansion(nn.Module):
    """Gather-and-expansion layer (paper Fig. 5 b/c), expansion ratio ``expand``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, expand: int = 6) -> None:
        super().__init__()
        mid = in_ch * expand
        self.gather = conv_bn_relu(in_ch, in_ch)
        if stride == 1:
            assert in_ch == out_ch
            self.expand = conv_bn(in_ch, mid, groups=in_ch)
            self.shortcut = nn.Identity()
        else:
            self.expand = nn.Sequential(
                conv_bn(in_ch, mid, stride=2, groups=in_ch),
                conv_bn(mid, mid, groups=mid),
            )
            self.shortcut = nn.Sequential(
                conv_bn(in_ch, in_ch, stride=2, groups=in_ch),
                conv_bn(in_ch, out_ch, kernel=1),
            )
        self.project = conv_bn(mid, out_ch, kernel=1)

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
        self.fuse = conv_bn_relu(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = F.relu(self.pool_conv(x.mean(dim=(2, 3), keepdim=True)))
        return self.fuse(x + context)


class SemanticBranch(nn.Module):
    """Stem (16, /4), S3 (32, /8), S4 (64, /16), S5 (128, /32: 4 GE layers + context embedding)."""

    def __init__(self, channels: tuple[int, int, int, int] = (16, 32, 64, 128), expand: int = 6) -> None:
        super().__init__()
        stem_width, width3, width4, width5 = channels
        self.stem = StemBlock(stem_width)
        self.s3 = nn.Sequential(GatherExpansion(stem_width, width3, 2, expand),
                                GatherExpansion(width3, width3, 1, expand))
        self.s4 = nn.Sequential(GatherExpansion(width3, width4, 2, expand), GatherExpansion(width4, width4, 1, expand))
        self.s5 = nn.Sequential(GatherExpansion(width4, width5, 2, expand),
                                *[GatherExpansion(width5, width5, 1, expand) for _ in range(3)])
        self.context = ContextEmbedding(width5)
        self.channels = tuple(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[stem, S3, S4, S5 (before context embedding), context-embedded S5]."""
        stem = self.stem(x)
        stage3 = self.s3(stem)
        stage4 = self.s4(stage3)
        stage5 = self.s5(stage4)
        return [stem, stage3, stage4, stage5, self.context(stage5)]


class BilateralGuidedAggregation(nn.Module):
    """Detail (stride 8) and semantic (stride 32) features guide each other (paper Fig. 6)."""

    def __init__(self, channels: int = 128) -> None:
        super().__init__()
        self.detail_keep = nn.Sequential(conv_bn(channels, channels, groups=channels),
                                         nn.Conv2d(channels, channels, 1, bias=False))
        self.detail_down = nn.Sequential(conv_bn(channels, channels, stride=2),
                                         nn.AvgPool2d(3, stride=2, padding=1))
        self.semantic_keep = nn.Sequential(conv_bn(channels, channels, groups=channels),
                                           nn.Conv2d(channels, channels, 1, bias=False))
        self.semantic_up = conv_bn(channels, channels)
        self.fuse = conv_bn_relu(channels, channels)

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        low = self.detail_down(detail)  # stride 32, same size as ``semantic`` by construction
        left = self.detail_keep(detail) * torch.sigmoid(upsample_like(self.semantic_up(semantic), detail))
        right = upsample_like(low * torch.sigmoid(self.semantic_keep(semantic)), detail)
        return self.fuse(left + right)


class BiSeNetV2Encoder(nn.Module):
    """Both branches + aggregation. Returns the semantic stages (stem /4, S3 /8, S4 /16, S5 /32:
    what the booster heads read), then the aggregated 128-channel features at /8."""

    def __init__(self, expand: int = 6) -> None:
        super().__init__()
        self.detail = DetailBranch()
        self.semantic = SemanticBranch(expand=expand)
        self.aggregation = BilateralGuidedAggregation(self.detail.out_channels)
        self.out_channels = (*self.semantic.channels, self.detail.out_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        detail = self.detail(x)
        *stages, context = self.semantic(x)
        return stages + [self.aggregation(detail, context)]


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
        layers: list[nn.Module] = [conv_bn_relu(self.encoder.out_channels[-1], head_channels)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.decoder = OnLastFeature(*layers)
        self.segmentation_head = SegmentationHead(head_channels, num_classes)
        if aux:
            for index, channels in enumerate(self.encoder.semantic.channels):
                self.add_aux_head(AuxHead(channels, aux_channels, num_classes), feature=index, weight=1.0)
