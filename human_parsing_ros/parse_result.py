"""ParseResult: what one parse gives back (label map, deferred statistics, part presence, persons)."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .class_sets import ClassSet
from .inference import ClassStatistics, trimmed_count
from .presence import Part, PersonDetection, parts_from_counts


@dataclass
class ParseResult:
    labels: np.ndarray  # H x W uint8
    class_set: ClassSet
    compute_statistics: Callable[[], ClassStatistics] | None = field(repr=False)  # dropped once used
    timings_ms: dict[str, float] = field(default_factory=dict)  # each step of the parse, ms
    _statistics: ClassStatistics | None = field(default=None, init=False, repr=False)
    # multi-person weights, or map_persons: H x W uint8 (0 = nobody, k = persons[k - 1]), the persons (best score
    # or largest first), and how many persons (above the threshold) the person cap left out
    instances: np.ndarray | None = None
    persons: list[PersonDetection] = field(default_factory=list)
    dropped_persons: int = 0
    # multi-person weights only: the network returned as many persons scoring at least person_threshold as its
    # detection limit (HumanParser.detection_limit), so it may have cut more, which nobody can count
    detection_limit_reached: bool = False
    # gives person_confidence_sums (dropped once used)
    compute_person_confidence: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    _person_confidence_sums: np.ndarray | None = field(default=None, init=False, repr=False)

    @property
    def statistics(self) -> ClassStatistics:
        """Per-class pixel counts, confidence sums and boxes (on the CPU), computed on first use and kept.

        A node with nobody subscribed to ``parts`` never pays for them; their time is then
        added to ``timings_ms["statistics"]``.
        """
        if self._statistics is None:
            start = time.perf_counter()
            self._statistics = self.compute_statistics()
            self.compute_statistics = None  # frees the logits and label tensors it held
            self._add_statistics_time(start)
        return self._statistics

    @property
    def person_confidence_sums(self) -> np.ndarray | None:
        """float64 [persons + 1, C]: row k sums the part probability of person k's pixels of each class; None
        without persons. Computed on first use, like ``statistics`` (a node with nobody subscribed to ``persons``
        never pays for the full-resolution confidence map of map persons); the time goes to
        ``timings_ms["statistics"]``."""
        if self._person_confidence_sums is None and self.compute_person_confidence is not None:
            start = time.perf_counter()
            self._person_confidence_sums = self.compute_person_confidence()
            self.compute_person_confidence = None
            self._add_statistics_time(start)
        return self._person_confidence_sums

    def _add_statistics_time(self, start: float) -> None:
        self.timings_ms["statistics"] = self.timings_ms.get("statistics", 0.0) + (time.perf_counter() - start) * 1e3

    def presence(self, threshold: float) -> list[Part]:
        """Every class; ``present`` when its pixel fraction is at least ``threshold`` (and above 0).

        Figures at full precision (``Part.rounded`` gives the wire's).
        """
        stats = self.statistics
        return parts_from_counts(self.class_set.names, stats.pixel_counts.tolist(), stats.confidence_sums.tolist(),
                                 stats.robust_boxes.tolist(), self.labels.size, threshold, stats.boxes.tolist())

    def mask(self, class_id: int) -> np.ndarray:
        """0/255 mono8 mask of one class."""
        return (self.labels == class_id).astype(np.uint8) * 255

    def person_presence(self, person: PersonDetection, threshold: float) -> list[Part]:
        """Every class, within one person: ``pixel_fraction`` is of the person's pixels, ``bbox`` in image
        pixels, ``mean_confidence`` the mean of the person's part probability over the class's pixels."""
        if self.instances is None or self.person_confidence_sums is None:
            raise ValueError("person_presence needs persons: multi-person weights, or map_persons=True")
        ys, xs = np.nonzero(self.instances == person.instance)
        ids = self.labels[ys, xs].astype(np.int64)
        counts = np.bincount(ids, minlength=self.class_set.num_classes)
        boxes: list[tuple[int, int, int, int] | None] = [None] * len(counts)
        full: list[tuple[int, int, int, int] | None] = [None] * len(counts)
        for class_id in np.flatnonzero(counts):
            on = ids == class_id
            full[class_id] = (int(xs[on].min()), int(ys[on].min()), int(xs[on].max()), int(ys[on].max()))
            boxes[class_id] = trimmed_box(xs[on], ys[on])
        return parts_from_counts(self.class_set.names, counts, self.person_confidence_sums[person.instance], boxes,
                                 len(ids), threshold, full)


def trimmed_box(xs: np.ndarray, ys: np.ndarray) -> tuple[int, int, int, int]:
    """The robust box of one class's pixels (coordinates ``xs``, ``ys``), as ``ClassStatistics.robust_boxes``
    defines it: the (k+1)-th smallest and largest of each, k = ``trimmed_count``."""
    n = len(xs)
    k = trimmed_count(n)
    if k == 0:
        return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    x = np.partition(xs, (k, n - 1 - k))
    y = np.partition(ys, (k, n - 1 - k))
    return int(x[k]), int(y[k]), int(x[n - 1 - k]), int(y[n - 1 - k])
