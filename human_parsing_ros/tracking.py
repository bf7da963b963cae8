"""Person ids that last while a person stays in view, from box overlap between consecutive frames.

Each frame's persons are matched to the tracks of the previous frame by box
IoU, greedily (the highest IoU first), when it is at least ``min_iou``; a
matched person keeps the track's id and moves the track to its new box, an
unmatched person opens a new track with the next id (ids are never reused),
and a track left unmatched for more than ``max_missed`` consecutive frames is
forgotten. Enough for people at a robot's frame rates, who move little
between frames; crossing paths of look-alike boxes can swap ids.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Box = tuple[float, float, float, float]  # x_min, y_min, x_max, y_max


def box_iou(a: Box, b: Box) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Track:
    box: Box
    missed: int = 0


class PersonTracker:
    """``update(boxes)`` gives each of this frame's persons its id (a positive int)."""

    def __init__(self, min_iou: float = 0.3, max_missed: int = 5) -> None:
        if not 0.0 < min_iou <= 1.0:
            raise ValueError(f"min_iou must be in (0, 1], not {min_iou}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be 0 or more, not {max_missed}")
        self.min_iou, self.max_missed = float(min_iou), int(max_missed)
        self._tracks: dict[int, _Track] = {}
        self._next_id = 1

    def update(self, boxes: Sequence[Box]) -> list[int]:
        pairs = sorted(((box_iou(tuple(box), track.box), i, track_id)
                        for i, box in enumerate(boxes) for track_id, track in self._tracks.items()), reverse=True)
        ids: list[int | None] = [None] * len(boxes)
        taken: set[int] = set()
        for iou, i, track_id in pairs:
            if iou < self.min_iou:
                break
            if ids[i] is None and track_id not in taken:
                ids[i] = track_id
                taken.add(track_id)
        for track_id in list(self._tracks):
            if track_id not in taken:
                self._tracks[track_id].missed += 1
                if self._tracks[track_id].missed > self.max_missed:
                    del self._tracks[track_id]
        for i, box in enumerate(boxes):
            if ids[i] is None:
                ids[i] = self._next_id
                self._next_id += 1
            self._tracks[ids[i]] = _Track(tuple(float(v) for v in box))
        return [int(i) for i in ids]

    def reset(self) -> None:
        """Forget every track (ids keep increasing)."""
        self._tracks.clear()
