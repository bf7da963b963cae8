"""Backbones that return multi-scale feature lists, built by name."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

ENCODERS: dict[str, Callable[..., nn.Module]] = {}


def register_encoder(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        ENCODERS[name] = builder
        return builder

    return add


def build_encoder(name: str, weights: str | None = None, output_stride: int = 16) -> nn.Module:
    """Encoder ``name``; ``weights="imagenet"`` loads torchvision's ImageNet weights."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder '{name}' (known: {', '.join(sorted(ENCODERS))})")
    if weights not in (None, "imagenet"):
        raise ValueError(f"encoder weights must be 'imagenet' or None, not '{weights}'")
    return ENCODERS[name](weights=weights, output_stride=output_stride)


def _dilate(module: nn.Module, dilation: int) -> None:
    """Turn the strided 3x3 convs of ``module`` into stride-1 dilated ones."""
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
            conv.stride = (1, 1)
            conv.dilation = (dilation, dilation)
            conv.padding = (dilation, dilation)


class MobileNetV2Encoder(nn.Module):
    """torchvision's MobileNetV2 features, cut into four stages (strides 4, 8, 16, 32)."""

    # Stage boundaries in torchvision's ``features`` list and their widths.
    _stages = ((0, 4), (4, 7), (7, 14), (14, 18))
    out_channels = (24, 32, 96, 320)

    def __init__(self, weights: str | None = None, output_stride: int = 16) -> None:
        super().__init__()
        from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

        tv_weights = MobileNet_V2_Weights.IMAGENET1K_V1 if weights == "imagenet" else None
        features = mobilenet_v2(weights=tv_weights).features
        self.stages = nn.ModuleList(nn.Sequential(*features[a:b]) for a, b in self._stages)
        if output_stride == 16:
            _dilate(self.stages[3], 2)
        elif output_stride == 8:
            _dilate(self.stages[2], 2)
            _dilate(self.stages[3], 4)
        elif output_stride != 32:
            raise ValueError(f"output_stride must be 8, 16 or 32, not {output_stride}")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


@register_encoder("mobilenet_v2")
def _mobilenet_v2(weights: str | None, output_stride: int) -> nn.Module:
    return MobileNetV2Encoder(weights=weights, output_stride=output_stride)
