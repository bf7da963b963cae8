"""The weights installed with the package: the `hri` default, and the 59-class CCP model of the DTPR study."""
from __future__ import annotations

from human_parsing_ros.class_mappings import mapping_table
from human_parsing_ros.class_sets import get_class_set
from human_parsing_ros.parser import HumanParser
from human_parsing_ros.resources import CCP59_WEIGHTS, DEFAULT_WEIGHTS, resolve_weights_path
from human_parsing_ros.samples import load_annotation, load_rgb, sample_photos
from human_parsing_ros.weights import read_weights_info


def test_default_weights_are_hri_and_say_how_they_were_made():
    assert resolve_weights_path("") == DEFAULT_WEIGHTS and DEFAULT_WEIGHTS.stat().st_size < 16 * 2**20
    info = read_weights_info(DEFAULT_WEIGHTS)
    assert not info.untrained and info.class_set_name == "hri"
    assert info.class_names == list(get_class_set("hri").names) and info.input_size == (416, 416)
    assert info.architecture == "deeplabv3plus" and info.architecture_args["encoder"] == "mobilenet_v2"
    recipe = info.recipe
    # the fourth run: real persons' masks as partial labels, from the real-scene default (docs/weights.md,
    # docs/real_scenes.md)
    assert recipe["dataset"] == "ccp" and recipe["recipe"] == "ccp_real_persons_hri_mobilenetv2"
    assert "ccp_real_persons_hri_mobilenetv2" in recipe["selected"] and "9cd4d39" in recipe["init"]
    assert recipe["splits"] == {"train": "train", "val": "val",
                                "extra": ["ccp_composites:train", "coco_persons:validation"]}
    assert recipe["train_seconds"] > 0
    (stage,) = recipe["stages"]
    assert stage["loss"] == "ce_lovasz" and stage["epochs"] == 3
    # the test split through the serving path, measured 0.564 (README: Default weights)
    assert recipe["metrics"]["test_serving"]["mean_iou"] > 0.55


def test_default_weights_parse_the_bundled_photos_into_hri_classes():
    """The bundled photos are in CCP's test split: held out from training and from every choice."""
    parser = HumanParser(DEFAULT_WEIGHTS, device="cpu")
    fold = mapping_table("ccp", "hri")
    correct = labelled = person_correct = person = 0
    for photo in sample_photos():
        truth = fold[load_annotation(photo)]
        labels = parser.parse(load_rgb(photo)).labels
        assert labels.shape == truth.shape and int(labels.max()) < 11
        correct += int((labels == truth).sum())
        labelled += truth.size
        on_person = truth != 0
        person_correct += int((labels[on_person] == truth[on_person]).sum())
        person += int(on_person.sum())
        # the person is found and the background left alone (measured: 0.82-0.98 of the person's pixels,
        # at most 0.018 of the background's)
        assert (labels[on_person] != 0).mean() > 0.8, photo.name
        assert (labels[~on_person] != 0).mean() < 0.05, photo.name
    # measured 0.880 of all pixels right and 0.569 of the person's (right part or garment class)
    assert correct / labelled > 0.8
    assert person_correct / person > 0.4


def test_the_59_class_ccp_model_of_the_dtpr_study_stays_installed():
    info = read_weights_info(CCP59_WEIGHTS)
    assert info.class_set_name == "ccp" and len(info.class_names) == 59
    recipe = info.recipe
    assert recipe["recipe"] == "mobilenetv2_dtpr_seed{}".format(recipe["seed"]) and recipe["sampling"] == "pra"
    assert "best validation mIoU" in recipe["selected"]
    photo = sample_photos()[0]
    labels = HumanParser(CCP59_WEIGHTS, device="cpu").parse(load_rgb(photo)).labels
    truth = load_annotation(photo)
    assert labels.shape == truth.shape and (labels[truth != 0] != 0).mean() > 0.9
