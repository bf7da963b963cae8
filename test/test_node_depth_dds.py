"""3D from depth through the node over real DDS: a depth plane at 2.000 m behind a real photo, depth at half the
colour resolution; late, stopped and unusable depth leave the 2D outputs running."""
from __future__ import annotations

import array
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PointStamped  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from human_parsing_msgs.msg import Parts, Persons  # noqa: E402

visualization_msgs = pytest.importorskip("visualization_msgs.msg")
MarkerArray = visualization_msgs.MarkerArray

from human_parsing_ros.messages import PartsMessage  # noqa: E402
from human_parsing_ros.resources import DEFAULT_WEIGHTS, share_file  # noqa: E402
from human_parsing_ros.ros.interface import parts_from_msg, persons_from_msg  # noqa: E402
from human_parsing_ros.samples import load_rgb, sample_photos  # noqa: E402
from human_parsing_ros.tools.harness import Client, NodeProcess, image_array, stamp_ns  # noqa: E402

NS, CAMERA = "/depth_ns", "/depth_cam/color/image_raw"
DEPTH, DEPTH_INFO = "/depth_cam/aligned_depth/image_raw", "/depth_cam/aligned_depth/camera_info"
FOCAL = 500.0  # colour pixels


def camera_info(client: Client, width: int, height: int, stamp, focal: float = FOCAL) -> CameraInfo:
    msg = CameraInfo(width=width, height=height)
    msg.header.stamp, msg.header.frame_id = stamp, "depth_optical_frame"
    msg.k = [focal, 0.0, (width - 1) / 2, 0.0, focal, (height - 1) / 2, 0.0, 0.0, 1.0]
    return msg


def depth_image(stamp, width: int, height: int, encoding: str) -> Image:
    values = (np.full((height, width), 2000, np.uint16) if encoding == "16UC1"
              else np.full((height, width), 2.0, np.float32))
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0, step=width * values.itemsize)
    msg.header.stamp, msg.header.frame_id = stamp, "depth_optical_frame"
    msg.data = array.array("B", values.tobytes())
    return msg


def expected_location(labels: np.ndarray, class_id: int) -> tuple[float, float]:
    """x, y by hand: the median colour pixel of the class through the colour camera (the depth camera's K at
    the colour size), at 2 m."""
    ys, xs = np.nonzero(labels == class_id)
    height, width = labels.shape
    return ((np.median(xs) - (width - 1) / 2) / FOCAL * 2.0, (np.median(ys) - (height - 1) / 2) / FOCAL * 2.0)


@pytest.fixture(scope="module")
def node(ros, tmp_path_factory):
    process = NodeProcess(share_file("config", "parser.yaml"), NS,
                          {"image": CAMERA, "depth": DEPTH, "depth/camera_info": DEPTH_INFO},
                          {"weights": str(DEFAULT_WEIGHTS), "device": "cpu", "depth_input": True,
                           "depth_timeout_s": 1.0},
                          log_path=tmp_path_factory.mktemp("node") / "node.log")
    process.start()
    client = Client(CAMERA, {"labels": Image, "parts": Parts, "persons": Persons, "markers": MarkerArray,
                             "/diagnostics": DiagnosticArray}, NS, name="depth_probe")
    depth_pub = client.node.create_publisher(Image, DEPTH, 2)
    info_pub = client.node.create_publisher(CameraInfo, DEPTH_INFO, 2)
    try:
        client.wait_for_node()
        client.wait_for(lambda: all(s.get_publisher_count() for s in client.subs[:3]), 10.0, "outputs to match")
        client.wait_for(lambda: depth_pub.get_subscription_count() and info_pub.get_subscription_count(), 10.0,
                        "the node's depth subscriptions")
        for _ in range(5):  # the first messages of a new writer can lag behind later ones: start the stream
            info_pub.publish(camera_info(client, 64, 48, client.image_msg(np.zeros((1, 1, 3), np.uint8)).header.stamp))
            time.sleep(0.1)
        yield process, client, depth_pub, info_pub
    finally:
        client.close()
        process.stop()


class Frame:
    """A colour frame and the depth messages that go with it, sent together as a camera would, again every 5 s
    until the node's parts for it arrive (best-effort topics can lose a message; a camera sends the next)."""

    def __init__(self, client: Client, depth_pub, info_pub, image: np.ndarray) -> None:
        self.client, self.depth_pub, self.info_pub = client, depth_pub, info_pub
        self.msg = client.image_msg(image, frame_id="color_optical_frame")
        self.depth: list[tuple] = []

    def with_depth(self, scale: int, encoding: str, offset_ns: int = 0, focal: float = FOCAL) -> Frame:
        stamp = self.msg.header.stamp
        if offset_ns:
            total = stamp_ns(self.msg.header) + offset_ns
            stamp = type(stamp)(sec=total // 1_000_000_000, nanosec=total % 1_000_000_000)
        height, width = self.msg.height // scale, self.msg.width // scale
        self.depth = [(self.info_pub, camera_info(self.client, width, height, stamp, focal / scale)),
                      (self.depth_pub, depth_image(stamp, width, height, encoding))]
        return self

    def send(self) -> None:
        for publisher, message in self.depth:
            publisher.publish(message)
            time.sleep(0.1)  # the depth is there before the frame, as a camera's would be
        self.client.publish(self.msg)

    def outputs(self, timeout: float = 60.0) -> tuple[np.ndarray, PartsMessage]:
        stamp = (self.msg.header.stamp.sec, self.msg.header.stamp.nanosec)

        def parts_for():
            return [p for p in (parts_from_msg(m) for m in self.client.received.get("parts"))
                    if (p.stamp.sec, p.stamp.nanosec) == stamp]

        deadline = time.monotonic() + timeout
        while not parts_for():
            if time.monotonic() > deadline:
                raise TimeoutError("no parts for the frame")
            self.send()
            end = time.monotonic() + 5.0
            while not parts_for() and time.monotonic() < end:
                time.sleep(0.05)
        labels = next(m for m in self.client.received.get("labels") if stamp_ns(m.header) == stamp_ns(self.msg.header))
        return image_array(labels), parts_for()[0]


@pytest.mark.parametrize("encoding,scale", [("16UC1", 1), ("32FC1", 1), ("16UC1", 2)])
def test_parts_and_persons_are_located_on_a_plane_at_two_metres(node, encoding, scale):
    _, client, depth_pub, info_pub = node
    image = load_rgb(sample_photos()[0])[::2, ::2].copy()  # 275 x 416, a standing person
    labels, parts = Frame(client, depth_pub, info_pub, image).with_depth(scale, encoding).outputs()
    assert parts.depth_frame_id == "depth_optical_frame", node[0].log()[-1500:]
    present = [part for part in parts.parts if part.present and part.id != 0]
    assert len(present) >= 3
    for part in present:
        assert part.location is not None, part.name
        x, y = expected_location(labels, part.id)
        assert part.location.position == pytest.approx((x, y, 2.0), abs=0.01), part.name
        assert part.location.valid_pixels > 0

    def persons_for():
        found = [p for p in (persons_from_msg(m) for m in client.received.get("persons"))
                 if (p.stamp.sec, p.stamp.nanosec) == (parts.stamp.sec, parts.stamp.nanosec)]
        return found[0] if found else None

    try:
        client.wait_for(lambda: persons_for() is not None, 10.0, "persons for the frame")
    except TimeoutError:
        raise AssertionError(node[0].log()[-1500:]) from None
    person = persons_for()
    assert person.depth_frame_id == "depth_optical_frame" and person.persons
    assert person.persons[0].location.position[2] == pytest.approx(2.0, abs=0.01)


def test_each_tracked_person_gets_a_point_stamped_and_a_marker(node):
    """bodies/person_<id>/position (PointStamped: the colour frame's stamp, the depth optical frame, z at the plane)
    and markers (a box per person) for the frame that located the person."""
    _, client, depth_pub, info_pub = node
    image = load_rgb(sample_photos()[2])[::2, ::2].copy()
    _, first = Frame(client, depth_pub, info_pub, image).with_depth(1, "16UC1").outputs()
    client.wait_for(lambda: any((p.stamp.sec, p.stamp.nanosec) == (first.stamp.sec, first.stamp.nanosec)
                                for p in (persons_from_msg(m) for m in client.received.get("persons"))),
                    10.0, "persons for the first frame")
    persons = [persons_from_msg(m) for m in client.received.get("persons")]
    person_id = next(p for p in persons if (p.stamp.sec, p.stamp.nanosec) ==
                     (first.stamp.sec, first.stamp.nanosec)).persons[0].id
    client.subscribe(f"bodies/person_{person_id}/position", PointStamped, 10)
    time.sleep(0.5)  # the subscription matches the node's publisher, made with the person's first location
    frame = Frame(client, depth_pub, info_pub, image).with_depth(1, "16UC1")
    frame.outputs()
    topic = f"bodies/person_{person_id}/position"
    client.wait_for(lambda: any(stamp_ns(m.header) == stamp_ns(frame.msg.header)
                                for m in client.received.get(topic)), 10.0, "the person's position")
    point = next(m for m in client.received.get(topic) if stamp_ns(m.header) == stamp_ns(frame.msg.header))
    assert point.header.frame_id == "depth_optical_frame" and point.point.z == pytest.approx(2.0, abs=0.01)
    client.wait_for(lambda: any(stamp_ns(m.markers[0].header) == stamp_ns(frame.msg.header)
                                for m in client.received.get("markers") if m.markers), 10.0, "markers")
    drawn = next(m for m in client.received.get("markers")
                 if m.markers and stamp_ns(m.markers[0].header) == stamp_ns(frame.msg.header))
    boxes = [m for m in drawn.markers if m.ns == "human_parsing/persons"]
    assert person_id in [m.id for m in boxes]
    box = next(m for m in boxes if m.id == person_id)
    assert box.pose.position.z == pytest.approx(2.0, abs=0.01) and box.pose.position.x == pytest.approx(
        point.point.x, abs=1e-6) and box.scale.y > 0.2  # a standing person is taller than 20 cm


def test_depth_too_late_stopped_or_unusable_leaves_the_2d_outputs(node):
    process, client, depth_pub, info_pub = node
    image = load_rgb(sample_photos()[1])[::2, ::2].copy()
    _, parts = Frame(client, depth_pub, info_pub, image).with_depth(1, "16UC1", offset_ns=200_000_000).outputs()
    assert all(part.location is None for part in parts.parts) and parts.depth_frame_id == ""
    # a camera_info with a zero K: refused in one line, and the depth images it would describe give no 3D
    _, parts = Frame(client, depth_pub, info_pub, image).with_depth(1, "16UC1", focal=0.0).outputs()
    assert all(part.location is None for part in parts.parts)
    client.wait_for(lambda: "no usable focal length" in process.log(), 10.0, "the refusal in the log")
    assert sum("no usable focal length" in line for line in process.log().splitlines()) == 1  # throttled, one line
    # depth stops: frames still parse; diagnostics say so and count the frames without depth
    time.sleep(1.5)
    Frame(client, depth_pub, info_pub, image).outputs()

    def depth_report():
        for array_msg in reversed(client.received.get("/diagnostics")):
            for status in array_msg.status:
                values = {kv.key: kv.value for kv in status.values}
                if int(values.get("frames_without_depth", 0)) >= 2 and "no depth on" in status.message:
                    return status, values
        return None

    client.wait_for(lambda: depth_report() is not None, 10.0, "diagnostics to report the depth stopped")
    status, values = depth_report()
    assert status.level == b"\x01" and DEPTH in status.message  # WARN, naming the topic
    assert int(values["depth_rejected"]) >= 1 and int(values["depth_pairs_exact"]) >= 4
    assert process.alive()
