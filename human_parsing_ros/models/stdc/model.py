"""STDC-Seg (Fan et al., "Rethinking BiSeNet For Real-time Semantic Segmentation", CVPR 2021),
written from the paper.

STDC backbone (short-term dense concatenation modules, 4 blocks each; STDC1 = [2, 2, 2]
modules in stages 3-5, STDC2 = [4, 5, 3]), attention refinement modules on the stride-16
and stride-32 features plus a global context vector, a feature fusion module with the
stride-8 features, and a segmentation head (3x3 conv -> 1x1 classifier) at stride 8.
Detail guidance, as the paper trains it: a detail head (3x3 conv-BN-ReLU to 64, 1x1 to one
channel) on the stride-8 backbone features, trained in stage 1 against the Laplacian
boundaries of the labels with BCE + Dice (``training.losses.detail_loss``). It is a training
head like the auxiliary ones: the parse never runs it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import SegmentationHead, SegmentationModel
from ..blocks import AuxHead, OnLastFeature, conv_bn, conv_bn_relu, upsample_like
from ..registry import register_architecture

VARIANTS: dict[str, tuple[int, int, int]] = {"stdc1": (2, 2, 2), "stdc2": (4, 5, 3)}


class STDCModule(nn.Module):
    """Blocks of N/2, N/4, N/8, N/8 channels (1x1 then 3x3 convs), outputs concatenated to N.

    With stride 2 the second block's input is downsampled by a 3x3/2 depthwise conv + BN,
    and the first block's output joins the concatenation through a 3x3/2 average pool.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, blocks: int = 4) -> None:
        super().__init__()
        widths = [out_ch // 2 ** (i + 1) for i in range(blocks - 1)]
        widths.append(widths[-1])
        assert sum(widths) == out_ch
        self.blocks = nn.ModuleList()
        prev = in_ch
        for i, width in enumerate(widths):
            self.blocks.append(conv_bn_relu(prev, width, kernel=1 if i == 0 else 3))
            prev = width
        self.stride = stride
        if stride == 2:
            self.down = conv_bn(widths[0], widths[0], stride=2, groups=widths[0])
            self.skip = nn.AvgPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.blocks[0](x)
        if self.stride == 2:
            outputs = [self.skip(first)]
            x = self.down(first)
        else:
            outputs = [first]
            x = first
        for block in self.blocks[1:]:
            x = block(x)
            outputs.append(x)
        return torch.cat(outputs, dim=1)


class STDCBackbone(nn.Module):
    """Stage 1-2: ConvX 32 /2, ConvX 64 /2; stages 3-5: STDC modules of 256, 512, 1024 channels."""

    def __init__(self, layers: tuple[int, int, int], base: int = 64) -> None:
        super().__init__()
        self.stage1 = conv_bn_relu(3, base // 2, stride=2)
        self.stage2 = conv_bn_relu(base // 2, base, stride=2)
        stages = []
        prev = base
        for i, count in enumerate(layers):
            width = base * 4 * 2 ** i
            modules = [STDCModule(prev, width, stride=2)]
            modules += [STDCModule(width, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*modules))
            prev = width
        self.stage3, self.stage4, self.stage5 = stages
        self.out_channels = (base // 2, base, base * 4, base * 8, base * 16)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features at strides 2, 4, 8, 16, 32."""
        stride2 = self.stage1(x)
        stride4 = self.stage2(stride2)
        stride8 = self.stage3(stride4)
        stride16 = self.stage4(stride8)
        return [stride2, stride4, stride8, stride16, self.stage5(stride16)]


class AttentionRefinement(nn.Module):
    """3x3 conv, then channel attention from global pooling -> 1x1 conv -> sigmoid.

    No BatchNorm on the pooled vector (one value per channel and image); the 1x1 conv has a bias.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = conv_bn_relu(in_ch, out_ch)
        self.attention = nn.Conv2d(out_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x * torch.sigmoid(self.attention(x.mean(dim=(2, 3), keepdim=True)))


class FeatureFusion(nn.Module):
    """Concatenate, 1x1 conv-BN-ReLU, then a squeeze-excitation style reweighting added back."""

    def __init__(self, in_ch: int, out_ch: int, reduction: int = 4) -> None:
        super().__init__()
        self.conv = conv_bn_relu(in_ch, out_ch, kernel=1)
        self.attention = nn.Sequential(
            nn.Conv2d(out_ch, out_ch // reduction, 1), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch // reduction, out_ch, 1), nn.Sigmoid())

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        x = self.conv(torch.cat([low, high], dim=1))
        return x + x * self.attention(x.mean(dim=(2, 3), keepdim=True))


class STDCEncoder(nn.Module):
    """Backbone + context path (ARMs on /16 and /32, global context) + FFM.

    Returns the outputs of the /16 path (at /8) and of the /32 path (at /16), what the aux
    heads read, the backbone's /8 features (the detail head's), then the fused 256-channel
    features at /8.
    """

    def __init__(self, variant: str, context_channels: int = 128, fusion_channels: int = 256) -> None:
        super().__init__()
        self.backbone = STDCBackbone(VARIANTS[variant])
        _, _, channels8, channels16, channels32 = self.backbone.out_channels
        self.global_context = nn.Conv2d(channels32, context_channels, 1)  # on the pooled vector, no BN
        self.arm32 = AttentionRefinement(channels32, context_channels)
        self.arm16 = AttentionRefinement(channels16, context_channels)
        self.refine32 = conv_bn_relu(context_channels, context_channels)
        self.refine16 = conv_bn_relu(context_channels, context_channels)
        self.fusion = FeatureFusion(channels8 + context_channels, fusion_channels)
        self.out_channels = (context_channels, context_channels, channels8, fusion_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        _, _, stride8, stride16, stride32 = self.backbone(x)
        context = F.relu(self.global_context(stride32.mean(dim=(2, 3), keepdim=True)))
        path32 = self.refine32(upsample_like(self.arm32(stride32) + context, stride16))
        path16 = self.refine16(upsample_like(self.arm16(stride16) + path32, stride8))
        return [path16, path32, stride8, self.fusion(stride8, path16)]


@register_architecture("stdc")
class STDCSeg(SegmentationModel):
    """STDC1-Seg / STDC2-Seg; logits at stride 8. ``aux`` adds heads on the /16 and /32 paths;
    ``detail`` (default on, as the paper) the detail head."""

    stage2_default = "classifier"

    def __init__(self, num_classes: int, encoder_weights: str | None = None, aux: bool = False,
                 variant: str = "stdc1", head_channels: int = 256, aux_channels: int = 64,
                 dropout: float = 0.1, detail: bool = True, detail_channels: int = 64) -> None:
        super().__init__()
        if encoder_weights is not None:
            raise ValueError(f"stdc is trained from scratch: encoder_weights must be None, not '{encoder_weights}'")
        if variant not in VARIANTS:
            raise ValueError(f"stdc: unknown variant '{variant}' (known: {', '.join(VARIANTS)})")
        self.encoder = STDCEncoder(variant)
        layers: list[nn.Module] = [conv_bn_relu(self.encoder.out_channels[-1], head_channels)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.decoder = OnLastFeature(*layers)
        self.segmentation_head = SegmentationHead(head_channels, num_classes)
        if aux:
            for index in (0, 1):  # the /16 path at /8, the /32 path at /16
                head = AuxHead(self.encoder.out_channels[index], aux_channels, num_classes)
                self.add_aux_head(head, feature=index, weight=1.0)
        if detail:
            head = nn.Sequential(conv_bn_relu(self.encoder.out_channels[2], detail_channels),
                                 nn.Conv2d(detail_channels, 1, 1))
            self.add_aux_head(head, feature=2, weight=1.0, loss="detail")
