"""Losses of the DTPR trainer.

``masked_cross_entropy`` is the stage-2 loss: cross-entropy averaged over the
pixels a PRA/PRN mask keeps (the masks come from ``training.sampling``).
Baselines and extras: ``focal_loss``, ``class_balanced_weights``,
``inter_class_loss``; SCHP's ``ce_lovasz``; auxiliary-head losses by name in ``AUX_LOSSES``
(``detail_loss``: STDC's detail guidance; ``edge``: CE2P's edge branch, ``schp.losses.edge_branch_loss``).
PARSING_LOSSES and REDUCTIONS live in ``training/config.py`` with the other choices.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from human_parsing_ros.class_sets import IGNORE_INDEX
from training.config import REDUCTIONS
from training.schp.losses import SoftTargets, edge_branch_loss, lovasz_softmax, soft_target_kl


def _masked_mean(per_pixel: torch.Tensor, keep: torch.Tensor,
                 denom: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of ``per_pixel`` over ``keep`` divided by ``denom`` (default: the kept count).

    Without any kept pixel the numerator is an exact 0 whose graph still
    reaches the logits (zero gradient, never NaN), and the divisor is clamped,
    so no host-device synchronisation is needed to detect the empty case.
    """
    if denom is None:
        denom = keep.sum().clamp(min=1)
    return torch.where(keep, per_pixel, 0).sum() / denom


def _valid_mask(target: torch.Tensor, mask: torch.Tensor | None, ignore_index: int) -> torch.Tensor:
    valid = target != ignore_index
    return valid if mask is None else valid & mask.bool()


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                         mask: torch.Tensor | None, ignore_index: int = IGNORE_INDEX,
                         weight: torch.Tensor | None = None, reduction: str = "kept_mean") -> torch.Tensor:
    """Cross-entropy summed over mask pixels, divided by the number of mask pixels (``kept_mean``).

    ``mask`` None means all non-ignored pixels (plain CE mean). With a class
    ``weight`` the divisor is the summed weight of the mask pixels, as in
    ``F.cross_entropy(weight=...)``. ``reduction="sum"`` is DTPR's Eq. 1, the sum
    over the sampled pixels, divided by the batch's fixed pixel count N x H x W
    (a constant, so the learning rate keeps its scale): a batch that keeps fewer
    pixels then weighs less, where ``kept_mean`` gives every batch equal weight.
    No kept pixel gives a zero still connected to ``logits``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction '{reduction}' is not one of {', '.join(REDUCTIONS)}")
    keep = _valid_mask(target, mask, ignore_index)
    if weight is not None:  # class weights are made on the CPU from the dataset's counts
        weight = weight.to(logits.device)
    per_pixel = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index,
                                reduction="none")
    if reduction == "sum":
        denom = torch.tensor(float(target.numel()), dtype=per_pixel.dtype, device=per_pixel.device)
    elif weight is None:
        denom = keep.sum().clamp(min=1)
    else:
        safe_target = torch.where(keep, target, 0)
        denom = torch.where(keep, weight.to(per_pixel.dtype)[safe_target], 0).sum()
        denom = denom.clamp(min=torch.finfo(per_pixel.dtype).tiny)
    return _masked_mean(per_pixel, keep, denom)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               ignore_index: int = IGNORE_INDEX, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Focal loss (Lin et al. 2017), -(1 - p_t)^gamma log p_t, mean over valid (masked) pixels."""
    keep = _valid_mask(target, mask, ignore_index)
    safe_target = torch.where(keep, target, 0).unsqueeze(1)
    log_pt = F.log_softmax(logits, dim=1).gather(1, safe_target).squeeze(1)
    modulation = (1.0 - log_pt.exp()).clamp(min=0.0).pow(gamma) if gamma else 1.0
    return _masked_mean(-modulation * log_pt, keep)


def class_balanced_weights(pixel_counts: torch.Tensor, beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights (Cui et al., CVPR 2019) from per-class pixel counts.

    Effective number E_n = (1 - beta^n) / (1 - beta) (beta = 1 means E_n = n);
    weight proportional to 1 / E_n, normalised so the weights of the classes
    with n > 0 sum to C (the total number of classes, as in the paper).
    Classes with n = 0 get weight 0: they have no pixel to weigh, and a zero
    keeps them from inflating the normalisation. Returns float32 [C].
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    counts = pixel_counts.detach().to(torch.float64)
    seen = counts > 0
    weights = torch.zeros_like(counts)
    if not bool(seen.any()):
        return weights.float()
    n = counts[seen]
    if beta == 1.0:
        effective = n
    elif beta == 0.0:
        effective = torch.ones_like(n)
    else:
        log_beta = math.log(beta)
        effective = torch.expm1(n * log_beta) / math.expm1(log_beta)
    inverse = 1.0 / effective
    weights[seen] = inverse * (counts.numel() / inverse.sum())
    return weights.float()


def inter_class_loss(logits: torch.Tensor, target: torch.Tensor, margin: float = 1.0,
                     ignore_index: int = IGNORE_INDEX, mask: torch.Tensor | None = None) -> torch.Tensor:
    """RIM's inter-class loss (ILM, Eq. 6-7): per valid pixel of class i, sum_{j != i} ReLU(V_j + margin - V_i).

    V are the logits (the network's last heat maps). Eq. 6-7 sum this over the
    region of every class; we average it over the valid (masked) pixels instead,
    so that lambda = 1 (the paper's) does not depend on the image size. The
    j = i term of Eq. 6 is the constant ReLU(margin) with no gradient, left out.
    The caller multiplies by lambda. No valid pixel gives a connected zero.
    """
    keep = _valid_mask(target, mask, ignore_index)
    safe_target = torch.where(keep, target, 0).unsqueeze(1)
    true_logit = logits.gather(1, safe_target)
    hinge = F.relu(logits + margin - true_logit)
    classes = torch.arange(logits.shape[1], device=logits.device).view(1, -1, 1, 1)
    hinge = torch.where(classes == safe_target, 0, hinge).sum(dim=1)
    return _masked_mean(hinge, keep)


# STDC's detail guidance (Fan et al., CVPR 2021): the boundaries of the label map, found by a Laplacian
# at strides 1, 2 and 4, fused 0.6 / 0.3 / 0.1 and thresholded. STDC declares the fusion weights trainable,
# but a hard threshold follows them, so no gradient ever reaches them: they stay at these initial values.
_LAPLACIAN = ((-1.0, -1.0, -1.0), (-1.0, 8.0, -1.0), (-1.0, -1.0, -1.0))
DETAIL_STRIDES = (1, 2, 4)
DETAIL_FUSION = (0.6, 0.3, 0.1)
DETAIL_THRESHOLD = 0.1


def detail_targets(target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Binary boundary map (float [N, 1, H, W]) of the label map ``target`` [N, H, W] (ignore as background)."""
    ids = torch.where(target == ignore_index, 0, target).unsqueeze(1).float()
    kernel = torch.tensor(_LAPLACIAN, dtype=ids.dtype, device=ids.device).view(1, 1, 3, 3)
    scales = []
    for stride in DETAIL_STRIDES:
        edges = F.conv2d(ids, kernel, stride=stride, padding=1).clamp(min=0)
        if stride > 1:
            edges = F.interpolate(edges, size=ids.shape[-2:], mode="nearest")
        scales.append((edges > DETAIL_THRESHOLD).to(ids.dtype))
    fusion = torch.tensor(DETAIL_FUSION, dtype=ids.dtype, device=ids.device).view(1, -1, 1, 1)
    return ((torch.cat(scales, dim=1) * fusion).sum(dim=1, keepdim=True) > DETAIL_THRESHOLD).to(ids.dtype)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - (2 |P ∩ G| + smooth) / (|P| + |G| + smooth) per image on sigmoid probabilities, mean over images."""
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    overlap = (prob * target).sum(1)
    return (1 - (2 * overlap + smooth) / (prob.sum(1) + target.sum(1) + smooth)).mean()


def detail_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """STDC's detail loss: binary cross-entropy + Dice between the detail head's one-channel ``logits``
    (at the labels' size) and ``detail_targets(target)``."""
    boundaries = detail_targets(target, ignore_index)
    return F.binary_cross_entropy_with_logits(logits, boundaries) + dice_loss(logits, boundaries)


def ce_lovasz(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SCHP's parsing loss: 0.5 cross-entropy + 0.5 Lovász-softmax."""
    return 0.5 * masked_cross_entropy(logits, target, None) + 0.5 * lovasz_softmax(logits, target)


def parsing_loss(logits: torch.Tensor, target: torch.Tensor, name: str, soft: SoftTargets | None) -> torch.Tensor:
    """``name`` ("ce" or "ce_lovasz") on parsing ``logits``; with self-correction's ``soft`` targets the
    cross-entropy is the KL towards them (the Lovász term keeps the labels, as SCHP's)."""
    if soft is None:
        cross_entropy = masked_cross_entropy(logits, target, None)
    else:
        cross_entropy = soft_target_kl(logits, soft.parsing, target)
    return cross_entropy if name == "ce" else 0.5 * cross_entropy + 0.5 * lovasz_softmax(logits, target)


@dataclass(frozen=True)
class AuxContext:
    """What an auxiliary loss may read beside its own logits and the labels: every parsing output of the
    batch (the main one first) and self-correction's soft targets (None outside its cycles)."""

    parsing: tuple[torch.Tensor, ...]
    soft: SoftTargets | None = None


# Losses an auxiliary head may name (``SegmentationModel.add_aux_head(..., loss=name)``), called as
# loss(aux_logits, labels, AuxContext).
AUX_LOSSES = {
    "ce": lambda logits, target, context: parsing_loss(logits, target, "ce", context.soft),
    "ce_lovasz": lambda logits, target, context: parsing_loss(logits, target, "ce_lovasz", context.soft),
    "detail": lambda logits, target, context: detail_loss(logits, target),
    "edge": lambda logits, target, context: edge_branch_loss(logits, target, context.parsing, context.soft),
}
