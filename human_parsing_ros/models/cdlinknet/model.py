from __future__ import annotations

from torch import nn

from ..base import SegmentationHead, SegmentationModel
from ..blocks import conv_bn_relu
from ..encoders import build_encoder
from ..registry import register_architecture
from .decoder import CDLinkNetDecoder


def encoder_strides(output_stride: int) -> tuple[int, ...]:
    """Strides of E1..E5 (stem before max pooling, then the four stages) at ``output_stride``."""
    return tuple(min(stride, output_stride) for stride in (2, 4, 8, 16, 32))


def supervision_head(channels: int, width: int, num_classes: int) -> nn.Sequential:
    """The paper's deep-supervision head on one decoder level: 3x3 + 3x3 conv-BN-ReLU, 1x1 to classes."""
    return nn.Sequential(conv_bn_relu(channels, width, 3), conv_bn_relu(width, width, 3),
                         nn.Conv2d(width, num_classes, 1))


@register_architecture("cdlinknet")
class CDLinkNet(SegmentationModel):
    """C-DLinkNet (LinkNet with an ASPP centre and a Smooth module), as its paper builds it.

    ResNet-101 by default, E5 dilated (output stride 16); decoder blocks D5..D2 (1x1 to C/4, transposed
    convolution, 1x1; summed with E4..E1), D2 at stride 2; Smooth: every level projected to D2's size
    by decoder blocks, concatenated, two 3x3 convolutions to ``smooth_channels`` (512); the classifier
    reads Smooth ("refine"). Deep supervision is built in: one head per decoder level (3x3 + 3x3 of
    min(level channels, ``head_channels``) + 1x1), loss weight 0.5 each: L_refine + 0.5 (L_D1 + ... + L_D4).
    The heads are outside ``decoder`` and ``segmentation_head``, so stage 2 freezes them.
    ``aux`` is accepted for a uniform interface and must stay False.
    """

    stage2_default = "decoder"

    def __init__(
        self,
        num_classes: int,
        encoder: str = "resnet101",
        encoder_weights: str | None = None,
        output_stride: int = 16,
        aux: bool = False,
        aspp_channels: int = 256,
        atrous_rates: tuple[int, ...] | list[int] = (12, 24, 36),
        smooth_channels: int = 512,
        head_channels: int = 256,
    ) -> None:
        super().__init__()
        if aux:
            raise ValueError("cdlinknet: aux must be False (deep supervision on every decoder level is built in)")
        self.encoder = build_encoder(encoder, weights=encoder_weights, output_stride=output_stride, stride2=True)
        self.decoder = CDLinkNetDecoder(self.encoder.out_channels, encoder_strides(output_stride), aspp_channels,
                                        tuple(atrous_rates), smooth_channels)
        self.segmentation_head = SegmentationHead(smooth_channels, num_classes)
        first_level = len(self.encoder.out_channels)  # the decoder's maps follow the encoder's
        for index, channels in enumerate(self.decoder.level_channels):
            self.add_aux_head(supervision_head(channels, min(channels, head_channels), num_classes),
                              feature=first_level + index, weight=0.5)
