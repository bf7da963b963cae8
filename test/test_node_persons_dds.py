"""The node with multi-person weights, over real DDS: instances and persons carry the input header, ids stay
put over a sequence, a late subscriber is served, and the person cap shows in the message and diagnostics."""
from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from person_weights import PAINTED, make_person_weights  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from human_parsing_msgs.msg import Persons  # noqa: E402
from human_parsing_ros.parser import HumanParser  # noqa: E402
from human_parsing_ros.resources import share_file  # noqa: E402
from human_parsing_ros.ros.interface import persons_from_msg  # noqa: E402
from human_parsing_ros.samples import load_rgb, sample_photos  # noqa: E402
from human_parsing_ros.tools.harness import Client, NodeProcess, image_array, stamp_ns  # noqa: E402

NS = "/persons_test"
CAMERA = "/persons_cam/image_raw"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_person_weights(tmp_path_factory.mktemp("w") / "persons.safetensors")


def _matching(client, topic, msg):
    """What ``topic`` published for the input ``msg`` (by the input's header, which every output carries)."""
    return [m for m in client.received.get(topic) if stamp_ns(m.header) == stamp_ns(msg.header)]


def test_persons_and_instances_over_dds(ros, weights, tmp_path):
    frame = load_rgb(sample_photos()[0])[::4, ::4].copy()
    expected = HumanParser(weights, device="cpu", person_threshold=0.3).parse(frame)
    above = len(expected.persons) + expected.dropped_persons
    assert above >= 2  # the cap below must have something to drop
    node = NodeProcess(share_file("config", "parser.yaml"), NS, {"image": CAMERA},
                       {"weights": str(weights), "device": "cpu", "person_threshold": 0.3, "max_persons": 1},
                       log_path=tmp_path / "node.log")
    node.start()
    client = Client(CAMERA, {"labels": Image, "instances": Image, "persons": Persons, "/diagnostics": DiagnosticArray},
                    NS, name="persons_client")
    late = None
    try:
        client.wait_for_node()
        client.wait_for(lambda: all(s.get_publisher_count() for s in client.subs), 10.0, "outputs to match")
        sent = []
        for _ in range(4):
            sent.append(client.image_msg(frame, frame_id="persons_optical_frame"))
            client.publish(sent[-1])
            time.sleep(0.7)
        client.resend_until(sent[-1], lambda: _matching(client, "persons", sent[-1]), 30.0,
                            "persons for the last frame")
        ids = []
        for msg in sent:
            instances, persons = _matching(client, "instances", msg), _matching(client, "persons", msg)
            if not (instances and persons):
                continue  # superseded by a newer frame: the node keeps no backlog
            image = instances[0]
            assert image.encoding == "mono8" and image.header.frame_id == "persons_optical_frame"
            assert (image.height, image.width) == frame.shape[:2]
            decoded = persons_from_msg(persons[0])
            assert decoded.frame_id == "persons_optical_frame" and (decoded.height, decoded.width) == frame.shape[:2]
            assert len(decoded.persons) == 1 and decoded.dropped == above - 1  # max_persons 1
            person = decoded.persons[0]
            mask = image_array(image) == person.instance
            assert mask.any() and person.get("headwear").present and person.get("headwear").pixel_fraction == 1.0
            labels = _matching(client, "labels", msg)
            if labels:
                assert (image_array(labels[0])[mask] == PAINTED).all()
            ids.append(person.id)
        assert len(ids) >= 2 and len(set(ids)) == 1  # the same person keeps its id

        late = Client(CAMERA, {"persons": Persons}, NS, name="persons_late_client")
        late.wait_for(lambda: all(s.get_publisher_count() for s in late.subs), 10.0, "the late subscription")
        again = client.image_msg(frame, frame_id="persons_optical_frame")
        client.publish(again)
        client.resend_until(again, lambda: _matching(late, "persons", again), 30.0, "persons for the late subscriber")
        assert persons_from_msg(_matching(late, "persons", again)[0]).persons[0].id == ids[0]

        def dropped_reported() -> bool:
            for array in client.received.get("/diagnostics"):
                for status in array.status:
                    values = {kv.key: kv.value for kv in status.values}
                    if "persons_dropped" in values and int(values["persons_dropped"]) >= above - 1:
                        return True
            return False

        client.wait_for(dropped_reported, 10.0, "persons_dropped in diagnostics")
        assert node.alive()
    finally:
        if late is not None:
            late.close()
        client.close()
        node.stop()


def test_ids_stay_unique_across_a_pause_and_flip_tta_is_refused(ros, weights):
    """In process (the node's own lifecycle callbacks): after deactivate and activate the tracks are new but
    the ids keep increasing, so an id never names two persons; flip TTA, which multi-person weights do not
    run, is refused when set rather than failing every frame."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from human_parsing_ros.ros.node import HumanParserNode

    cli = ["--ros-args", "--params-file", str(share_file("config", "parser.yaml")), "-r", "__ns:=/pause_persons",
           "-p", f"weights:={weights}", "-p", "device:=cpu", "-p", "autostart:=false"]
    node = HumanParserNode(argv=["parser_node", *cli], cli_args=cli)
    box = (10.0, 10.0, 50.0, 90.0)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        refused = node.set_parameters([Parameter("flip_tta", value=True)])[0]
        assert not refused.successful and "multi-person" in refused.reason and node.param("flip_tta") is False
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.frames.tracker.update([box]) == [1] and node.frames.tracker.update([box]) == [1]
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.frames.tracker.update([box]) == [2]  # a new track (who is there now is not known), a new id
        # a frame the size of the network's input: its boxes are the same at either output_resolution, yet
        # a change of resolution starts new tracks (in general the boxes change scale with it)
        frame = load_rgb(sample_photos()[0])[:160, :128].copy()
        header = Image().header
        result = node.frames.parser.parse(frame, node.frames.options)
        assert result.persons, "the painted weights find persons"
        node.frames.publish_persons(result, header, node.frames.options)
        first = set(node.frames.tracker._tracks)
        node.frames.publish_persons(node.frames.parser.parse(frame, node.frames.options), header, node.frames.options)
        assert set(node.frames.tracker._tracks) == first  # the same persons keep their ids
        assert node.set_parameters([Parameter("output_resolution", value="network")])[0].successful
        node.frames.publish_persons(node.frames.parser.parse(frame, node.frames.options), header, node.frames.options)
        at_network = set(node.frames.tracker._tracks)
        assert not at_network & first
        # the camera changes resolution (in general the boxes change scale with it): the tracks restart even
        # where the boxes happen to be the same
        taller = node.frames.parser.parse(frame, node.frames.options)
        taller.labels = np.pad(taller.labels, ((0, 8), (0, 0)))
        node.frames.publish_persons(taller, header, node.frames.options)
        assert not set(node.frames.tracker._tracks) & at_network
    finally:
        node.destroy_node()
