"""Real scenes (#32): the evaluation's metrics on hand-made cases with known answers, the scene-set reader
(polygons, COCO's RLE), persons from a map, passers-by left out of the loss, and composites that look like a
robot's world."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from human_parsing_ros.class_sets import IGNORE_INDEX
from human_parsing_ros.map_persons import persons_from_map
from human_parsing_ros.resources import SAMPLES
from training.scene_metrics import SceneTally, box_iou, match_detections, size_bin
from training.scene_set import ScenePerson, decode_rle_string, load_scene_set, person_mask, rle_mask


def test_size_bins_follow_the_persons_height_over_the_photos():
    assert size_bin((0, 0, 10, 19), 100) == "under 20%"
    assert size_bin((0, 0, 10, 20), 100) == "20-50%"
    assert size_bin((0, 50, 10, 100), 100) == "over 50%"


def test_rows_name_a_runs_weights_by_its_run():
    from training.evaluate_scenes import weights_label

    assert weights_label(Path("runs/abl_all/model.safetensors")) == "abl_all/model.safetensors"
    assert weights_label(Path("/opt/w/default.safetensors")) == "default.safetensors"


def test_box_iou_on_known_boxes():
    iou = box_iou([(0, 0, 10, 10)], [(5, 0, 15, 10), (20, 20, 30, 30), (0, 0, 10, 10)])
    np.testing.assert_allclose(iou, [[50 / 150, 0.0, 1.0]])


def test_matching_is_greedy_by_score_and_ignores_detections_of_crowds():
    truth = [(0, 0, 10, 10), (100, 0, 110, 10)]
    boxes = [(0, 0, 10, 11), (1, 0, 10, 10), (200, 0, 210, 10), (300, 0, 310, 10)]
    scores = [0.6, 0.9, 0.7, 0.8]
    verdict, found = match_detections(boxes, scores, truth, crowds=[(290, 0, 320, 20)])
    # the best-scoring detection takes the first person; the other one on it is a second (wrong) detection
    assert verdict == ["miss", "hit", "miss", "crowd"] and found == [1, None]


def test_tally_answers_every_threshold_from_one_matching():
    tally = SceneTally()
    # photo 1 (100 px high): a near person found at 0.9, a far one at 0.4, a false detection at 0.6
    tally.add_persons(100, [(0, 0, 10, 60), (50, 0, 55, 10), (70, 0, 90, 30)], [0.9, 0.4, 0.6],
                      [(0, 0, 10, 60), (50, 0, 55, 10)])
    # photos 2 and 3: nobody; two detections on one of them
    tally.add_persons(100, [(0, 0, 5, 5), (10, 10, 20, 20)], [0.7, 0.3], [])
    tally.add_persons(100, [], [], [])
    low, high = tally.summary(0.35), tally.summary(0.75)
    assert low["recall"] == 1.0 and low["recall_by_size"] == {"under 20%": 1.0, "20-50%": None, "over 50%": 1.0}
    assert low["precision"] == pytest.approx(2 / 4) and low["persons_per_people_free_photo"] == pytest.approx(0.5)
    assert high["recall"] == 0.5 and high["recall_by_size"]["under 20%"] == 0.0
    assert high["precision"] == 1.0 and high["persons_per_people_free_photo"] == 0.0
    assert low["people_free_photos"] == 2 and low["persons_by_size"] == {"under 20%": 1, "20-50%": 0, "over 50%": 1}


def test_coverage_and_part_pixels_on_known_maps():
    tally = SceneTally()
    labels = np.zeros((10, 10), np.uint8)
    labels[0:10, 0:2] = 3  # the map covers half of a person 10 px high (over 50%)
    mask = np.zeros((10, 10), bool)
    mask[0:10, 0:4] = True
    tally.add_coverage(labels, 10, [(0, 0, 4, 10)], [mask])
    empty = np.zeros((10, 10), np.uint8)
    empty[0, 0:5] = 1  # 5% of a people-free photo called a part
    tally.add_people_free_map(empty)
    tally.add_people_free_map(np.zeros((10, 10), np.uint8))
    summary = tally.summary()
    assert summary["coverage_by_size"]["over 50%"] == pytest.approx(0.5)
    assert summary["part_pixels_on_people_free"] == pytest.approx(0.025)
    assert summary["people_free_photos_over_1pct"] == 1


def test_cocos_compressed_rle_decodes_to_the_counts_it_encodes():
    # "3", "5", "2": counts 3, 5, 2; "X1": 8 + (1 << 5) = 40, the fourth count, a difference to the second
    assert decode_rle_string("352X1") == [3, 5, 2, 45]
    assert decode_rle_string("352L") == [3, 5, 2, 1]  # "L": 28, sign bit set: -4, so 5 - 4
    mask = rle_mask({"counts": "352X1", "size": [5, 11]}, 5, 11)
    flat = mask.T.ravel()  # COCO runs go down the columns
    assert flat[:3].sum() == 0 and flat[3:8].all() and flat[8:10].sum() == 0 and flat[10:].all()


def test_polygon_and_box_masks():
    person = ScenePerson((2, 1, 6, 5), [[2, 1, 6, 1, 6, 5, 2, 5]])
    mask = person_mask(person, 8, 8)
    assert mask[2:5, 3:6].all() and not mask[6:, :].any() and not mask[:, :2].any()
    boxed = person_mask(ScenePerson((2, 1, 6, 5)), 8, 8)
    assert boxed.sum() == 16 and boxed[1:5, 2:6].all()


def write_scene_set(root: Path, photos: dict[str, tuple[np.ndarray, list[list[float]]]]) -> Path:
    """A COCO-style scene folder: ``photos`` maps a file name to (RGB image, person boxes [x, y, w, h])."""
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for image_id, (name, (rgb, boxes)) in enumerate(sorted(photos.items()), start=1):
        Image.fromarray(rgb).save(root / "images" / name)
        images.append({"id": image_id, "file_name": name, "height": rgb.shape[0], "width": rgb.shape[1]})
        for box in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "bbox": box,
                                "iscrowd": 0, "segmentation": []})
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


def test_the_scene_set_reader_names_what_is_missing(tmp_path):
    from training.scene_set import SceneSetError

    root = write_scene_set(tmp_path / "s", {"a.png": (np.zeros((8, 6, 3), np.uint8), [[1, 1, 2, 4]]),
                                            "b.png": (np.zeros((8, 6, 3), np.uint8), [])})
    photos = load_scene_set(root)
    assert [p.image.name for p in photos] == ["a.png", "b.png"] and photos[1].people_free
    assert photos[0].persons[0].box == (1.0, 1.0, 3.0, 5.0)
    (root / "images" / "b.png").unlink()
    with pytest.raises(SceneSetError, match="b.png"):
        load_scene_set(root)
    with pytest.raises(SceneSetError, match="annotation file not found"):
        load_scene_set(tmp_path / "nowhere")


def test_persons_from_a_map_are_its_separate_regions_largest_first():
    labels = np.zeros((100, 100), np.uint8)
    labels[10:60, 10:20] = 2  # a person
    labels[60:90, 10:20] = 6  # its legs, touching: the same person
    labels[10:40, 50:60] = 1
    labels[10:40, 61:70] = 5  # one pixel column of background between two parts: joined (gap 2)
    labels[95, 95] = 2  # a speck under min_fraction
    instances, persons = persons_from_map(labels)
    assert [p.bbox for p in persons] == [(10, 10, 19, 89), (50, 10, 69, 39)]
    assert [p.pixels for p in persons] == [800, 570]
    assert instances[50, 15] == 1 and instances[20, 65] == 2 and instances[20, 60] == 0 and instances[95, 95] == 0
    assert persons_from_map(np.zeros((5, 5), np.uint8))[1] == []


def test_far_background_is_ignored_and_ignored_pixels_reach_no_loss():
    from training.datasets import build_dataset
    from training.engine import StageLoss, compute_loss

    plain = build_dataset("ccp", SAMPLES, "all", ids=[880], class_set="hri")
    margin = build_dataset("ccp", SAMPLES, "all", ids=[880], class_set="hri", background_margin=0.1)
    label, kept = plain.load_label(0), margin.load_label(0)
    ys, xs = np.nonzero(label != 0)
    assert (kept[label != 0] == label[label != 0]).all()  # the person is untouched
    far = kept == IGNORE_INDEX
    assert far.any() and not far[ys.min():ys.max() + 1, xs.min():xs.max() + 1].any()
    assert (kept[~far] == label[~far]).all()

    target = torch.from_numpy(kept[None].astype(np.int64))
    logits = torch.randn(1, 11, *kept.shape, requires_grad=True)
    for name in ("ce", "ce_lovasz"):
        value, _ = compute_loss(logits, target, StageLoss(name), None)
        (grad,) = torch.autograd.grad(value, logits)
        assert grad[0][:, torch.from_numpy(far)].abs().max() == 0  # a pixel under the ignore region changes nothing
        changed = logits.detach().clone()
        changed[0][:, torch.from_numpy(far)] = torch.randn(11, int(far.sum()))
        assert compute_loss(changed, target, StageLoss(name), None)[0].item() == pytest.approx(value.item(), rel=1e-6)


@pytest.fixture(scope="module")
def people():
    from training.instances import ccp_people

    return ccp_people(SAMPLES, "all", "hri")[0]


@pytest.fixture(scope="module")
def backgrounds(tmp_path_factory) -> Path:
    """Two 'people-free photos' made from the corners of a bundled photo (no person in them)."""
    folder = tmp_path_factory.mktemp("backgrounds")
    photo = np.asarray(Image.open(sorted((SAMPLES / "photos").glob("*.jpg"))[0]).convert("RGB"))
    Image.fromarray(photo[:60, :60]).save(folder / "a.jpg")
    Image.fromarray(photo[-60:, -60:]).save(folder / "b.jpg")
    return folder


def test_scene_style_frames(people, backgrounds):
    from human_parsing_ros.class_sets import get_class_set
    from training.composites import compose
    from training.instances import background_photos, scene_style

    hri = get_class_set("hri")
    style = scene_style({"backgrounds": str(backgrounds), "height_range": [0.1, 0.2], "occluded_share": 1.0,
                         "photometric": True}, hri)
    assert style.clothes == (5, 6, 7) and style.backgrounds == background_photos(backgrounds)
    heights = []
    for seed in range(6):
        frame = compose(people, np.random.default_rng(seed), (200, 160), (2, 2), style)
        again = compose(people, np.random.default_rng(seed), (200, 160), (2, 2), style)
        assert np.array_equal(frame.image, again.image) and np.array_equal(frame.labels, again.labels)
        for k in range(1, int(frame.persons.max()) + 1):
            ys = np.nonzero(frame.persons == k)[0]
            heights.append((ys.max() - ys.min() + 1) / 200)
        assert ((frame.labels != 0) == (frame.persons != 0)).all()
    assert heights and max(heights) <= 0.2 + 1e-9
    nobody = scene_style({"backgrounds": str(backgrounds), "empty_share": 1.0}, hri)
    empty = compose(people, np.random.default_rng(0), (64, 48), (1, 4), nobody)
    assert not empty.labels.any() and not empty.persons.any() and empty.image.std() > 0  # a real photo, nobody
    with pytest.raises(ValueError, match="empty_share needs backgrounds"):
        scene_style({"empty_share": 0.5}, hri)


def test_photo_backgrounds_are_writable_whatever_the_crop(backgrounds):
    from training.composites import photo_background

    photo = sorted(backgrounds.glob("*.jpg"))[0]
    for seed in range(300):  # crops that take whole rows of the scaled photo (a view, unless copied) included
        frame = photo_background(np.random.default_rng(seed), photo, 60, 60)
        assert frame.shape == (60, 60, 3) and frame.flags.writeable


def test_composed_frames_train_with_ccp_photos_and_change_every_epoch(backgrounds):
    from human_parsing_ros.class_sets import get_class_set
    from training.datasets import ConcatParsingDataset, build_dataset
    from training.scene_frames import scene_frames

    hri = get_class_set("hri")
    photos = build_dataset("ccp", SAMPLES, "all", ids=[880, 900], class_set="hri")
    frames = scene_frames(SAMPLES, "all", hri, {"count": 3, "size": [120, 80], "backgrounds": str(backgrounds)})
    both = ConcatParsingDataset([photos, frames], seed=1)
    assert len(both) == 5 and len(both.items) == 2  # composed frames have no files to check
    image, label = both.load(3)
    assert image.shape == (120, 80, 3) and label.shape == (120, 80)
    np.testing.assert_array_equal(both.load_label(3), label)
    np.testing.assert_array_equal(both.load(0)[1], photos.load(0)[1])
    both.set_epoch(1)
    assert not np.array_equal(both.load(3)[0], image)


def test_calibration_takes_the_lowest_threshold_within_the_false_person_budget():
    from training.tools.calibrate_persons import CalibrationError, choose_threshold

    tally = SceneTally()
    tally.add_persons(100, [(0, 0, 10, 60)], [0.8], [(0, 0, 10, 60)])
    for score in (0.32, 0.5, 0.2, 0.1):  # four people-free photos, one false person each
        tally.add_persons(100, [(0, 0, 5, 5)], [score], [])
    threshold, summary = choose_threshold(tally, max_false=0.25)  # at most one of the four
    assert threshold == 0.35 and summary["persons_per_people_free_photo"] == 0.25 and summary["recall"] == 1.0
    with pytest.raises(CalibrationError):
        choose_threshold(_always_false(), 0.0)


def _always_false() -> SceneTally:
    tally = SceneTally()
    tally.add_persons(100, [(0, 0, 5, 5)], [0.99], [])
    return tally


def test_a_single_map_parser_gives_the_maps_regions_as_persons_when_asked():
    from human_parsing_ros.parser import HumanParser
    from human_parsing_ros.resources import DEFAULT_WEIGHTS
    from human_parsing_ros.samples import load_rgb, sample_photos

    parser = HumanParser(DEFAULT_WEIGHTS, device="cpu", input_size=(256, 256))
    two = [load_rgb(path)[::3, ::3] for path in sample_photos()[:2]]
    height = min(p.shape[0] for p in two)
    gap = np.full((height, 60, 3), 255, np.uint8)
    image = np.ascontiguousarray(np.concatenate([two[0][:height], gap, two[1][:height]], axis=1))
    assert parser.parse(image).instances is None  # off unless asked: it costs a pass over the map
    result = parser.parse(image, map_persons=True)
    instances, persons = persons_from_map(result.labels, max_persons=255)
    assert len(persons) >= 2  # two photos side by side: at least two people apart
    np.testing.assert_array_equal(result.instances, instances)
    assert result.persons == persons and result.dropped_persons == 0
    for person in persons[:3]:
        parts = result.person_presence(person, 0.0)
        assert sum(p.pixel_fraction for p in parts) == pytest.approx(1.0)
        assert all(0.0 <= p.mean_confidence <= 1.0 for p in parts)
    capped = parser.parse(image, map_persons=True, max_persons=1)
    assert capped.persons == persons[:1] and capped.dropped_persons == len(persons) - 1
    assert set(np.unique(capped.instances)) <= {0, 1}


PEOPLE_FREE = sorted((Path(__file__).resolve().parent / "data" / "real_scenes").glob("*.jpg"))


@pytest.mark.parametrize("photo", PEOPLE_FREE, ids=lambda p: p.stem)
def test_the_shipped_weights_see_nobody_in_a_real_empty_room(photo):
    """A kitchen and a desk with computers (CC BY / BY-SA, test/data/real_scenes/LICENCE.md): the multi-person
    weights report no person and an all-zero instances map; the default labels under 2% of the photo a part."""
    from human_parsing_ros.parser import HumanParser
    from human_parsing_ros.resources import DEFAULT_WEIGHTS, PERSONS_WEIGHTS
    from human_parsing_ros.samples import load_rgb

    image = load_rgb(photo)
    persons = HumanParser(PERSONS_WEIGHTS, device="cpu").parse(image)
    assert persons.persons == [] and not persons.instances.any() and persons.dropped_persons == 0
    single = HumanParser(DEFAULT_WEIGHTS, device="cpu").parse(image, map_persons=True)
    assert (single.labels != 0).mean() < 0.02
