"""Passers-by in single-person photos: unlabelled people must not be taught as background.

CCP annotates one person per photo; everybody else in it (people walking by, a crowd behind) is labelled
background, which teaches a parser that a person who is small or out of focus is not a person. No
person detector or segmenter that could find them is available offline here, so this takes the reading
the data allows: background is trusted only near the annotated person, where the annotator looked (a band
of ``margin`` times the person's box size around its box). Farther background pixels are ignored in the
loss. What is background elsewhere is learned from real people-free photos and composites on them
(``training/scene_frames.py``), where nobody is unlabelled. A passer-by overlapping the band stays
background: the price of not detecting them.
"""
from __future__ import annotations

import numpy as np

from human_parsing_ros.class_sets import IGNORE_INDEX


def ignore_far_background(label: np.ndarray, margin: float) -> np.ndarray:
    """``label`` with background (0) farther than ``margin`` x the person's box height/width from the box of
    its labelled pixels set to ``IGNORE_INDEX``; unchanged when nobody is labelled."""
    person = (label != 0) & (label != IGNORE_INDEX)
    if not person.any():
        return label
    ys, xs = np.nonzero(person)
    pad_y, pad_x = margin * (ys.max() - ys.min() + 1), margin * (xs.max() - xs.min() + 1)
    y0, y1 = max(0, int(ys.min() - pad_y)), int(ys.max() + pad_y) + 1
    x0, x1 = max(0, int(xs.min() - pad_x)), int(xs.max() + pad_x) + 1
    far = np.ones(label.shape, bool)
    far[y0:y1, x0:x1] = False
    out = label.copy()
    out[far & (label == 0)] = IGNORE_INDEX
    return out
