from __future__ import annotations

from .. import register_architecture
from ..base import SegmentationHead, SegmentationModel
from ..encoders import build_encoder
from ..heads import AuxHead, upsample_to
from .decoder import DeepLabV3PlusDecoder


@register_architecture("deeplabv3plus")
class DeepLabV3Plus(SegmentationModel):
    """DeepLabv3+ (Chen et al., ECCV 2018) with a light separable-conv decoder.

    Output stride 16 by default; the decoder refines at stride 4. ``aux=True`` adds
    the usual auxiliary head on the third encoder stage (loss weight 0.4).
    """

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
        self.aux_head = AuxHead(self.encoder.out_channels[2], num_classes) if aux else None
        self.aux_weights = (0.4,) if aux else ()

    def forward(self, x, with_aux: bool = False):
        if self.aux_head is None:
            return super().forward(x, with_aux)
        features = self.encoder(x)
        logits = upsample_to(self.segmentation_head(self.decoder(features)), x.shape[-2:])
        if not with_aux:
            return logits
        return logits, [upsample_to(self.aux_head(features[2]), x.shape[-2:])]
