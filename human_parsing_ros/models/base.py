"""The shape every architecture shares: ``encoder`` -> ``decoder`` -> ``segmentation_head``."""
from __future__ import annotations

import torch
from torch import nn

from .heads import AuxHead, upsample_to


class SegmentationModel(nn.Module):
    """Base class for all parsers.

    ``encoder`` maps an image to a list of feature maps, ``decoder`` turns them
    into one feature map, ``segmentation_head`` maps that to per-class logits.
    DTPR stage 2 freezes ``encoder`` and trains the parts named by
    ``stage2_modules``.
    """

    encoder: nn.Module
    decoder: nn.Module
    segmentation_head: nn.Module
    # "decoder": stage 2 trains decoder + head (U-shaped networks);
    # "classifier": only the head (bilateral / multi-resolution networks).
    stage2_default: str = "decoder"

    def __init__(self) -> None:
        super().__init__()
        self.aux_head: nn.Module | None = None  # see add_encoder_aux_head

    def forward_lowres(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the decoder's resolution (cheaper to crop and resize once)."""
        return self.segmentation_head(self.decoder(self.encoder(x)))

    def forward(self, x: torch.Tensor, with_aux: bool = False):
        """Logits at the input's resolution; with ``with_aux`` also the auxiliary logits (a list)."""
        features = self.encoder(x)
        aux = [] if self.aux_head is None else [(self.aux_head, features[self.aux_stage])]
        return self.at_input_size(self.segmentation_head(self.decoder(features)), x, with_aux, aux)

    @staticmethod
    def at_input_size(logits: torch.Tensor, x: torch.Tensor, with_aux: bool, aux_inputs):
        """What ``forward`` returns: ``logits`` upsampled to ``x``'s size and, with ``with_aux``, the
        list of ``head(feature)`` for each (head, feature) of ``aux_inputs``, upsampled the same way."""
        size = x.shape[-2:]
        logits = upsample_to(logits, size)
        if not with_aux:
            return logits
        return logits, [upsample_to(head(feature), size) for head, feature in aux_inputs]

    # Auxiliary / deep-supervision heads (training only). With ``with_aux`` an architecture
    # returns them at the input's resolution, one weight each in ``aux_weights``; the
    # trainer adds sum(w_k * loss(aux_k)). They are not part of ``stage2_modules``, so
    # stage 2 freezes them and skips their losses.
    aux_weights: tuple[float, ...] = ()

    def add_encoder_aux_head(self, stage: int, weight: float = 0.4) -> None:
        """The usual auxiliary head on encoder feature ``stage`` (e.g. ResNet layer3: 2)."""
        self.aux_head = AuxHead(self.encoder.out_channels[stage], self.num_classes)
        self.aux_stage = stage
        self.aux_weights = (weight,)

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


class SegmentationHead(nn.Conv2d):
    """A 1x1 classifier; ``out_channels`` is the class count."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(in_channels, num_classes, kernel_size=1)
