"""SCHP's losses: edge targets and edge loss, Lovász-softmax, edge consistency, soft targets (see
``training/schp/__init__.py`` for what follows SCHP's code and what its description)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from human_parsing_ros.class_sets import IGNORE_INDEX


def edge_targets(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX, width: int = 3) -> torch.Tensor:
    """Edge map (int64 [N, H, W], 1 = edge) of the label maps ``labels`` [N, H, W].

    As SCHP's ``generate_edge_tensor``: of each pair of differently labelled neighbours (both labelled) one
    pixel is marked, the lower one of a vertical pair, the left one of a horizontal pair, the upper one of
    a diagonal pair, so both sides of any boundary get marks; then a ``width`` x ``width`` dilation."""
    valid = labels != ignore_index
    edge = torch.zeros_like(labels, dtype=torch.bool)
    # (marked pixel, its neighbour): below/above, left/right, upper-left/lower-right, upper-right/lower-left
    pairs = (((slice(1, None), slice(None)), (slice(None, -1), slice(None))),
             ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
             ((slice(None, -1), slice(None, -1)), (slice(1, None), slice(1, None))),
             ((slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1))))
    for (rows_a, cols_a), (rows_b, cols_b) in pairs:
        a, b = (..., rows_a, cols_a), (..., rows_b, cols_b)
        edge[a] |= (labels[a] != labels[b]) & valid[a] & valid[b]
    dilated = F.max_pool2d(edge[:, None].float(), width, stride=1, padding=width // 2)[:, 0]
    return dilated.long()


def lovasz_grad(sorted_foreground: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss for foreground flags sorted by falling error,
    along the last dimension (one row per class)."""
    total = sorted_foreground.sum(-1, keepdim=True)
    intersection = total - sorted_foreground.cumsum(-1)
    union = total + (1 - sorted_foreground).cumsum(-1)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], -1)


def lovasz_softmax(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Lovász-softmax loss over the valid pixels of the batch, mean over the classes present in it.

    All present classes are sorted in one call (a [classes, pixels] matrix) rather than one sort per class:
    the same numbers, 2-3x faster on a CPU, where this loss costs more than CE2P's forward pass. The price is
    memory: a few such matrices at once (59 classes x 16 x 400 x 400 pixels: about 0.6 GB each in fp32)."""
    labels = labels.reshape(-1)
    valid = labels != ignore_index
    kept = labels[valid]
    present = kept.unique()
    if present.numel() == 0:
        return logits.sum() * 0.0
    probs = logits.softmax(1).index_select(1, present).transpose(0, 1).reshape(len(present), -1)[:, valid]
    foreground = (present[:, None] == kept[None, :]).to(probs.dtype)
    errors, order = (foreground - probs).abs().sort(dim=1, descending=True)
    return (errors * lovasz_grad(foreground.gather(1, order))).sum(1).mean()


def edge_loss(edge_logits: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Balanced cross-entropy on the 2-class ``edge_logits``: non-edge pixels weigh the edge share of the
    batch, edge pixels the non-edge share. As SCHP, every pixel counts, unlabelled ones as non-edge (its edge
    maps have no ignore value), so the branch also learns that padding has no edges."""
    positive = edges.sum().to(edge_logits.dtype)
    total = torch.tensor(edges.numel(), dtype=edge_logits.dtype, device=edges.device)
    class_weight = torch.stack([positive / total, (total - positive) / total])
    per_pixel = F.cross_entropy(edge_logits, edges, reduction="none")
    weight = class_weight[edges]
    # a batch that is all edge (or all non-edge) weighs nothing: a connected zero, not 0 / 0
    return (weight * per_pixel).sum() / weight.sum().clamp(min=torch.finfo(per_pixel.dtype).tiny)


_NEIGHBOURS = ((0, 1), (1, 0), (1, 1), (1, -1))  # right, below, below-right, below-left: each pair once


def _pair_slices(height: int, width: int, dy: int, dx: int) -> tuple[tuple, tuple]:
    """Indices of every neighbour pair's first pixel and of its second, (``dy``, ``dx``) further."""
    first = (..., slice(0, height - dy), slice(0, width - dx) if dx >= 0 else slice(1, width))
    second = (..., slice(dy, height), slice(dx, width) if dx >= 0 else slice(0, width - 1))
    return first, second


class _NeighbourL1(torch.autograd.Function):
    """The L1 distance over channels between each pixel and its neighbour, one map per ``_NEIGHBOURS`` offset.

    The backward is written out because autograd's would fill a full [N, C, H, W] gradient for each of the
    eight slices and add them up, although the consistency loss reaches only the few pairs that are some
    edge pixel's most different neighbour: this one visits only the pairs with a non-zero gradient (on a CPU,
    a CE2P step at 256x256 otherwise spends more time here than in its convolutions). Same numbers, added in
    the same order: the sign of a zero difference is 0, as autograd's ``abs`` gradient."""

    @staticmethod
    def forward(ctx, probs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        height, width = probs.shape[-2:]
        distances = []
        for dy, dx in _NEIGHBOURS:
            first, second = _pair_slices(height, width, dy, dx)
            distances.append((probs[first] - probs[second]).abs_().sum(1))
        ctx.save_for_backward(probs)
        return tuple(distances)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        (probs,) = ctx.saved_tensors
        grad = torch.zeros_like(probs)
        # channels last, so that one pixel's distribution is one row to gather and to add to
        prob_rows, grad_rows = probs.permute(0, 2, 3, 1), grad.permute(0, 2, 3, 1)
        for (dy, dx), grad_distance in zip(_NEIGHBOURS, grads):
            if grad_distance is None:
                continue
            n, y, x = grad_distance.nonzero(as_tuple=True)  # pair (n, y, x) of the map: its first pixel below
            weight = grad_distance[n, y, x].unsqueeze(1)
            first = (n, y, x + 1 if dx < 0 else x)
            second = (n, y + dy, first[2] + dx)
            step = (prob_rows[first] - prob_rows[second]).sign_().mul_(weight)
            grad_rows.index_put_(first, step, accumulate=True)
            grad_rows.index_put_(second, step.neg_(), accumulate=True)
        return grad


def parsing_edge_probability(probs: torch.Tensor) -> torch.Tensor:
    """[N, H, W]: half the L1 distance between each pixel's class distribution ``probs`` [N, C, H, W] and
    that of its most different 8-neighbour (a neighbour outside the image counts as the same distribution).

    Each neighbour pair is compared once (right, below, below-right, below-left) and the [N, H, W] result
    serves both of its pixels: half the work over the C channels that the 8 comparisons would cost. (Where two
    neighbours tie for the largest distance, ``amax`` may split the gradient between them differently from
    the 8-map form; both are valid subgradients.)"""
    distances = []
    for (dy, dx), pair in zip(_NEIGHBOURS, _NeighbourL1.apply(probs)):
        left = 0 if dx >= 0 else 1  # where the pair's first pixel sits; its second sits (dy, dx) further
        distances.append(F.pad(pair, (left, abs(dx) - left, 0, dy)))
        distances.append(F.pad(pair, (left + dx, abs(dx) - left - dx, dy, 0)))
    return 0.5 * torch.stack(distances).amax(0)


def consistency_loss(parsing_logits: torch.Tensor, edge_logits: torch.Tensor, labels: torch.Tensor,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Smooth L1 between the parsing-implied and the predicted edge probability, on the valid pixels where
    either exceeds 0.5 (zero, still connected to the logits, where there are none)."""
    implied = parsing_edge_probability(parsing_logits.softmax(1))
    predicted = edge_logits.softmax(1)[:, 1]
    keep = (labels != ignore_index) & ((implied > 0.5) | (predicted > 0.5))
    difference = F.smooth_l1_loss(implied, predicted, reduction="none")
    return torch.where(keep, difference, 0).sum() / keep.sum().clamp(min=1)


def soft_targets(teacher_logits: torch.Tensor, labels: torch.Tensor, cycle: int,
                 ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """m/(m+1) x softmax(teacher) + 1/(m+1) x one-hot(labels) after ``cycle`` = m self-correction cycles."""
    classes = teacher_logits.shape[1]
    one_hot = F.one_hot(torch.where(labels == ignore_index, 0, labels), classes).permute(0, 3, 1, 2)
    share = 1.0 / (cycle + 1)
    return (1 - share) * teacher_logits.softmax(1) + share * one_hot.to(teacher_logits.dtype)


def soft_target_kl(logits: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor,
                   ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """KL(targets || softmax(logits)) over the valid pixels, averaged over pixels and classes (SCHP's scale)."""
    valid = labels != ignore_index
    log_probs = logits.log_softmax(1).permute(0, 2, 3, 1)[valid]
    return F.kl_div(log_probs, targets.permute(0, 2, 3, 1)[valid], reduction="sum") / max(1, log_probs.numel())


@dataclass(frozen=True)
class SoftTargets:
    """Self-correction's refined labels for one batch: ``parsing`` [N, C, H, W] for every parsing output,
    ``edges`` [N, 2, H, W] for an edge output (None when the network has none)."""

    parsing: torch.Tensor
    edges: torch.Tensor | None = None


def refined_targets(teacher_logits: torch.Tensor, teacher_edge_logits: torch.Tensor | None, labels: torch.Tensor,
                    cycle: int) -> SoftTargets:
    """``soft_targets`` of the aggregated model's main output (for every parsing output) and, when it has
    one, of its edge output against ``edge_targets(labels)``."""
    edges = None
    if teacher_edge_logits is not None:
        edges = soft_targets(teacher_edge_logits, edge_targets(labels), cycle)
    return SoftTargets(soft_targets(teacher_logits, labels, cycle), edges)


CONSISTENCY_WEIGHT = 0.1  # SCHP's lambda_c


def edge_branch_loss(edge_logits: torch.Tensor, target: torch.Tensor, parsing: tuple[torch.Tensor, ...],
                     soft: SoftTargets | None = None) -> torch.Tensor:
    """SCHP's edge terms for CE2P's edge logits: the balanced edge loss against the labels' edges (during
    self-correction, ``soft``: the KL towards the refined edges), plus ``CONSISTENCY_WEIGHT`` x the consistency
    with the edges implied by each of the ``parsing`` outputs (CE2P: the fusion output and the parsing branch)."""
    if soft is None or soft.edges is None:
        edges = edge_loss(edge_logits, edge_targets(target))
    else:
        edges = soft_target_kl(edge_logits, soft.edges, target)
    consistency = sum(consistency_loss(logits, edge_logits, target) for logits in parsing)
    return edges + CONSISTENCY_WEIGHT * consistency
