"""RP R-CNN (Yang et al., "Renovating Parsing R-CNN for Accurate Multiple Human Parsing", ECCV 2020).

Backbone -> GSE-FPN (S2..S6 and a semantic parts map) -> torchvision's RPN
and Fast R-CNN box branch (person vs background) -> the parsing branch on
S2 RoIs (GCE head, 128 x 128 part maps) -> PRSN (the part mIoU of each
instance). Training returns the unweighted losses by name
(``LOSS_WEIGHTS`` are the paper's weights: L = L_rpn + L_box + 2 L_par +
2 L_sem + L_res); inference returns per image the persons' boxes, scores
S = sqrt(S_cls x S_iou), 128 x 128 part probabilities, and the semantic
parts map (``human_parsing_ros.multi_person`` pastes and merges them).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign, box_iou, roi_align

from ...class_sets import IGNORE_INDEX
from ..encoders import build_encoder
from ..registry import register_architecture
from .gse_fpn import GSEFPN
from .parsing_head import ParsingHead, ParsingRescoring

LOSS_WEIGHTS = {"loss_objectness": 1.0, "loss_rpn_box_reg": 1.0, "loss_classifier": 1.0, "loss_box_reg": 1.0,
                "loss_parsing": 2.0, "loss_semantic": 2.0, "loss_rescoring": 1.0}


@register_architecture("rp_rcnn")
class RPRCNN(nn.Module):
    """Multi-person parser. ``forward(images, targets)``: losses (training) or per-image results (eval).

    Paper settings are the defaults (256-channel pyramid, 512-channel parsing branch, 16 parsing RoIs and
    512 box RoIs per image, 1024-d box head, 2000/1000 proposals, 100 detections); the CPU recipe narrows them.

    ``targets`` (training): per image a dict with ``boxes`` (N x 4, x1 y1 x2 y2), ``persons`` (H x W: 0 =
    nobody, k = the person of box k-1) and ``parts`` (H x W class ids, 255 ignored).
    """

    multi_person = True  # a ServableModel (models/protocol.py) whose eval forward gives per-image person dicts
    legacy_aux_keys: dict[str, str] = {}  # no older layout of this architecture exists

    def __init__(self, num_classes: int, encoder: str = "mobilenet_v2", encoder_weights: str | None = None,
                 global_semantic: bool = True, rescoring: bool = True, parsing_dim: int = 512,
                 parsing_convs: int = 4, parsing_rois: int = 16, box_rois: int = 512, box_dim: int = 1024,
                 proposals: tuple[int, int] = (2000, 1000), detections: int = 100,
                 min_box_score: float = 0.05, roi_size: int = 32, channels: int = 256) -> None:
        super().__init__()
        self.encoder = build_encoder(encoder, encoder_weights, output_stride=32)
        self.neck = GSEFPN(tuple(self.encoder.out_channels), num_classes, channels, global_semantic)
        width = self.neck.out_channels
        anchors = AnchorGenerator(sizes=((32,), (64,), (128,), (256,), (512,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
        train_n, test_n = int(proposals[0]), int(proposals[1])
        self.rpn = RegionProposalNetwork(anchors, RPNHead(width, 3), 0.7, 0.3, 256, 0.5,
                                         {"training": train_n, "testing": test_n},
                                         {"training": train_n, "testing": test_n}, 0.7)
        box_pool = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], output_size=7, sampling_ratio=2)
        self.roi_heads = RoIHeads(box_pool, TwoMLPHead(width * 49, box_dim), FastRCNNPredictor(box_dim, 2),
                                  0.5, 0.5, box_rois, 0.25, None, min_box_score, 0.5, detections)
        self.parsing_head = ParsingHead(width, parsing_dim, num_classes, parsing_convs)
        self.rescoring = ParsingRescoring(parsing_dim, num_classes) if rescoring else None
        self.parsing_rois, self.roi_size = int(parsing_rois), int(roi_size)

    @property
    def num_classes(self) -> int:
        return self.parsing_head.num_classes

    @property
    def detection_limit(self) -> int:
        """The most persons one image's inference returns (``detections``): the box branch keeps the best-scored
        boxes after NMS and cuts the rest, uncounted."""
        return int(self.roi_heads.detections_per_img)

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("rp_rcnn needs targets in training mode")
        sizes = [tuple(images.shape[-2:])] * images.shape[0]
        levels, semantic = self.neck(self.encoder(images))
        detection_targets = None if targets is None else [
            {"boxes": t["boxes"].float(), "labels": torch.ones(len(t["boxes"]), dtype=torch.int64,
                                                               device=images.device)} for t in targets]
        proposals, rpn_losses = self.rpn(ImageList(images, sizes), levels, detection_targets)
        detections, box_losses = self.roi_heads(levels, proposals, sizes, detection_targets)
        if self.training:
            losses = {**rpn_losses, **box_losses}
            losses.update(self._parsing_losses(levels["p2"], proposals, targets))
            if semantic is not None:
                labels = torch.stack([t["parts"] for t in targets]).long()
                logits = F.interpolate(semantic, size=images.shape[-2:], mode="bilinear", align_corners=False)
                losses["loss_semantic"] = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
            return losses
        return self._infer(levels["p2"], detections, semantic)

    def parse_rois(self, p2: torch.Tensor, boxes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(parsing feature, 128 x 128 logits) of the boxes (per image, input pixels) on S2."""
        rois = roi_align(p2, boxes, output_size=self.roi_size, spatial_scale=0.25, sampling_ratio=2, aligned=True)
        return self.parsing_head(rois)

    def _parsing_losses(self, p2: torch.Tensor, proposals: list[torch.Tensor],
                        targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        boxes, wanted = [], []
        for image_proposals, target in zip(proposals, targets):
            chosen, parts = sample_parsing_rois(image_proposals.detach(), target, self.parsing_rois,
                                                4 * self.roi_size)
            boxes.append(chosen)
            wanted.append(parts)
        feature, logits = self.parse_rois(p2, boxes)
        target = torch.cat(wanted)
        if target.numel() == 0:  # no person in the batch: keep the graph, add nothing
            zero = logits.sum() * 0.0
            return {"loss_parsing": zero, **({"loss_rescoring": zero} if self.rescoring is not None else {})}
        losses = {"loss_parsing": F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)}
        if self.rescoring is not None:
            probabilities = logits.detach().softmax(1)
            achieved = instance_mean_iou(probabilities.argmax(1), target, self.num_classes)
            losses["loss_rescoring"] = F.mse_loss(self.rescoring(feature, probabilities), achieved)
        return losses

    def _infer(self, p2: torch.Tensor, detections: list[dict[str, torch.Tensor]],
               semantic: torch.Tensor | None) -> list[dict[str, torch.Tensor]]:
        boxes = [d["boxes"] for d in detections]
        feature, logits = self.parse_rois(p2, boxes)
        probabilities = logits.softmax(1)
        quality = (self.rescoring(feature, probabilities).clamp(0.0, 1.0) if self.rescoring is not None
                   else torch.ones(len(probabilities), device=probabilities.device))
        results, start = [], 0
        for index, detection in enumerate(detections):
            end = start + len(detection["boxes"])
            box_scores = detection["scores"]
            results.append({"boxes": detection["boxes"], "box_scores": box_scores, "iou_scores": quality[start:end],
                            "scores": torch.sqrt(box_scores * quality[start:end]),
                            "parts": probabilities[start:end],
                            "semantic": None if semantic is None else semantic[index].softmax(0)})
            start = end
        return results


def sample_parsing_rois(proposals: torch.Tensor, target: dict[str, torch.Tensor], count: int,
                        size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``count`` positive RoIs (proposals and ground-truth boxes with IoU >= 0.5 to a person) and their
    part targets (``count`` x ``size`` x ``size``: the matched person's parts, 0 elsewhere, 255 kept)."""
    gt = target["boxes"].to(proposals)
    if len(gt) == 0:
        return proposals.new_zeros((0, 4)), torch.zeros((0, size, size), dtype=torch.int64, device=proposals.device)
    candidates = torch.cat([proposals, gt])
    best, matched = box_iou(candidates, gt).max(1)
    positive = torch.nonzero(best >= 0.5).squeeze(1)
    positive = positive[torch.randperm(len(positive), device=positive.device)[:count]]
    rois, people = candidates[positive], matched[positive]
    return rois, crop_person_parts(target["parts"], target["persons"], rois, people + 1, size)


def crop_person_parts(parts: torch.Tensor, persons: torch.Tensor, boxes: torch.Tensor, person_ids: torch.Tensor,
                      size: int) -> torch.Tensor:
    """Nearest samples (cell centres of a ``size`` grid over each box) of one person's parts; pixels of other
    persons and outside the image are 0 (background), 255 stays 255."""
    height, width = parts.shape[-2:]
    steps = (torch.arange(size, device=boxes.device, dtype=boxes.dtype) + 0.5) / size
    xs = boxes[:, 0:1] + steps[None] * (boxes[:, 2:3] - boxes[:, 0:1])
    ys = boxes[:, 1:2] + steps[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    xi, yi = xs.floor().long(), ys.floor().long()
    inside = ((yi >= 0) & (yi < height))[:, :, None] & ((xi >= 0) & (xi < width))[:, None, :]
    yc, xc = yi.clamp(0, height - 1), xi.clamp(0, width - 1)
    part = parts.long()[yc[:, :, None], xc[:, None, :]]
    owner = persons.long()[yc[:, :, None], xc[:, None, :]]
    keep = inside & ((owner == person_ids.long()[:, None, None]) | (part == IGNORE_INDEX))
    return torch.where(keep, part, torch.zeros_like(part))


def instance_mean_iou(prediction: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per map pair (N x H x W ids): the mean IoU over the classes in either map, background included (the
    MHP evaluation's pair score); pixels with target 255 are not counted."""
    valid = target != IGNORE_INDEX
    n = prediction.shape[0]
    pred = F.one_hot(prediction.clamp(0, num_classes - 1), num_classes).bool() & valid[..., None]
    true = F.one_hot(target.clamp(0, num_classes - 1), num_classes).bool() & valid[..., None]
    inter = (pred & true).reshape(n, -1, num_classes).sum(1).float()
    union = (pred | true).reshape(n, -1, num_classes).sum(1).float()
    present = union > 0
    return torch.where(present, inter / union.clamp(min=1), torch.zeros_like(inter)).sum(1) / present.sum(1).clamp(
        min=1)
