"""The shape every architecture shares: ``encoder`` -> ``decoder`` -> ``segmentation_head``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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

    def forward_lowres(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the decoder's resolution (cheaper to crop and resize once)."""
        return self.segmentation_head(self.decoder(self.encoder(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.forward_lowres(x)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    @property
    def num_classes(self) -> int:
        return self.segmentation_head.out_channels

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
