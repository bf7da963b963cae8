"""HumanParser with multi-person (rp_rcnn) weights: persons, their instance map and per-person parts, on a real
photo. The network is a real rp_rcnn whose output biases are set so that it finds people and paints them
(an untrained one would find nothing to test), saved and loaded through the weights contract."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from human_parsing_ros.class_sets import get_class_set
from human_parsing_ros.models import build_model
from human_parsing_ros.parser import HumanParser
from human_parsing_ros.samples import load_rgb, sample_photos
from human_parsing_ros.tracking import PersonTracker, box_iou
from human_parsing_ros.weights import WeightsInfo, save_weights

ARGS = {"num_classes": 11, "channels": 64, "parsing_dim": 64, "parsing_convs": 1, "parsing_rois": 4,
        "box_rois": 64, "box_dim": 64, "proposals": [50, 20], "detections": 5, "min_box_score": 0.0}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("rp_rcnn", **ARGS)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-4.0, 4.0]))  # every box is a person
        model.parsing_head.deconv.bias.zero_()
        model.parsing_head.deconv.bias[3] = 20.0  # and every person pixel is class 3 (headwear)
        model.rescoring.fc[-1].bias.fill_(0.9)
    info = WeightsInfo.for_class_set("rp_rcnn", ARGS, get_class_set("hri"), (160, 128), {"min_score": 0.3})
    return save_weights(tmp_path_factory.mktemp("rp") / "persons.safetensors", model, info)


def test_a_multi_person_parse_gives_persons_their_instances_and_parts(weights):
    parser = HumanParser(weights, device="cpu")
    assert parser.multi_person and parser.person_threshold == 0.3  # the file's min_score
    photo = load_rgb(sample_photos()[0])
    result = parser.parse(photo)
    assert result.labels.shape == result.instances.shape == photo.shape[:2]
    assert result.persons and [p.instance for p in result.persons] == list(range(1, len(result.persons) + 1))
    assert [p.score for p in result.persons] == sorted((p.score for p in result.persons), reverse=True)
    for person in result.persons:
        ys, xs = np.nonzero(result.instances == person.instance)
        assert person.bbox == (xs.min(), ys.min(), xs.max(), ys.max())
        assert (result.labels[ys, xs] == 3).all()  # a person's pixels carry its parts
        parts = result.person_presence(person, 0.01)
        assert parts[3].present and parts[3].pixel_fraction == 1.0 and parts[3].mean_confidence == person.score
        assert not any(part.present for part in parts if part.id != 3)
    assert int(result.instances.max()) == len(result.persons)
    assert result.statistics.pixel_counts.sum() == photo.shape[0] * photo.shape[1]


def test_nobody_above_the_threshold_gives_empty_persons_never_an_error(weights):
    parser = HumanParser(weights, device="cpu", person_threshold=1.0)
    for image in (load_rgb(sample_photos()[1]), np.zeros((90, 120, 3), np.uint8)):
        result = parser.parse(image)
        assert result.persons == [] and not result.instances.any() and result.dropped_persons == 0


def test_the_person_cap_reports_the_persons_it_drops(weights):
    everyone = HumanParser(weights, device="cpu", person_threshold=0.0).parse(load_rgb(sample_photos()[0]))
    capped = HumanParser(weights, device="cpu", person_threshold=0.0, max_persons=1).parse(
        load_rgb(sample_photos()[0]))
    above = len(everyone.persons) + everyone.dropped_persons
    assert len(capped.persons) <= 1 and capped.dropped_persons == above - 1


def test_bad_person_options_are_refused_naming_them(weights):
    with pytest.raises(ValueError, match="person_threshold"):
        HumanParser(weights, device="cpu", person_threshold=1.5)
    with pytest.raises(ValueError, match="max_persons"):
        HumanParser(weights, device="cpu", max_persons=0)
    with pytest.raises(ValueError, match="flip TTA"):
        HumanParser(weights, device="cpu", flip_tta=True)


def test_tracker_keeps_ids_while_people_stay_and_never_reuses_them():
    tracker = PersonTracker(min_iou=0.3, max_missed=1)
    a, b = (0, 0, 10, 20), (30, 0, 40, 20)
    assert tracker.update([a, b]) == [1, 2]
    assert tracker.update([(31, 1, 41, 21), (1, 0, 11, 20)]) == [2, 1]  # order in the frame does not matter
    assert tracker.update([(1, 0, 11, 20)]) == [1]  # person 2 missed once: kept
    assert tracker.update([(1, 0, 11, 20), (30, 0, 40, 20)]) == [1, 2]
    tracker.update([])
    tracker.update([])  # missed twice: both forgotten
    assert tracker.update([a]) == [3]
    assert box_iou(a, (5, 0, 15, 20)) == pytest.approx(50 / 150)
    with pytest.raises(ValueError, match="min_iou"):
        PersonTracker(min_iou=0.0)
