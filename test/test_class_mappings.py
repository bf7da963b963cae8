"""Class-set mappings (to the HRI set): total by construction, applied on load, in training and in evaluation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from human_parsing_ros.class_mappings import MAPPINGS, check_mapping, mapping_table
from human_parsing_ros.class_sets import CLASS_SETS, IGNORE_INDEX, get_class_set
from human_parsing_ros.resources import CCP59_WEIGHTS
from human_parsing_ros.samples import SAMPLES

HRI = ("background", "hair", "skin", "headwear", "eyewear", "upper-clothes", "lower-clothes", "full-body-clothes",
       "footwear", "bag", "accessory")


def test_hri_is_exactly_the_documented_classes_in_order():
    assert get_class_set("hri").names == HRI


@pytest.mark.parametrize("source", sorted(set(CLASS_SETS) - {"hri"}))
def test_every_class_set_maps_totally_onto_hri(source):
    check_mapping(source, "hri")
    names = get_class_set(source).names
    assert sorted(MAPPINGS[(source, "hri")]) == sorted(names)  # every source class, each exactly once
    table = mapping_table(source, "hri")
    assert table[:len(names)].max() < len(HRI) and table[IGNORE_INDEX] == IGNORE_INDEX
    if "hair" in names:  # every garment/part set but Pascal-Person-Part (body-part regions) has hair
        assert table[names.index("hair")] == HRI.index("hair")
    assert table[0] == 0  # background (CCP: null) stays background
    assert all(table[i] == i for i in range(len(names), 255))  # not a source class: kept, so checks name it


def test_a_partial_mapping_is_refused_naming_the_class(monkeypatch):
    broken = {k: v for k, v in MAPPINGS[("lip", "hri")].items() if k != "scarf"}
    monkeypatch.setitem(MAPPINGS, ("lip", "hri"), {**broken, "cape": "upper-clothes", "hat": "hats"})
    with pytest.raises(ValueError) as error:
        mapping_table("lip", "hri")
    assert "['scarf']" in str(error.value) and "['cape']" in str(error.value) and "['hats']" in str(error.value)
    with pytest.raises(ValueError, match="no mapping from class set 'hri' to 'lip'"):
        mapping_table("hri", "lip")


def test_a_mapped_dataset_yields_only_target_ids_from_real_ccp_labels():
    from training.datasets import build_dataset

    raw = build_dataset("ccp", SAMPLES, "all")
    mapped = build_dataset("ccp", SAMPLES, "all", class_set="hri")
    assert mapped.class_set.name == "hri" and raw.class_set.name == "ccp"
    table = mapping_table("ccp", "hri")
    seen = set()
    for index in range(len(raw)):
        source, target = raw.load_label(index), mapped.load_label(index)
        assert np.array_equal(target, table[source]) and target.max() < len(HRI)
        seen |= set(np.unique(target).tolist())
    assert {0, 1, 2, 5} <= seen  # background, hair, skin and upper clothes occur in the sample photos


def test_the_trainer_trains_on_mapped_labels_and_writes_hri_weights(tmp_path):
    from test_trainer import tiny_config

    from human_parsing_ros.parser import HumanParser
    from human_parsing_ros.samples import load_rgb, sample_photos
    from training.config import load_config
    from training.dtpr import run

    config = tiny_config(tmp_path / "run", **{"stage1.epochs": 1, "stage1.cpa_epoch": 1, "stage2.epochs": 0})
    config["dataset"]["class_set"] = "hri"
    config["log"]["tensorboard"] = False
    result = run(load_config(overrides=config))
    parser = HumanParser(result["weights"], device="cpu")
    assert parser.class_set.names == HRI and parser.num_classes == len(HRI)
    assert parser.parse(load_rgb(sample_photos()[0])).labels.max() < len(HRI)


def test_serving_evaluation_counts_every_pixel_and_folds_like_the_mapping():
    """The node's own parse of every bundled photo: the 59-class confusion, folded through the mapping,
    equals the confusion counted in hri directly."""
    from PIL import Image

    from training.evaluate import serving_confusion

    fine = serving_confusion(CCP59_WEIGHTS, "ccp", SAMPLES, "all")
    folded = serving_confusion(CCP59_WEIGHTS, "ccp", SAMPLES, "all", fold_to="hri")
    pixels = sum(np.prod(Image.open(p).size) for p in sorted((SAMPLES / "photos").glob("*.jpg")))
    assert int(fine.sum()) == int(folded.sum()) == pixels  # every pixel, at each photo's resolution
    table = torch.from_numpy(mapping_table("ccp", "hri")[:59].astype(np.int64))
    expected = torch.zeros(len(HRI), len(HRI), dtype=torch.int64)
    expected.index_put_((table[:, None].expand(59, 59), table[None, :].expand(59, 59)), fine, accumulate=True)
    assert torch.equal(folded, expected)


def test_datasets_mapped_to_one_class_set_train_together(tmp_path):
    """CCP's sample photos plus a LIP-layout split, both mapped to hri: one training set whose labels are each
    part's own labels through its own mapping; a part left in its own class set is refused."""
    from PIL import Image

    from training.config import load_config
    from training.datasets import ConcatParsingDataset, build_dataset
    from training.dtpr import make_datasets
    from training.export import recipe_summary, validation_is_trained_on
    from training.label_statistics import class_statistics

    lip = np.zeros((12, 8), np.uint8)
    lip[2:5, 2:6] = get_class_set("lip").index("hair")
    lip[5:10, 1:7] = get_class_set("lip").index("upper-clothes")
    (tmp_path / "train_images").mkdir()
    (tmp_path / "train_segmentations").mkdir()
    Image.fromarray(np.full((12, 8, 3), 90, np.uint8)).save(tmp_path / "train_images" / "a.jpg")
    Image.fromarray(lip).save(tmp_path / "train_segmentations" / "a.png")
    (tmp_path / "train_id.txt").write_text("a\n")
    config = load_config(overrides={"dataset": {
        "name": "ccp", "root": str(SAMPLES), "train_split": "all", "val_split": "test", "class_set": "hri",
        "extra": [{"name": "lip", "root": str(tmp_path), "split": "train"}]}})
    train_set, _ = make_datasets(config, get_class_set("hri"))
    ccp = build_dataset("ccp", SAMPLES, "all", class_set="hri")
    assert isinstance(train_set, ConcatParsingDataset) and len(train_set) == len(ccp) + 1
    assert np.array_equal(train_set.load_label(0), ccp.load_label(0))
    assert np.array_equal(train_set.load_label(len(ccp)), mapping_table("lip", "hri")[lip])
    assert set(np.unique(train_set.load_label(len(ccp))).tolist()) == {0, HRI.index("hair"),
                                                                         HRI.index("upper-clothes")}
    image, label = train_set[len(ccp)]  # the augmented pair of the LIP photo, in hri ids
    assert image.shape[0] == 3 and int(label[label != 255].max()) < len(HRI)
    assert class_statistics(train_set)["num_images"] == len(ccp) + 1
    with pytest.raises(ValueError, match="share one class set"):
        ConcatParsingDataset([ccp, build_dataset("lip", tmp_path, "train")])
    bad = load_config(overrides={"dataset": {**config.dataset.to_dict(), "extra": [{"name": "lip", "path": "x"}]}})
    with pytest.raises(ValueError, match="needs name and root"):
        make_datasets(bad, get_class_set("hri"))
    # the weights file says what it trained on; training on the validation split itself is flagged
    assert recipe_summary(config, {})["splits"] == {"train": "all", "val": "test", "extra": ["lip:train"]}
    assert validation_is_trained_on(config.dataset) is None
    def with_extra(root: Path) -> dict:
        extra = [{"name": "ccp", "root": str(root), "split": "test"}]
        return load_config(overrides={"dataset": {**config.dataset.to_dict(), "extra": extra}})

    same = with_extra(Path(config["dataset"]["root"]) / "." / ".." / Path(config["dataset"]["root"]).name)
    assert validation_is_trained_on(same.dataset)
    assert recipe_summary(same, {})["splits"]["val_held_out"] is False
    assert not validation_is_trained_on(with_extra(tmp_path).dataset)  # another copy of the dataset: not its val split
    for changes in ({"val_split": "all"}, {"options": {"ids": [880, 900]}}):  # the same images on both sides
        both = load_config(overrides={"dataset": {**config.dataset.to_dict(), **changes}})
        assert recipe_summary(both, {})["splits"]["val_held_out"] is False, changes
    lip_ids = {"name": "lip", "train_split": "train", "val_split": "val", "options": {"ids": ["77_2"]}, "extra": []}
    assert validation_is_trained_on(load_config(overrides={"dataset": lip_ids}).dataset) is None  # a folder per split
    assert "extra" not in recipe_summary(load_config(), {})["splits"]
