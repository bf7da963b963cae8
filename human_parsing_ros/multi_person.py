"""From a multi-person parser's per-person outputs to frame-sized maps: whose part each pixel is.

RP R-CNN gives, per detected person, a box, a score and part probabilities
over a fixed grid inside the box, and one semantic parts map for the frame.
``merge_persons`` keeps the persons scoring at least ``min_score`` (at most
``max_persons``, best first), pastes each one's parts into the frame, paints
them from the lowest score to the highest (the best-scored person is in
front where boxes overlap), and combines the result with the semantic map as
the paper does: a pixel a person claims takes that person's part, any other
pixel takes the semantic map's class.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def paste_parts(probabilities: torch.Tensor, box: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Class ids (int64 H x W) of one person: its C x S x S part probabilities sampled bilinearly at every
    pixel centre inside ``box`` (x1 y1 x2 y2, pixels), argmax; 0 outside the box."""
    return paste_parts_with_confidence(probabilities, box, height, width)[0]


def paste_parts_with_confidence(probabilities: torch.Tensor, box: torch.Tensor, height: int,
                                width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``paste_parts`` and, at each pixel, the winning class's sampled probability (float32 H x W, 0 outside
    the box)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    ids = torch.zeros((height, width), dtype=torch.int64, device=probabilities.device)
    confidence = torch.zeros((height, width), dtype=torch.float32, device=probabilities.device)
    left, top = max(int(x1), 0), max(int(y1), 0)
    right, bottom = min(math.ceil(x2), width), min(math.ceil(y2), height)
    if right <= left or bottom <= top or x2 <= x1 or y2 <= y1:
        return ids, confidence
    xs = (torch.arange(left, right, device=probabilities.device, dtype=torch.float32) + 0.5 - x1) / (x2 - x1) * 2 - 1
    ys = (torch.arange(top, bottom, device=probabilities.device, dtype=torch.float32) + 0.5 - y1) / (y2 - y1) * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]
    # border padding: a pixel near the box edge takes the edge cells' probabilities, not a blend with zeros
    # (the argmax is the same either way; the confidence would not be)
    sampled = F.grid_sample(probabilities[None].float(), grid, mode="bilinear", padding_mode="border",
                            align_corners=False)[0]
    inside = (grid[0, ..., 0].abs() <= 1) & (grid[0, ..., 1].abs() <= 1)
    best, argmax = sampled.max(0)
    ids[top:bottom, left:right] = torch.where(inside, argmax, torch.zeros_like(argmax))
    confidence[top:bottom, left:right] = torch.where(inside, best, torch.zeros_like(best))
    return ids, confidence


@dataclass
class MergedPersons:
    labels: torch.Tensor  # int64 H x W: class ids (persons' parts over the semantic map)
    instances: torch.Tensor  # int64 H x W: 0 = nobody, k = persons[k - 1]
    confidence: torch.Tensor  # float32 H x W: the owning person's part probability where instances > 0, else 0
    persons: list[int]  # indices into the inputs, best score first, of the persons with visible pixels
    dropped: int  # persons above ``min_score`` beyond ``max_persons``


def merge_persons(parts: torch.Tensor | Sequence[torch.Tensor], boxes: torch.Tensor, scores: torch.Tensor,
                  background: torch.Tensor | None, height: int, width: int, min_score: float = 0.5,
                  max_persons: int = 16) -> MergedPersons:
    """Merge N persons (``parts``: N x C x S x S probabilities, or N maps C x h x w; ``boxes`` N x 4 in frame
    pixels; ``scores`` N) over ``background``, the frame's semantic labels (H x W class ids, or None: 0)."""
    order = [int(i) for i in torch.argsort(scores, descending=True) if float(scores[i]) >= min_score]
    dropped = max(len(order) - max_persons, 0)
    order = order[:max_persons]
    person_labels = torch.zeros((height, width), dtype=torch.int64, device=boxes.device)
    person_confidence = torch.zeros((height, width), dtype=torch.float32, device=boxes.device)
    owner = torch.full((height, width), -1, dtype=torch.int64, device=boxes.device)
    for rank in reversed(range(len(order))):
        ids, confidence = paste_parts_with_confidence(parts[order[rank]], boxes[order[rank]], height, width)
        on = ids != 0  # torch.where, not masked assignment: no device sync per person
        person_labels = torch.where(on, ids, person_labels)
        person_confidence = torch.where(on, confidence, person_confidence)
        owner = torch.where(on, rank, owner)
    visible = [rank for rank in range(len(order)) if bool((owner == rank).any())]
    instances = torch.zeros_like(owner)
    for k, rank in enumerate(visible, start=1):
        instances[owner == rank] = k
    if background is None:
        background = torch.zeros((height, width), dtype=torch.int64, device=boxes.device)
    labels = torch.where(person_labels != 0, person_labels, background.to(torch.int64))
    return MergedPersons(labels, instances, person_confidence, [order[rank] for rank in visible], dropped)
