"""DTPR's stage-2 pixel sampling: PRA (by class pixel accuracy) and PRN (by class pixel count).

For every ground-truth map, each class ``i`` present in it is kept with
probability ``s_i`` (one Bernoulli draw per image per class); the pixels of the
kept classes form the mask that the stage-2 loss (``losses.masked_cross_entropy``)
averages over.

* PRA: ``s_i = min(1, eta / CPA(i))`` with CPA from a stage-1 confusion matrix.
* PRN: the same with the class pixel counts ``x_i`` instead of CPA.

``keep_probabilities`` turns either score vector into ``s`` (``resolve_eta``
reads ``eta``); ``PixelSampler`` draws the masks; ``kept_pixel_counts`` counts
what a mask kept, per class, for the log.
"""
from __future__ import annotations

import math

import torch

from human_parsing_ros.class_sets import IGNORE_INDEX

ETA_MODES = ("min", "median", "mean", "q<NN>")


def resolve_eta(valid_scores: torch.Tensor, eta: float | str) -> float:
    """``eta`` as a number: a positive number as given, a mode name (``ETA_MODES``) over ``valid_scores``."""
    if not isinstance(eta, str):
        value = float(eta)
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"eta must be a positive finite number, got {eta!r}")
        return value
    mode = eta.strip().lower()
    if mode == "min":
        return float(valid_scores.min())
    if mode == "mean":
        return float(valid_scores.mean())
    if mode == "median":
        return float(torch.quantile(valid_scores, 0.5))
    if mode.startswith("q") and mode[1:].replace(".", "", 1).isdigit():
        q = float(mode[1:]) / 100.0
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile eta {eta!r} is outside q0..q100")
        return float(torch.quantile(valid_scores, q))
    raise ValueError(f"unknown eta mode {eta!r}; expected a positive number or one of {ETA_MODES}")


def keep_probabilities(scores: torch.Tensor, eta: float | str = "min",
                       floor: float = 0.0) -> torch.Tensor:
    """Per-class keep probabilities ``s`` for PRA (scores = CPA) or PRN (scores = pixel counts).

    Normalisation, exactly:

    1. A score is *valid* when it is a number > 0. Classes with a NaN or <= 0
       score (never predicted / never seen) get ``s = 1``: they are the rarest.
    2. ``eta`` is either the given positive number, or derived from the valid
       scores only: ``"min"`` = the smallest valid score (the worst class gets
       ``s = 1``, every other class ``min_score / score``); ``"median"`` =
       ``torch.quantile(valid, 0.5)`` (mean of the two middle values for an even
       count); ``"mean"`` = their arithmetic mean; ``"q<NN>"`` (e.g. ``"q25"``)
       = ``torch.quantile(valid, NN / 100)`` with linear interpolation.
    3. ``s = clamp(eta / score, max=1)``: every class whose score is at most
       eta is always kept; a class with twice eta's score is kept half the time.
    4. ``s = clamp(s, min=floor)`` so no class is starved completely.

    With all scores invalid, every class gets 1. Returns float32 [C] in [0, 1]
    on the device of ``scores``.
    """
    if scores.dim() != 1:
        raise ValueError(f"scores must be a [C] vector, got shape {tuple(scores.shape)}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must lie in [0, 1], got {floor}")
    scores = scores.detach().to(torch.float64)
    valid = ~torch.isnan(scores) & (scores > 0)
    prob = torch.ones_like(scores)
    if bool(valid.any()):
        eta_value = resolve_eta(scores[valid], eta)
        prob[valid] = (eta_value / scores[valid]).clamp(max=1.0)
    return prob.clamp(min=floor).to(torch.float32)


class PixelSampler:
    """Draws PRA/PRN pixel masks: one Bernoulli(keep_prob[c]) per image per class.

    A lookup table ``keep[n, label]`` is drawn once per call (a [N, C] uniform
    tensor, so the cost does not depend on the image size) and gathered at
    every pixel's label in one vectorised pass. Ignore pixels index a column
    that is always False. All randomness comes from ``generator`` (or torch's
    global RNG when it is None), on the device of ``target``.
    """

    def __init__(self, keep_prob: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> None:
        keep_prob = torch.as_tensor(keep_prob, dtype=torch.float32).detach()
        if keep_prob.dim() != 1:
            raise ValueError(f"keep_prob must be a [C] vector, got shape {tuple(keep_prob.shape)}")
        self.keep_prob = keep_prob
        self.num_classes = keep_prob.numel()
        self.ignore_index = int(ignore_index)
        self._on_device: dict[torch.device, torch.Tensor] = {}

    def _prob_on(self, device: torch.device) -> torch.Tensor:
        if device not in self._on_device:
            self._on_device[device] = self.keep_prob.to(device)
        return self._on_device[device]

    def _table_width(self) -> int:
        if self.ignore_index >= 0:
            return max(self.num_classes, self.ignore_index + 1)
        return self.num_classes + 1

    def draw_table(self, batch: int, device: torch.device,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """Bool [N, W] keep decisions; columns >= C and the ignore column are False."""
        prob = self._prob_on(device)
        uniform = torch.rand((batch, self.num_classes), generator=generator, device=device)
        table = torch.zeros((batch, self._table_width()), dtype=torch.bool, device=device)
        table[:, :self.num_classes] = uniform < prob
        if 0 <= self.ignore_index < self.num_classes:
            table[:, self.ignore_index] = False
        return table

    def __call__(self, target: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        if target.dim() != 3:
            raise ValueError(f"target must be [N, H, W], got shape {tuple(target.shape)}")
        batch = target.shape[0]
        table = self.draw_table(batch, target.device, generator)
        index = target.reshape(batch, -1).long()
        if self.ignore_index < 0:
            index = torch.where(index == self.ignore_index, self.num_classes, index)
        return torch.gather(table, 1, index).view_as(target)


def kept_pixel_counts(target: torch.Tensor, mask: torch.Tensor, num_classes: int,
                      ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class (kept, total) pixel counts, int64 [C] each, for logging the kept fraction."""
    target = target.reshape(-1)
    valid = (target != ignore_index) & (target >= 0) & (target < num_classes)
    labels = target[valid]
    total = torch.bincount(labels, minlength=num_classes)
    kept = torch.bincount(labels[mask.reshape(-1)[valid]], minlength=num_classes)
    return kept, total
