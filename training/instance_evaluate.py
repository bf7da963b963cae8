"""Evaluate a multi-person parser on a multi-person dataset: AP^p_50, AP^p_vol, PCP_50, mIoU, person recall.

Every detected person (box score above ``training.instance_metrics``'s
count threshold) enters AP and PCP with its own part map, pasted into the
frame alone; the merged frame (``human_parsing_ros.multi_person``, persons
scoring at least ``min_score``) gives the semantic mIoU, and person recall is
the fraction of annotated persons whose box has IoU >= 0.5 with a kept box.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from human_parsing_ros.multi_person import merge_persons, paste_parts
from human_parsing_ros.weights import IMAGENET_MEAN, IMAGENET_STD

from .instance_metrics import InstanceEvaluator
from .instances import InstanceDataset, person_boxes, resize_image, short_side_size
from .metrics import ConfusionMatrix


def normalised(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 H x W x 3 RGB -> float 1 x 3 x H x W, normalised."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    return ((x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1))[None]


@torch.no_grad()
def evaluate_instances(model: torch.nn.Module, dataset: InstanceDataset, min_score: float = 0.5,
                       max_persons: int = 16, device: str = "cpu", short_side: int | None = None,
                       max_size: int = 1400) -> dict[str, Any]:
    """The paper's metrics of ``model`` (eval mode) over every item of ``dataset`` (raw items, no transform).

    ``short_side``: the network sees each image resized to it (the long side at most ``max_size``), as the
    paper tests at one scale; the boxes are scaled back and everything is scored at the image's own size.
    None: the network sees each image as it is."""
    num_classes = dataset.class_set.num_classes
    evaluator = InstanceEvaluator(num_classes)
    confusion = ConfusionMatrix(num_classes, device="cpu")
    found = annotated = 0
    model.eval().to(device)
    for index in range(len(dataset)):
        image, labels, persons = dataset.load(index)
        height, width = labels.shape
        x = normalised(image)
        size = short_side_size(labels.shape, short_side, max_size) if short_side else (height, width)
        if size != (height, width):
            x = resize_image(x, size)
        result = model(x.to(device))[0]
        boxes, scores = result["boxes"].cpu(), result["scores"].cpu()
        boxes = boxes * torch.tensor([width / size[1], height / size[0]] * 2)  # back to the image's pixels
        parts = [person.cpu() for person in result["parts"]]
        predicted = [paste_parts(parts[i], boxes[i], height, width).numpy().astype(np.uint8)
                     for i in range(len(boxes))]
        evaluator.add(predicted, scores.tolist(), dataset.truth_parts(index, labels, persons))
        background = result["semantic"]
        if background is not None:
            background = F.interpolate(background[None].cpu(), size=(height, width), mode="bilinear",
                                       align_corners=False)[0].argmax(0)
        merged = merge_persons(parts, boxes, scores, background, height, width, min_score, max_persons)
        confusion.update(merged.labels[None], torch.from_numpy(labels).long()[None])
        truth_boxes, _ = person_boxes(persons)
        annotated += len(truth_boxes)
        kept = boxes[merged.persons]
        if len(truth_boxes) and len(kept):
            found += int((box_iou(truth_boxes, kept).max(1).values >= 0.5).sum())
    summary = evaluator.result()
    semantic_metrics = confusion.compute()
    return {"ap50": summary["ap50"], "ap_vol": summary["ap_vol"], "pcp50": summary["pcp50"],
            "ap": summary["ap"], "mean_iou": semantic_metrics["mean_iou"],
            "pixel_accuracy": semantic_metrics["pixel_accuracy"],
            "person_recall": found / annotated if annotated else float("nan"),
            "persons": annotated, "images": len(dataset), "min_score": min_score}
