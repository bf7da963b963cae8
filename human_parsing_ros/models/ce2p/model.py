from __future__ import annotations

from torch import nn

from ..base import SegmentationHead, SegmentationModel
from ..encoders import build_encoder
from ..registry import register_architecture
from .decoder import CE2PDecoder
from .encoder import SCHPResNet

# The feature list: the encoder's four maps, then the decoder's parsing features, edge logits and fusion.
PARSING_FEATURES, EDGE_LOGITS = 4, 5


@register_architecture("ce2p")
class CE2P(SegmentationModel):
    """CE2P as SCHP (Li et al., TPAMI 2020) trains it: PSP context, parsing decoder, edge branch, fusion.

    The output (``forward``, ``forward_lowres``, what the node runs) is the fusion branch's, at
    stride 4; SCHP trains it with ``stage1.loss: ce_lovasz``. The parsing branch's classifier is
    auxiliary head 0 with SCHP's parsing loss (0.5 CE + 0.5 Lovász, weight 1, as SCHP weighs its
    two parsing outputs alike); auxiliary head 1 passes the edge logits (2 classes, stride 4,
    feature-list map ``EDGE_LOGITS``) to SCHP's edge loss with its consistency term (weight 1 =
    SCHP's lambda_e). ``encoder="resnet101_schp"`` is SCHP's network (its
    checkpoints import with ``human_parsing_import_schp``); any zoo encoder with four maps at
    strides 4, 8, 16, 16 works too (``mobilenet_v2`` trains on a CPU).
    """

    def __init__(self, num_classes: int, encoder: str = "resnet101_schp", encoder_weights: str | None = None,
                 edge_classes: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = SCHPResNet(weights=encoder_weights) if encoder == "resnet101_schp" else \
            build_encoder(encoder, weights=encoder_weights, output_stride=16)
        self.decoder = CE2PDecoder(self.encoder.out_channels, edge_classes=edge_classes, dropout=dropout)
        self.segmentation_head = SegmentationHead(256, num_classes)
        self.add_aux_head(nn.Conv2d(256, num_classes, 1), feature=PARSING_FEATURES, weight=1.0, loss="ce_lovasz")
        self.add_aux_head(nn.Identity(), feature=EDGE_LOGITS, weight=1.0, loss="edge")
