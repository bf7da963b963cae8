"""The shape every architecture shares: ``encoder`` -> ``decoder`` -> ``segmentation_head``."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import upsample_to
from .protocol import rename_legacy_keys

# The aux-head keys of the ResNet/MobileNet parsers before ``aux_heads`` (an ``AuxHead`` then
# was one flat nn.Sequential at ``aux_head``): old prefix -> new prefix.
ENCODER_AUX_HEAD_OLD_KEYS = {"aux_head.0.": "aux_heads.0.conv.0.", "aux_head.1.": "aux_heads.0.conv.1.",
                             "aux_head.4.": "aux_heads.0.classifier."}


class SegmentationModel(nn.Module):
    """Base class for the single-map parsers (a ``ServableModel`` with ``multi_person`` False); owns the one
    ``forward``.

    ``encoder`` maps an image to a list of feature maps; ``decoder`` reads the ones it
    needs and returns one map, or a list of maps whose last one is its output;
    ``segmentation_head`` maps that last map to per-class logits. The feature list is
    the encoder's maps followed by the decoder's. Auxiliary heads (training only) are
    declared with ``add_aux_head``: each reads one map of the feature list.
    DTPR stage 2 freezes ``encoder`` and trains the parts named by ``stage2_modules``.
    """

    encoder: nn.Module
    decoder: nn.Module
    segmentation_head: nn.Module
    # "decoder": stage 2 trains decoder + head (U-shaped networks);
    # "classifier": only the head (bilateral / multi-resolution networks).
    stage2_default: str = "decoder"
    # One map of per-pixel logits (False); a multi-person network declares True and its own contract.
    multi_person: bool = False
    # Old spellings of this architecture's aux-head keys (old prefix -> new prefix), renamed on load.
    legacy_aux_keys: dict[str, str] = {}

    def __init__(self) -> None:
        super().__init__()
        # Auxiliary / deep-supervision heads. With ``with_aux`` ``forward`` returns their logits
        # at the input's resolution, one weight and loss name each in ``aux_weights`` and
        # ``aux_losses``; the trainer adds sum(w_k * loss_k(aux_k, labels)). They are not part of
        # ``stage2_modules``, so stage 2 freezes them and skips their losses.
        self.aux_heads = nn.ModuleList()
        self.aux_features: tuple[int, ...] = ()  # the feature-list index each head reads
        self.aux_weights: tuple[float, ...] = ()
        self.aux_losses: tuple[str, ...] = ()  # "ce" | "ce_lovasz" (the labels), "detail" (STDC), "edge" (CE2P)
        self.register_load_state_dict_pre_hook(_rename_legacy_aux_keys)

    def add_aux_head(self, head: nn.Module, feature: int, weight: float, loss: str = "ce") -> None:
        """Declare an auxiliary head reading map ``feature`` of the feature list, trained by ``loss`` (a name
        in ``training.losses.AUX_LOSSES``) with weight ``weight``."""
        self.aux_heads.append(head)
        self.aux_features += (feature,)
        self.aux_weights += (weight,)
        self.aux_losses += (loss,)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature maps, then the decoder's; the last one feeds ``segmentation_head``."""
        features = list(self.encoder(x))
        decoded = self.decoder(features)
        return features + (decoded if isinstance(decoded, list) else [decoded])

    def forward_lowres(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the decoder's resolution (cheaper to crop and resize once)."""
        return self.segmentation_head(self.feature_maps(x)[-1])

    def forward(self, x: torch.Tensor, with_aux: bool = False):
        """Logits at the input's resolution; with ``with_aux`` also the auxiliary logits (a list)."""
        features = self.feature_maps(x)
        size = x.shape[-2:]
        logits = _full_size(self.segmentation_head(features[-1]), size)
        if not with_aux:
            return logits
        return logits, [_full_size(head(features[i]), size) for head, i in zip(self.aux_heads, self.aux_features)]

    @property
    def num_classes(self) -> int:
        return self.segmentation_head.out_channels

    def freeze_for_stage2(self, mode: str | None = None) -> list[nn.Parameter]:
        """Freeze everything but ``stage2_modules(mode)``, BatchNorm statistics included.

        Frozen parts stay in eval mode through any later ``train()`` call, so their
        running statistics never move. Returns the parameters left trainable.
        """
        trainable = self.stage2_modules(mode)
        keep = {id(p) for module in trainable for p in module.parameters()}
        for param in self.parameters():
            param.requires_grad = id(param) in keep
        kept_modules = {id(m) for module in trainable for m in module.modules()}
        self._frozen_modules = [m for m in self.modules() if id(m) not in kept_modules and m is not self]
        self.train(self.training)
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> SegmentationModel:
        super().train(mode)
        for module in getattr(self, "_frozen_modules", ()):
            module.training = False  # per module, not eval(): a frozen parent may hold a trained child
        return self

    def stage2_modules(self, mode: str | None = None) -> list[nn.Module]:
        """Modules that DTPR stage 2 trains: ``mode`` is "decoder" or "classifier"."""
        mode = mode or self.stage2_default
        if mode == "decoder":
            return [self.decoder, self.segmentation_head]
        if mode == "classifier":
            return [self.segmentation_head]
        raise ValueError(f"stage-2 mode must be 'decoder' or 'classifier', not '{mode}'")


def _full_size(logits: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """``logits`` upsampled to ``size`` in the default (NCHW) memory format, whatever the network's: the losses'
    softmax over classes runs 2-3x slower on a channels-last map on a CPU, and the copy is cheapest before the
    upsampling."""
    return upsample_to(logits.contiguous(), size)


def _rename_legacy_aux_keys(model: SegmentationModel, state: dict[str, torch.Tensor], prefix: str,
                            *_: object) -> None:
    rename_legacy_keys(state, model.legacy_aux_keys, prefix)


class SegmentationHead(nn.Conv2d):
    """A 1x1 classifier; ``out_channels`` is the class count."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(in_channels, num_classes, kernel_size=1)
