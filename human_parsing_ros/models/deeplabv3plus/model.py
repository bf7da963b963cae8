from __future__ import annotations

from ..base import ENCODER_AUX_HEAD_OLD_KEYS, SegmentationHead, SegmentationModel
from ..blocks import AuxHead
from ..encoders import build_encoder
from ..registry import register_architecture
from .decoder import DeepLabV3PlusDecoder


@register_architecture("deeplabv3plus")
class DeepLabV3Plus(SegmentationModel):
    """DeepLabv3+ (Chen et al., ECCV 2018) with a light separable-conv decoder.

    Output stride 16 by default; the decoder refines at stride 4. ``aux=True`` adds
    the usual auxiliary head on the third encoder stage (loss weight 0.4).
    """

    legacy_aux_keys = ENCODER_AUX_HEAD_OLD_KEYS

    def __init__(
        self,
        num_classes: int,
        encoder: str = "mobilenet_v2",
        encoder_weights: str | None = None,
        output_stride: int = 16,
        decoder_channels: int = 128,
        atrous_rates: tuple[int, ...] | list[int] = (6, 12, 18),
        aux: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = build_encoder(encoder, weights=encoder_weights, output_stride=output_stride)
        self.decoder = DeepLabV3PlusDecoder(
            self.encoder.out_channels, channels=decoder_channels, atrous_rates=tuple(atrous_rates)
        )
        self.segmentation_head = SegmentationHead(decoder_channels, num_classes)
        if aux:
            aux_head = AuxHead(self.encoder.out_channels[2], 256, num_classes, dropout=0.1)
            self.add_aux_head(aux_head, feature=2, weight=0.4)
