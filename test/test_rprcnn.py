"""RP R-CNN: the network's losses and outputs, its target helpers, and the pasting that makes frame maps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from human_parsing_ros.class_sets import get_class_set
from human_parsing_ros.models import ServableModel, build_model
from human_parsing_ros.models.rprcnn.model import (
    LOSS_WEIGHTS,
    crop_person_parts,
    instance_mean_iou,
    sample_parsing_rois,
)
from human_parsing_ros.multi_person import merge_persons, paste_parts, paste_parts_with_confidence
from human_parsing_ros.resources import SAMPLES
from human_parsing_ros.weights import WeightsInfo, load_weights, save_weights
from training.instance_metrics import class_ious
from training.instances import build_instance_dataset, person_boxes

SMALL = {"channels": 64, "parsing_dim": 64, "parsing_convs": 1, "parsing_rois": 4, "box_rois": 64, "box_dim": 64,
         "proposals": (50, 20), "detections": 10, "min_box_score": 0.0}


@pytest.fixture(scope="module")
def batch():
    dataset = build_instance_dataset("ccp_composites", SAMPLES, "all", count=2, size=(128, 160), seed=4,
                                     class_set="hri", fixed=True)
    images, targets = [], []
    for index in range(2):
        image, labels, persons = dataset[index]
        images.append(torch.from_numpy(image).permute(2, 0, 1).float() / 255)
        boxes, _ = person_boxes(persons)
        targets.append({"boxes": boxes, "persons": torch.from_numpy(persons), "parts": torch.from_numpy(labels)})
    return torch.stack(images), targets


def test_training_returns_the_losses_of_eq1_and_trains_every_branch(batch):
    torch.manual_seed(0)
    model = build_model("rp_rcnn", num_classes=11, **SMALL).train()
    images, targets = batch
    losses = model(images, targets)
    assert set(losses) == set(LOSS_WEIGHTS)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(LOSS_WEIGHTS[k] * v for k, v in losses.items()).backward()
    for name in ("parsing_head", "rescoring", "neck.semantic", "rpn", "roi_heads", "encoder"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name) and p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads), name


def test_a_frame_with_nobody_still_trains(batch):
    torch.manual_seed(0)
    model = build_model("rp_rcnn", num_classes=11, **SMALL).train()
    images, _ = batch
    empty = [{"boxes": torch.zeros((0, 4)), "persons": torch.zeros(images.shape[-2:], dtype=torch.uint8),
              "parts": torch.zeros(images.shape[-2:], dtype=torch.uint8)}] * 2
    losses = model(images, empty)
    assert all(torch.isfinite(v) for v in losses.values())
    assert float(losses["loss_parsing"].detach()) == 0.0


def test_inference_outputs_and_the_weights_round_trip(batch, tmp_path):
    torch.manual_seed(0)
    model = build_model("rp_rcnn", num_classes=11, **SMALL).eval()
    images, _ = batch
    with torch.no_grad():
        results = model(images)
    assert len(results) == 2
    for result in results:
        n = len(result["boxes"])
        assert result["parts"].shape == (n, 11, 128, 128)
        assert result["semantic"].shape == (11, 32, 40)
        assert torch.allclose(result["scores"], torch.sqrt(result["box_scores"] * result["iou_scores"]))
        assert torch.allclose(result["parts"].sum(1), torch.ones(n, 128, 128))
    info = WeightsInfo.for_class_set("rp_rcnn", {**SMALL, "num_classes": 11}, get_class_set("hri"), (128, 160))
    path = save_weights(tmp_path / "rp.safetensors", model, info)
    loaded, read = load_weights(path)
    assert read.architecture == "rp_rcnn" and loaded.num_classes == 11
    # the loader's contract (models/protocol.py), with no SegmentationModel method stubbed to fit it
    assert isinstance(loaded, ServableModel) and loaded.multi_person and not loaded.legacy_aux_keys
    assert not hasattr(loaded, "rename_legacy_aux_keys") and not hasattr(loaded, "forward_lowres")
    with torch.no_grad():
        again = loaded(images)
    assert torch.equal(again[0]["boxes"], results[0]["boxes"])
    assert torch.equal(again[1]["parts"], results[1]["parts"])


def test_part_targets_are_the_matched_persons_parts_only():
    parts = torch.zeros((6, 6), dtype=torch.uint8)
    persons = torch.zeros((6, 6), dtype=torch.uint8)
    parts[0:3, 0:3], persons[0:3, 0:3] = 2, 1
    parts[3:6, 3:6], persons[3:6, 3:6] = 5, 2
    parts[1, 5] = 255  # ignored pixels stay ignored, whoever's box they are in
    box = torch.tensor([[0.0, 0.0, 6.0, 6.0]])
    first = crop_person_parts(parts, persons, box, torch.tensor([1]), 3)[0]
    second = crop_person_parts(parts, persons, box, torch.tensor([2]), 3)[0]
    assert first.tolist() == [[2, 0, 255], [0, 0, 0], [0, 0, 0]]  # cell centres at pixels 1, 3, 5
    assert second.tolist() == [[0, 0, 255], [0, 5, 5], [0, 5, 5]]
    outside = crop_person_parts(parts, persons, torch.tensor([[-3.0, 0.0, 3.0, 6.0]]), torch.tensor([1]), 2)[0]
    assert outside.tolist() == [[0, 2], [0, 0]]  # the left column lies outside the image: background


def test_parsing_rois_are_positives_with_their_persons():
    target = {"boxes": torch.tensor([[0.0, 0.0, 4.0, 8.0], [10.0, 0.0, 14.0, 8.0]]),
              "persons": torch.zeros((8, 16), dtype=torch.uint8), "parts": torch.zeros((8, 16), dtype=torch.uint8)}
    target["persons"][:, 10:14], target["parts"][:, 10:14] = 2, 3
    far = torch.tensor([[5.0, 0.0, 9.0, 8.0]])  # overlaps nobody
    torch.manual_seed(0)
    rois, wanted = sample_parsing_rois(far, target, count=8, size=4)
    assert len(rois) == 2 and not any(torch.equal(r, far[0]) for r in rois)
    by_box = {tuple(r.tolist()): w for r, w in zip(rois, wanted)}
    assert (by_box[(10.0, 0.0, 14.0, 8.0)] == 3).all() and (by_box[(0.0, 0.0, 4.0, 8.0)] == 0).all()
    assert len(sample_parsing_rois(far, target, count=1, size=4)[0]) == 1
    nobody = {"boxes": torch.zeros((0, 4)), "persons": target["persons"], "parts": target["parts"]}
    assert sample_parsing_rois(far, nobody, count=8)[0].shape == (0, 4)


def test_instance_mean_iou_is_the_evaluations_pair_score():
    generator = torch.Generator().manual_seed(1)
    prediction = torch.randint(0, 4, (3, 8, 8), generator=generator)
    target = torch.randint(0, 3, (3, 8, 8), generator=generator)
    got = instance_mean_iou(prediction, target, 5)
    for i in range(3):
        expected = np.nanmean(class_ious(prediction[i].numpy().astype(np.uint8), target[i].numpy().astype(np.uint8), 5))
        assert float(got[i]) == pytest.approx(expected)


def test_paste_parts_fills_the_box_only():
    probabilities = torch.zeros((3, 4, 4))
    probabilities[1, :, :2], probabilities[2, :, 2:] = 1.0, 1.0  # left half class 1, right half class 2
    ids = paste_parts(probabilities, torch.tensor([2.0, 1.0, 6.0, 5.0]), 6, 8)
    expected = torch.zeros((6, 8), dtype=torch.int64)
    expected[1:5, 2:4], expected[1:5, 4:6] = 1, 2
    assert torch.equal(ids, expected)
    assert not paste_parts(probabilities, torch.tensor([20.0, 1.0, 30.0, 5.0]), 6, 8).any()
    probabilities[1, :, :2] = 0.75  # the pasted confidence is the winning class's sampled probability
    ids, confidence = paste_parts_with_confidence(probabilities, torch.tensor([2.0, 1.0, 6.0, 5.0]), 6, 8)
    assert torch.equal(ids, expected)
    assert torch.equal(confidence, (expected == 1) * 0.75 + (expected == 2) * 1.0)


def test_merge_puts_the_best_person_in_front_and_fills_the_rest_from_the_semantic_map():
    parts = torch.zeros((3, 3, 2, 2))
    parts[:, 1] = 1.0  # every person is class 1 over its whole box ...
    parts[1, 1], parts[1, 2] = 0.0, 1.0  # ... but person 1 is class 2
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 0.0, 6.0, 4.0], [0.0, 0.0, 6.0, 4.0]])
    scores = torch.tensor([0.6, 0.9, 0.2])  # person 2 is below the threshold
    semantic = torch.zeros((4, 8), dtype=torch.int64)
    semantic[:, 7] = 2  # the semantic map sees class 2 in the last column
    merged = merge_persons(parts, boxes, scores, semantic, 4, 8, min_score=0.5)
    assert merged.persons == [1, 0] and merged.dropped == 0
    assert merged.instances[0].tolist() == [2, 2, 1, 1, 1, 1, 0, 0]  # person 1 (best) in front of person 0
    assert merged.labels[0].tolist() == [1, 1, 2, 2, 2, 2, 0, 2]
    assert merged.confidence[0].tolist() == [1.0] * 6 + [0.0] * 2  # the owner's probability; 0 off persons
    capped = merge_persons(parts, boxes, scores, None, 4, 8, min_score=0.5, max_persons=1)
    assert capped.persons == [1] and capped.dropped == 1 and int(capped.instances.max()) == 1
    nobody = merge_persons(parts, boxes, scores, None, 4, 8, min_score=0.95)
    assert nobody.persons == [] and not nobody.instances.any() and not nobody.labels.any()


def test_the_papers_resnet50_fpn_builds_with_the_papers_widths():
    model = build_model("rp_rcnn", num_classes=20, encoder="resnet50")
    assert model.neck.fpn.inner_blocks[0][0].in_channels == 256 and model.neck.out_channels == 256
    assert model.parsing_head.deconv.in_channels == 512 and model.parsing_rois == 16
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 512
    assert model.rescoring.convs[0][0].in_channels == 512 + 20 and model.rescoring.fc[-1].out_features == 1
    assert len(model.neck.semantic.context) == 4 and model.neck.semantic.classifier.out_channels == 20
