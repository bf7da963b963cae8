"""What a robot needs from a parse of a real scene, counted photo by photo.

Persons are binned by their height as a fraction of the photo's height (``SIZE_BINS``): under 20% is a
person far away (beyond about 4 m for a standing adult seen by a 60-degree camera), 20-50% is a robot's
working distance (2-4 m), over 50% is close. A detection is a person when its box overlaps an
unmatched annotated person at box IoU >= 0.5 (greedy, best score first, COCO's rule); a detection over a
crowd region is neither right nor wrong. Detections take the size bin of their own box for precision;
annotated persons take theirs for recall.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

Box = tuple[float, float, float, float]  # x_min, y_min, x_max, y_max, max exclusive

SIZE_BINS: tuple[tuple[str, float, float], ...] = (("under 20%", 0.0, 0.2), ("20-50%", 0.2, 0.5),
                                                    ("over 50%", 0.5, float("inf")))
MATCH_IOU = 0.5


def size_bin(box: Box, image_height: int) -> str:
    """The ``SIZE_BINS`` name of a box's height over the image's."""
    fraction = (box[3] - box[1]) / image_height
    return next(name for name, low, high in SIZE_BINS if low <= fraction < high)


def box_iou(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray:
    """len(a) x len(b) intersection over union."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def match_detections(boxes: Sequence[Box], scores: Sequence[float], truth: Sequence[Box],
                     crowds: Sequence[Box] = (), iou: float = MATCH_IOU) -> tuple[list[str], list[int | None]]:
    """(per detection: "hit", "miss" or "crowd"; per annotated person: the index of the detection that found
    it, or None), matched greedily best score first.

    Greedy matching makes the matches of the detections scoring at least t the same whatever lower-scoring
    detections there are, so one matching at a low threshold answers every higher one. A detection that
    matches no free annotated person but lies within a crowd region (``iou`` of its own area) is "crowd":
    ignored, as COCO ignores detections of crowds."""
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    found: list[int | None] = [None] * len(truth)
    verdict = [""] * len(boxes)
    overlaps = box_iou(boxes, truth) if len(truth) else np.zeros((len(boxes), 0))
    for index in order:
        free = [j for j in range(len(truth)) if found[j] is None and overlaps[index, j] >= iou]
        if free:
            found[max(free, key=lambda j: overlaps[index, j])] = int(index)
            verdict[index] = "hit"
        elif crowds and _covered(boxes[index], crowds) >= iou:
            verdict[index] = "crowd"
        else:
            verdict[index] = "miss"
    return verdict, found


def _covered(box: Box, crowds: Sequence[Box]) -> float:
    """The largest share of ``box``'s area inside one crowd region."""
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
    inside = [max(0.0, min(box[2], c[2]) - max(box[0], c[0])) * max(0.0, min(box[3], c[3]) - max(box[1], c[1]))
              for c in crowds]
    return max(inside) / area


def _ratio(num: float, den: float) -> float | None:
    return float(num) / den if den else None


@dataclass
class SceneTally:
    """Everything counted over a set of photos, kept per person and per detection so that ``summary`` can
    answer for any score threshold at or above the one the detections were made at."""

    # per annotated person: (size bin, score of the detection that found it or None)
    persons: list[tuple[str, float | None]] = field(default_factory=list)
    # per detection not over a crowd: (size bin, score, hit, on a people-free photo)
    detections: list[tuple[str, float, bool, bool]] = field(default_factory=list)
    people_free_photos: int = 0
    coverage: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name, _, _ in SIZE_BINS})
    people_free_part_fractions: list[float] = field(default_factory=list)

    def add_persons(self, height: int, boxes: Sequence[Box], scores: Sequence[float], truth: Sequence[Box],
                    crowds: Sequence[Box] = ()) -> None:
        """One photo's detections (``boxes``, ``scores``) against its annotated persons and crowd regions."""
        verdict, found = match_detections(boxes, scores, truth, crowds)
        for box, index in zip(truth, found):
            self.persons.append((size_bin(box, height), None if index is None else float(scores[index])))
        people_free = not truth and not crowds
        self.people_free_photos += int(people_free)
        for box, score, kind in zip(boxes, scores, verdict):
            if kind != "crowd":
                self.detections.append((size_bin(box, height), float(score), kind == "hit", people_free))

    def add_coverage(self, labels: np.ndarray, height: int, boxes: Sequence[Box],
                     masks: Sequence[np.ndarray]) -> None:
        """For each annotated person (``boxes``, ``masks``): the share of its pixels the map labels as a part
        (anything but background, id 0)."""
        body = labels != 0
        for box, mask in zip(boxes, masks):
            if mask.any():
                self.coverage[size_bin(box, height)].append(float(body[mask].mean()))

    def add_people_free_map(self, labels: np.ndarray) -> None:
        """A people-free photo's map: the share of its pixels labelled as a part."""
        self.people_free_part_fractions.append(float((labels != 0).mean()))

    def summary(self, threshold: float = 0.0) -> dict:
        """At score ``threshold``: recall and precision (overall and by size), recall of persons at least 20%
        of the photo's height, persons per people-free photo; and the map's coverage by size and part pixels
        on people-free photos. None where nothing was counted."""
        bins = [name for name, _, _ in SIZE_BINS]
        kept = [d for d in self.detections if d[1] >= threshold]
        found = [(size, score is not None and score >= threshold) for size, score in self.persons]

        def recall(sizes: Sequence[str]) -> float | None:
            chosen = [hit for size, hit in found if size in sizes]
            return _ratio(sum(chosen), len(chosen))

        def precision(sizes: Sequence[str]) -> float | None:
            chosen = [hit for size, _, hit, _ in kept if size in sizes]
            return _ratio(sum(chosen), len(chosen))

        on_empty = [d for d in kept if d[3]]
        fractions = self.people_free_part_fractions
        return {
            "threshold": threshold,
            "persons": len(self.persons),
            "persons_by_size": {b: sum(size == b for size, _ in self.persons) for b in bins},
            "recall": recall(bins),
            "recall_by_size": {b: recall([b]) for b in bins},
            "recall_at_least_20pct": recall(bins[1:]),
            "precision": precision(bins),
            "precision_by_size": {b: precision([b]) for b in bins},
            "people_free_photos": self.people_free_photos,
            "persons_per_people_free_photo": _ratio(len(on_empty), self.people_free_photos),
            "coverage_by_size": {b: (float(np.mean(v)) if v else None) for b, v in self.coverage.items()},
            "part_pixels_on_people_free": float(np.mean(fractions)) if fractions else None,
            "people_free_photos_over_1pct": int(sum(f > 0.01 for f in fractions)),
        }
