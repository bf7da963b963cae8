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


# Machado, Oliveira & Fernandes (2009), severity 1.0: linear-RGB matrices simulating dichromat vision.
MACHADO_2009 = {
    "protanopia": ((0.152286, 1.052583, -0.204868), (0.114503, 0.786281, 0.099216), (-0.003882, -0.048116, 1.051998)),
    "deuteranopia": ((0.367322, 0.860646, -0.227968), (0.280085, 0.672501, 0.047413), (-0.011820, 0.042940, 0.968881)),
    "tritanopia": ((1.255528, -0.076749, -0.178779), (-0.078411, 0.930809, 0.147602), (0.004733, 0.691367, 0.303900)),
}
SRGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375), (0.2126729, 0.7151522, 0.0721750), (0.0193339, 0.1191920, 0.9503041))


def srgb_to_linear(colours: np.ndarray) -> np.ndarray:
    c = np.asarray(colours, np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_lab(linear: np.ndarray) -> np.ndarray:
    """CIELAB (D65 white) of linear-sRGB colours."""
    to_xyz = np.asarray(SRGB_TO_XYZ)
    xyz = linear @ to_xyz.T / to_xyz.sum(axis=1)  # relative to the white point (1, 1, 1) in linear RGB
    delta = 6 / 29
    f = np.where(xyz > delta ** 3, np.cbrt(xyz), xyz / (3 * delta ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def seen_as_lab(palette: np.ndarray) -> dict[str, np.ndarray]:
    """The palette in CIELAB as normal vision sees it and as each dichromacy simulation renders it."""
    linear = srgb_to_linear(palette)
    views = {"normal": linear_to_lab(linear)}
    for name, matrix in MACHADO_2009.items():
        views[name] = linear_to_lab(np.clip(linear @ np.asarray(matrix).T, 0.0, 1.0))
    return views


def smallest_delta_e(palette: np.ndarray) -> dict[str, float]:
    """Per view, the smallest CIE76 distance between two of the palette's colours."""
    out = {}
    for view, lab in seen_as_lab(palette).items():
        distances = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
        out[view] = float(distances[np.triu_indices(len(lab), 1)].min())
    return out


def test_the_colour_science_matches_known_values():
    lab = linear_to_lab(srgb_to_linear(np.array([[255, 255, 255], [255, 0, 0], [0, 0, 0]])))
    np.testing.assert_allclose(lab[0], (100, 0, 0), atol=0.01)
    np.testing.assert_allclose(lab[1], (53.24, 80.09, 67.20), atol=0.05)  # sRGB red's published CIELAB
    np.testing.assert_allclose(lab[2], (0, 0, 0), atol=0.01)
    for matrix in MACHADO_2009.values():  # every simulation keeps greys grey (rows sum to 1)
        np.testing.assert_allclose(np.asarray(matrix).sum(axis=1), 1.0, atol=1e-3)
    # VOC's skin (0,128,0) and accessory (128,128,0) nearly merge for a protanope: the reason hri left VOC
    voc = smallest_delta_e(voc_palette(11))
    assert voc["protanopia"] < 2 and voc["normal"] < 13


def test_hri_colours_stay_apart_in_normal_and_colour_blind_vision():
    smallest = smallest_delta_e(get_class_set("hri").palette)
    assert set(smallest) == {"normal", "protanopia", "deuteranopia", "tritanopia"}
    assert all(distance >= 20 for distance in smallest.values()), smallest


@pytest.mark.parametrize("file", ["default.safetensors", "persons_rprcnn.safetensors"])
def test_the_shipped_hri_weights_carry_the_registry_palette(file):
    from human_parsing_ros.resources import DEFAULT_WEIGHTS
    from human_parsing_ros.weights import read_weights_info

    info = read_weights_info(DEFAULT_WEIGHTS.parent / file)
    assert info.class_set_name == "hri" and info.palette == get_class_set("hri").palette.tolist()
