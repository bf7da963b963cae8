"""Human-parsing class sets: names, palettes and left/right pairs, in one registry.

Both the node and the trainer take class sets from here, so a weights file
that names a class set always means the same ids.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import UserError

# Label value that marks pixels to ignore (unlabelled, or outside an augmented crop), in every class set.
IGNORE_INDEX = 255


def voc_palette(num_classes: int) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved), as LIP and CIHP use it."""
    palette = np.zeros((num_classes, 3), dtype=np.uint8)
    for index in range(num_classes):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (r, g, b)
    return palette


class ClassSetError(UserError, ValueError):
    """An unknown class set or class name; the message names it (and, for a class set, the known ones)."""


@dataclass(frozen=True)
class ClassSet:
    """One labelling scheme: id i is ``names[i]``, drawn as ``palette[i]``."""

    name: str
    names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    background: int = 0
    palette: np.ndarray = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.palette is None:
            object.__setattr__(self, "palette", voc_palette(len(self.names)))
        if self.palette.shape != (len(self.names), 3):
            raise ValueError(f"class set {self.name}: palette does not match {len(self.names)} classes")
        paired: set[int] = set()
        for left, right in self.flip_pairs:
            if not (0 <= left < len(self.names) and 0 <= right < len(self.names)):
                raise ValueError(f"class set {self.name}: flip pair ({left}, {right}) out of range")
            if left == right or left in paired or right in paired:  # else flip_permutation is no permutation
                raise ValueError(f"class set {self.name}: flip pair ({left}, {right}) pairs a class with itself "
                                 "or a class already paired")
            paired.update((left, right))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def flip_permutation(self) -> list[int]:
        """perm[i] is the class that class i becomes in a mirrored image."""
        perm = list(range(self.num_classes))
        for left, right in self.flip_pairs:
            perm[left], perm[right] = right, left
        return perm

    def index(self, name: str) -> int:
        """Class id of ``name`` (case-insensitive); ValueError naming the class set if unknown."""
        lowered = [class_name.lower() for class_name in self.names]
        try:
            return lowered.index(name.lower())
        except ValueError:
            raise ClassSetError(f"class set {self.name} has no class '{name}'") from None


_LIP_NAMES = (
    "background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress",
    "coat", "socks", "pants", "jumpsuits", "scarf", "skirt", "face", "left-arm",
    "right-arm", "left-leg", "right-leg", "left-shoe", "right-shoe",
)
_LIP_PAIRS = ((14, 15), (16, 17), (18, 19))

_ATR_NAMES = (
    "background", "hat", "hair", "sunglasses", "upper-clothes", "skirt", "pants",
    "dress", "belt", "left-shoe", "right-shoe", "face", "left-leg", "right-leg",
    "left-arm", "right-arm", "bag", "scarf",
)

_MHPV2_NAMES = (
    "background", "cap-hat", "helmet", "face", "hair", "left-arm", "right-arm",
    "left-hand", "right-hand", "protector", "bikini-bra", "jacket-windbreaker-hoodie",
    "t-shirt", "polo-shirt", "sweater", "singlet", "torso-skin", "pants",
    "shorts-swim-shorts", "skirt", "stockings", "socks", "left-boot", "right-boot",
    "left-shoe", "right-shoe", "left-highheel", "right-highheel", "left-sandal",
    "right-sandal", "left-leg", "right-leg", "left-foot", "right-foot", "coat",
    "dress", "robe", "jumpsuit", "other-full-body-clothes", "headwear", "backpack",
    "ball", "bats", "belt", "bottle", "carrybag", "cases", "sunglasses", "eyewear",
    "glove", "scarf", "umbrella", "wallet-purse", "watch", "wristband", "tie",
    "other-accessory", "other-upper-body-clothes", "other-lower-body-clothes",
)

# CCP's label_list.mat, in file order; id 0 is "null" (unlabelled/background).
_CCP_NAMES = (
    "null", "accessories", "bag", "belt", "blazer", "blouse", "bodysuit", "boots",
    "bra", "bracelet", "cape", "cardigan", "clogs", "coat", "dress", "earrings",
    "flats", "glasses", "gloves", "hair", "hat", "heels", "hoodie", "intimate",
    "jacket", "jeans", "jumper", "leggings", "loafers", "necklace", "panties",
    "pants", "pumps", "purse", "ring", "romper", "sandals", "scarf", "shirt",
    "shoes", "shorts", "skin", "skirt", "sneakers", "socks", "stockings", "suit",
    "sunglasses", "sweater", "sweatshirt", "swimwear", "t-shirt", "tie", "tights",
    "top", "vest", "wallet", "watch", "wedges",
)

# Pascal-Person-Part (SCHP's "pascal" checkpoint): body-part regions, clothing included; no left/right classes.
_PASCAL_PERSON_PART_NAMES = ("background", "head", "torso", "upper-arms", "lower-arms", "upper-legs", "lower-legs")

# What a human-robot interaction behaviour acts on, and every dataset here can be folded into (see
# class_mappings): face, arms and legs are one "skin" class because CCP does not separate them.
_HRI_NAMES = (
    "background", "hair", "skin", "headwear", "eyewear", "upper-clothes", "lower-clothes",
    "full-body-clothes", "footwear", "bag", "accessory",
)
# hri's colours, told apart at a glance also by colour-blind viewers: a maximin search over the 6-level RGB grid
# (steps of 51) for the largest smallest CIE76 distance between any two classes, taken over normal vision and the
# Machado et al. (2009) protanopia, deuteranopia and tritanopia simulations (severity 1.0). Smallest distance 28
# (VOC's colours: 12 in normal vision, 1 under protanopia). docs/class_sets.md says how; test_class_sets checks it.
HRI_PALETTE = np.array([
    (0, 0, 0),  # background
    (153, 0, 0),  # hair: dark red
    (255, 204, 0),  # skin: amber
    (255, 0, 255),  # headwear: magenta
    (102, 255, 255),  # eyewear: light cyan
    (0, 0, 153),  # upper-clothes: navy
    (102, 153, 102),  # lower-clothes: sage green
    (153, 102, 153),  # full-body-clothes: mauve
    (255, 51, 0),  # footwear: orange-red
    (204, 255, 153),  # bag: pale lime
    (102, 0, 102),  # accessory: dark purple
], dtype=np.uint8)

CLASS_SETS: dict[str, ClassSet] = {
    cs.name: cs
    for cs in (
        ClassSet("lip", _LIP_NAMES, _LIP_PAIRS),
        # CIHP uses LIP's ids except 10, which is torso skin instead of jumpsuits.
        ClassSet("cihp", _LIP_NAMES[:10] + ("torso-skin",) + _LIP_NAMES[11:], _LIP_PAIRS),
        ClassSet("atr", _ATR_NAMES, ((9, 10), (12, 13), (14, 15))),
        ClassSet(
            "mhpv2",
            _MHPV2_NAMES,
            ((5, 6), (7, 8), (22, 23), (24, 25), (26, 27), (28, 29), (30, 31), (32, 33)),
        ),
        # CCP labels garments, not body sides: nothing to swap when mirrored.
        ClassSet("ccp", _CCP_NAMES, ()),
        ClassSet("hri", _HRI_NAMES, (), palette=HRI_PALETTE),
        ClassSet("pascal_person_part", _PASCAL_PERSON_PART_NAMES, ()),
    )
}


def get_class_set(name: str) -> ClassSet:
    """The registered class set ``name`` (case-insensitive)."""
    try:
        return CLASS_SETS[name.lower()]
    except KeyError:
        known = ", ".join(sorted(CLASS_SETS))
        raise ClassSetError(f"unknown class set '{name}' (known: {known})") from None
