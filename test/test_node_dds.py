"""The node as users run it: console script, parameter file, remaps, real DDS between processes."""
from __future__ import annotations

import array
import io
import signal
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from human_parsing_msgs.msg import ClassInfo, Parts, Persons  # noqa: E402
from human_parsing_ros.class_sets import get_class_set  # noqa: E402
from human_parsing_ros.resources import share_file  # noqa: E402
from human_parsing_ros.ros.interface import class_info_from_msg, parts_from_msg, persons_from_msg  # noqa: E402
from human_parsing_ros.samples import load_rgb, sample_photos  # noqa: E402
from human_parsing_ros.tools.harness import Client, NodeProcess, image_array, stamp_ns  # noqa: E402
from human_parsing_ros.tools.random_weights import make_random_weights  # noqa: E402

NS = "/human_parsing"
CAMERA = "/test_cam/image_raw"
OUTPUTS = {"labels": Image, "labels/color": Image, "overlay": Image, "masks/hair": Image, "masks/skin": Image,
           "parts": Parts, "instances": Image, "persons": Persons, "/diagnostics": DiagnosticArray}
PARAMS_FILE = share_file("config", "parser.yaml")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_random_weights(tmp_path_factory.mktemp("w") / "ccp.safetensors", "ccp", input_size=(128, 128))


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    # Real photos at a camera-like size (and one full-size 550x832 frame, 1.4 MB over DDS).
    photos = [load_rgb(p) for p in sample_photos()[:3]]
    return [p[::4, ::4].copy() for p in photos] + [photos[0]]


def start_node(tmp_path: Path, weights: Path, camera: str = CAMERA, ns: str = NS, **params) -> NodeProcess:
    node = NodeProcess(PARAMS_FILE, ns, {"image": camera}, {"weights": str(weights), "device": "cpu", **params},
                       log_path=tmp_path / "node.log")
    node.start()
    return node


@pytest.fixture(scope="module")
def running(ros, weights, tmp_path_factory):
    node = start_node(tmp_path_factory.mktemp("node"), weights)
    client = Client(CAMERA, OUTPUTS, NS, name="hp_test_client")
    try:
        client.wait_for_node()
        client.wait_for(lambda: all(s.get_publisher_count() for s in client.subs), 10.0, "outputs to match")
        yield node, client
    finally:
        client.close()
        node.stop()


def play(client: Client, frames, rate_hz: float = 10.0, frame_id: str = "test_optical_frame", **kw) -> list:
    sent = []
    for frame in frames:
        msg = client.image_msg(frame, frame_id=frame_id, **kw)
        client.publish(msg)
        sent.append(msg)
        time.sleep(1.0 / rate_hz)
    return sent


def outputs_for(client: Client, topic: str, msg) -> list:
    """What ``topic`` published for frame ``msg``: every output carries the input's header."""
    return [m for m in client.received.get(topic) if stamp_ns(m.header) == stamp_ns(msg.header)]


def wait_labels_for(client: Client, msg, timeout: float = 20.0, resend: bool = True) -> Image:
    """The labels of a published frame; ``resend`` sends it again while they are missing (best-effort input)."""
    def arrived() -> bool:
        return bool(outputs_for(client, "labels", msg))

    if resend:
        client.resend_until(msg, arrived, timeout, "labels for the frame")
    else:
        client.wait_for(arrived, timeout, "labels for the frame")
    return outputs_for(client, "labels", msg)[0]


def test_outputs_carry_the_input_header_and_size(running, frames):
    node, client = running
    sent = []
    for frame in frames * 2:  # one at a time: each is parsed however slow the machine is
        sent.append(client.image_msg(frame, frame_id="test_optical_frame"))
        client.publish(sent[-1])
        last = wait_labels_for(client, sent[-1], 60.0)
    assert node.alive()
    palette = get_class_set("ccp").palette
    matched = 0
    for msg in sent:
        labels = outputs_for(client, "labels", msg)
        if not labels:
            continue  # a frame may be superseded by a newer one: that is the no-backlog policy
        matched += 1
        lab = labels[0]
        assert lab.encoding == "mono8"
        assert (lab.height, lab.width) == (msg.height, msg.width)
        assert lab.header.frame_id == "test_optical_frame"
        ids = image_array(lab)
        assert ids.max() < 59
        color = outputs_for(client, "labels/color", msg)
        if color:
            assert color[0].encoding == "rgb8"
            np.testing.assert_array_equal(image_array(color[0]), palette[ids])
        for part, cid in (("hair", 19), ("skin", 41)):
            masks = outputs_for(client, f"masks/{part}", msg)
            if masks:
                mask = image_array(masks[0])
                assert set(np.unique(mask)) <= {0, 255}
                np.testing.assert_array_equal(mask == 255, ids == cid)
        overlay = outputs_for(client, "overlay", msg)
        if overlay:
            assert overlay[0].encoding == "rgb8" and overlay[0].width == msg.width
    assert matched == len(sent)
    assert last.header.frame_id == "test_optical_frame"
    last_stamp = (sent[-1].header.stamp.sec, sent[-1].header.stamp.nanosec)

    def last_report():  # parts is published after labels: it may still be on its way
        reports = [parts_from_msg(m) for m in client.received.get("parts")]
        return next((r for r in reports if (r.stamp.sec, r.stamp.nanosec) == last_stamp), None)

    client.wait_for(lambda: last_report() is not None, 10.0, "the last frame's parts report")
    report = last_report()
    assert report.frame_id == "test_optical_frame" and len(report.parts) == 59
    assert abs(sum(p.pixel_fraction for p in report.parts) - 1.0) < 1e-3
    assert (report.width, report.height) == (sent[-1].width, sent[-1].height)
    ids = image_array(last)
    for part in report.parts:
        assert part.present == (part.pixel_fraction >= report.threshold and part.pixel_fraction > 0)
        assert (part.bbox is None) == (part.bbox_full is None)
        if part.bbox is not None:
            ys, xs = np.nonzero(ids == part.id)
            assert part.bbox_full == (xs.min(), ys.min(), xs.max(), ys.max())
            k = len(xs) // 100  # the robust box: 1 % of the part's pixels left out at each end of x and y
            xs, ys = np.sort(xs), np.sort(ys)
            assert part.bbox == (xs[k], ys[k], xs[-1 - k], ys[-1 - k])


def test_class_info_reaches_a_late_subscriber(running):
    node, client = running
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    client.subscribe("class_info", ClassInfo, latched)
    client.wait_for(lambda: client.received.get("class_info"), 10.0, "latched class_info")
    info = class_info_from_msg(client.received.get("class_info")[0])
    assert info.class_set == "ccp" and info.names == get_class_set("ccp").names and info.untrained
    assert len(info.palette) == 59


def _raw(client: Client, encoding: str, height: int, width: int, step: int, data: bytes, bigendian: int = 0):
    msg = client.image_msg(np.zeros((1, 1, 3), np.uint8), frame_id="hostile")
    msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian = encoding, height, width, step, bigendian
    msg.data = array.array("B", data)
    return msg


def diagnostics_value(client: Client, key: str, timeout: float = 5.0, node_ns: str = "") -> str:
    """The newest reported value of ``key`` (waiting for a first report that has it); ``node_ns``: only from the
    node in that namespace (/diagnostics is one topic for every node of the domain)."""
    def newest() -> str | None:
        for array_msg in reversed(client.received.get("/diagnostics")):
            for status in array_msg.status:
                if node_ns and not status.name.startswith(f"{node_ns}/"):
                    continue
                for kv in status.values:
                    if kv.key == key:
                        return kv.value
        return None

    client.wait_for(lambda: newest() is not None, timeout, f"diagnostics to report {key}")
    return newest()


def test_hostile_inputs_are_dropped_and_the_node_keeps_answering(running, frames):
    node, client = running
    good = frames[0]
    h, w = good.shape[:2]
    rejected_before = int(diagnostics_value(client, "frames_rejected"))
    hostile = [
        _raw(client, "weird_encoding", h, w, w * 3, good.tobytes()),
        _raw(client, "rgb8", h, w, w * 3 - 1, good.tobytes()),  # step too small
        _raw(client, "rgb8", h, w, w * 3, good.tobytes()[:-7]),  # truncated
        _raw(client, "rgb8", 0, 0, 0, b""),  # zero size
        _raw(client, "16UC1", h, w, w * 2, bytes(h * w * 2)),  # depth, not a camera image
        _raw(client, "yuv422", h, w - 1, (w - 1) * 2, bytes(h * (w - 1) * 2)),  # odd width for 4:2:2
    ]
    for msg in hostile:
        client.publish(msg)
        time.sleep(0.3)  # one at a time, so none is superseded before the node sees it
    client.wait_for(lambda: int(diagnostics_value(client, "frames_rejected")) >= rejected_before + len(hostile),
                    15.0, "the rejections to be counted")
    # diagnostics say what the last frame was and why it was refused (the odd-width yuv422 one)
    client.wait_for(lambda: diagnostics_value(client, "last_input") == f"yuv422 {w - 1}x{h}", 5.0, "last_input")
    assert "dropped frame from /test_cam/image_raw" in diagnostics_value(client, "last_rejection")
    assert node.alive()
    # Still answering, including the 16-bit and 4-channel encodings users send.
    for encoding, pixels in (("rgb8", good), ("bgra8", np.dstack([good[..., ::-1], np.full((h, w), 255, np.uint8)])),
                             ("mono16", (good[..., 0].astype(np.uint16) * 257))):
        msg = client.image_msg(pixels, frame_id="after_hostile", encoding=encoding)
        client.publish(msg)
        lab = wait_labels_for(client, msg)
        assert (lab.height, lab.width) == (h, w)
    assert "dropped frame from /test_cam/image_raw" in node.log()


def test_single_map_weights_report_the_maps_regions_as_persons(running, frames):
    """map_persons (on in config/parser.yaml): instances and persons are the connected regions of the labels
    the node published for the same frame."""
    from human_parsing_ros.map_persons import persons_from_map

    node, client = running
    msg = client.image_msg(frames[1], frame_id="map_persons")
    client.publish(msg)
    client.resend_until(msg, lambda: all(outputs_for(client, t, msg) for t in ("labels", "instances", "persons")),
                        30.0, "labels, instances and persons of the frame")
    ids = image_array(outputs_for(client, "labels", msg)[0])
    expected_instances, expected = persons_from_map(ids, max_persons=16)
    np.testing.assert_array_equal(image_array(outputs_for(client, "instances", msg)[0]), expected_instances)
    decoded = persons_from_msg(outputs_for(client, "persons", msg)[0])
    assert decoded.frame_id == "map_persons" and len(decoded.persons) == len(expected)
    assert [(p.instance, p.bbox) for p in decoded.persons] == [(e.instance, e.bbox) for e in expected]
    assert len({p.id for p in decoded.persons}) == len(decoded.persons)


def test_a_fast_camera_builds_no_backlog(running, frames):
    node, client = running
    before = int(diagnostics_value(client, "frames_dropped"))
    sent = play(client, [frames[i % 3] for i in range(40)], rate_hz=200.0, frame_id="burst")
    wait_labels_for(client, sent[-1], 20.0, resend=False)  # the newest frame is always processed
    got = [m for m in client.received.get("labels") if m.header.frame_id == "burst"]
    assert len(got) < len(sent)
    client.wait_for(lambda: int(diagnostics_value(client, "frames_dropped")) > before, 5.0, "drops to be counted")


def _call(client: Client, srv_type, name: str, request, timeout: float = 10.0):
    cli = client.node.create_client(srv_type, name)
    assert cli.wait_for_service(timeout_sec=timeout), f"service {name} not available"
    future = cli.call_async(request)
    client.wait_for(future.done, timeout, f"reply from {name}")
    client.node.destroy_client(cli)
    return future.result()


def _set(client: Client, name: str, value, ns: str = NS) -> tuple[bool, str]:
    pv = ParameterValue()
    if isinstance(value, bool):
        pv.type, pv.bool_value = ParameterType.PARAMETER_BOOL, value
    elif isinstance(value, int):
        pv.type, pv.integer_value = ParameterType.PARAMETER_INTEGER, value
    elif isinstance(value, float):
        pv.type, pv.double_value = ParameterType.PARAMETER_DOUBLE, value
    else:
        pv.type, pv.string_value = ParameterType.PARAMETER_STRING, value
    req = SetParameters.Request(parameters=[ParameterMsg(name=name, value=pv)])
    result = _call(client, SetParameters, f"{ns}/human_parser/set_parameters", req).results[0]
    return result.successful, result.reason


def test_parameters_are_validated_and_runtime_ones_apply(running, frames):
    node, client = running
    ok, reason = _set(client, "presence_threshold", 1.5)
    assert not ok and reason
    ok, reason = _set(client, "resize_mode", "squash")
    assert not ok and "resize_mode" in reason
    ok, reason = _set(client, "weights", "/elsewhere.safetensors")
    assert not ok and "read-only" in reason.lower()
    assert _set(client, "presence_threshold", 0.25) == (True, "")
    msg = play(client, [frames[0]], frame_id="threshold")[0]
    client.wait_for(lambda: [m for m in client.received.get("parts")
                             if parts_from_msg(m).frame_id == "threshold"], 20.0, "parts")
    report = next(parts_from_msg(m) for m in client.received.get("parts")
                  if parts_from_msg(m).frame_id == "threshold")
    assert report.threshold == 0.25
    assert all(p.present == (p.pixel_fraction >= 0.25) for p in report.parts)
    assert _set(client, "presence_threshold", 0.005)[0]
    assert node.alive() and msg is not None


def test_frames_over_max_input_pixels_are_refused_and_counted(running, frames):
    node, client = running
    good = frames[0]
    h, w = good.shape[:2]
    ok, reason = _set(client, "max_input_pixels", 0)
    assert not ok and reason
    assert _set(client, "max_input_pixels", h * w) == (True, "")
    try:
        rejected_before = int(diagnostics_value(client, "frames_rejected"))
        wider = np.ascontiguousarray(np.concatenate([good, good[:, :1]], axis=1))  # one column too many
        expected = f"{w + 1}x{h} = {(w + 1) * h} pixels is over the limit of {h * w} pixels (max_input_pixels)"
        sent = []

        def refused_and_logged() -> bool:  # the warning is throttled (5 s): send until it is logged
            sent.append(client.image_msg(wider, frame_id="too_big"))
            client.publish(sent[-1])
            time.sleep(0.3)
            return expected in node.log()

        client.wait_for(refused_and_logged, 20.0, "the refusal to be logged")
        client.wait_for(lambda: int(diagnostics_value(client, "frames_rejected")) > rejected_before,
                        5.0, "the refusals to be counted")
        assert not any(outputs_for(client, "labels", big) for big in sent)
        wait_labels_for(client, play(client, [good], frame_id="at_the_limit")[0])
        seen = len(client.received.get("/diagnostics"))  # the next test reads counts: let them settle first
        client.wait_for(lambda: len(client.received.get("/diagnostics")) > seen + 1, 5.0, "fresh diagnostics")
    finally:
        assert _set(client, "max_input_pixels", 3840 * 2160)[0]
    assert node.alive()


def test_resize_mode_and_flip_tta_apply_per_frame(running, frames):
    node, client = running
    rejected_before = int(diagnostics_value(client, "frames_rejected"))
    assert _set(client, "resize_mode", "stretch") == (True, "")
    assert _set(client, "flip_tta", True) == (True, "")
    try:
        wait_labels_for(client, play(client, [frames[0]], frame_id="options")[0])
        client.wait_for(lambda: "stretch" in diagnostics_value(client, "model"), 5.0, "the new options in diagnostics")
        assert "flip TTA on" in diagnostics_value(client, "model")
        assert int(diagnostics_value(client, "frames_rejected")) == rejected_before
    finally:
        assert _set(client, "resize_mode", "letterbox")[0] and _set(client, "flip_tta", False)[0]
    assert node.alive()


def test_lifecycle_deactivate_stops_outputs_and_activate_resumes(running, frames):
    node, client = running
    change = f"{NS}/human_parser/change_state"
    assert _call(client, ChangeState, change, ChangeState.Request(
        transition=Transition(id=Transition.TRANSITION_DEACTIVATE))).success
    state = _call(client, GetState, f"{NS}/human_parser/get_state", GetState.Request()).current_state
    assert state.label == "inactive"
    silent = play(client, [frames[0]] * 3, frame_id="while_inactive")
    time.sleep(1.5)
    assert not any(outputs_for(client, "labels", m) for m in silent)
    assert _call(client, ChangeState, change, ChangeState.Request(
        transition=Transition(id=Transition.TRANSITION_ACTIVATE))).success
    client.wait_for_node()
    msg = play(client, [frames[0]], frame_id="reactivated")[0]
    wait_labels_for(client, msg)


def test_diagnostics_report_rates_latency_and_device(running):
    node, client = running
    seen = len(client.received.get("/diagnostics"))
    client.wait_for(lambda: len(client.received.get("/diagnostics")) > seen + 1, 5.0, "fresh diagnostics")
    status = client.received.get("/diagnostics")[-1].status[0]
    keys = {kv.key for kv in status.values}
    assert {"input_rate_hz", "output_rate_hz", "inference_ms_p50", "end_to_end_ms_p99", "frames_dropped",
            "frames_rejected", "model"} <= keys
    assert status.hardware_id == "cpu"
    assert float(diagnostics_value(client, "inference_ms_p50")) > 0
    from human_parsing_ros.ros.diagnostics import FRAME_STAGES

    stages = {stage: float(diagnostics_value(client, f"{stage}_ms_p50")) for stage in FRAME_STAGES}
    assert stages["forward"] > 0 and stages["labels"] > 0 and all(ms >= 0 for ms in stages.values()), stages
    # the parser's own steps add up to (about) the parse time the node reports
    parse_ms = float(diagnostics_value(client, "inference_ms_p50"))
    assert stages["preprocess"] + stages["forward"] + stages["labels"] <= parse_ms * 1.5 + 1


def test_compressed_input(ros, weights, tmp_path, frames):
    from PIL import Image as PILImage

    node = start_node(tmp_path, weights, camera="/jpeg_cam/image_raw", ns="/jpeg_ns", input_transport="compressed")
    client = Client("/jpeg_cam/image_raw/compressed", {"labels": Image, "/diagnostics": DiagnosticArray}, "/jpeg_ns",
                    compressed=True, name="hp_test_jpeg")
    try:
        client.wait_for_node()
        buf = io.BytesIO()
        PILImage.fromarray(frames[1]).save(buf, format="JPEG", quality=90)

        def garbage_refused() -> bool:  # best effort: a first sample can be lost while discovery completes
            client.publish(client.compressed_msg(b"\xff\xd8\xff not really a jpeg", frame_id="garbage"))
            time.sleep(0.3)
            return "undecodable compressed image" in node.log()

        client.wait_for(garbage_refused, 15.0, "the garbage frame to be refused")
        bmp = io.BytesIO()
        PILImage.fromarray(frames[1]).save(bmp, format="BMP")
        client.publish(client.compressed_msg(bmp.getvalue(), frame_id="garbage"))  # format says jpeg
        refused = "neither JPEG nor PNG by its first bytes"  # seen in diagnostics: the log's warnings are throttled
        client.wait_for(lambda: refused in diagnostics_value(client, "last_rejection"), 15.0, "the BMP to be refused")
        thin = io.BytesIO()
        PILImage.fromarray(np.zeros((1, 8_000_000, 3), np.uint8)).save(thin, format="PNG")  # 31 KB, 8 M pixels
        client.publish(client.compressed_msg(thin.getvalue(), fmt="png", frame_id="garbage"))
        client.wait_for(lambda: "8000000x1 has a side under 8 pixels" in diagnostics_value(client, "last_rejection"),
                        15.0, "the 1 x 8M PNG to be refused from its header")
        msg = client.compressed_msg(buf.getvalue(), frame_id="jpeg")
        client.publish(msg)
        lab = wait_labels_for(client, msg)
        assert (lab.height, lab.width) == frames[1].shape[:2]
        assert not [m for m in client.received.get("labels") if m.header.frame_id == "garbage"]
        assert "undecodable compressed image" in node.log() and node.alive()
    finally:
        client.close()
        node.stop()


def test_corrupt_weights_are_refused_in_one_line_and_the_node_stays_up(ros, weights, tmp_path):
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(weights.read_bytes()[:5000])
    node = start_node(tmp_path, bad, camera="/bad_cam/image_raw", ns="/bad_ns")
    client = Client("/bad_cam/image_raw", {"/diagnostics": DiagnosticArray}, "/bad_ns", name="hp_test_bad")
    try:
        def error_reported():
            return any(s.level == s.ERROR and "/bad_ns/" in s.name
                       for a in client.received.get("/diagnostics") for s in a.status)
        client.wait_for(error_reported, 60.0, "an ERROR on /diagnostics")
        errors = [line for line in node.log().splitlines() if "[ERROR]" in line]
        assert len(errors) == 1 and str(bad) in errors[0] and "configure failed" in errors[0]
        assert node.alive()
        assert client.camera.get_subscription_count() == 0  # never activated
    finally:
        client.close()
        code = node.stop()
    assert code == 0, node.log()[-2000:]


def test_weights_whose_network_cannot_be_built_fail_configure_with_one_error_at_start_up_and_on_request(ros,
                                                                                                      tmp_path):
    """An architecture argument that makes the constructor raise an IndexError (not a ValueError): one ERROR line
    naming the file and the argument, diagnostics ERROR, at start-up and again through the configure service."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from human_parsing_ros.resources import PERSONS_WEIGHTS

    bad = tmp_path / "proposals.safetensors"
    with safe_open(str(PERSONS_WEIGHTS), framework="pt", device="cpu") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
        metadata = dict(handle.metadata())
    metadata["architecture_args"] = json.dumps({**json.loads(metadata["architecture_args"]), "proposals": [10]})
    save_file(tensors, str(bad), metadata=metadata)
    ns = "/unbuildable_ns"
    node = start_node(tmp_path, bad, camera=f"{ns}/cam", ns=ns)
    client = Client(f"{ns}/cam", {"/diagnostics": DiagnosticArray}, ns, name="hp_test_unbuildable")

    def errors() -> list[str]:
        return [line for line in node.log().splitlines() if "[ERROR]" in line]

    try:
        client.wait_for(lambda: any(s.level == s.ERROR for s in _statuses(client, ns)), 60.0, "an ERROR")
        message = next(s for s in _statuses(client, ns) if s.level == s.ERROR).message
        assert str(bad) in message and "proposals=[10]" in message, message
        assert len(errors()) == 1, node.log()[-2000:]
        assert str(bad) in errors()[0] and "configure failed" in errors()[0] and "proposals=[10]" in errors()[0]
        assert node.alive() and _state(client, ns) == "unconfigured"
        # the lifecycle service: refused again, with a second line and diagnostics still ERROR
        assert not _transition(client, ns, Transition.TRANSITION_CONFIGURE)
        client.wait_for(lambda: len(errors()) == 2, 20.0, "a second ERROR line")
        assert "proposals=[10]" in errors()[1]
        since = time.time()

        def later() -> list:
            return [s for t, a in client.received.timed("/diagnostics") if t > since for s in a.status
                    if f"{ns}/" in s.name]

        client.wait_for(later, 10.0, "a diagnostics report after the refused configure")
        assert all(s.level == s.ERROR and "proposals=[10]" in s.message for s in later())
        assert "Traceback" not in node.log()
    finally:
        client.close()
        code = node.stop()
    assert code == 0, node.log()[-2000:]


def test_a_plain_start_uses_the_installed_default_weights_and_parses_a_person(ros, tmp_path):
    from human_parsing_ros.resources import DEFAULT_WEIGHTS
    from human_parsing_ros.samples import load_annotation

    camera, ns = "/default_cam/image_raw", "/default_ns"
    node = NodeProcess(PARAMS_FILE, ns, {"image": camera}, {"device": "cpu"}, log_path=tmp_path / "node.log")
    node.start()
    client = Client(camera, {"labels": Image, "class_info": ClassInfo}, ns, name="default_probe")
    try:
        client.wait_for_node()
        client.wait_for(lambda: client.received.get("class_info"), 10.0, "class_info")
        info = class_info_from_msg(client.received.get("class_info")[0])
        assert info.weights == str(DEFAULT_WEIGHTS) and not info.untrained
        client.wait_for(lambda: client.subs[0].get_publisher_count(), 10.0, "labels to match")
        photo = sample_photos()[0]
        msg = play(client, [load_rgb(photo)], rate_hz=2.0)[0]
        ids = image_array(wait_labels_for(client, msg, 30.0))
        on_person = load_annotation(photo) != 0
        assert (ids[on_person] != 0).mean() > 0.8 and (ids[~on_person] != 0).mean() < 0.25  # 85% at 416x416
    finally:
        client.close()
        code = node.stop(signal.SIGTERM)  # what ros2 launch sends when SIGINT is not enough
    assert code == 0, node.log()[-2000:]


@pytest.mark.parametrize("backend,source", [("auto", "weights"), ("onnxruntime", "exported"),
                                            ("openvino", "exported")])
def test_the_node_serves_on_an_exported_network(ros, tmp_path, backend, source):
    """backend auto (the fastest installed runtime on this CPU; a weights file exported once into cache_dir), or
    an exported .onnx file on each CPU runtime: class_info and diagnostics name the backend, and the labels are
    those HumanParser gives on it."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime" if backend == "auto" else backend)
    from human_parsing_ros.onnx_model import export_onnx_model
    from human_parsing_ros.parser import HumanParser, resolve_backend
    from human_parsing_ros.resources import DEFAULT_WEIGHTS

    weights = export_onnx_model(DEFAULT_WEIGHTS, tmp_path / "default.onnx") if source == "exported" else DEFAULT_WEIGHTS
    expected_backend = resolve_backend(weights, backend, "cpu")
    assert expected_backend != "torch"
    camera, ns = f"/ort_{backend}/image_raw", f"/ort_{backend}"
    node = start_node(tmp_path, weights, camera=camera, ns=ns, backend=backend, cache_dir=str(tmp_path / "cache"))
    client = Client(camera, {"labels": Image, "class_info": ClassInfo, "/diagnostics": DiagnosticArray}, ns,
                    name=f"ort_probe_{backend}")
    try:
        client.wait_for_node()
        client.wait_for(lambda: client.received.get("class_info"), 10.0, "class_info")
        info = class_info_from_msg(client.received.get("class_info")[0])
        assert info.backend == expected_backend and info.weights == str(weights)
        if source == "weights":
            assert len(list((tmp_path / "cache" / "onnx").glob("default-*.onnx"))) == 1
        client.wait_for(lambda: client.subs[0].get_publisher_count(), 10.0, "labels to match")
        image = load_rgb(sample_photos()[1])[::2, ::2].copy()
        msg = play(client, [image], rate_hz=2.0)[0]
        ids = image_array(wait_labels_for(client, msg, 30.0))
        expected = HumanParser(weights, device="cpu", backend=expected_backend,
                               cache_dir=tmp_path / "cache").parse(image).labels
        assert (ids == expected).mean() >= 0.999
        assert diagnostics_value(client, "backend", node_ns=ns).startswith(f"{expected_backend} (")
        assert diagnostics_value(client, "precision", node_ns=ns) == "fp32"
        client.wait_for(lambda: any(class_info_from_msg(m).precision == "fp32"
                                    for m in client.received.get("class_info")), 10.0, "class_info with the precision")
    finally:
        client.close()
        code = node.stop()
    assert code == 0, node.log()[-2000:]


def test_the_node_runs_an_imported_schp_checkpoint(ros, tmp_path):
    """SCHP's published file layout (random values) -> human_parsing_import_schp -> the node over DDS."""
    from test_schp_import import fake_schp_checkpoint

    from human_parsing_ros.tools.import_schp import import_schp

    weights = import_schp(fake_schp_checkpoint(tmp_path / "lip.pth"), tmp_path / "schp_lip.safetensors", "lip")
    camera, ns = "/schp_cam/image_raw", "/schp_ns"
    node = start_node(tmp_path, weights, camera=camera, ns=ns, input_size=[97, 65])  # small: CPU time
    client = Client(camera, {"labels": Image, "class_info": ClassInfo}, ns, name="schp_probe")
    try:
        client.wait_for_node()
        client.wait_for(lambda: client.received.get("class_info"), 10.0, "class_info")
        info = class_info_from_msg(client.received.get("class_info")[0])
        assert info.class_set == "lip" and info.names == get_class_set("lip").names and info.weights == str(weights)
        client.wait_for(lambda: client.subs[0].get_publisher_count(), 10.0, "labels to match")
        frame = load_rgb(sample_photos()[0])[::4, ::4].copy()
        msg = play(client, [frame], rate_hz=2.0)[0]
        ids = image_array(wait_labels_for(client, msg, 60.0))
        assert ids.shape == frame.shape[:2] and int(ids.max()) < 20
        # the parameter file's mask_parts (hair, skin): LIP has no skin, so one warning and no masks/skin
        assert "mask_parts: 'skin' not in class set 'lip', no masks for it" in node.log()
    finally:
        client.close()
        code = node.stop()
    assert code == 0, node.log()[-2000:]


# ---- start-up values, signals, lifecycle shutdown ------------------------------------------------------------
def _statuses(client: Client, ns: str) -> list:
    return [s for a in client.received.get("/diagnostics") for s in a.status if f"{ns}/" in s.name]


def _state(client: Client, ns: str) -> str:
    return _call(client, GetState, f"{ns}/human_parser/get_state", GetState.Request()).current_state.label


def _transition(client: Client, ns: str, transition_id: int) -> bool:
    request = ChangeState.Request(transition=Transition(id=transition_id))
    return _call(client, ChangeState, f"{ns}/human_parser/change_state", request).success


@pytest.mark.parametrize("value", [2.0, "abc"], ids=["out_of_range", "wrong_type"])
def test_a_bad_start_up_value_leaves_the_node_up_unconfigured_with_one_error(ros, weights, tmp_path, value):
    ns = f"/bad_param_{'range' if value == 2.0 else 'type'}"
    node = start_node(tmp_path, weights, camera=f"{ns}/cam", ns=ns, presence_threshold=value)
    client = Client(f"{ns}/cam", {"/diagnostics": DiagnosticArray}, ns, name=f"probe_{ns.strip('/')}")
    try:
        client.wait_for(lambda: any(s.level == s.ERROR for s in _statuses(client, ns)), 60.0, "an ERROR")
        error = next(s for s in _statuses(client, ns) if s.level == s.ERROR).message
        assert "presence_threshold" in error and repr(value) in error
        assert node.alive() and _state(client, ns) == "unconfigured"
        errors = [line for line in node.log().splitlines() if "[ERROR]" in line]
        assert errors and all("presence_threshold" in line for line in errors), node.log()[-2000:]
        assert "Traceback" not in node.log()
        # a valid value set at run time replaces it: configure succeeds then
        assert _set(client, "presence_threshold", 0.25, ns=ns) == (True, "")
        assert _transition(client, ns, Transition.TRANSITION_CONFIGURE)
        assert _state(client, ns) == "inactive"
    finally:
        client.close()
        code = node.stop()
    assert code == 0, node.log()[-2000:]


def test_float_ranges_are_exact_at_start_up_and_at_run_time(ros, weights, tmp_path):
    """rclpy takes 1.0000001 for a [0, 1] float (its range tolerance): the node does not, at start-up (one ERROR,
    unconfigured, the default kept) nor at run time, for person_threshold as for every ranged float."""
    from human_parsing_ros.ros.parameters import PARAMS

    ns = "/exact_range_ns"
    node = start_node(tmp_path, weights, camera=f"{ns}/cam", ns=ns, person_threshold=1.0000001)
    client = Client(f"{ns}/cam", {"/diagnostics": DiagnosticArray}, ns, name="probe_exact_range")
    try:
        client.wait_for(lambda: any(s.level == s.ERROR for s in _statuses(client, ns)), 60.0, "an ERROR")
        error = next(s for s in _statuses(client, ns) if s.level == s.ERROR).message
        assert "person_threshold" in error and "1.0000001" in error and "keeping -1.0" in error, error
        errors = [line for line in node.log().splitlines() if "[ERROR]" in line]
        # the refused start-up value, then the autostart's configure refused for it: both name it
        assert errors and all("person_threshold" in line for line in errors), node.log()[-2000:]
        assert node.alive() and _state(client, ns) == "unconfigured"
        for param in PARAMS:
            if isinstance(param.default, float) and param.value_range is not None:
                low, high = param.value_range
                for value in (np.nextafter(high, np.inf), np.nextafter(low, -np.inf)):
                    ok, reason = _set(client, param.name, float(value), ns=ns)
                    assert not ok and param.name in reason, (param.name, value, reason)
        ok, reason = _set(client, "person_threshold", 1.0000001, ns=ns)
        assert not ok and "person_threshold must be within -1.0..1.0" in reason, reason
        assert _set(client, "person_threshold", 1.0, ns=ns) == (True, "")  # the bound itself is in range
        assert _transition(client, ns, Transition.TRANSITION_CONFIGURE)
        assert _transition(client, ns, Transition.TRANSITION_ACTIVATE)
        assert _state(client, ns) == "active"
    finally:
        client.close()
        code = node.stop()
    assert code == 0, node.log()[-2000:]


def _blocks_stop_signals(pid: int) -> bool:
    """/proc says SIGINT and SIGTERM are blocked: the node process has taken them over."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    blocked = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:")), 16)
    return all(blocked >> (sig - 1) & 1 for sig in (signal.SIGINT, signal.SIGTERM))


def _hammer(node: NodeProcess, seconds: float = 2.0, at_least: int = 2) -> int:
    """Ctrl-C, then SIGINT and SIGTERM alternately every 20 ms while the process shuts down; its exit code."""
    sigs = [signal.SIGINT, signal.SIGTERM]
    deadline = time.monotonic() + seconds
    sent = 0
    while node.process.poll() is None and time.monotonic() < deadline:
        node.process.send_signal(sigs[sent % 2])
        sent += 1
        time.sleep(0.02)
    assert sent >= at_least, f"the process ended after {sent} signals"
    return node.process.wait(20)


def test_any_number_of_signals_during_teardown_end_with_exit_code_0(ros, weights, tmp_path):
    ns = "/signals_ns"
    node = start_node(tmp_path, weights, camera=f"{ns}/cam", ns=ns)
    client = Client(f"{ns}/cam", {}, ns, name="signals_probe")
    try:
        client.wait_for_node()
    finally:
        client.close()
    code = _hammer(node)
    assert code == 0, node.log()[-3000:]
    assert "Traceback" not in node.log()


def test_a_signal_during_start_up_ends_without_a_traceback(tmp_path, weights):
    node = NodeProcess(PARAMS_FILE, "/early_ns", {}, {"weights": str(weights), "device": "cpu"},
                       log_path=tmp_path / "node.log")
    node.start()
    deadline = time.monotonic() + 30
    while not _blocks_stop_signals(node.process.pid) and node.process.poll() is None:
        assert time.monotonic() < deadline, "the node never took over SIGINT/SIGTERM"
        time.sleep(0.001)
    code = _hammer(node, 1.0, at_least=1)  # the imports (rclpy, torch) take seconds: this arrives during them
    log = node.log()
    assert code == 0 and "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]
    assert "loaded" not in log  # it really was stopped during start-up


def test_lifecycle_shutdown_ends_the_process_and_says_so_in_diagnostics(ros, weights, tmp_path):
    ns = "/finalize_ns"
    node = start_node(tmp_path, weights, camera=f"{ns}/cam", ns=ns)
    client = Client(f"{ns}/cam", {"/diagnostics": DiagnosticArray}, ns, name="finalize_probe")
    try:
        client.wait_for_node()
        assert _transition(client, ns, Transition.TRANSITION_ACTIVE_SHUTDOWN)
        node.process.wait(20)
        client.wait_for(lambda: any(s.level == s.STALE for s in _statuses(client, ns)), 5.0, "a STALE status")
        last = _statuses(client, ns)[-1]
        assert last.level == last.STALE and "finalized" in last.message
    finally:
        client.close()
        code = node.stop()
    assert code == 0, node.log()[-2000:]


@pytest.mark.parametrize("args, error", [
    (["-p", "presence_threshold:=1e-3"], None),  # a number, as rcl reads it
    (["-p", "presence_threshold:=abc"], "not configuring until it is set"),  # dropped by rcl: caught
    (["-p", "autostart:=abc"], "restart with a valid value (read-only)"),
    (["-p", "human_parser:presence_threshold:=abc"], "presence_threshold"),  # addressed to this node
    (["-p", "other_node:presence_threshold:=abc"], None),  # addressed to another node
], ids=["scientific", "wrong_type", "read_only", "this_node", "other_node"])
def test_start_up_values_are_read_as_rcl_reads_them(ros, args, error):
    from human_parsing_ros.ros.node import HumanParserNode

    cli = ["--ros-args", "--params-file", str(PARAMS_FILE), *args]
    node = HumanParserNode(argv=["parser_node", *cli], cli_args=cli)
    try:
        if error is None:
            assert node._error == "", node._error
            assert node.param("presence_threshold") in (0.001, 0.005)
        else:
            assert error in node._error and "abc" in node._error and "\n" not in node._error
            assert node.param("presence_threshold") == 0.005 and node.param("autostart") is True  # values kept
    finally:
        node.destroy_node()


@pytest.mark.parametrize("value, name, expected", [
    ("no", "autostart", False), ("on", "flip_tta", True), ("Off", "publish_masks", False),  # YAML 1.1 booleans
    ("010", "max_persons", 8), ("0x10", "max_persons", 16),  # C's strtol, base 0
    ("'5'", "weights", "5"),  # a quoted scalar is a string (unquoted, 5 would be an integer: refused)
    ("['on', '010']", "mask_parts", ["on", "010"]),  # quoted items too (unquoted: [True, 8], refused)
])
def test_every_form_rcl_accepts_is_a_valid_start_up_value(ros, value, name, expected):
    from human_parsing_ros.ros.node import HumanParserNode

    cli = ["--ros-args", "--params-file", str(PARAMS_FILE), "-p", f"{name}:={value}"]
    node = HumanParserNode(argv=["parser_node", *cli], cli_args=cli)
    try:
        assert node.param(name) == expected
        assert node._error == "", node._error
    finally:
        node.destroy_node()


# ---- lifecycle transitions in process (the node's own callbacks, real rclpy, no executor) ----------------------
def in_process_node(weights: Path, ns: str, *args: str):
    from human_parsing_ros.ros.node import HumanParserNode

    cli = ["--ros-args", "--params-file", str(PARAMS_FILE), "-r", f"__ns:={ns}", "-r", f"image:={ns}/cam",
           "-p", f"weights:={weights}", "-p", "device:=cpu", "-p", "autostart:=false", *args]
    return HumanParserNode(argv=["parser_node", *cli], cli_args=cli)


def test_a_bad_qos_override_fails_activate_in_one_line_and_holds_nothing(ros, weights):
    from rclpy.lifecycle import TransitionCallbackReturn

    node = in_process_node(weights, "/qos_ns", "-p", "qos_overrides./qos_ns/cam.subscription.reliability:=bogus")
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.FAILURE
        assert "activate failed" in node._error and "bogus" in node._error and "\n" not in node._error
        assert node.frames.parser is None and node._subscription is None  # the model left the device
    finally:
        node.destroy_node()


def test_a_failed_activate_releases_the_model_and_a_retry_clears_its_error(ros, weights, monkeypatch):
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.lifecycle import TransitionCallbackReturn

    from human_parsing_ros.parser import HumanParser

    warmed = []
    real_warmup = HumanParser.warmup

    def out_of_memory_once(parser, *args, **kwargs):  # a GPU's out-of-memory error: no GPU here
        warmed.append(parser)
        if len(warmed) == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_warmup(parser, *args, **kwargs)

    monkeypatch.setattr(HumanParser, "warmup", out_of_memory_once)
    node = in_process_node(weights, "/retry_ns")
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.FAILURE
        assert node.frames.parser is None and warmed[0].model is None  # released, not left on the device
        assert node._health(0) == (DiagnosticStatus.ERROR, node._error) and "out of memory" in node._error
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        level, message = node._health(0)
        assert level != DiagnosticStatus.ERROR and node._error == "", message
    finally:
        node.destroy_node()


@pytest.mark.parametrize("transition", ["configure", "deactivate"])
def test_a_transition_that_raises_anything_fails_with_one_error_and_diagnostics_error(ros, weights, monkeypatch,
                                                                                     transition):
    """rclpy swallows what a lifecycle callback raises (no log line, diagnostics unchanged): the node never lets it."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.lifecycle import TransitionCallbackReturn

    from human_parsing_ros.ros import node as node_module

    node = in_process_node(weights, f"/raise_{transition}_ns")
    try:
        if transition == "configure":
            monkeypatch.setattr(node_module, "load_weights", lambda path: {}["no such key"])
            assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        else:
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS

            def broken():
                raise OSError("device gone (simulated)")

            monkeypatch.setattr(node, "release_parser", broken)
            assert node.trigger_deactivate() == TransitionCallbackReturn.FAILURE
        assert node._error.startswith(f"{transition} failed: ")
        assert ("KeyError" if transition == "configure" else "OSError: device gone") in node._error
        assert node._health(0) == (DiagnosticStatus.ERROR, node._error)
    finally:
        node.destroy_node()


def test_a_parse_parameter_change_rebuilds_the_options_the_next_frame_parses_with(ros, weights):
    """The node's ParseOptions is built at activate and replaced whole when a parse parameter is set."""
    from dataclasses import replace

    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from human_parsing_ros.parse_options import ParseOptions

    node = in_process_node(weights, "/options_ns")
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.frames.options is None  # built at activate
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        before = node.frames.options
        assert before == ParseOptions(person_threshold=None, max_persons=16, map_persons=True)  # parser.yaml's
        assert node.set_parameters([Parameter("resize_mode", value="stretch")])[0].successful
        after = node.frames.options
        assert after == replace(before, resize_mode="stretch") and before.resize_mode == "letterbox"
        assert not node.set_parameters([Parameter("max_persons", value=0)])[0].successful  # refused: kept
        assert node.set_parameters([Parameter("presence_threshold", value=0.01)])[0].successful  # no parse option
        assert node.frames.options is after
        node.frames.process(_rgb_image(32, 48))
        assert node.stats.published.total == 1
    finally:
        node.destroy_node()


def _rgb_image(height: int, width: int, encoding: str = "rgb8") -> Image:
    msg = Image(height=height, width=width, encoding=encoding, step=width * 3)
    msg.data = array.array("B", bytes(height * width * 3))
    return msg


def test_stalls_count_from_the_first_waiting_frame_and_name_refused_frames(ros, weights):
    """A camera that pauses and resumes is no stall (the wait starts at the first frame since the last
    output); frames that keep arriving unpublished are, and when they are refused the ERROR says why.
    Dropped frames alone are healthy; min_output_rate_hz makes a slow output a WARN."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    node = in_process_node(weights, "/resume_ns", "-p", "stall_timeout_s:=0.5")
    good = _rgb_image(32, 48)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        node.frames.on_image(good)
        node.frames.process(good)  # parsed and published: nothing waits
        assert node._health(5) == (DiagnosticStatus.OK, "running")  # 5 frames dropped: still healthy
        time.sleep(0.7)  # the camera pauses longer than stall_timeout_s ...
        node.frames.on_image(good)  # ... and resumes: this frame is being parsed
        assert node._health(0)[0] == DiagnosticStatus.OK, node._health(0)
        time.sleep(0.7)
        node.frames.on_image(good)  # frames keep arriving, none published since the first of them
        level, message = node._health(0)
        assert level == DiagnosticStatus.ERROR and message.startswith("stalled"), message
        depth = _rgb_image(32, 48, "16UC1")
        node.frames.process(depth)  # refused
        level, message = node._health(0)
        assert level == DiagnosticStatus.ERROR and message.startswith("rejecting frames") and "16UC1" in message
        assert node._figures(0)["last_input"] == "16UC1 48x32" and "16UC1" in node._figures(0)["last_rejection"]
        node.frames.process(good)
        assert node._health(0) == (DiagnosticStatus.OK, "running")
        node.set_parameters([Parameter("min_output_rate_hz", value=1000.0)])
        node.stats.activated_at -= node.stats.published.window_s  # as if active for a whole rate window
        node.frames.process(good)
        level, message = node._health(0)
        assert level == DiagnosticStatus.WARN and "below min_output_rate_hz (1000)" in message, message
    finally:
        node.destroy_node()


def test_time_spent_inactive_is_neither_silence_nor_a_stall(ros, weights):
    """Frames received and published before a deactivate do not count after the next activate: a frame that
    arrives then is not reported as a stall because the last output is from before the pause."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.lifecycle import TransitionCallbackReturn

    node = in_process_node(weights, "/pause_ns", "-p", "stall_timeout_s:=0.5")
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        node.stats.received.tick()
        node.stats.published.tick()  # a frame in, its outputs out
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        time.sleep(0.7)  # longer than stall_timeout_s
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        node.stats.received.tick()  # the first frame after the pause, being parsed
        assert node._health(0)[0] != DiagnosticStatus.ERROR, node._health(0)
    finally:
        node.destroy_node()
