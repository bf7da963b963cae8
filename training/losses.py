"""Losses of the DTPR trainer.

``masked_cross_entropy`` is the stage-2 loss: cross-entropy averaged over the
pixels a PRA/PRN mask keeps (the masks come from ``training.sampling``).
Baselines and extras: ``focal_loss``, ``class_balanced_weights``,
``inter_class_loss``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from human_parsing_ros.class_sets import IGNORE_INDEX


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
                         weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy summed over mask pixels, divided by the number of mask pixels.

    ``mask`` None means all non-ignored pixels (plain CE mean). With a class
    ``weight`` the divisor is the summed weight of the mask pixels, as in
    ``F.cross_entropy(weight=...)``. No kept pixel gives a zero still connected to ``logits``.
    """
    keep = _valid_mask(target, mask, ignore_index)
    per_pixel = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index,
                                reduction="none")
    if weight is None:
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
    """RIM inter-class loss: per valid pixel with ground truth i, sum_{j != i} ReLU(V_j + margin - V_i).

    V are the logits. Averaged over valid (masked) pixels; the caller
    multiplies by lambda. No valid pixel gives a connected zero.
    """
    keep = _valid_mask(target, mask, ignore_index)
    safe_target = torch.where(keep, target, 0).unsqueeze(1)
    true_logit = logits.gather(1, safe_target)
    hinge = F.relu(logits + margin - true_logit)
    classes = torch.arange(logits.shape[1], device=logits.device).view(1, -1, 1, 1)
    hinge = torch.where(classes == safe_target, 0, hinge).sum(dim=1)
    return _masked_mean(hinge, keep)
