"""JSON on `parts` and `class_info`: typed round trips and schema refusals."""
import dataclasses
import json

import pytest
import torch

from human_parsing_ros.class_sets import get_class_set
from human_parsing_ros.messages import (
    CLASS_INFO_SCHEMA,
    PARTS_SCHEMA,
    ClassInfoMessage,
    Part,
    PartsMessage,
    SchemaError,
    Stamp,
)
from human_parsing_ros.parser import HumanParser
from human_parsing_ros.samples import load_rgb, sample_photos
from human_parsing_ros.tools.random_weights import make_random_weights
from human_parsing_ros.weights import load_weights, read_weights_info, save_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random CCP weights with the classifier bias zeroed, so the label map has many classes (see test_parser)."""
    folder = tmp_path_factory.mktemp("messages")
    model, info = load_weights(make_random_weights(folder / "random.safetensors", class_set="ccp",
                                                   input_size=(96, 64)))
    with torch.no_grad():
        model.segmentation_head.bias.zero_()
    return save_weights(folder / "ccp.safetensors", model, info)


@pytest.fixture(scope="module")
def parse_result(weights):
    return HumanParser(weights, device="cpu").parse(load_rgb(sample_photos()[0]))


def _parts_message():
    names = get_class_set("lip").names
    parts = tuple(
        Part(i, name, i in (0, 2, 13), [0.7, 0, 0.2, 0][i % 4], (i, i + 1, 40 + i, 90 + i) if i % 2 == 0 else None,
             0.25 + i / 100)
        for i, name in enumerate(names)
    )
    return PartsMessage(Stamp(1700000000, 123456789), "camera_optical_frame", 640, 480, 0.005, parts)


def _class_info_message():
    cs = get_class_set("mhpv2")
    return ClassInfoMessage(cs.name, cs.names, tuple(tuple(int(v) for v in c) for c in cs.palette.tolist()),
                            cs.flip_pairs, "deeplabv3plus", "/opt/weights/ccp.safetensors", False)


def test_parts_round_trip():
    message = _parts_message()
    text = message.to_json()
    assert "\n" not in text
    doc = json.loads(text)
    assert doc["schema"] == PARTS_SCHEMA
    assert doc["stamp"] == {"sec": 1700000000, "nanosec": 123456789}
    decoded = PartsMessage.from_json(text)
    assert decoded == message
    assert decoded.get("face").present and decoded.get("face").id == 13
    assert [p.id for p in decoded.present()] == [0, 2, 13]
    assert decoded.stamp.to_sec() == pytest.approx(1700000000.123456789)
    assert decoded.get("hair").bbox == (2, 3, 42, 92)
    assert decoded.get("hat").bbox is None
    with pytest.raises(KeyError, match="tail"):
        decoded.get("tail")


def test_a_parts_message_without_bbox_full_decodes_with_bbox_for_both():
    """A node from before bbox_full (its bbox was the full extent) is still read."""
    doc = json.loads(_parts_message().to_json())
    for part in doc["parts"]:
        del part["bbox_full"]
    hair = PartsMessage.from_json(json.dumps(doc)).get("hair")
    assert hair.bbox == hair.bbox_full == (2, 3, 42, 92)
    doc["parts"][0]["bbox"] = [1, 2, 3]
    with pytest.raises(SchemaError, match="4 values"):
        PartsMessage.from_json(json.dumps(doc))


def test_class_info_round_trip():
    message = _class_info_message()
    text = message.to_json()
    assert json.loads(text)["schema"] == CLASS_INFO_SCHEMA
    decoded = ClassInfoMessage.from_json(text)
    assert decoded == message
    assert len(decoded.names) == 59 and decoded.names[0] == "background"
    assert decoded.palette[1] == tuple(get_class_set("mhpv2").palette[1].tolist())
    assert (5, 6) in decoded.flip_pairs
    untrained = ClassInfoMessage.from_json(dataclasses.replace(message, untrained=True).to_json())
    assert untrained.untrained is True


@pytest.mark.parametrize("decoder,good", [(PartsMessage.from_json, _parts_message),
                                          (ClassInfoMessage.from_json, _class_info_message)])
def test_wrong_schema_id(decoder, good):
    doc = json.loads(good().to_json())
    for schema in (doc["schema"][:-1] + "2", "something/else/1", None):
        doc["schema"] = schema
        with pytest.raises(SchemaError) as info:
            decoder(json.dumps(doc))
        assert str(schema) in str(info.value)
    del doc["schema"]
    with pytest.raises(SchemaError):
        decoder(json.dumps(doc))


def test_parts_and_class_info_are_not_interchangeable():
    with pytest.raises(SchemaError, match=CLASS_INFO_SCHEMA):
        ClassInfoMessage.from_json(_parts_message().to_json())
    with pytest.raises(SchemaError, match=PARTS_SCHEMA):
        PartsMessage.from_json(_class_info_message().to_json())


@pytest.mark.parametrize("text", ["", "{", "{'schema': 1}", "not json", "[1, 2", "\x00"])
@pytest.mark.parametrize("decoder", [PartsMessage.from_json, ClassInfoMessage.from_json])
def test_bad_json(decoder, text):
    with pytest.raises(SchemaError, match="JSON"):
        decoder(text)


@pytest.mark.parametrize("text", ["[1, 2]", "42", "null", "\"human_parsing_ros/parts/1\""])
@pytest.mark.parametrize("decoder", [PartsMessage.from_json, ClassInfoMessage.from_json])
def test_json_that_is_not_an_object(decoder, text):
    with pytest.raises(SchemaError):
        decoder(text)


@pytest.mark.parametrize("path", [("frame_id",), ("stamp",), ("stamp", "nanosec"), ("width",), ("threshold",),
                                  ("parts",), ("parts", 0, "bbox"), ("parts", 3, "name"), ("parts", 5, "present")])
def test_parts_missing_fields(path):
    doc = json.loads(_parts_message().to_json())
    target = doc
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    with pytest.raises(SchemaError) as info:
        PartsMessage.from_json(json.dumps(doc))
    assert path[-1] in str(info.value)


@pytest.mark.parametrize("field", ["class_set", "names", "palette", "flip_pairs", "architecture", "weights",
                                   "untrained"])
def test_class_info_missing_fields(field):
    doc = json.loads(_class_info_message().to_json())
    del doc[field]
    with pytest.raises(SchemaError, match=field):
        ClassInfoMessage.from_json(json.dumps(doc))


@pytest.mark.parametrize("edit", [lambda d: d.update(width="wide"), lambda d: d.update(stamp=5),
                                  lambda d: d.update(parts=7), lambda d: d["parts"][0].update(pixel_fraction=None),
                                  lambda d: d["parts"][0].update(bbox=3)])
def test_parts_wrong_types(edit):
    doc = json.loads(_parts_message().to_json())
    edit(doc)
    with pytest.raises(SchemaError):
        PartsMessage.from_json(json.dumps(doc))


def test_unknown_extra_fields_are_tolerated():
    """Forward compatibility within a schema version: added keys do not break old readers."""
    doc = json.loads(_parts_message().to_json())
    doc["extra"] = {"anything": 1}
    doc["parts"][0]["extra"] = True
    assert PartsMessage.from_json(json.dumps(doc)) == _parts_message()


def _wire_format(result, stamp, frame_id, threshold):
    """The parts JSON as the node writes it (schema 1; ``bbox_full`` added, ``bbox`` the robust box since #35),
    computed here from the raw statistics."""
    height, width = result.labels.shape
    total = result.labels.size
    parts = []
    for class_id, name in enumerate(result.class_set.names):
        count = int(result.statistics.pixel_counts[class_id])
        fraction = count / total
        parts.append({
            "id": class_id, "name": name, "present": count > 0 and fraction >= threshold,
            "pixel_fraction": round(fraction, 6),
            "bbox": result.statistics.robust_boxes[class_id].tolist() if count else None,
            "mean_confidence": round(float(result.statistics.confidence_sums[class_id]) / count, 4) if count else 0.0,
            "bbox_full": result.statistics.boxes[class_id].tolist() if count else None,
        })
    doc = {"schema": PARTS_SCHEMA, "stamp": {"sec": stamp.sec, "nanosec": stamp.nanosec}, "frame_id": frame_id,
           "width": width, "height": height, "threshold": threshold, "parts": parts}
    return json.dumps(doc, separators=(",", ":"))


def test_parts_from_parts_is_the_wire_format_and_round_trips(parse_result):
    stamp = Stamp(1795432954, 576464160)
    height, width = parse_result.labels.shape
    message = PartsMessage.from_parts(parse_result.presence(0.005), stamp, "camera_optical_frame", width, height,
                                      0.005)
    text = message.to_json()
    assert text == _wire_format(parse_result, stamp, "camera_optical_frame", 0.005)
    assert PartsMessage.from_json(text) == message
    assert (message.height, message.width) == parse_result.labels.shape
    assert len(message.parts) == 59 and sum(part.present for part in message.parts) > 1
    exact = parse_result.presence(0.005)
    assert [part.present for part in message.parts] == [part.present for part in exact]
    assert any(part != exact_part for part, exact_part in zip(message.parts, exact)), "not rounded"


def test_part_rounded_to_wire_precision():
    part = Part(3, "hair", True, 0.123456789, (1, 2, 3, 4), 0.987654321)
    assert part.rounded() == Part(3, "hair", True, 0.123457, (1, 2, 3, 4), 0.9877)


def test_class_info_from_weights(weights):
    info = read_weights_info(weights)
    message = ClassInfoMessage.from_weights(info, weights)
    class_set = get_class_set("ccp")
    assert message == ClassInfoMessage("ccp", class_set.names,
                                       tuple(tuple(colour) for colour in class_set.palette.tolist()),
                                       tuple(class_set.flip_pairs), info.architecture, str(weights), True)
    assert ClassInfoMessage.from_json(message.to_json()) == message
    doc = json.loads(message.to_json())
    assert doc["weights"] == str(weights) and doc["untrained"] is True and doc["palette"][1] == [128, 0, 0]
