"""RP R-CNN's parsing branch: Parsing R-CNN's GCE head on RoI features, and the parsing re-scoring network.

Reading taken (the RP R-CNN paper builds on Parsing R-CNN's branch without
restating it): RoIAlign on S2 to 32 x 32; GCE = ASPP (1x1, 3x3 at dilations
6, 12, 18, image pooling; fused by a 1x1) followed by an embedded-Gaussian
non-local block; ``convs`` 3x3 convolutions of ``dim`` channels (the parsing
feature, N x 512 x 32 x 32 in the paper); a stride-2 transposed convolution
to the classes (64 x 64) and a bilinear x2 to the 128 x 128 map the losses
and PRSN read. Group normalisation + ReLU after every convolution (the
paper's re-implementation adds GN to the parsing branch).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .gse_fpn import conv_gn_relu, gn_groups


class NonLocal(nn.Module):
    """Embedded-Gaussian non-local block with a residual connection (the output starts as the input)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(channels // 2, 1)
        self.theta, self.phi, self.g = (nn.Conv2d(channels, inner, 1) for _ in range(3))
        self.out = nn.Sequential(nn.Conv2d(inner, channels, 1, bias=False), nn.GroupNorm(gn_groups(channels),
                                                                                       channels))
        nn.init.zeros_(self.out[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        query = self.theta(x).flatten(2).transpose(1, 2)  # N x HW x C'
        key = self.phi(x).flatten(2)  # N x C' x HW
        value = self.g(x).flatten(2).transpose(1, 2)
        attention = torch.softmax(query @ key, dim=-1)
        context = (attention @ value).transpose(1, 2).reshape(n, value.shape[-1], h, w)
        return x + self.out(context)


class GCE(nn.Module):
    """Geometric and context encoding: ASPP then a non-local block, ``dim`` channels out."""

    def __init__(self, in_ch: int, dim: int, dilations: tuple[int, ...] = (6, 12, 18)) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_gn_relu(in_ch, dim, 1),
                                       *(conv_gn_relu(in_ch, dim, 3, d) for d in dilations)])
        self.pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, dim, 1), nn.ReLU(inplace=True))
        self.fuse = conv_gn_relu(dim * (len(dilations) + 2), dim, 1)
        self.non_local = NonLocal(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [branch(x) for branch in self.branches]
        maps.append(self.pooled(x).expand(-1, -1, *x.shape[-2:]))
        return self.non_local(self.fuse(torch.cat(maps, 1)))


class ParsingHead(nn.Module):
    """RoI features (N x in_ch x 32 x 32) -> (parsing feature N x dim x 32 x 32, logits N x C x 128 x 128)."""

    def __init__(self, in_ch: int, dim: int, num_classes: int, convs: int = 4) -> None:
        super().__init__()
        self.gce = GCE(in_ch, dim)
        self.convs = nn.Sequential(*(conv_gn_relu(dim, dim, 3) for _ in range(convs)))
        self.deconv = nn.ConvTranspose2d(dim, num_classes, 4, stride=2, padding=1)
        self.num_classes = num_classes

    def forward(self, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.convs(self.gce(rois))
        logits = F.interpolate(self.deconv(feature), scale_factor=2.0, mode="bilinear", align_corners=False)
        return feature, logits


class ParsingRescoring(nn.Module):
    """PRSN: (parsing feature, probability map) -> the instance's predicted part mIoU, N values.

    The probability map is max-pooled 4 x 4 to the feature's size and concatenated; two 3x3 128
    convolutions, global average pooling, two 256-d fully connected layers, then one output (the
    paper lists the layers up to the 256-d ones; a regressor needs the last linear map to 1).
    """

    def __init__(self, feature_ch: int, num_classes: int, dim: int = 128, hidden: int = 256) -> None:
        super().__init__()
        self.convs = nn.Sequential(conv_gn_relu(feature_ch + num_classes, dim, 3),
                                   conv_gn_relu(dim, dim, 3))
        self.fc = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                                nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, feature: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        pooled = F.max_pool2d(probabilities, kernel_size=4, stride=4)
        x = self.convs(torch.cat([feature, pooled], 1)).mean(dim=(2, 3))
        return self.fc(x).squeeze(1)
