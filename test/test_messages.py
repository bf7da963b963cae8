"""The typed messages on `parts`, `persons` and `class_info` (human_parsing_msgs): the views of
human_parsing_ros.messages to the generated types and back, through real serialisation."""
import pytest
import torch

pytest.importorskip("human_parsing_msgs.msg", reason="human_parsing_msgs is built by ./run.sh setup")

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from typed_views import same_view  # noqa: E402

from human_parsing_ros.class_sets import get_class_set  # noqa: E402
from human_parsing_ros.messages import ClassInfoMessage, Part, PartsMessage, PersonsMessage, Stamp  # noqa: E402
from human_parsing_ros.parser import HumanParser  # noqa: E402
from human_parsing_ros.presence import PersonDetection, Position3D  # noqa: E402
from human_parsing_ros.ros import interface  # noqa: E402
from human_parsing_ros.samples import load_rgb, sample_photos  # noqa: E402
from human_parsing_ros.tools.random_weights import make_random_weights  # noqa: E402
from human_parsing_ros.weights import load_weights, read_weights_info, save_weights  # noqa: E402


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random CCP weights with the classifier bias zeroed, so the label map has many classes (see test_parser)."""
    folder = tmp_path_factory.mktemp("messages")
    model, info = load_weights(make_random_weights(folder / "random.safetensors", class_set="ccp",
                                                   input_size=(96, 64)))
    with torch.no_grad():
        model.segmentation_head.bias.zero_()
    return save_weights(folder / "ccp.safetensors", model, info)


def _wire(msg):
    """``msg`` after serialisation and back, as a subscriber gets it."""
    return deserialize_message(serialize_message(msg), type(msg))


def _parts_message():
    names = get_class_set("lip").names
    parts = tuple(
        Part(i, name, i in (0, 2, 13), [0.7, 0, 0.2, 0][i % 4], (i, i + 1, 40 + i, 90 + i) if i % 2 == 0 else None,
             0.25 + i / 100, (0, 1, 50 + i, 99) if i % 2 == 0 else None)
        for i, name in enumerate(names)
    )
    return PartsMessage(Stamp(1700000000, 123456789), "camera_optical_frame", 640, 480, 0.005, parts)


def test_parts_travel_typed_with_the_input_header_and_boxes_as_regions():
    view = _parts_message()
    msg = _wire(interface.parts_msg(view))
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (
        1700000000, 123456789, "camera_optical_frame")
    assert (msg.width, msg.height, len(msg.parts)) == (640, 480, 20) and msg.depth_frame_id == ""
    hair = msg.parts[2]
    assert (hair.id, hair.name, hair.present) == (2, "hair", True)
    assert (hair.bbox.x_offset, hair.bbox.y_offset, hair.bbox.width, hair.bbox.height) == (2, 3, 41, 90)
    assert hair.bbox_full.width == 53 and not hair.has_location
    hat = msg.parts[1]
    assert (hat.bbox.width, hat.bbox.height, hat.bbox_full.width) == (0, 0, 0)  # no pixel: an empty region
    back = interface.parts_from_msg(msg)
    same_view(back, view)
    assert back.get("face").present and [p.id for p in back.present()] == [0, 2, 13]
    assert back.get("hat").bbox is None and back.stamp.to_sec() == pytest.approx(1700000000.123456789)
    with pytest.raises(KeyError, match="tail"):
        back.get("tail")


def test_locations_travel_only_with_depth():
    located = Position3D((0.012, -0.5, 2.0), (0.3, 0.9, 0.0), 1234)
    parts = (Part(3, "hair", True, 0.1, (1, 2, 3, 4), 0.9, (1, 2, 3, 4), located),
             Part(4, "face", False, 0.0, None, 0.0))
    view = PartsMessage(Stamp(1, 2), "color", 64, 48, 0.005, parts, "camera_depth_optical_frame")
    msg = _wire(interface.parts_msg(view))
    assert msg.depth_frame_id == "camera_depth_optical_frame"
    assert msg.parts[0].has_location and msg.parts[0].location.valid_pixels == 1234
    assert (msg.parts[0].location.position.z, msg.parts[0].location.extent.y) == (2.0, 0.9)
    assert not msg.parts[1].has_location  # no reading: no location rather than a made-up one
    same_view(interface.parts_from_msg(msg), view)
    persons = PersonsMessage.from_persons([(7, PersonDetection(1, 0.9, (1, 2, 30, 40), 500), parts)], Stamp(1, 2),
                                          "f", 64, 48, 0.005, 3, {1: located}, "d")
    msg = _wire(interface.persons_msg(persons))
    person = msg.persons[0]
    assert (person.id, person.instance, person.has_location, msg.dropped) == (7, 1, True, 3)
    assert (person.bbox.x_offset, person.bbox.width) == (1, 30) and len(person.parts) == 2
    back = interface.persons_from_msg(msg)
    same_view(back, persons)
    assert back.get(7).location == located


def test_class_info_travels_typed_palette_and_pairs_flattened():
    cs = get_class_set("mhpv2")
    view = ClassInfoMessage(cs.name, cs.names, tuple(tuple(int(v) for v in c) for c in cs.palette.tolist()),
                            cs.flip_pairs, "deeplabv3plus", "/opt/weights/ccp.safetensors", False, "onnxruntime",
                            "int8")
    header = interface.header_msg(Stamp(5, 6), "")
    msg = _wire(interface.class_info_msg(view, header))
    assert msg.header.stamp.sec == 5 and len(msg.names) == 59 and len(msg.palette) == 3 * 59
    assert list(msg.palette[3:6]) == list(cs.palette[1]) and (msg.backend, msg.precision) == ("onnxruntime", "int8")
    left, right = cs.flip_pairs[0]
    assert list(msg.flip_pairs[:2]) == [left, right]
    assert interface.class_info_from_msg(msg) == view


def test_a_parse_gives_every_class_rounded_and_present_as_computed(weights):
    result = HumanParser(weights, device="cpu").parse(load_rgb(sample_photos()[0]))
    height, width = result.labels.shape
    exact = result.presence(0.005)
    view = PartsMessage.from_parts(exact, Stamp(1795432954, 576464160), "cam", width, height, 0.005)
    msg = _wire(interface.parts_msg(view))
    assert (msg.height, msg.width) == result.labels.shape and len(msg.parts) == 59
    assert [p.present for p in msg.parts] == [p.present for p in exact] and sum(p.present for p in msg.parts) > 1
    for part, counted in zip(msg.parts, exact):
        assert part.pixel_fraction == pytest.approx(counted.pixel_fraction, abs=1e-6)
        assert interface.box_of(part.bbox) == counted.bbox
        assert interface.box_of(part.bbox_full) == counted.bbox_full


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
    msg = _wire(interface.class_info_msg(message, interface.header_msg(Stamp(0, 0), "")))
    assert msg.weights == str(weights) and msg.untrained is True and list(msg.palette[3:6]) == [128, 0, 0]
