"""Who is who: multi-person samples (image, semantic map, person map) for RP R-CNN.

A person map is uint8 H x W: 0 = nobody, k = the k-th person of the image.
Readers keep the datasets' own persons: MHPv2.0 (one part map per person,
``<id>_<NN>_<KK>.png``, person k = the k-th file in name order) and CIHP
(``Category_ids/<id>.png`` for the parts, ``Human_ids/<id>.png`` for the
persons; ``Instance_ids`` numbers part instances and is not needed, since a
part's person is read from ``Human_ids`` directly).

``CompositeDataset`` makes multi-person frames from single-person CCP photos
(``composites``) so that RP R-CNN can be trained and tested on this
package's Apache-2.0 data alone.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from human_parsing_ros.class_mappings import mapping_table
from human_parsing_ros.class_sets import IGNORE_INDEX, ClassSet, get_class_set
from human_parsing_ros.weights import IMAGENET_MEAN, IMAGENET_STD

from .composites import HEIGHT_RANGE, Person, SceneStyle, compose, cut_person
from .datasets import (
    DatasetError,
    DatasetNotFoundError,
    build_dataset,
    choose_ids,
    item_generator,
    missing_root,
    person_maps,
    read_image,
    read_label,
    require_dir,
)
from .instance_metrics import person_part_maps
from .transforms import flip_lookup, to_float_image

INSTANCE_DATASETS = ("mhpv2", "cihp", "ccp_composites")

# CCP photos whose annotation is not one person, left out of composites. Found by looking at every photo
# whose annotated box is wider than 0.44 x its height (33 photos) or whose annotation's second-largest
# connected region exceeds 10% of the largest (3): only 0940 annotates two people (touching). 0536 has
# no annotated pixel at all and is skipped as any empty annotation would be.
CCP_NOT_ONE_PERSON = frozenset({"0940"})


@dataclass(frozen=True)
class InstanceSample:
    """One image, its part map(s) and, for CIHP, its person map (``humans``)."""

    image: Path
    labels: tuple[Path, ...]
    id: str
    humans: Path | None = None


def read_instances(sample: InstanceSample) -> tuple[np.ndarray, np.ndarray]:
    """(semantic map, person map), both uint8 H x W, from one sample's files."""
    if sample.humans is not None:
        labels, persons = read_label(sample.labels[0]), read_label(sample.humans)
        if labels.shape != persons.shape:
            raise ValueError(f"{sample.humans}: person map is {persons.shape}, parts {sample.labels[0]} "
                             f"is {labels.shape}")
        persons = persons.copy()
        persons[labels == 0] = 0  # a person's pixels are its part pixels
        return labels, persons
    if not sample.labels:
        raise FileNotFoundError(f"{sample.id}: no label file for image {sample.image}")
    maps = [read_label(path) for path in sample.labels]
    labels = np.zeros_like(maps[0])
    persons = np.zeros_like(maps[0])
    for k, person in enumerate(maps, start=1):
        if person.shape != labels.shape:
            raise ValueError(f"{sample.labels[k - 1]}: is {person.shape}, person 1 is {labels.shape}")
        on = (person != 0) & (person != IGNORE_INDEX)
        labels[on] = person[on]  # later persons overwrite, as ``merge_labels`` does
        persons[on] = k
    return labels, persons


def list_mhpv2(root: Path, split: str, ids: Sequence[Any] | None = None) -> list[InstanceSample]:
    chosen = choose_ids(ids, root / "list" / f"{split}.txt")
    images = require_dir(root / split / "images")
    annos = person_maps(root / split / "parsing_annos")
    return [InstanceSample(images / f"{i}.jpg", tuple(annos.get(i, ())), i) for i in chosen]


CIHP_SPLIT_FOLDERS = {"train": "Training", "val": "Validation", "test": "Testing"}


def list_cihp(root: Path, split: str, ids: Sequence[Any] | None = None) -> list[InstanceSample]:
    """CIHP as published (``root/Training``, ``root/Validation``, ...) or one split's folder as ``root``."""
    if (root / CIHP_SPLIT_FOLDERS.get(split, split)).is_dir():
        root = root / CIHP_SPLIT_FOLDERS.get(split, split)
    chosen = choose_ids(ids, root / f"{split}_id.txt")
    images, parts = require_dir(root / "Images"), require_dir(root / "Category_ids")
    humans = require_dir(root / "Human_ids")
    return [InstanceSample(images / f"{i}.jpg", (parts / f"{i}.png",), i, humans / f"{i}.png") for i in chosen]


class InstanceDataset(Dataset):
    """Samples of a multi-person dataset; ``__getitem__`` returns ``transform(image, labels, persons)``."""

    def __init__(self, items: list[InstanceSample], class_set: ClassSet, transform: Callable | None = None,
                 *, label_table: np.ndarray | None = None, seed: int | None = None) -> None:
        self.items, self.class_set, self.transform = list(items), class_set, transform
        self.label_table, self.seed, self.epoch = label_table, seed, 0

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        item = self.items[index]
        image = read_image(item.image)
        labels, persons = read_instances(item)
        if image.shape[:2] != labels.shape:
            raise ValueError(f"{item.image}: image is {image.shape[:2]}, its labels are {labels.shape}")
        if self.label_table is not None:
            labels = self.label_table[labels]
        return image, labels, persons

    def truth_parts(self, index: int, labels: np.ndarray, persons: np.ndarray) -> list[np.ndarray]:
        """Each annotated person's part map over the whole image (``labels``, ``persons``: ``load(index)``'s),
        for evaluation. A dataset with one file per person (MHPv2) gives each person its own file, as its
        official evaluation does: where two files overlap, the merged map keeps only the later person."""
        item = self.items[index] if index < len(self.items) else None
        if item is None or item.humans is not None or len(item.labels) < 2:
            return person_part_maps(labels, persons)
        maps = []
        for path in item.labels:
            own = read_label(path)
            own = np.where((own != 0) & (own != IGNORE_INDEX), own, 0).astype(np.uint8)
            maps.append(own if self.label_table is None else self.label_table[own])
        return maps

    def __getitem__(self, index: int) -> Any:
        image, labels, persons = self.load(index)
        if self.transform is None:
            return image, labels, persons
        generator = None if self.seed is None else item_generator(self.seed, self.epoch, index)
        return self.transform(image, labels, persons, generator=generator)


class CompositeDataset(InstanceDataset):
    """``count`` composites of the persons of ``people`` (single-person samples), each made from
    (seed, epoch, index) alone: the same frame whatever the worker count or order.

    ``fixed``: the frames do not change with the epoch (a test set); otherwise
    each epoch composes new frames from the same persons.
    """

    def __init__(self, people: Sequence[Person], class_set: ClassSet, count: int, seed: int,
                 size: tuple[int, int], transform: Callable | None = None, *, fixed: bool = False,
                 style: SceneStyle | None = None) -> None:
        super().__init__([], class_set, transform, seed=seed)
        if not people:
            raise ValueError("a composite needs at least one person to cut out")
        self.people, self.count, self.size, self.fixed = list(people), int(count), size, fixed
        self.style = style or SceneStyle()

    def __len__(self) -> int:
        return self.count

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not 0 <= index < self.count:
            raise IndexError(f"composite {index} of {self.count}")
        rng = np.random.default_rng([int(self.seed), 0 if self.fixed else self.epoch + 1, int(index)])
        frame = compose(self.people, rng, self.size, self.style.persons, self.style)
        return frame.image, frame.labels, frame.persons


def ccp_people(root: str | Path, split: str, class_set: str | None = None) -> tuple[list[Person], ClassSet]:
    """Every annotated CCP person of ``split``, cut out (labels mapped to ``class_set`` if given); photos in
    ``CCP_NOT_ONE_PERSON`` and photos with an empty annotation are left out."""
    ccp = build_dataset("ccp", root, split, **({"class_set": class_set} if class_set else {}))
    people = []
    for index in range(len(ccp)):
        if ccp.items[index].id in CCP_NOT_ONE_PERSON:
            continue
        image, labels = ccp.load(index)
        if ((labels != 0) & (labels != IGNORE_INDEX)).any():
            people.append(cut_person(image, labels, ccp.items[index].id))
    return people, ccp.class_set


# ccp_composites options that make the frames look like real scenes (``SceneStyle``)
# CCP's garments (the hri set says "clothes"): what SceneStyle.photometric brightens or darkens
CLOTHING_NAMES = frozenset({"blazer", "blouse", "bodysuit", "cardigan", "coat", "dress", "hoodie", "jacket", "jeans",
                            "jumper", "leggings", "pants", "romper", "shirt", "shorts", "skirt", "suit", "sweater",
                            "sweatshirt", "t-shirt", "top", "vest"})
STYLE_OPTIONS = ("backgrounds", "height_range", "empty_share", "occluded_share", "photometric")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


def background_photos(folder: str | Path) -> tuple[Path, ...]:
    """Every photo in ``folder`` (sorted), or ``DatasetNotFoundError`` naming it when there is none."""
    folder = Path(folder).expanduser()
    photos = tuple(sorted(p for p in folder.glob("*") if p.suffix.lower() in PHOTO_SUFFIXES)) if folder.is_dir() else ()
    if not photos:
        raise DatasetNotFoundError(f"backgrounds: no photos in {folder} (a folder of people-free photos: "
                                   "docs/real_scenes.md builds one)")
    return photos


def scene_style(options: dict[str, Any], class_set: ClassSet) -> SceneStyle:
    """The ``SceneStyle`` of a ccp_composites dataset's options (defaults: the original composites)."""
    def fraction(key: str) -> float:
        value = float(options.get(key, 0.0))
        if not 0.0 <= value <= 1.0:
            raise DatasetError(f"ccp_composites: {key} must be within 0..1, not {value}")
        return value

    low, high = (float(v) for v in options.get("height_range", HEIGHT_RANGE))
    if not 0.0 < low <= high:
        raise DatasetError(f"ccp_composites: height_range must be [low, high] with 0 < low <= high, not {[low, high]}")
    empty = fraction("empty_share")
    backgrounds = background_photos(options["backgrounds"]) if options.get("backgrounds") else ()
    if empty and not backgrounds:
        raise DatasetError("ccp_composites: empty_share needs backgrounds (a frame of nobody on a generated field "
                           "teaches nothing about real scenes)")
    clothes = tuple(i for i, name in enumerate(class_set.names) if "clothes" in name or name in CLOTHING_NAMES)
    persons = tuple(int(v) for v in options.get("persons", (1, 4)))
    return SceneStyle(persons, backgrounds, (low, high), empty, fraction("occluded_share"),
                      bool(options.get("photometric", False)), clothes)


def build_instance_dataset(name: str, root: str | Path, split: str, transform: Callable | None = None,
                           **options: Any) -> InstanceDataset:
    """The ``split`` of multi-person dataset ``name``: mhpv2, cihp (their layouts, persons kept) or
    ccp_composites (``root`` is CCP's; options ``count``, ``seed``, ``size`` [height, width],
    ``persons`` [min, max], ``fixed``). ``class_set`` maps the labels; ``seed`` seeds the augmentation
    (and, for composites, the frames themselves)."""
    key = name.lower()
    if key not in INSTANCE_DATASETS:
        raise DatasetError(f"unknown multi-person dataset '{name}' (known: {', '.join(INSTANCE_DATASETS)})")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise missing_root(key, root)
    target = options.pop("class_set", None)
    seed = options.pop("seed", None)
    allowed = {"count", "size", "persons", "fixed", *STYLE_OPTIONS} if key == "ccp_composites" else {"ids"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise DatasetError(f"{key}: unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))}, "
                         "class_set, seed)")
    if key == "ccp_composites":
        people, class_set = ccp_people(root, split, target)
        return CompositeDataset(people, class_set, int(options.get("count", len(people))),
                                0 if seed is None else int(seed),
                                tuple(options.get("size", (288, 384))), transform,
                                fixed=bool(options.get("fixed", False)), style=scene_style(options, class_set))
    lister = {"mhpv2": list_mhpv2, "cihp": list_cihp}[key]
    items = lister(root, split, options.get("ids"))
    if not items:
        raise DatasetError(f"{key} split '{split}' under {root} has no samples")
    class_set = get_class_set(target or key)
    table = mapping_table(key, class_set.name) if class_set.name != key else None
    return InstanceDataset(items, class_set, transform, label_table=table, seed=seed)


def person_boxes(persons: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, list[int]]:
    """Boxes (N x 4 float, x1 y1 x2 y2, pixel edges) of the persons present in a person map, and their ids."""
    persons = torch.as_tensor(persons)
    ids = [int(i) for i in torch.unique(persons).tolist() if i != 0]
    boxes = torch.zeros((len(ids), 4))
    for row, person in enumerate(ids):
        ys, xs = torch.nonzero(persons == person, as_tuple=True)
        boxes[row] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    return boxes, ids


def short_side_size(shape: Sequence[int], short_side: int, max_size: int) -> tuple[int, int]:
    """(height, width) of an image of ``shape`` resized so that its short side is ``short_side``, unless its
    long side would then exceed ``max_size`` (then that is the limit)."""
    height, width = shape[-2:]
    scale = min(short_side / min(height, width), max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N x 3 x H x W float images at ``size``, as training resizes them (bilinear, antialiased)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


class InstanceTrainTransform:
    """Random short-side resize (one of ``short_sides``, the long side capped at ``max_size``), flip (left/right
    part ids swapped by ``flip_permutation``), normalisation: (image, labels, persons) -> tensors.

    Two numbers per call from ``generator``, so a run resumes bit-exactly.
    """

    def __init__(self, short_sides: Sequence[int] | None = None, max_size: int = 1400,
                 flip_permutation: Sequence[int] | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        self.short_sides = [int(s) for s in short_sides] if short_sides else []
        self.max_size = int(max_size)
        self.flip_table = flip_lookup(flip_permutation)
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __call__(self, image: np.ndarray, labels: np.ndarray, persons: np.ndarray,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        draw = torch.rand(2, generator=generator)
        x = to_float_image(image)
        y = torch.from_numpy(np.ascontiguousarray(labels)).long()
        p = torch.from_numpy(np.ascontiguousarray(persons)).long()
        if self.short_sides:
            side = self.short_sides[min(int(draw[0] * len(self.short_sides)), len(self.short_sides) - 1)]
            size = short_side_size(y.shape, side, self.max_size)
            x = resize_image(x[None], size)[0]
            y = F.interpolate(y[None, None].float(), size=size, mode="nearest")[0, 0].long()
            p = F.interpolate(p[None, None].float(), size=size, mode="nearest")[0, 0].long()
        if draw[1] < 0.5:
            x, y, p = x.flip(-1), self.flip_table[y].flip(-1), p.flip(-1)
        return (x - self.mean) / self.std, y, p


def collate_instances(batch: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                      multiple: int = 32) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Images padded to one size (a multiple of ``multiple``; padding is 0, the mean colour), and per image
    the targets RP R-CNN reads: ``boxes``, ``persons`` renumbered 1..N in box order, ``parts`` (255 padded)."""
    height = -(-max(x.shape[-2] for x, _, _ in batch) // multiple) * multiple
    width = -(-max(x.shape[-1] for x, _, _ in batch) // multiple) * multiple
    images = torch.zeros((len(batch), 3, height, width))
    targets = []
    for row, (x, labels, persons) in enumerate(batch):
        h, w = labels.shape
        images[row, :, :h, :w] = x
        parts = torch.full((height, width), IGNORE_INDEX, dtype=torch.int64)
        parts[:h, :w] = labels
        boxes, ids = person_boxes(persons)
        renumbered = torch.zeros((height, width), dtype=torch.int64)
        for k, person in enumerate(ids, start=1):
            renumbered[:h, :w][persons == person] = k
        targets.append({"boxes": boxes, "persons": renumbered, "parts": parts})
    return images, targets
