"""Composed real-scene frames as single-map training data (a ``dataset.extra`` entry of a DTPR recipe).

    dataset:
      extra:
        - {name: ccp_composites, root: ../shared/data/ccp, split: train,
           options: {count: 400, size: [836, 550], persons: [1, 4], backgrounds: ~/data/scene_backgrounds,
                     height_range: [0.1, 0.95], empty_share: 0.25, occluded_share: 0.3, photometric: true}}

Each epoch composes ``count`` new frames (``training/composites.py``): CCP's training persons pasted
onto real people-free photos, a share of frames with nobody (every pixel background: a real room is not a
person), persons far and near, occluded, under other light. The semantic map is the frame's labels; the
person map is not needed here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from human_parsing_ros.class_sets import ClassSet
from training.datasets import ParsingDataset
from training.instances import CompositeDataset, build_instance_dataset


class SceneFrames(ParsingDataset):
    """The (image, labels) of a ``CompositeDataset``'s frames; new frames every epoch."""

    def __init__(self, composites: CompositeDataset) -> None:
        super().__init__([], composites.class_set)
        self.composites = composites

    def __len__(self) -> int:
        return len(self.composites)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.composites.set_epoch(epoch)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, labels, _ = self.composites.load(index)
        return image, labels

    def load_label(self, index: int) -> np.ndarray:
        return self.load(index)[1]


def scene_frames(root: str | Path, split: str, class_set: ClassSet, options: dict[str, Any]) -> SceneFrames:
    """The ``split`` persons of CCP under ``root`` composed as ``options`` say (``build_instance_dataset``'s
    ccp_composites options), labels in ``class_set``."""
    composites = build_instance_dataset("ccp_composites", root, split, class_set=class_set.name, **options)
    return SceneFrames(composites)
