"""Dataset loaders against fixtures written in each dataset's on-disk layout, and against real files."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from human_parsing_ros.class_sets import IGNORE_INDEX, get_class_set
from human_parsing_ros.samples import SAMPLES, load_annotation
from training.datasets import ParsingDataset, Sample, build_dataset, merge_labels, read_image, read_label
from training.transforms import TrainTransform

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FORMAT_SAMPLES = SHARED / "format-samples"
CCP_ROOT = SHARED / "ccp"


def random_image(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    return rng.integers(0, 256, (*hw, 3), dtype=np.uint8)


def random_label(rng: np.random.Generator, hw: tuple[int, int], num_classes: int) -> np.ndarray:
    return rng.integers(0, num_classes, hw, dtype=np.uint8)


def save_jpeg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95)


def save_palette_png(path: Path, label: np.ndarray, class_set_name: str) -> None:
    """A mode-P PNG whose palette draws the ids in the class set's colours (as LIP/CIHP releases do)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.frombytes("P", (label.shape[1], label.shape[0]), np.ascontiguousarray(label).tobytes())
    palette = np.zeros((256, 3), dtype=np.uint8)
    colours = get_class_set(class_set_name).palette
    palette[: len(colours)] = colours
    img.putpalette(palette.ravel().tolist())
    img.save(path)


def write_ids(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


# ---------------------------------------------------------------------------
# Reading single files


def test_read_label_png_modes_give_stored_values(tmp_path):
    rng = np.random.default_rng(0)
    label = random_label(rng, (20, 30), 20)
    save_palette_png(tmp_path / "p.png", label, "lip")
    Image.fromarray(label).save(tmp_path / "l.png")
    rgb = np.stack([label, np.full_like(label, 200), 255 - label], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    for name in ("p.png", "l.png", "rgb.png"):
        loaded = read_label(tmp_path / name)
        assert loaded.dtype == np.uint8 and loaded.shape == (20, 30)
        np.testing.assert_array_equal(loaded, label, err_msg=name)
    assert read_label(tmp_path / "p.png").flags.writeable


def test_read_label_mat_and_image(tmp_path):
    rng = np.random.default_rng(1)
    label = random_label(rng, (9, 7), 59)
    savemat(tmp_path / "a.mat", {"groundtruth": label})
    np.testing.assert_array_equal(read_label(tmp_path / "a.mat"), label)
    savemat(tmp_path / "b.mat", {"other": label})
    with pytest.raises(ValueError, match="groundtruth"):
        read_label(tmp_path / "b.mat")
    Image.fromarray(np.full((5, 6), 90, np.uint8)).save(tmp_path / "grey.jpg")
    image = read_image(tmp_path / "grey.jpg")
    assert image.shape == (5, 6, 3) and image.dtype == np.uint8


def test_merge_labels_later_nonzero_overwrites():
    first = np.array([[1, 1, 0], [1, 0, 0]], np.uint8)
    second = np.array([[0, 2, 2], [0, 0, 2]], np.uint8)
    np.testing.assert_array_equal(merge_labels([first, second]), [[1, 2, 2], [1, 0, 2]])
    np.testing.assert_array_equal(merge_labels([second, first]), [[1, 1, 2], [1, 0, 2]])


# ---------------------------------------------------------------------------
# MHPv2.0


def person_png(path: Path, parts: np.ndarray, noise: int) -> None:
    """MHPv2's per-person annotation: a 3-channel PNG whose channel 0 is the part id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.stack([parts, np.full_like(parts, noise), np.full_like(parts, 255 - noise)], axis=-1)
    Image.fromarray(rgb).save(path)


@pytest.fixture()
def mhp_root(tmp_path):
    root = tmp_path / "LV-MHP-v2"
    rng = np.random.default_rng(2)
    hw = (24, 32)
    # Image "1": two persons overlapping in columns 10-19; person 02 is drawn last.
    person1 = np.zeros(hw, np.uint8)
    person1[:, 0:20] = 5
    person1[0:4, 0:4] = 58
    person2 = np.zeros(hw, np.uint8)
    person2[:, 10:30] = 6
    person_png(root / "train" / "parsing_annos" / "1_02_02.png", person2, noise=40)
    person_png(root / "train" / "parsing_annos" / "1_02_01.png", person1, noise=120)
    # Image "10": one person (its files start with "1" too).
    single = random_label(rng, hw, 59)
    person_png(root / "train" / "parsing_annos" / "10_01_01.png", single, noise=3)
    for sample_id in ("1", "10"):
        save_jpeg(root / "train" / "images" / f"{sample_id}.jpg", random_image(rng, hw))
    write_ids(root / "list" / "train.txt", ["1", "10"])
    expected = person1.copy()
    expected[:, 10:30] = 6
    return root, {"1": expected, "10": single}


def test_mhpv2_merges_persons_in_file_name_order_using_channel0(mhp_root):
    root, expected = mhp_root
    dataset = build_dataset("mhpv2", root, "train")
    assert dataset.class_set.name == "mhpv2" and len(dataset) == 2
    assert [item.id for item in dataset.items] == ["1", "10"]
    assert [p.name for p in dataset.items[0].labels] == ["1_02_01.png", "1_02_02.png"]
    assert [p.name for p in dataset.items[1].labels] == ["10_01_01.png"]
    for index, item in enumerate(dataset.items):
        image, label = dataset[index]
        assert image.shape == (24, 32, 3) and image.dtype == np.uint8
        assert label.dtype == np.uint8
        np.testing.assert_array_equal(label, expected[item.id])
    assert dataset[0][1][0, 0] == 58 and dataset[0][1][5, 15] == 6  # overlap: the later person wins


def test_mhpv2_skips_corrupt_images_with_a_warning(mhp_root):
    root, expected = mhp_root
    (root / "train" / "images" / "7.jpg").write_bytes(b"not a jpeg at all")
    person_png(root / "train" / "parsing_annos" / "7_01_01.png", expected["10"], noise=0)
    write_ids(root / "list" / "train.txt", ["1", "7", "10"])
    with pytest.warns(UserWarning, match="7.jpg"):
        dataset = build_dataset("mhpv2", root, "train")
    assert [item.id for item in dataset.items] == ["1", "10"]


def test_mhpv2_truncated_image_is_replaced_by_the_next_item(mhp_root):
    root, expected = mhp_root
    jpeg = root / "train" / "images" / "1.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])  # header intact, data cut
    dataset = build_dataset("mhpv2", root, "train")
    assert len(dataset) == 2
    with pytest.raises(OSError):
        dataset.load(0)
    with pytest.warns(UserWarning, match="1.jpg"):
        _, label = dataset[0]
    np.testing.assert_array_equal(label, expected["10"])


# ---------------------------------------------------------------------------
# LIP, CIHP, ATR


def write_paired(root: Path, images: str, labels: str, ids: list[str], class_set: str,
                 seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    written = {}
    for k, sample_id in enumerate(ids):
        hw = (16 + k, 12 + 2 * k)
        written[sample_id] = random_label(rng, hw, get_class_set(class_set).num_classes)
        save_jpeg(root / images / f"{sample_id}.jpg", random_image(rng, hw))
        save_palette_png(root / labels / f"{sample_id}.png", written[sample_id], class_set)
    return written


def assert_loads(dataset: ParsingDataset, written: dict[str, np.ndarray]) -> None:
    assert [item.id for item in dataset.items] == list(written)
    for index, label in enumerate(written.values()):
        image, loaded = dataset[index]
        assert image.shape[:2] == label.shape
        np.testing.assert_array_equal(loaded, label)


def test_lip_layout(tmp_path):
    written = write_paired(tmp_path, "val_images", "val_segmentations", ["36_1", "77_2"], "lip")
    write_ids(tmp_path / "val_id.txt", list(written))
    dataset = build_dataset("lip", tmp_path, "val")
    assert dataset.class_set.name == "lip"
    assert_loads(dataset, written)
    assert [item.id for item in build_dataset("lip", tmp_path, "val", ids=["77_2"]).items] == ["77_2"]


def test_cihp_layout(tmp_path):
    written = write_paired(tmp_path, "Images", "Category_ids", ["0000001", "0000002", "0000003"], "cihp")
    write_ids(tmp_path / "train_id.txt", ["0000003", "0000001"])
    dataset = build_dataset("cihp", tmp_path, "train")
    assert dataset.class_set.name == "cihp"
    assert_loads(dataset, {k: written[k] for k in ("0000003", "0000001")})


def test_atr_layout_with_and_without_list(tmp_path):
    written = write_paired(tmp_path, "JPEGImages", "SegmentationClassAug", ["b_2", "a_1", "c_3"], "atr")
    dataset = build_dataset("atr", tmp_path, "all")
    assert dataset.class_set.num_classes == 18
    assert_loads(dataset, {k: written[k] for k in sorted(written)})
    write_ids(tmp_path / "val.txt", ["c_3"])
    assert_loads(build_dataset("atr", tmp_path, "val"), {"c_3": written["c_3"]})
    with pytest.raises(FileNotFoundError, match="train.txt"):
        build_dataset("atr", tmp_path, "train")


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_dataset("lip", tmp_path / "nowhere", "train")
    with pytest.raises(ValueError, match="split 'test'"):
        build_dataset("lip", tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="train_id.txt"):
        build_dataset("lip", tmp_path, "train")
    with pytest.raises(ValueError, match="unknown dataset 'voc'"):
        build_dataset("voc", tmp_path, "train")
    with pytest.raises(ValueError, match="unknown option"):
        build_dataset("ccp", SAMPLES, "all", colour=True)
    write_ids(tmp_path / "val_id.txt", ["x"])
    with pytest.raises(FileNotFoundError, match="val_images"):
        build_dataset("lip", tmp_path, "val")


# ---------------------------------------------------------------------------
# CCP


def write_ccp(root: Path, numbers: list[int], annotation_dir: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    written = {}
    for n in numbers:
        label = random_label(rng, (14, 10), 59)
        save_jpeg(root / "photos" / f"{n:04d}.jpg", random_image(rng, label.shape))
        (root / annotation_dir).mkdir(parents=True, exist_ok=True)
        savemat(root / annotation_dir / f"{n:04d}.mat", {"groundtruth": label})
        written[f"{n:04d}"] = label
    return written


@pytest.mark.parametrize("annotation_dir", ["annotations/pixel-level", "annotations"])
def test_ccp_layout_and_protocol_splits(tmp_path, annotation_dir):
    written = write_ccp(tmp_path, [3, 704, 705, 854, 855, 1004], annotation_dir)
    splits = {s: [i.id for i in build_dataset("ccp", tmp_path, s).items] for s in ("train", "val", "test", "all")}
    assert splits == {"train": ["0003", "0704"], "val": ["0705", "0854"], "test": ["0855", "1004"],
                      "all": list(written)}
    subset = build_dataset("ccp", tmp_path, "train", ids=[855, "3"])
    assert_loads(subset, {"0855": written["0855"], "0003": written["0003"]})
    with pytest.raises(FileNotFoundError, match="0002.mat"):
        build_dataset("ccp", tmp_path, "train", ids=[2])


def test_seeded_dataset_gives_per_item_reproducible_augmentation(tmp_path):
    write_ccp(tmp_path, [1, 2], "annotations")
    transform = TrainTransform(crop_size=(8, 8))
    dataset = build_dataset("ccp", tmp_path, "all", transform=transform, seed=5)
    first = dataset[1]
    dataset[0]
    torch.rand(3)  # the global generator is not involved
    again = dataset[1]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[1][0], first[0])


def test_ccp_bundled_samples():
    dataset = build_dataset("ccp", SAMPLES, "test")
    assert len(dataset) == 7 and len(build_dataset("ccp", SAMPLES, "all")) == 7
    for index, item in enumerate(dataset.items):
        image, label = dataset.load(index)
        assert image.shape[:2] == label.shape and image.shape[1] == 550
        np.testing.assert_array_equal(label, load_annotation(item.image))
        assert label.max() <= 58
    with pytest.raises(ValueError, match="no samples"):
        build_dataset("ccp", SAMPLES, "train")


def test_ccp_real_dataset_splits():
    if not CCP_ROOT.is_dir():
        pytest.skip(f"{CCP_ROOT} not available")
    sizes = {s: len(build_dataset("ccp", CCP_ROOT, s)) for s in ("train", "val", "test", "all")}
    assert sizes == {"train": 704, "val": 150, "test": 150, "all": 1004}
    dataset = build_dataset("ccp", CCP_ROOT, "all")
    highest = max(int(dataset.load_label(i).max()) for i in range(len(dataset)))
    assert highest == 58
    image, label = dataset.load(0)
    assert image.shape == (*label.shape, 3) and label.shape[1] == 550


# ---------------------------------------------------------------------------
# Real LIP and CIHP files


@pytest.mark.parametrize("name,split,count", [("lip", "train", 1), ("lip", "val", 1), ("cihp", "val", 5)])
def test_real_format_samples(name, split, count):
    root = FORMAT_SAMPLES / name
    if not root.is_dir():
        pytest.skip(f"{root} not available")
    dataset = build_dataset(name, root, split)
    assert len(dataset) == count
    for index, item in enumerate(dataset.items):
        image, label = dataset[index]
        (png,) = item.labels
        with Image.open(png) as img:
            stored = np.asarray(img)
        assert label.shape == stored.shape == image.shape[:2]
        np.testing.assert_array_equal(label, stored)
        assert label.max() < 20 and IGNORE_INDEX not in label
        assert len(np.unique(label)) > 3  # real maps hold several parts


def test_parsing_dataset_direct_construction(tmp_path):
    written = write_paired(tmp_path, "im", "lb", ["a"], "lip")
    sample = Sample(tmp_path / "im" / "a.jpg", (tmp_path / "lb" / "a.png",), "a")
    dataset = ParsingDataset([sample], get_class_set("lip"))
    assert dataset.items == [sample] and len(dataset) == 1
    np.testing.assert_array_equal(dataset[0][1], written["a"])
    missing = ParsingDataset([Sample(tmp_path / "im" / "a.jpg", (), "a")], get_class_set("lip"))
    with pytest.raises(FileNotFoundError, match="no label file"):
        missing[0]


# ---- hostile data: name the broken file, refuse out-of-range ids early (real CCP samples) ----------------
def copy_ccp_samples(root: Path) -> Path:
    import shutil

    shutil.copytree(SAMPLES, root)
    return root


def test_corrupt_annotation_is_reported_under_its_own_name(tmp_path):
    root = copy_ccp_samples(tmp_path / "ccp")
    broken = root / "annotations" / "0900.mat"
    broken.write_bytes(b"MATLAB 5.0 MAT-file, but the rest is garbage" * 3)
    dataset = build_dataset("ccp", root, "all", skip_unreadable=True)
    index = [item.id for item in dataset.items].index("0900")
    with pytest.warns(UserWarning) as caught:
        dataset[index]
    messages = [str(w.message) for w in caught if "skipping" in str(w.message)]
    assert len(messages) == 1 and str(broken) in messages[0], messages
    assert "photos" not in messages[0] and "\n" not in messages[0]
    with pytest.raises(ValueError, match=str(broken)):
        read_label(broken)


def test_corrupt_photo_is_reported_under_its_own_name(tmp_path):
    root = copy_ccp_samples(tmp_path / "ccp")
    broken = root / "photos" / "0900.jpg"
    broken.write_bytes(broken.read_bytes()[:600])  # truncated JPEG: PIL's message names no file
    with pytest.raises(OSError) as error:
        read_image(broken)
    assert str(broken) in str(error.value) and "\n" not in str(error.value)


def test_out_of_range_label_id_is_refused_by_the_first_pass_naming_file_and_ids(tmp_path):
    from scipy.io import loadmat

    from training.label_statistics import LabelIdError, class_pixel_counts, class_statistics

    root = copy_ccp_samples(tmp_path / "ccp")
    bad = root / "annotations" / "0920.mat"
    label = np.asarray(loadmat(bad)["groundtruth"]).astype(np.uint8)
    label[0, :4] = 200
    label[1, :4] = 255  # the ignore index stays allowed
    savemat(bad, {"groundtruth": label})
    dataset = build_dataset("ccp", root, "all", skip_unreadable=True)
    stats = class_statistics(dataset)  # the statistics tool still counts them
    assert stats["out_of_range_pixels"] == 4 and stats["out_of_range"] == [(str(bad), [200])]
    with pytest.raises(LabelIdError) as error:
        class_pixel_counts(dataset)
    message = str(error.value)
    assert str(bad) in message and "[200]" in message and "\n" not in message
    label[0, :4] = 0  # only 255 left: accepted
    savemat(bad, {"groundtruth": label})
    assert class_pixel_counts(dataset).shape == (59,)


def test_validation_never_scores_a_sample_in_place_of_an_unreadable_one(tmp_path):
    """The trainer's validation set: where the dataset skips unreadable samples (MHPv2) the broken one is left
    out, not replaced by the next (which would count twice); elsewhere the run stops naming the file."""
    from training.dtpr import validation_statistics
    from training.label_statistics import UnreadableDataError

    root = copy_ccp_samples(tmp_path / "ccp")
    broken = root / "annotations" / "0900.mat"
    broken.write_bytes(b"MATLAB 5.0 MAT-file, but the rest is garbage" * 3)
    skipping = build_dataset("ccp", root, "all", skip_unreadable=True)
    ids = [item.id for item in skipping.items]
    with pytest.warns(UserWarning, match="0900"):
        stats = validation_statistics(skipping, "all")
    assert stats["skipped"] == ["0900"] and [item.id for item in skipping.items] == [i for i in ids if i != "0900"]
    with pytest.raises(UnreadableDataError, match=re.escape(f"validation split 'all': {broken}")):
        validation_statistics(build_dataset("ccp", root, "all"), "all")
