"""Real persons as partial labels (#32, training/person_labels.py): where a COCO-style photo's persons are
known but not their parts, the loss asks for "some part" there, background elsewhere, and nothing per class."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from human_parsing_ros.class_sets import IGNORE_INDEX, get_class_set
from training.engine import StageLoss, batch_loss
from training.person_labels import PERSON_INDEX, coco_persons, person_loss, split_person_labels

HRI = get_class_set("hri")


def write_photo_set(root: Path) -> Path:
    """Two photos: one with a person (a polygon) and a crowd region, one with nobody."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(root / "images" / name)
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 60},
                       {"id": 2, "file_name": "b.jpg", "height": 40, "width": 60}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 5, 10, 30], "iscrowd": 0,
                             "segmentation": [[10, 5, 20, 5, 20, 35, 10, 35]]},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [40, 0, 20, 10], "iscrowd": 1,
                             "segmentation": {"counts": [0, 1], "size": [40, 60]}}],
            "categories": [{"id": 1, "name": "person"}]}
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


def test_a_photos_persons_become_person_pixels_crowds_ignored_the_rest_background(tmp_path):
    photos = coco_persons(write_photo_set(tmp_path / "s"), HRI, {"repeat": 2})
    assert len(photos) == 4 and [item.id for item in photos.items] == ["a", "a", "b", "b"]
    image, label = photos.load(0)
    assert image.shape == (40, 60, 3) and label.shape == (40, 60)
    assert (label[8:32, 12:18] == PERSON_INDEX).all()
    assert (label[0:10, 40:60] == IGNORE_INDEX).all()
    assert (label[:, 25:38] == 0).all() and set(np.unique(label)) == {0, PERSON_INDEX, IGNORE_INDEX}
    assert not photos.load(2)[1].any()  # nobody: every pixel background
    with pytest.raises(ValueError, match="repeat"):
        coco_persons(tmp_path / "s", HRI, {"repeat": 0})
    with pytest.raises(ValueError, match="unknown option"):
        coco_persons(tmp_path / "s", HRI, {"split": "train"})


def test_the_trainers_checks_read_person_labels_as_labels(tmp_path):
    from training.label_statistics import check_label_ids, class_statistics, file_problems

    photos = coco_persons(write_photo_set(tmp_path / "s"), HRI, {})
    assert file_problems(photos) == []  # no label file to find: the annotation is the label
    stats = class_statistics(photos)
    check_label_ids(stats, HRI.num_classes)  # 254 is not an unknown class id
    assert stats["person_pixels"] > 0 and stats["out_of_range_pixels"] == 0
    assert stats["pixels"][0] == 2 * 40 * 60 - stats["person_pixels"] - stats["ignored_pixels"]
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "s" / "images" / "b.jpg")
    (problem,) = file_problems(photos)
    assert problem[0] == "b" and "b.jpg: image is 10x10, its annotation says 40x60" in problem[1]


def test_the_person_loss_asks_for_any_part_not_for_one():
    logits = torch.zeros(1, HRI.num_classes, 2, 2)
    person = torch.ones(1, 2, 2, dtype=torch.bool)
    nothing = torch.zeros_like(person)
    uniform = person_loss(logits, person, nothing)
    assert uniform.item() == pytest.approx(-np.log(1 - 1 / HRI.num_classes), rel=1e-5)
    for part in (1, HRI.num_classes - 1):  # whichever part it calls the pixel, the loss goes down alike
        sure = logits.clone()
        sure[:, part] = 8.0
        assert person_loss(sure, person, nothing).item() < 0.01
    background = logits.clone()
    background[:, 0] = 8.0
    assert person_loss(background, person, nothing).item() > 5
    assert person_loss(logits, nothing, ~nothing).item() == 0.0  # no person pixel: zero, still connected


def test_person_pixels_reach_only_the_person_term_and_weigh_as_a_labelled_pixel():
    torch.manual_seed(0)
    logits = torch.randn(2, HRI.num_classes, 6, 6, requires_grad=True)
    target = torch.randint(0, HRI.num_classes, (2, 6, 6))
    target[:, :2] = PERSON_INDEX
    target[0, 5, 5] = IGNORE_INDEX
    parts, person = split_person_labels(target)
    assert (parts[:, :2] == IGNORE_INDEX).all() and person[:, :2].all() and not person[:, 2:].any()
    for name in ("ce", "ce_lovasz"):
        value, _ = batch_loss(logits, [], target, StageLoss(name), [], None)
        without, _ = batch_loss(logits, [], parts, StageLoss(name), [], None)
        expected = without + person_loss(logits, person, parts != IGNORE_INDEX)
        assert value.item() == pytest.approx(expected.item(), rel=1e-6)
        (grad,) = torch.autograd.grad(value, logits)
        # on a person pixel only background and the parts as one move: the gradient sums to zero over classes,
        # background's is up (its score goes down) and every part's the same sign
        row = grad[0, :, 0, 0]
        assert row.sum().abs() < 1e-7 and row[0] > 0 and (row[1:] < 0).all()
    assert (parts[:, 2:] == target[:, 2:]).all()


def test_a_mirrored_crop_keeps_person_pixels():
    from training.transforms import TrainTransform

    transform = TrainTransform((16, 16), (1.0, 1.0), 0.0, HRI.flip_permutation(), 0.0)
    label = np.zeros((16, 16), np.uint8)
    label[:, :4] = PERSON_INDEX
    for seed in range(6):  # flips included
        _, y = transform(np.zeros((16, 16, 3), np.uint8), label, generator=torch.Generator().manual_seed(seed))
        assert int((y == PERSON_INDEX).sum()) == 64 and set(y.unique().tolist()) == {0, PERSON_INDEX}


def test_the_weights_name_the_real_photo_folder_they_learned_persons_from():
    from training.config import load_config
    from training.export import training_splits

    config = load_config(Path(__file__).resolve().parent.parent / "training" / "configs"
                         / "ccp_real_persons_hri_mobilenetv2.yaml")
    assert training_splits(config.dataset)["extra"] == ["ccp_composites:train", "coco_persons:validation"]
