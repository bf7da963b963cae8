"""Persons from a single-map parse: the connected regions of body-part pixels, one per person.

The second way of knowing who is who (the first is a multi-person network): a semantic map says which
pixels are a body part or clothing, and people who do not touch in the image are separate regions. Two
people who overlap or touch become one region; a person cut in two by an occluder (a table, a pole)
becomes two. A region smaller than ``min_fraction`` of the frame is left out (a speck of false "skin").
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .presence import PersonDetection

MIN_FRACTION = 0.002  # a 640 x 480 frame: 614 pixels, about a 10 x 60 pixel person


def persons_from_map(labels: np.ndarray, min_fraction: float = MIN_FRACTION, gap: int = 2,
                     max_persons: int = 16) -> tuple[np.ndarray, list[PersonDetection]]:
    """(instances map, persons) from ``labels`` (H x W class ids, 0 = background), largest region first.

    Regions at most 2 x ``gap`` background pixels apart are joined first (a thin background line between
    an arm and the body is not two people). ``instances`` has 0 for nobody and k for ``persons[k - 1]``,
    and marks body pixels only. A person's score is ten times the share of the frame its region holds,
    capped at 1: a map has no person score, and a bigger region is more surely a person."""
    body = labels != 0
    # growing every region by ``gap`` joins the close ones; the pixels it adds only link (masks keep body pixels)
    joined = ndimage.maximum_filter(body.view(np.uint8), size=2 * gap + 1) if gap > 0 else body
    regions, count = ndimage.label(joined)
    instances = np.zeros(labels.shape, np.uint8)
    if count == 0:
        return instances, []
    sizes = np.bincount((regions * body).ravel(), minlength=count + 1)[1:]  # body pixels of each region
    keep = [r + 1 for r in np.argsort(-sizes, kind="stable") if sizes[r] >= min_fraction * labels.size]
    persons = []
    for k, region in enumerate(keep[:max_persons], start=1):
        mask = (regions == region) & body
        ys, xs = np.nonzero(mask)
        instances[mask] = k
        persons.append(PersonDetection(k, min(1.0, float(mask.mean()) * 10), (int(xs.min()), int(ys.min()),
                                                                            int(xs.max()), int(ys.max())),
                                       int(mask.sum())))
    return instances, persons
