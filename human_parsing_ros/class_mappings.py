"""Mappings between class sets, declared by class name: every source class goes to exactly one target class.

    table = mapping_table("lip", "hri")     # uint8 lookup table over label values 0..255
    hri_labels = table[lip_labels]          # 255 (ignore) stays 255; ids outside LIP keep their value

The trainer maps labels on load (``dataset.class_set: hri`` on a LIP recipe), and
evaluation maps ground truth (and, to compare a finer model, its predictions) the same way.
Judgement calls, where a source class could go two ways, are commented.
"""
from __future__ import annotations

import numpy as np

from .class_sets import IGNORE_INDEX, get_class_set

_LIP_TO_HRI = {
    "background": "background", "hat": "headwear", "hair": "hair", "glove": "accessory",
    "sunglasses": "eyewear", "upper-clothes": "upper-clothes", "dress": "full-body-clothes",
    "coat": "upper-clothes", "socks": "footwear", "pants": "lower-clothes", "jumpsuits": "full-body-clothes",
    "scarf": "accessory", "skirt": "lower-clothes", "face": "skin", "left-arm": "skin", "right-arm": "skin",
    "left-leg": "skin", "right-leg": "skin", "left-shoe": "footwear", "right-shoe": "footwear",
}

MAPPINGS: dict[tuple[str, str], dict[str, str]] = {
    ("lip", "hri"): _LIP_TO_HRI,
    ("cihp", "hri"): {**{k: v for k, v in _LIP_TO_HRI.items() if k != "jumpsuits"}, "torso-skin": "skin"},
    ("atr", "hri"): {
        "background": "background", "hat": "headwear", "hair": "hair", "sunglasses": "eyewear",
        "upper-clothes": "upper-clothes", "skirt": "lower-clothes", "pants": "lower-clothes",
        "dress": "full-body-clothes", "belt": "accessory", "left-shoe": "footwear", "right-shoe": "footwear",
        "face": "skin", "left-leg": "skin", "right-leg": "skin", "left-arm": "skin", "right-arm": "skin",
        "bag": "bag", "scarf": "accessory",
    },
    ("mhpv2", "hri"): {
        "background": "background", "cap-hat": "headwear", "helmet": "headwear", "face": "skin", "hair": "hair",
        "left-arm": "skin", "right-arm": "skin", "left-hand": "skin", "right-hand": "skin",
        "protector": "accessory",  # knee and elbow pads: worn over clothes, not a garment
        "bikini-bra": "upper-clothes", "jacket-windbreaker-hoodie": "upper-clothes", "t-shirt": "upper-clothes",
        "polo-shirt": "upper-clothes", "sweater": "upper-clothes", "singlet": "upper-clothes",
        "torso-skin": "skin", "pants": "lower-clothes", "shorts-swim-shorts": "lower-clothes",
        "skirt": "lower-clothes", "stockings": "lower-clothes", "socks": "footwear",
        "left-boot": "footwear", "right-boot": "footwear", "left-shoe": "footwear", "right-shoe": "footwear",
        "left-highheel": "footwear", "right-highheel": "footwear", "left-sandal": "footwear",
        "right-sandal": "footwear", "left-leg": "skin", "right-leg": "skin", "left-foot": "skin",
        "right-foot": "skin", "coat": "upper-clothes", "dress": "full-body-clothes", "robe": "full-body-clothes",
        "jumpsuit": "full-body-clothes", "other-full-body-clothes": "full-body-clothes", "headwear": "headwear",
        "backpack": "bag", "carrybag": "bag", "cases": "bag", "wallet-purse": "bag",
        # carried objects other than bags count as accessories: a behaviour sees "something in hand"
        "ball": "accessory", "bats": "accessory", "bottle": "accessory", "umbrella": "accessory",
        "belt": "accessory", "sunglasses": "eyewear", "eyewear": "eyewear", "glove": "accessory",
        "scarf": "accessory", "watch": "accessory", "wristband": "accessory", "tie": "accessory",
        "other-accessory": "accessory", "other-upper-body-clothes": "upper-clothes",
        "other-lower-body-clothes": "lower-clothes",
    },
    # Pascal-Person-Part labels body-part regions with whatever covers them, so its parts fold into hri
    # by what usually covers them in everyday scenes: approximate by nature (a bare torso becomes
    # upper clothes, a head's hair becomes skin). Fine for training a coarse person mask, not for clothing.
    ("pascal_person_part", "hri"): {
        "background": "background", "head": "skin", "torso": "upper-clothes", "upper-arms": "upper-clothes",
        "lower-arms": "skin", "upper-legs": "lower-clothes", "lower-legs": "lower-clothes",
    },
    ("ccp", "hri"): {
        "null": "background", "accessories": "accessory", "bag": "bag", "belt": "accessory",
        "blazer": "upper-clothes", "blouse": "upper-clothes", "bodysuit": "full-body-clothes",
        "boots": "footwear", "bra": "upper-clothes", "bracelet": "accessory", "cape": "upper-clothes",
        "cardigan": "upper-clothes", "clogs": "footwear", "coat": "upper-clothes", "dress": "full-body-clothes",
        "earrings": "accessory", "flats": "footwear", "glasses": "eyewear", "gloves": "accessory", "hair": "hair",
        "hat": "headwear", "heels": "footwear", "hoodie": "upper-clothes", "intimate": "upper-clothes",
        "jacket": "upper-clothes", "jeans": "lower-clothes",
        "jumper": "full-body-clothes",  # CCP's photos are American: a jumper is a pinafore dress (sweater is its own)
        "leggings": "lower-clothes", "loafers": "footwear", "necklace": "accessory", "panties": "lower-clothes",
        "pants": "lower-clothes", "pumps": "footwear", "purse": "bag", "ring": "accessory",
        "romper": "full-body-clothes", "sandals": "footwear", "scarf": "accessory", "shirt": "upper-clothes",
        "shoes": "footwear", "shorts": "lower-clothes", "skin": "skin", "skirt": "lower-clothes",
        "sneakers": "footwear", "socks": "footwear", "stockings": "lower-clothes",
        "suit": "full-body-clothes",  # one region for jacket and trousers together
        "sunglasses": "eyewear",
        "sweater": "upper-clothes", "sweatshirt": "upper-clothes",
        "swimwear": "full-body-clothes",  # one region whether one piece or two
        "t-shirt": "upper-clothes", "tie": "accessory", "tights": "lower-clothes", "top": "upper-clothes",
        "vest": "upper-clothes", "wallet": "bag", "watch": "accessory", "wedges": "footwear",
    },
}


def check_mapping(source: str, target: str) -> None:
    """ValueError naming what is wrong unless the mapping is total: every source class exactly once,
    onto classes of the target."""
    mapping = _declared(source, target)
    source_names, target_names = get_class_set(source).names, set(get_class_set(target).names)
    missing = [name for name in source_names if name not in mapping]
    unknown = [name for name in mapping if name not in source_names]
    wrong = sorted({to for to in mapping.values() if to not in target_names})
    if missing or unknown or wrong:
        raise ValueError(f"mapping {source} -> {target}: unmapped {missing}, not in {source} {unknown}, "
                         f"not in {target} {wrong}")


def mapping_table(source: str, target: str) -> np.ndarray:
    """uint8 lookup table over label values: source class ids to target ids; 255 stays 255, and values
    that are not source classes keep their value (so that label checks still name them)."""
    check_mapping(source, target)
    mapping, source_set, target_set = _declared(source, target), get_class_set(source), get_class_set(target)
    table = np.arange(256, dtype=np.uint8)
    for class_id, name in enumerate(source_set.names):
        table[class_id] = target_set.index(mapping[name])
    table[IGNORE_INDEX] = IGNORE_INDEX
    return table


def mapping_targets() -> dict[str, list[str]]:
    """For each source class set, the target class sets it maps to."""
    out: dict[str, list[str]] = {}
    for source, target in MAPPINGS:
        out.setdefault(source, []).append(target)
    return out


def _declared(source: str, target: str) -> dict[str, str]:
    key = (source.lower(), target.lower())
    if key not in MAPPINGS:
        known = ", ".join(f"{a}->{b}" for a, b in MAPPINGS)
        raise ValueError(f"no mapping from class set '{source}' to '{target}' (known: {known})")
    return MAPPINGS[key]
