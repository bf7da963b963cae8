from __future__ import annotations

from ..base import ENCODER_AUX_HEAD_OLD_KEYS, SegmentationHead, SegmentationModel
from ..blocks import AuxHead
from ..encoders import build_encoder
from ..registry import register_architecture
from .decoder import PSPDecoder


@register_architecture("pspnet")
class PSPNet(SegmentationModel):
    """PSPNet (Zhao et al., CVPR 2017): pyramid pooling on a dilated ResNet.

    Output stride 8 by default (logits at 1/8 of the input). ``aux=True`` adds the
    paper's auxiliary head on the third encoder stage (layer3), loss weight 0.4.
    The pyramid pooling module sits on top of the encoder, so stage 2 trains it
    with the head by default.
    """

    legacy_aux_keys = ENCODER_AUX_HEAD_OLD_KEYS

    def __init__(
        self,
        num_classes: int,
        encoder: str = "resnet50",
        encoder_weights: str | None = None,
        output_stride: int = 8,
        aux: bool = False,
        bins: tuple[int, ...] | list[int] = (1, 2, 3, 6),
        decoder_channels: int = 512,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.encoder = build_encoder(encoder, weights=encoder_weights, output_stride=output_stride)
        self.decoder = PSPDecoder(self.encoder.out_channels, bins=tuple(bins), channels=decoder_channels,
                                  dropout=dropout)
        self.segmentation_head = SegmentationHead(decoder_channels, num_classes)
        if aux:
            aux_head = AuxHead(self.encoder.out_channels[2], 256, num_classes, dropout=0.1)
            self.add_aux_head(aux_head, feature=2, weight=0.4)
