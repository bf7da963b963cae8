"""HumanParser with multi-person (rp_rcnn) weights: persons, their instance map and per-person parts, on a real
photo, through a weights file (test/person_weights.py); and the person tracker."""
from __future__ import annotations

import numpy as np
import pytest
from person_weights import PAINTED, make_person_weights

from human_parsing_ros.parse_options import ParseOptions
from human_parsing_ros.parser import HumanParser
from human_parsing_ros.samples import load_rgb, sample_photos
from human_parsing_ros.tracking import PersonTracker, box_iou


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_person_weights(tmp_path_factory.mktemp("rp") / "persons.safetensors")


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
        assert (result.labels[ys, xs] == PAINTED).all()  # a person's pixels carry its parts
        parts = result.person_presence(person, 0.01)
        assert parts[PAINTED].present and parts[PAINTED].pixel_fraction == 1.0
        assert 0.99 < parts[PAINTED].mean_confidence <= 1.0  # the weights paint PAINTED with logit 20
        assert not any(part.present for part in parts if part.id != PAINTED)
    assert int(result.instances.max()) == len(result.persons)
    assert result.statistics.pixel_counts.sum() == photo.shape[0] * photo.shape[1]
    # persons' pixels count in the frame's statistics with their part probability (near 1 here), not the
    # untrained semantic map's (about 0.16); the rest of the class's sum comes from the semantic map's pixels
    painted_sum = float(result.statistics.confidence_sums[PAINTED])
    on_persons = int((result.instances > 0).sum())
    outside = int((result.labels[result.instances == 0] == PAINTED).sum())
    assert painted_sum >= 0.99 * on_persons
    tolerance = 1e-6 * painted_sum + 1e-3  # the frame's sums are float32
    assert -tolerance <= painted_sum - result.person_confidence_sums[1:, PAINTED].sum() <= outside + tolerance


def test_person_options_default_to_the_file_and_travel_with_the_call(weights):
    parser = HumanParser(weights, device="cpu")
    assert parser.options == ParseOptions(person_threshold=0.3)  # the file's min_score resolved
    image = load_rgb(sample_photos()[0])
    capped = HumanParser(weights, device="cpu", person_threshold=0.0, max_persons=1).parse(image)
    per_call = parser.parse(image, ParseOptions(person_threshold=0.0, max_persons=1))
    assert per_call.persons == capped.persons and per_call.dropped_persons == capped.dropped_persons
    assert np.array_equal(per_call.instances, capped.instances)
    file_threshold = parser.parse(image, ParseOptions(person_threshold=None))  # None: the file's min_score
    assert file_threshold.persons == parser.parse(image).persons


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
    with pytest.raises(ValueError, match="compile modes"):
        HumanParser(weights, device="cpu", compile_mode="default")
    with pytest.raises(ValueError, match="flip_tta is not available for multi-person weights"):
        HumanParser(weights, device="cpu").parse(np.zeros((32, 32, 3), np.uint8), flip_tta=True)


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


def test_persons_message_of_a_parse(weights):
    from human_parsing_ros.messages import PersonsMessage, Stamp

    result = HumanParser(weights, device="cpu").parse(load_rgb(sample_photos()[0])[::4, ::4].copy())
    ids = [10 + k for k in range(len(result.persons))]
    height, width = result.labels.shape
    persons = [(i, p, result.person_presence(p, 0.01)) for i, p in zip(ids, result.persons)]
    message = PersonsMessage.from_persons(persons, Stamp(3, 4), "cam", width, height, 0.01, result.dropped_persons)
    assert [p.id for p in message.persons] == ids and message.dropped == result.dropped_persons
    assert [p.pixels for p in result.persons] == [int((result.instances == p.instance).sum()) for p in result.persons]
    assert message.persons[0].pixel_fraction == pytest.approx((result.instances == 1).mean(), abs=1e-6)
    assert message.persons[0].parts == tuple(part.rounded() for part in result.person_presence(result.persons[0], 0.01))
    assert message.get(ids[0]).get("headwear").present
    with pytest.raises(KeyError):
        message.get(99)


def test_the_shipped_multi_person_weights_find_the_people_of_a_composite():
    from human_parsing_ros.resources import PERSONS_WEIGHTS, SAMPLES
    from training.composites import compose
    from training.instances import ccp_people, person_boxes

    parser = HumanParser(PERSONS_WEIGHTS, device="cpu")
    assert parser.multi_person and parser.class_set.name == "hri"
    test = parser.info.recipe["metrics"]["test"]
    assert test["serving"]["person_recall"] >= 0.95 and "test split" in test["test_set"]
    people, _ = ccp_people(SAMPLES, "all", "hri")
    frame = compose(people, np.random.default_rng(11), (288, 384), (2, 2))
    truth, _ = person_boxes(frame.persons)
    result = parser.parse(frame.image)
    assert len(result.persons) == len(truth) == 2
    for person in result.persons:  # each found person overlaps an annotated one
        x0, y0, x1, y1 = person.bbox
        overlap = (frame.persons[y0:y1 + 1, x0:x1 + 1] > 0).mean()
        assert overlap > 0.5


def test_the_detection_limit_caps_persons_and_says_when_it_may_have_cut_some(weights):
    """The weights return at most ``detections`` persons (5 here, 20 in the shipped file): the cap is
    min(max_persons, that limit); a frame whose persons above the threshold fill the limit says so."""
    from human_parsing_ros.resources import DEFAULT_WEIGHTS, PERSONS_WEIGHTS

    assert HumanParser(DEFAULT_WEIGHTS, device="cpu").detection_limit is None  # single-map weights
    assert HumanParser(PERSONS_WEIGHTS, device="cpu").detection_limit == 20
    parser = HumanParser(weights, device="cpu")
    assert parser.detection_limit == 5
    image = load_rgb(sample_photos()[0])
    everyone = parser.parse(image, ParseOptions(person_threshold=0.0, max_persons=255))
    assert everyone.detection_limit_reached  # these weights call every box a person: the limit is reached
    assert len(everyone.persons) <= 5 and everyone.dropped_persons == 0
    capped = parser.parse(image, ParseOptions(person_threshold=0.0, max_persons=2))
    assert capped.detection_limit_reached and len(capped.persons) <= 2
    assert capped.dropped_persons == 3  # beyond max_persons: counted, as they were returned
    nobody = parser.parse(image, ParseOptions(person_threshold=1.0))
    assert not nobody.detection_limit_reached and not nobody.persons
