"""A small real rp_rcnn weights file whose output biases make it find people and paint them class 3 (hri
headwear): an untrained network finds nothing, which would leave the multi-person paths untested."""
from __future__ import annotations

from pathlib import Path

import torch

from human_parsing_ros.class_sets import get_class_set
from human_parsing_ros.models import build_model
from human_parsing_ros.weights import WeightsInfo, save_weights

ARGS = {"num_classes": 11, "channels": 64, "parsing_dim": 64, "parsing_convs": 1, "parsing_rois": 4,
        "box_rois": 64, "box_dim": 64, "proposals": [50, 20], "detections": 5, "min_box_score": 0.0}
PAINTED = 3


def make_person_weights(path: Path, input_size: tuple[int, int] = (160, 128)) -> Path:
    torch.manual_seed(0)
    model = build_model("rp_rcnn", **ARGS)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-4.0, 4.0]))  # every box is a person
        model.parsing_head.deconv.bias.zero_()
        model.parsing_head.deconv.bias[PAINTED] = 20.0  # every person pixel is class PAINTED
        model.rescoring.fc[-1].bias.fill_(0.9)
    info = WeightsInfo.for_class_set("rp_rcnn", ARGS, get_class_set("hri"), input_size, {"min_score": 0.3})
    return save_weights(path, model, info)
