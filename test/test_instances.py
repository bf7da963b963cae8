"""Multi-person data: CCP composites, the MHPv2 and CIHP person readers, and the MHP instance metrics."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from human_parsing_ros.class_sets import get_class_set
from human_parsing_ros.resources import SAMPLES
from training.composites import compose, cut_person
from training.instance_metrics import InstanceEvaluator, class_ious, person_part_maps, voc_ap
from training.instances import (
    CCP_NOT_ONE_PERSON,
    CompositeDataset,
    build_instance_dataset,
    ccp_people,
    person_boxes,
)


@pytest.fixture(scope="module")
def people():
    return ccp_people(SAMPLES, "all", "hri")


def _placed_mask(person, placement, size):
    """The person's mask where the composite put it, rendered independently of ``compose``."""
    mask = np.asarray(Image.fromarray(person.mask.astype(np.uint8)).resize((placement.width, placement.height),
                                                                          Image.NEAREST)).astype(bool)
    frame = np.zeros(size, bool)
    y0, x0 = max(placement.top, 0), max(placement.left, 0)
    y1, x1 = min(placement.top + placement.height, size[0]), min(placement.left + placement.width, size[1])
    frame[y0:y1, x0:x1] = mask[y0 - placement.top:y1 - placement.top, x0 - placement.left:x1 - placement.left]
    return frame


def test_ccp_people_are_single_annotated_persons_in_the_target_class_set(people):
    found, class_set = people
    assert class_set.name == "hri"
    sources = {person.source for person in found}
    assert sources and not sources & CCP_NOT_ONE_PERSON  # 0940 (two people, one annotation) is left out
    assert len(found) == 6  # the seven bundled photos less 0940
    for person in found:
        assert person.labels.max() < class_set.num_classes
        assert person.mask.any(axis=0).all() and person.mask.any(axis=1).all()  # cut to the person's box


def test_a_composite_of_two_real_persons_gives_two_instances_with_their_masks(people):
    found, _ = people
    size = (288, 384)
    for seed in range(20):
        frame = compose(found[:2], np.random.default_rng(seed), size, persons=(2, 2))
        if len(frame.placements) == 2:
            break
    assert len(frame.placements) == 2
    assert sorted(np.unique(frame.persons).tolist()) == [0, 1, 2]
    by_source = {person.source: person for person in found}
    first, second = (_placed_mask(by_source[p.source], p, size) for p in frame.placements)
    assert np.array_equal(frame.persons == 2, second)  # the later person is whole, in front
    assert np.array_equal(frame.persons == 1, first & ~second)  # the earlier one where it is not hidden
    assert (frame.labels[frame.persons > 0] > 0).all() and (frame.labels[frame.persons == 0] == 0).all()
    boxes, ids = person_boxes(frame.persons)
    assert ids == [1, 2] and boxes.shape == (2, 4)
    ys, xs = np.nonzero(second)
    assert boxes[1].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_composites_are_a_function_of_seed_epoch_and_index(people):
    found, class_set = people
    train = CompositeDataset(found, class_set, count=4, seed=3, size=(160, 200))
    again = CompositeDataset(found, class_set, count=4, seed=3, size=(160, 200))
    for index in (0, 3):
        assert all(np.array_equal(a, b) for a, b in zip(train[index], again[index]))
    before = train[1][0]
    train.set_epoch(1)
    assert not np.array_equal(before, train[1][0])  # new frames each epoch
    test = CompositeDataset(found, class_set, count=4, seed=3, size=(160, 200), fixed=True)
    first = test[2][0]
    test.set_epoch(5)
    assert np.array_equal(first, test[2][0])  # a test set does not move
    with pytest.raises(IndexError):
        test.load(4)
    with pytest.raises(ValueError, match="at least one person"):
        CompositeDataset([], class_set, count=1, seed=0, size=(10, 10))


def test_ccp_composites_use_only_the_requested_split():
    dataset = build_instance_dataset("ccp_composites", SAMPLES, "test", count=3, size=(120, 160), seed=1,
                                     class_set="hri", fixed=True)
    assert {p.source for p in dataset.people} <= {f"{n:04d}" for n in range(855, 1005)}
    image, labels, persons = dataset[0]
    assert image.shape == (120, 160, 3) and labels.shape == persons.shape == (120, 160)
    with pytest.raises(ValueError, match="unknown option.*sizes"):
        build_instance_dataset("ccp_composites", SAMPLES, "test", sizes=(120, 160))
    with pytest.raises(ValueError, match="no annotated person"):
        cut_person(image, np.zeros((120, 160), np.uint8), "empty")


def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_mhpv2_reader_keeps_each_persons_file_as_one_person(tmp_path):
    root = tmp_path / "LV-MHP-v2"
    (root / "list").mkdir(parents=True)
    (root / "list" / "val.txt").write_text("7\n")
    _write_png(root / "val" / "images" / "7.jpg", np.full((6, 8, 3), 90, np.uint8))
    first = np.zeros((6, 8, 3), np.uint8)
    first[1:4, 1:5, 0] = 3
    second = np.zeros((6, 8, 3), np.uint8)
    second[2:6, 4:8, 0] = 5  # overlaps the first at [2:4, 4]
    second[2:6, 4:8, 1] = 200  # MHPv2 writes the part id in channel 0 only
    _write_png(root / "val" / "parsing_annos" / "7_02_01.png", first)
    _write_png(root / "val" / "parsing_annos" / "7_02_02.png", second)
    dataset = build_instance_dataset("mhpv2", root, "val")
    image, labels, persons = dataset[0]
    assert image.shape == (6, 8, 3)
    expected = np.zeros((6, 8), np.uint8)
    expected[1:4, 1:5] = 1
    expected[2:6, 4:8] = 2  # the later file in name order is in front, as the merged semantic map has it
    assert np.array_equal(persons, expected)
    assert np.array_equal(labels, np.where(expected == 2, 5, np.where(expected == 1, 3, 0)))
    assert [m.max() for m in person_part_maps(labels, persons)] == [3, 5]
    # evaluation scores each person against its own file, as MHP's evaluation does: the first person keeps
    # the pixels the second overlaps in the merged map
    own = dataset.truth_parts(0, labels, persons)
    assert np.array_equal(own[0], np.where(first[..., 0] == 3, 3, 0)) and int((own[0] == 3).sum()) == 12
    assert np.array_equal(own[1], np.where(second[..., 0] == 5, 5, 0))
    assert int((person_part_maps(labels, persons)[0] == 3).sum()) == 10  # the merged map lost two of them


def test_cihp_reader_takes_persons_from_human_ids(tmp_path):
    published = tmp_path / "instance-level_human_parsing"
    root = published / "Validation"  # CIHP's own layout: one folder per split
    root.mkdir(parents=True)
    (root / "val_id.txt").write_text("0000001\n")
    _write_png(root / "Images" / "0000001.jpg", np.full((5, 6, 3), 50, np.uint8))
    parts = np.zeros((5, 6), np.uint8)
    parts[0:3, 0:3], parts[2:5, 3:6] = 2, 13
    humans = np.zeros((5, 6), np.uint8)
    humans[0:3, 0:3], humans[2:5, 3:6] = 1, 2
    humans[4, 0] = 2  # a person pixel without a part is not the person's
    _write_png(root / "Category_ids" / "0000001.png", parts)
    _write_png(root / "Human_ids" / "0000001.png", humans)
    dataset = build_instance_dataset("cihp", published, "val", class_set="hri")
    _, labels, persons = dataset[0]
    assert persons[4, 0] == 0 and persons[1, 1] == 1 and persons[3, 4] == 2
    hri = get_class_set("hri")
    assert labels[1, 1] == hri.index("hair") and labels[3, 4] == hri.index("skin")  # CIHP face -> hri skin
    (root / "Human_ids" / "0000001.png").unlink()
    with pytest.raises(FileNotFoundError, match="Human_ids"):
        dataset[0]


def test_class_ious_leave_out_classes_in_neither_map():
    truth = np.array([[0, 1, 1], [0, 2, 2]], np.uint8)
    prediction = np.array([[0, 1, 2], [0, 2, 0]], np.uint8)
    ious = class_ious(prediction, truth, 4)
    assert ious[0] == pytest.approx(2 / 3) and ious[1] == pytest.approx(1 / 2) and ious[2] == pytest.approx(1 / 3)
    assert np.isnan(ious[3])


def test_voc_ap_on_a_known_curve():
    # hits, miss, hit with 2 persons: recall 0.5, 0.5, 1; precision 1, 0.5, 2/3 -> 0.5 * 1 + 0.5 * 2/3
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 1 / 3)


def test_parsing_ap_and_pcp_on_hand_made_persons():
    def person(cells):
        grid = np.zeros((4, 4), np.uint8)
        for (y, x), value in cells.items():
            grid[y, x] = value
        return grid

    a = person({(0, 0): 1, (0, 1): 1, (1, 0): 2, (1, 1): 2})  # two parts
    b = person({(2, 2): 1, (2, 3): 1, (3, 2): 1, (3, 3): 1})  # one part
    exact_a = a.copy()
    half_b = person({(2, 2): 1, (2, 3): 1})  # class 1: 2/4; background: 12/14
    evaluator = InstanceEvaluator(num_classes=3)
    evaluator.add([exact_a, half_b, b], [0.9, 0.8, 0.1], [a, b])
    result = evaluator.result()
    # pair scores: exact_a-a = 1; half_b-b = mean(12/14, 1/2) ~ 0.679; b-b = 1 (but b is taken first by half_b
    # at thresholds below 0.679, so the last prediction is then a false positive)
    assert result["persons"] == 2 and result["predictions"] == 3
    assert result["ap"][0.5] == pytest.approx(1.0)  # ranks: hit, hit, miss -> full recall at precision 1
    assert result["ap"][0.7] == pytest.approx(0.5 + 0.5 * 2 / 3)  # hit, miss (0.679 < 0.7), hit
    assert result["pcp"][0.5] == pytest.approx((1.0 + 0.0) / 2)  # a: both parts; b's part IoU 0.5 is not > 0.5
    assert result["pcp"][0.7] == pytest.approx((1.0 + 1.0) / 2)  # b taken by the exact prediction
    assert result["ap_vol"] == pytest.approx(np.mean(list(result["ap"].values())))
    empty = InstanceEvaluator(num_classes=3)
    empty.add([], [], [a])
    assert empty.result()["ap50"] == 0.0 and empty.result()["pcp50"] == 0.0


class _Oracle(torch.nn.Module):
    """Answers each composite with its annotated persons (parts one-hot over each person's exact box): what a
    perfect multi-person parser would return; ``skip`` leaves out the last person of every frame."""

    def __init__(self, dataset, num_classes, skip=False):
        super().__init__()
        self.dataset, self.num_classes, self.skip, self.calls, self.sizes = dataset, num_classes, skip, 0, []

    def forward(self, images):
        _, labels, persons = self.dataset.load(self.calls)
        self.calls += 1
        self.sizes.append(tuple(images.shape[-2:]))
        boxes, ids = person_boxes(persons)
        scale = torch.tensor([images.shape[-1] / labels.shape[1], images.shape[-2] / labels.shape[0]] * 2)
        if self.skip:
            boxes, ids = boxes[:-1], ids[:-1]
        parts = []
        for box, person in zip(boxes.long().tolist(), ids):
            x1, y1, x2, y2 = box
            crop = np.where(persons[y1:y2, x1:x2] == person, labels[y1:y2, x1:x2], 0)
            parts.append(torch.nn.functional.one_hot(torch.from_numpy(crop).long(), self.num_classes)
                         .permute(2, 0, 1).float())
        n = len(parts)  # boxes in the pixels of the image it was given
        return [{"boxes": boxes * scale, "scores": torch.ones(n), "parts": parts, "semantic": None}]


def test_evaluation_of_a_perfect_parser_scores_one_and_a_missed_person_costs_recall():
    from training.instance_evaluate import evaluate_instances

    dataset = build_instance_dataset("ccp_composites", SAMPLES, "all", count=3, size=(96, 128), seed=2,
                                     class_set="hri", fixed=True, persons=(2, 3))
    perfect = evaluate_instances(_Oracle(dataset, 11), dataset)
    assert perfect["ap50"] == pytest.approx(1.0) and perfect["ap_vol"] == pytest.approx(1.0)
    assert perfect["pcp50"] == pytest.approx(1.0) and perfect["mean_iou"] == pytest.approx(1.0)
    assert perfect["person_recall"] == 1.0 and perfect["images"] == 3
    missing = evaluate_instances(_Oracle(dataset, 11, skip=True), dataset)
    persons = perfect["persons"]
    assert missing["person_recall"] == pytest.approx((persons - 3) / persons)
    assert missing["ap50"] == pytest.approx((persons - 3) / persons)  # precision 1 up to that recall
    assert missing["mean_iou"] < 1.0
    # the paper's single test scale: the network sees the short side at 192 (twice these frames), its boxes
    # are scaled back and the frame is scored at its own size: still perfect
    oracle = _Oracle(dataset, 11)
    scaled = evaluate_instances(oracle, dataset, short_side=192, max_size=1400)
    assert oracle.sizes == [(192, 256)] * 3
    assert scaled["ap50"] == pytest.approx(1.0) and scaled["mean_iou"] == pytest.approx(1.0)
    assert scaled["person_recall"] == 1.0
