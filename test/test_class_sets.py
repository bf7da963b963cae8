"""Class-set registry: sizes, ids the datasets define, left/right pairs, palettes."""
import numpy as np
import pytest
from conftest import SHARED

from human_parsing_ros.class_sets import CLASS_SETS, ClassSet, get_class_set, voc_palette

SIZES = {"lip": 20, "cihp": 20, "atr": 18, "mhpv2": 59, "ccp": 59}


@pytest.mark.parametrize("name,size", sorted(SIZES.items()))
def test_sizes(name, size):
    cs = get_class_set(name)
    assert cs.num_classes == size == len(cs.names)
    assert cs.palette.shape == (size, 3) and cs.palette.dtype == np.uint8
    assert len(set(cs.names)) == size, f"{name}: duplicate class names"


def test_lookup_is_case_insensitive_and_unknown_is_named():
    assert get_class_set("LIP") is CLASS_SETS["lip"]
    with pytest.raises(ValueError, match="pascal_parts"):
        get_class_set("pascal_parts")


def test_background_ids():
    assert get_class_set("lip").names[0] == "background"
    assert get_class_set("cihp").names[0] == "background"
    assert get_class_set("atr").names[0] == "background"
    assert get_class_set("mhpv2").names[0] == "background"
    assert get_class_set("ccp").names[0] == "null"


def test_cihp_differs_from_lip_only_at_10():
    lip, cihp = get_class_set("lip"), get_class_set("cihp")
    assert cihp.names[10] == "torso-skin"
    assert lip.names[10] != "torso-skin"
    assert [i for i in range(20) if lip.names[i] != cihp.names[i]] == [10]
    assert cihp.index("Torso-Skin") == 10


def test_mhpv2_flip_pairs_exact():
    cs = get_class_set("mhpv2")
    assert sorted(cs.flip_pairs) == [(5, 6), (7, 8), (22, 23), (24, 25), (26, 27), (28, 29), (30, 31), (32, 33)]


@pytest.mark.parametrize("name", ["lip", "cihp"])
def test_lip_cihp_flip_pairs_exact(name):
    assert sorted(get_class_set(name).flip_pairs) == [(14, 15), (16, 17), (18, 19)]


@pytest.mark.parametrize("name", sorted(SIZES))
def test_flip_pairs_match_left_right_names(name):
    """Every 'left-X' has its 'right-X' partner in the pairs and nothing else is paired."""
    cs = get_class_set(name)
    expected = set()
    for i, n in enumerate(cs.names):
        if n.startswith("left-"):
            expected.add((i, cs.names.index("right-" + n[len("left-"):])))
    assert {tuple(sorted(p)) for p in cs.flip_pairs} == {tuple(sorted(p)) for p in expected}
    assert len(cs.flip_pairs) == sum(n.startswith("right-") for n in cs.names)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_flip_permutation_is_an_involution_swapping_the_pairs(name):
    cs = get_class_set(name)
    perm = cs.flip_permutation()
    assert sorted(perm) == list(range(cs.num_classes)), "not a permutation"
    assert [perm[perm[i]] for i in range(cs.num_classes)] == list(range(cs.num_classes))
    paired = set()
    for left, right in cs.flip_pairs:
        assert perm[left] == right and perm[right] == left
        paired |= {left, right}
    assert all(perm[i] == i for i in range(cs.num_classes) if i not in paired)
    # Applied to a label map, it really swaps left and right ids.
    labels = np.arange(cs.num_classes)
    swapped = np.asarray(perm)[labels]
    assert (swapped != labels).sum() == 2 * len(cs.flip_pairs)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_palettes_are_unique(name):
    palette = get_class_set(name).palette
    assert len({tuple(c) for c in palette.tolist()}) == len(palette)
    assert tuple(palette[0]) == (0, 0, 0)


def test_voc_palette_known_colours():
    # The PASCAL VOC colour map: 1 is dark red, 2 dark green, 3 olive, 4 navy; derived from its bit rule.
    p = voc_palette(8)
    assert p[1].tolist() == [128, 0, 0]
    assert p[2].tolist() == [0, 128, 0]
    assert p[3].tolist() == [128, 128, 0]
    assert p[4].tolist() == [0, 0, 128]
    assert p[7].tolist() == [128, 128, 128]


def test_class_set_validation():
    with pytest.raises(ValueError, match="out of range"):
        ClassSet("bad", ("a", "b"), ((0, 2),))
    with pytest.raises(ValueError, match="palette"):
        ClassSet("bad", ("a", "b"), (), palette=np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="nose"):
        get_class_set("lip").index("nose")


def test_ccp_names_match_label_list():
    path = SHARED / "data" / "ccp" / "label_list.mat"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    from scipy.io import loadmat

    entries = loadmat(str(path))["label_list"][0]
    names = []
    for entry in entries:
        text = str(entry[0]) if np.size(entry) else ""
        names.append(text.strip() or "null")
    assert len(names) == 59
    assert tuple(names) == get_class_set("ccp").names
