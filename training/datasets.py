"""Human-parsing datasets in their published on-disk layouts: MHPv2.0, LIP, CIHP, ATR and CCP.

``build_dataset(name, root, split)`` lists the samples of one split;
``ParsingDataset`` reads them. Labels are class ids (uint8 H x W) in the
dataset's own class set (``human_parsing_ros.class_sets``); 255 is ignored.

Label PNGs are read as stored values (palette indices for mode ``P``, grey
values for mode ``L``, channel 0 of a 3-channel PNG as MHPv2 writes them),
never through a colour conversion. Images are read as stored too: EXIF
orientation is not applied, because the label maps are not rotated by it.
"""
from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from human_parsing_ros.class_mappings import mapping_table
from human_parsing_ros.class_sets import ClassSet, get_class_set
from human_parsing_ros.errors import UserError, one_line
from training.passers_by import ignore_far_background

DATASET_NAMES = ("mhpv2", "lip", "cihp", "atr", "ccp")

# CCP's fixed evaluation protocol (photo numbers, inclusive): 704 / 150 / 150.
CCP_SPLITS: dict[str, tuple[int, int]] = {"train": (1, 704), "val": (705, 854), "test": (855, 1004)}

_MHP_ANNO = re.compile(r"^(?P<id>.+)_(?P<persons>\d+)_(?P<index>\d+)\.png$")


@dataclass(frozen=True)
class Sample:
    """One image and the label file(s) that make its semantic map (MHPv2: one per person)."""

    image: Path
    labels: tuple[Path, ...]
    id: str


# --- Reading files


def read_image(path: str | Path) -> np.ndarray:
    """uint8 H x W x 3 RGB, fully decoded (a truncated file raises OSError here, not later)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            return np.array(img.convert("RGB"))  # a writable copy
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found") from None
    except Exception as error:  # PIL raises many types for a broken file; name the file in every one
        raise OSError(f"{path}: unreadable image ({one_line(error)})") from None


def read_label(path: str | Path) -> np.ndarray:
    """Class ids, uint8 H x W, from a label PNG (stored values) or a CCP ``.mat`` (``groundtruth``)."""
    path = Path(path)
    if path.suffix.lower() == ".mat":
        return _read_mat_label(path)
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            values = np.asarray(img)  # mode P: palette indices; L: grey values; RGB(A)/LA: channels
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: label file not found") from None
    except Exception as error:  # PIL raises many types for a broken file; name the file in every one
        raise OSError(f"{path}: unreadable label ({one_line(error)})") from None
    if values.ndim == 3:
        values = values[..., 0]  # MHPv2 stores the part id in channel 0
    return _as_uint8_ids(values, path)


def _read_mat_label(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    try:
        contents = loadmat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: annotation not found") from None
    except Exception as error:  # scipy raises ValueError, TypeError, MatReadError... for a broken file
        raise ValueError(f"{path}: unreadable annotation ({one_line(error)})") from None
    if "groundtruth" not in contents:
        raise ValueError(f"{path}: no variable 'groundtruth'")
    return _as_uint8_ids(np.asarray(contents["groundtruth"]), path)


def _as_uint8_ids(values: np.ndarray, path: Path) -> np.ndarray:
    if values.ndim != 2:
        raise ValueError(f"{path}: label has shape {values.shape}, expected H x W")
    if values.dtype == np.uint8:
        return np.array(values, order="C")  # a writable copy
    if values.dtype == bool:
        return values.astype(np.uint8)
    if values.size and (values.min() < 0 or values.max() > 255):
        raise ValueError(f"{path}: label values {values.min()}..{values.max()} do not fit class ids 0-255")
    return values.astype(np.uint8)


def merge_labels(maps: Sequence[np.ndarray]) -> np.ndarray:
    """One semantic map from per-person maps: later maps' non-zero pixels overwrite earlier ones."""
    merged = np.array(maps[0], dtype=np.uint8, copy=True)
    for person in maps[1:]:
        if person.shape != merged.shape:
            raise ValueError(f"per-person label sizes differ: {person.shape} vs {merged.shape}")
        np.copyto(merged, person, where=person != 0)
    return merged


# --- The dataset


class ParsingDataset(Dataset):
    """Samples of one split; ``__getitem__`` returns ``transform(image, label)`` or the raw arrays.

    ``skip_unreadable``: an item whose files cannot be read is replaced by the
    next readable one (with a warning naming the file) instead of raising.
    ``seed``: when set, each item's augmentation draws from its own generator
    seeded from (seed, epoch, index), so the augmentation of a sample does not
    depend on worker count or iteration order (call ``set_epoch`` each epoch).
    ``background_margin``: background farther than this times the person's
    box from it is ignored (``passers_by.py``; single-person photos only).
    """

    def __init__(self, items: list[Sample], class_set: ClassSet, transform: Callable | None = None,
                 *, skip_unreadable: bool = False, seed: int | None = None,
                 label_table: np.ndarray | None = None, background_margin: float | None = None) -> None:
        self.background_margin = background_margin
        self.items = list(items)
        self.class_set = class_set  # the class set of the labels it returns (after ``label_table``)
        self.label_table = label_table  # uint8 [256] lookup applied to every label read (class_mappings)
        self.transform = transform
        self.skip_unreadable = skip_unreadable
        self.seed = seed
        self.epoch = 0
        self._reported: set[int] = set()

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def load_label(self, index: int) -> np.ndarray:
        """The semantic map of item ``index`` (per-person maps merged), uint8 H x W."""
        item = self.items[index]
        if not item.labels:
            raise FileNotFoundError(f"{item.id}: no label file for image {item.image}")
        maps = [read_label(path) for path in item.labels]
        try:
            return self.map_label(merge_labels(maps))
        except ValueError as error:
            raise ValueError(f"{item.labels[0].parent}: {item.id}: {error}") from None

    def map_label(self, label: np.ndarray) -> np.ndarray:
        """``label`` in this dataset's class set (through ``label_table`` when it has one), far background
        ignored when ``background_margin`` is set."""
        label = label if self.label_table is None else self.label_table[label]
        return label if self.background_margin is None else ignore_far_background(label, self.background_margin)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 H x W x 3 RGB image, uint8 H x W label) of item ``index``; raises on bad files."""
        image, label = read_image(self.items[index].image), self.load_label(index)
        if image.shape[:2] != label.shape:
            item = self.items[index]
            raise ValueError(f"{item.image}: image is {image.shape[:2]}, label {item.labels[0]} is {label.shape}")
        return image, label

    def __getitem__(self, index: int) -> Any:
        image, label = self._load_or_skip(index)
        if self.transform is None:
            return image, label
        if self.seed is None:
            return self.transform(image, label)
        return self.transform(image, label, generator=item_generator(self.seed, self.epoch, index))

    def _load_or_skip(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.skip_unreadable:
            return self.load(index)
        for step in range(len(self)):
            candidate = (index + step) % len(self)
            try:
                return self.load(candidate)
            except (OSError, ValueError) as error:
                self._report(candidate, error)
        raise RuntimeError("no item of this dataset can be read")

    def _report(self, index: int, error: Exception) -> None:
        if index not in self._reported:
            self._reported.add(index)
            # the error names the broken file (image or label), which need not be the photo
            name = self.items[index].id if index < len(self.items) else f"#{index}"
            warnings.warn(f"skipping unreadable sample {name}: {error}", stacklevel=3)


class ConcatParsingDataset(ParsingDataset):
    """The samples of several datasets in one class set: each part's labels are read and mapped by that part
    (its own layout and mapping table); images, augmentation, seeding and skipping work as for one dataset."""

    def __init__(self, parts: Sequence[ParsingDataset], transform: Callable | None = None,
                 *, skip_unreadable: bool = False, seed: int | None = None) -> None:
        names = sorted({part.class_set.name for part in parts})
        if not parts or len(names) != 1:
            raise ValueError(f"datasets trained together must share one class set (got {', '.join(names) or 'none'}); "
                             "map them with dataset.class_set")
        super().__init__([item for part in parts for item in part.items], parts[0].class_set, transform,
                         skip_unreadable=skip_unreadable, seed=seed)
        self.parts = list(parts)
        self._ends = np.cumsum([len(part) for part in parts])

    def __len__(self) -> int:
        return int(self._ends[-1])  # a part may hold no files (composed frames): count its samples, not items

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        for part in self.parts:
            part.set_epoch(epoch)

    def _part(self, index: int) -> tuple[ParsingDataset, int]:
        part = int(np.searchsorted(self._ends, index, side="right"))
        return self.parts[part], index - (int(self._ends[part - 1]) if part else 0)

    def load_label(self, index: int) -> np.ndarray:
        part, local = self._part(index)
        return part.load_label(local)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        part, local = self._part(index)
        return part.load(local)


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator seeded from (seed, epoch, index) alone (a hash, so nearby triples do not collide)."""
    digest = hashlib.blake2b(f"{int(seed)}/{int(epoch)}/{int(index)}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


# --- Layouts

# Where each dataset is published (a missing root names it).
DATASET_SOURCES = {"ccp": "github.com/bearpaw/clothing-co-parsing", "lip": "sysu-hcp.net/lip",
                   "cihp": "sysu-hcp.net/lip", "mhpv2": "lv-mhp.github.io"}


class DatasetError(UserError, ValueError):
    """A dataset name, split, option or folder the trainer cannot read; the message names it."""


class DatasetNotFoundError(UserError, FileNotFoundError):
    """A dataset root or one of its folders and lists is missing; the message names the path (and where the
    dataset is published)."""


def missing_root(key: str, root: Path) -> DatasetNotFoundError:
    """The error for a missing ``root`` of dataset ``key``, naming where to get the dataset."""
    source = DATASET_SOURCES.get(key)
    where = f" (download the dataset from {source})" if source else ""
    return DatasetNotFoundError(f"{key} root not found: {root}{where}")


def build_dataset(name: str, root: str | Path, split: str, transform: Callable | None = None,
                  **options: Any) -> ParsingDataset:
    """The ``split`` of dataset ``name`` under ``root`` in its published layout.

    Options: ``ids`` (every dataset): an explicit list of sample ids that
    replaces the split's list (CCP accepts photo numbers); ``verify_images``
    (MHPv2, default True): open each image header and skip (with a warning)
    the ones that cannot be opened; ``class_set`` (every dataset): return
    labels in that class set, mapped on load (``class_mappings``; refused
    when no mapping exists); ``skip_unreadable``, ``seed`` and
    ``background_margin`` (passers-by, ``passers_by.py``) go to ``ParsingDataset``.
    """
    key = name.lower()
    if key not in _BUILDERS:
        raise DatasetError(f"unknown dataset '{name}' (known: {', '.join(DATASET_NAMES)})")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise missing_root(key, root)
    dataset_options = {k: options.pop(k) for k in ("skip_unreadable", "seed", "background_margin") if k in options}
    target = options.pop("class_set", None)
    items, defaults = _BUILDERS[key](root, split, **_check_options(key, options))
    if not items:
        raise DatasetError(f"{key} split '{split}' under {root} has no samples")
    settings = {**defaults, **dataset_options}
    class_set = get_class_set(target or key)
    table = mapping_table(key, class_set.name) if class_set.name != key else None
    return ParsingDataset(items, class_set, transform, label_table=table, **settings)


def _check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    allowed = {"ids"} | ({"verify_images"} if name == "mhpv2" else set())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise DatasetError(f"{name}: unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")
    return options


def _check_split(name: str, split: str, allowed: Sequence[str]) -> None:
    if split not in allowed:
        raise DatasetError(f"{name}: unknown split '{split}' (known: {', '.join(allowed)})")


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetNotFoundError(f"id list not found: {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def choose_ids(ids: Sequence[Any] | None, listing: Path) -> list[str]:
    """The explicit ``ids`` when given, else the split's id list file."""
    return _read_ids(listing) if ids is None else [str(i).strip() for i in ids]


def require_dir(path: Path) -> Path:
    if not path.is_dir():
        raise DatasetNotFoundError(f"folder not found: {path}")
    return path


def _paired(ids: list[str], images: Path, labels: Path, label_suffix: str = ".png") -> list[Sample]:
    return [Sample(images / f"{i}.jpg", (labels / f"{i}{label_suffix}",), i) for i in ids]


# Datasets whose splits read one image folder, so that an id names the same image in every split (LIP and MHPv2
# keep a folder per split).
SHARED_IMAGE_FOLDER = ("ccp", "atr", "cihp")


def _build_lip(root: Path, split: str, ids: Sequence[Any] | None = None) -> tuple[list[Sample], dict]:
    _check_split("lip", split, ("train", "val"))
    chosen = choose_ids(ids, root / f"{split}_id.txt")
    images = require_dir(root / f"{split}_images")
    labels = require_dir(root / f"{split}_segmentations")
    return _paired(chosen, images, labels), {}


def _build_cihp(root: Path, split: str, ids: Sequence[Any] | None = None) -> tuple[list[Sample], dict]:
    _check_split("cihp", split, ("train", "val", "test"))
    chosen = choose_ids(ids, root / f"{split}_id.txt")
    images = require_dir(root / "Images")
    labels = require_dir(root / "Category_ids")
    return _paired(chosen, images, labels), {}


def _build_atr(root: Path, split: str, ids: Sequence[Any] | None = None) -> tuple[list[Sample], dict]:
    images = require_dir(root / "JPEGImages")
    labels = require_dir(root / "SegmentationClassAug")
    listing = root / f"{split}.txt"
    if ids is not None or listing.is_file():
        chosen = choose_ids(ids, listing)
    elif split == "all":
        chosen = sorted(path.stem for path in images.glob("*.jpg"))
    else:
        raise FileNotFoundError(f"atr: no id list {listing} (split 'all' takes every image)")
    return _paired(chosen, images, labels), {}


def _build_mhpv2(root: Path, split: str, ids: Sequence[Any] | None = None,
                 verify_images: bool = True) -> tuple[list[Sample], dict]:
    _check_split("mhpv2", split, ("train", "val", "test"))
    chosen = choose_ids(ids, root / "list" / f"{split}.txt")
    images = require_dir(root / split / "images")
    annos = person_maps(root / split / "parsing_annos")
    items = [Sample(images / f"{i}.jpg", tuple(annos.get(i, ())), i) for i in chosen]
    if verify_images:
        items = [item for item in items if _image_opens(item.image)]
    return items, {"skip_unreadable": True}


def person_maps(folder: Path) -> dict[str, list[Path]]:
    """id -> its per-person label files, in sorted file-name order (the merge order)."""
    found: dict[str, list[Path]] = {}
    if not folder.is_dir():
        warnings.warn(f"mhpv2: no annotation folder {folder}", stacklevel=4)
        return found
    for file_name in sorted(p.name for p in folder.iterdir()):
        match = _MHP_ANNO.match(file_name)
        if match:
            found.setdefault(match["id"], []).append(folder / file_name)
    return found


def _image_opens(path: Path) -> bool:
    """Whether ``path`` exists and has a readable image header; warns naming the file if not."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception as error:  # PIL raises many types for a broken file
        warnings.warn(f"skipping unreadable image {path}: {error}", stacklevel=4)
        return False


def _build_ccp(root: Path, split: str, ids: Sequence[Any] | None = None) -> tuple[list[Sample], dict]:
    _check_split("ccp", split, (*CCP_SPLITS, "all"))
    photos = require_dir(root / "photos")
    annotations = _ccp_annotation_dir(root)
    if ids is not None:
        numbers = [_photo_number(i) for i in ids]
        missing = [annotations / f"{n:04d}.mat" for n in numbers if not (annotations / f"{n:04d}.mat").is_file()]
        if missing:
            raise FileNotFoundError(f"ccp annotation not found: {missing[0]}")
    else:
        numbers = _ccp_split_numbers(annotations, split)
    items = [Sample(photos / f"{n:04d}.jpg", (annotations / f"{n:04d}.mat",), f"{n:04d}") for n in numbers]
    return items, {}


def _photo_number(value: Any) -> int:
    text = str(value).strip()
    if not text.isdigit():
        raise DatasetError(f"ccp ids are photo numbers (1-1004), not '{value}'")
    return int(text)


def _ccp_annotation_dir(root: Path) -> Path:
    """``annotations/pixel-level`` (the dataset) or ``annotations`` (the package's samples)."""
    for folder in (root / "annotations" / "pixel-level", root / "annotations"):
        if folder.is_dir() and any(folder.glob("*.mat")):
            return folder
    raise FileNotFoundError(f"ccp: no .mat annotations in {root / 'annotations' / 'pixel-level'} "
                            f"or {root / 'annotations'}")


def _ccp_split_numbers(annotations: Path, split: str) -> list[int]:
    numbers = sorted(int(p.stem) for p in annotations.glob("*.mat") if p.stem.isdigit())
    if split == "all":
        return numbers
    first, last = CCP_SPLITS[split]
    return [n for n in numbers if first <= n <= last]


_BUILDERS: dict[str, Callable[..., tuple[list[Sample], dict]]] = {
    "mhpv2": _build_mhpv2, "lip": _build_lip, "cihp": _build_cihp, "atr": _build_atr, "ccp": _build_ccp,
}
