"""The ResNet-101 that SCHP trains: a three-convolution stem (64, 64, 128 channels) and layer4 dilated by 2.

Module names follow SCHP's (``conv1``..``bn3``, ``layer1``..``layer4``), so its checkpoints import by
prefix. Its ImageNet initialisation is SCHP's own file (``resnet101-imagenet.pth``, the path in ``weights``),
not torchvision's.
"""
from __future__ import annotations

import os

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from ..encoders import EncoderWeightsError
from .state import abn_as_batchnorm, match_state, read_state


class SCHPResNet(nn.Module):
    """Feature maps of layer1..layer4 at strides 4, 8, 16, 16 (256, 512, 1024, 2048 channels)."""

    out_channels = (256, 512, 1024, 2048)

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 23, 3), weights: str | None = None) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64)
        self.conv2, self.bn2 = nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)
        self.conv3, self.bn3 = nn.Conv2d(64, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        widths, strides, dilations = (64, 128, 256, 512), (1, 2, 2, 1), (1, 1, 1, 2)
        in_channels = 128
        for index, (count, width, stride, dilation) in enumerate(zip(layers, widths, strides, dilations), start=1):
            setattr(self, f"layer{index}", _layer(in_channels, width, count, stride, dilation))
            in_channels = width * Bottleneck.expansion
        if weights is not None:
            self.load_state_dict(schp_imagenet_state(weights, self.state_dict()))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.maxpool(self.relu(self.bn3(self.conv3(x))))
        features = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features


def schp_imagenet_state(path: str | os.PathLike, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of SCHP's ImageNet ResNet-101 file ``path`` for a ``SCHPResNet`` whose state is ``expected``:
    its classifier (``fc.*``) dropped, the first convolution's input channels reversed because SCHP feeds
    the file BGR and this project feeds RGB, and the BatchNorm weights as SCHP's in-place ABN applies them
    (|w| + eps): the network SCHP's training starts from, whichever order the file learnt ImageNet in. Loaded
    with ``weights_only=True``; EncoderWeightsError (a ValueError) naming the file for anything else."""
    if str(path) == "imagenet":
        raise EncoderWeightsError("encoder 'resnet101_schp' has no torchvision weights: set encoder_weights to the "
                                  "path of SCHP's resnet101-imagenet.pth, start from an imported SCHP checkpoint "
                                  "(human_parsing_import_schp, model.init) or from scratch (encoder_weights: null)")
    state = read_state(path, "ImageNet ResNet-101 file", EncoderWeightsError)
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}  # the ImageNet classifier
    state = abn_as_batchnorm(match_state(path, state, expected, "SCHP's ResNet-101 (three-convolution stem)",
                                              EncoderWeightsError))
    return {**state, "conv1.weight": state["conv1.weight"].flip(1)}


def _layer(in_channels: int, width: int, count: int, stride: int, dilation: int) -> nn.Sequential:
    """``count`` bottlenecks; every one, the first too, dilated by ``dilation`` (SCHP's layer4)."""
    out_channels = width * Bottleneck.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(out_channels))
    blocks = [Bottleneck(in_channels, width, stride, downsample, dilation=dilation)]
    blocks += [Bottleneck(out_channels, width, dilation=dilation) for _ in range(count - 1)]
    return nn.Sequential(*blocks)
