"""Backbones that return multi-scale feature lists, built by name."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import UserError

ENCODERS: dict[str, Callable[..., nn.Module]] = {}


def register_encoder(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        ENCODERS[name] = builder
        return builder

    return add


class EncoderWeightsError(UserError, ValueError):
    """An encoder name or encoder weights file that cannot be used; the message names it."""


def build_encoder(name: str, weights: str | None = None, output_stride: int = 16,
                  stride2: bool = False) -> nn.Module:
    """Encoder ``name``; ``weights="imagenet"`` loads torchvision's ImageNet weights; ``stride2``: the feature
    list starts with a stride-2 map (same parameters and names, one more output)."""
    if name not in ENCODERS:
        raise EncoderWeightsError(f"unknown encoder '{name}' (known: {', '.join(sorted(ENCODERS))})")
    if weights not in (None, "imagenet"):
        raise EncoderWeightsError(f"encoder weights must be 'imagenet' or None, not '{weights}'")
    encoder = ENCODERS[name](weights=weights, output_stride=output_stride)
    if stride2:
        encoder.with_stride2()
    return encoder


def _dilate(module: nn.Module, dilation: int) -> None:
    """Turn the strided 3x3 convs of ``module`` into stride-1 dilated ones."""
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
            conv.stride = (1, 1)
            conv.dilation = (dilation, dilation)
            conv.padding = (dilation, dilation)


class MobileNetV2Encoder(nn.Module):
    """torchvision's MobileNetV2 features, cut into four stages (strides 4, 8, 16, 32); ``with_stride2`` adds
    the map after ``features[1]`` (stride 2, 16 channels) in front."""

    # Stage boundaries in torchvision's ``features`` list and their widths.
    _stages = ((0, 4), (4, 7), (7, 14), (14, 18))
    _stride2_end = 2  # features[0:2] of the first stage end at stride 2
    out_channels = (24, 32, 96, 320)
    stride2 = False

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

    def with_stride2(self) -> None:
        self.stride2 = True
        self.out_channels = (16, *type(self).out_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, stage in enumerate(self.stages):
            if index == 0 and self.stride2:
                x = stage[:self._stride2_end](x)
                features.append(x)
                x = stage[self._stride2_end:](x)
            else:
                x = stage(x)
            features.append(x)
        return features


@register_encoder("mobilenet_v2")
def _mobilenet_v2(weights: str | None, output_stride: int) -> nn.Module:
    return MobileNetV2Encoder(weights=weights, output_stride=output_stride)


class ResNetEncoder(nn.Module):
    """torchvision's ResNet (stem + layer1..4; strides 4, 8, 16, 32), dilated for output stride 8 or 16;
    ``with_stride2`` adds the stem's map before max pooling (stride 2, 64 channels) in front."""

    stride2 = False

    def __init__(self, depth: int, weights: str | None = None, output_stride: int = 32) -> None:
        super().__init__()
        import torchvision.models as tvm

        dilate = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}
        if output_stride not in dilate:
            raise ValueError(f"output_stride must be 8, 16 or 32, not {output_stride}")
        builder, weight_enum = {18: (tvm.resnet18, tvm.ResNet18_Weights), 34: (tvm.resnet34, tvm.ResNet34_Weights),
                                50: (tvm.resnet50, tvm.ResNet50_Weights),
                                101: (tvm.resnet101, tvm.ResNet101_Weights)}[depth]
        bottleneck = depth >= 50
        if not bottleneck and output_stride != 32:
            raise ValueError(f"resnet{depth} (basic blocks) supports output_stride 32 only")
        kwargs = {"replace_stride_with_dilation": dilate[output_stride]} if bottleneck else {}
        net = builder(weights=weight_enum.IMAGENET1K_V1 if weights == "imagenet" else None, **kwargs)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        width = 256 if bottleneck else 64
        self.out_channels = (width, width * 2, width * 4, width * 8)

    def with_stride2(self) -> None:
        self.stride2 = True
        self.out_channels = (self.stem[0].out_channels, *self.out_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        if self.stride2:
            x = self.stem[:-1](x)  # conv, BN, ReLU: before max pooling
            features.append(x)
            x = self.stem[-1](x)
        else:
            x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


def _register_resnet(depth: int) -> None:
    @register_encoder(f"resnet{depth}")
    def _build(weights: str | None, output_stride: int) -> nn.Module:
        return ResNetEncoder(depth, weights=weights, output_stride=output_stride)


for _depth in (18, 34, 50, 101):
    _register_resnet(_depth)
