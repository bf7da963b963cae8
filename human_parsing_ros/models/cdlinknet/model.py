from __future__ import annotations

from torch import nn

from .. import register_architecture
from ..base import SegmentationHead, SegmentationModel
from ..encoders import build_encoder
from .decoder import CDLinkNetDecoder


@register_architecture("cdlinknet")
class CDLinkNet(SegmentationModel):
    """C-DLinkNet: a LinkNet encoder-decoder on a ResNet with an ASPP centre block and a Smooth
    module fusing all decoder levels ("refine" output, stride 4).

    Deep supervision is always on: a 1x1 classifier on every decoder level (strides 16,
    8, 4 for a four-stage ResNet; the decoder returns the levels before its output) gives
    one auxiliary output each, loss weight 0.5. Those classifiers are outside ``decoder``
    and ``segmentation_head``, so stage 2 freezes them. U-shaped: stage 2 trains the whole
    decoder by default. ``aux`` is accepted for a uniform interface and must stay False
    (deep supervision is built in).
    """

    stage2_default = "decoder"
    legacy_aux_keys = {"aux_classifiers.": "aux_heads."}

    def __init__(
        self,
        num_classes: int,
        encoder: str = "resnet50",
        encoder_weights: str | None = None,
        output_stride: int = 32,
        aux: bool = False,
        aspp_channels: int = 256,
        atrous_rates: tuple[int, ...] | list[int] = (12, 24, 36),
        smooth_channels: int = 64,
    ) -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError("cdlinknet: output_stride must be 32 (the decoder upsamples every encoder level)")
        if aux:
            raise ValueError("cdlinknet: aux must be False (deep supervision on every decoder level is built in)")
        self.encoder = build_encoder(encoder, weights=encoder_weights, output_stride=output_stride)
        self.decoder = CDLinkNetDecoder(self.encoder.out_channels, aspp_channels=aspp_channels,
                                        atrous_rates=tuple(atrous_rates), smooth_channels=smooth_channels)
        self.segmentation_head = SegmentationHead(smooth_channels, num_classes)
        first_level = len(self.encoder.out_channels)  # the decoder's maps follow the encoder's
        for index, channels in enumerate(self.decoder.level_channels):
            self.add_aux_head(nn.Conv2d(channels, num_classes, 1), feature=first_level + index, weight=0.5)
