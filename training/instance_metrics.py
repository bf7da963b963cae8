"""Multiple-human-parsing metrics as the MHP evaluation defines them (and RP R-CNN reports them).

Each person, predicted or annotated, is a part map of the whole image
(uint8 H x W: that person's part ids, 0 everywhere else).

* Part IoU of a prediction with a ground-truth person: per class c,
  |P_c and G_c| / |P_c or G_c| over the two maps; classes in neither map are
  left out. Their mean, **background (0) included**, is the pair's score
  (the MHP evaluation code takes exactly this mean).
* AP^p_t: predictions of all images are ranked by score; each one takes the
  ground-truth person of its image with the highest pair score; it is a true
  positive if that score is above t and that person was not taken by a
  higher-ranked prediction, otherwise a false positive. AP is the area under
  the precision-recall curve (all-point interpolation, the VOC method);
  recall is over every annotated person. AP^p_50 is t = 0.5; AP^p_vol is the
  mean of AP^p_t over t = 0.1, 0.2, ..., 0.9.
* PCP_t: for each annotated person, the fraction of its parts (the non-zero
  classes of its map) whose IoU with the prediction that took it is above t;
  0 for a person nobody took. PCP_50 is their mean at t = 0.5.
* mIoU is the ordinary semantic-segmentation mIoU of the merged map
  (``training.metrics``).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(1, 10))


def class_ious(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class IoU of two part maps (float64 [num_classes]); NaN for classes in neither map."""
    if prediction.shape != truth.shape:
        raise ValueError(f"part maps differ in size: prediction {prediction.shape}, truth {truth.shape}")
    inside = (truth < num_classes) & (prediction < num_classes)
    pairs = truth[inside].astype(np.int64) * num_classes + prediction[inside]
    matrix = np.bincount(pairs, minlength=num_classes ** 2).reshape(num_classes, num_classes)
    hits = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, hits / union, np.nan)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision-recall curve with precision made monotone (all-point interpolation)."""
    recall = np.concatenate(([0.0], recall, [1.0]))
    precision = np.concatenate(([0.0], precision, [0.0]))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


@dataclass
class _Image:
    scores: np.ndarray  # [P]
    pair_scores: np.ndarray  # [P, G]: mean part IoU, background included
    part_ious: np.ndarray  # [P, G, C]
    truth_parts: list[int]  # per ground-truth person: its number of parts (non-zero classes)


@dataclass
class InstanceEvaluator:
    """Collects images (``add``), then ``result()`` gives AP^p per threshold, AP^p_50, AP^p_vol, PCP."""

    num_classes: int
    thresholds: Sequence[float] = THRESHOLDS
    score_threshold: float = 0.0  # predictions scoring below it are not counted at all
    images: list[_Image] = field(default_factory=list)

    def add(self, predictions: Sequence[np.ndarray], scores: Sequence[float], truths: Sequence[np.ndarray]) -> None:
        """One image: its predicted persons' part maps with their scores, and its annotated persons' maps."""
        if len(predictions) != len(scores):
            raise ValueError(f"{len(predictions)} predicted persons but {len(scores)} scores")
        c = self.num_classes
        ious = np.full((len(predictions), len(truths), c), np.nan)
        for p, prediction in enumerate(predictions):
            for g, truth in enumerate(truths):
                ious[p, g] = class_ious(prediction, truth, c)
        with warnings.catch_warnings():  # a pair with no class in either map would warn; real maps have 0
            warnings.simplefilter("ignore", RuntimeWarning)
            pair = np.nanmean(ious, axis=2) if ious.size else np.zeros((len(predictions), len(truths)))
        parts = [int(np.count_nonzero(np.bincount(t.ravel(), minlength=c)[1:c])) for t in truths]
        self.images.append(_Image(np.asarray(scores, dtype=np.float64), np.nan_to_num(pair, nan=0.0), ious, parts))

    def result(self) -> dict:
        truths = sum(len(image.truth_parts) for image in self.images)
        ranked = sorted(((score, i, p) for i, image in enumerate(self.images)
                         for p, score in enumerate(image.scores) if score >= self.score_threshold),
                        key=lambda entry: -entry[0])
        ap, pcp = {}, {}
        for t in self.thresholds:
            taken = [np.zeros(len(image.truth_parts), bool) for image in self.images]
            hits = np.zeros(len(ranked))
            correct_parts: list[float] = []
            for rank, (_, i, p) in enumerate(ranked):
                image = self.images[i]
                if not image.truth_parts:
                    continue
                g = int(np.argmax(image.pair_scores[p]))
                if image.pair_scores[p, g] > t and not taken[i][g]:
                    taken[i][g] = True
                    hits[rank] = 1.0
                    with np.errstate(invalid="ignore"):
                        good = int(np.sum(image.part_ious[p, g, 1:] > t))
                    parts = image.truth_parts[g]
                    correct_parts.append(good / parts if parts else 0.0)
            true_pos = np.cumsum(hits)
            precision = true_pos / np.maximum(np.arange(1, len(ranked) + 1), 1)
            ap[t] = voc_ap(true_pos / truths, precision) if truths else float("nan")
            pcp[t] = float(np.sum(correct_parts) / truths) if truths else float("nan")
        return {"ap": ap, "pcp": pcp, "ap50": ap.get(0.5, float("nan")), "pcp50": pcp.get(0.5, float("nan")),
                "ap_vol": float(np.mean(list(ap.values()))), "persons": truths, "predictions": len(ranked)}


def person_part_maps(labels: np.ndarray, persons: np.ndarray) -> list[np.ndarray]:
    """Per person of a person map (ids in increasing order): its part map over the whole image."""
    return [np.where(persons == k, labels, 0).astype(np.uint8) for k in np.unique(persons) if k != 0]
