"""JSON on `parts` and `class_info`: typed round trips and schema refusals."""
import dataclasses
import json

import pytest

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
