"""ROS 2 adapter: a lifecycle node that feeds camera frames to HumanParser and publishes what it finds.

All parsing lives in the ROS-free core; this module only converts messages,
manages the lifecycle, the newest-frame worker, parameters and diagnostics.
"""
from __future__ import annotations

import array
import copy
import gc
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterException,
    ParameterUninitializedException,
)
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import InvalidQosOverridesError, QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from . import render
from .class_sets import ClassSet
from .image_codec import MAX_PIXELS, DecodeLimits, ImageError, ImageTooLarge, decode_compressed, decode_raw, encode_like
from .messages import ClassInfoMessage, PartsMessage, PersonsMessage, Stamp
from .parser import COMPILE_MODES, OUTPUT_RESOLUTIONS, PRECISIONS, RESIZE_MODES, HumanParser, resolve_device
from .rcl_values import command_line_params
from .resources import resolve_weights_path
from .runtime import LatencyWindow, LatestSlot, RateMeter
from .tracking import PersonTracker
from .weights import WeightsError, check_input_size, load_weights

NODE_NAME = "human_parser"
# A frame's steps inside the node, each timed (diagnostics <stage>_ms_p50): decode the message, the
# parser's own steps (HumanParser.parse timings), then build and publish the outputs.
FRAME_STAGES = ("decode", "preprocess", "forward", "labels", "statistics", "publish")
# A 4K UHD camera; larger frames are refused (memory and time per frame grow with the pixels).
DEFAULT_MAX_INPUT_PIXELS = 3840 * 2160


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    read_only: bool = False
    choices: tuple[str, ...] = ()
    value_range: tuple[float, float] | tuple[int, int] | None = None


PARAMS = (
    Param("weights", "", "Weights file (.safetensors); empty = the default installed with the package", True),
    Param("device", "auto", "auto (CUDA if present), cpu, cuda or cuda:N", True),
    Param("precision", "fp32", "fp32, fp16 or bf16 (fp16 falls back to fp32 on CPU)", True, tuple(PRECISIONS)),
    Param("compile", "none", "torch.compile the network: none (eager), default, reduce-overhead (inductor + CUDA "
          "graphs), max-autotune, or cudagraphs (GPU only, compiles in seconds); activate takes longer", True,
          COMPILE_MODES),
    Param("input_size", [0, 0], "Network input [height, width]; [0, 0] = the size the weights were trained at",
          True),
    Param("input_transport", "raw", "raw: subscribe to image (sensor_msgs/Image); compressed: <image>/compressed",
          True, ("raw", "compressed")),
    Param("input_reliability", "best_effort",
          "Input QoS reliability (best_effort also accepts reliable publishers); "
          "qos_overrides.<topic>.subscription.* in a parameter file override it", True,
          ("best_effort", "reliable")),
    Param("mask_parts", Parameter.Type.STRING_ARRAY,
          "Class names that get a masks/<name> topic (non-alphanumerics become _)", True),
    Param("autostart", True, "Configure and activate on start-up", True),
    Param("resize_mode", "letterbox", "letterbox keeps the aspect ratio (pads); stretch fills the input",
          choices=RESIZE_MODES),
    Param("output_resolution", "input", "input: labels at the camera's resolution; network: at the resized size",
          choices=OUTPUT_RESOLUTIONS),
    Param("flip_tta", False, "Average with the mirrored image (left/right classes swapped); ~2x compute"),
    Param("presence_threshold", 0.005, "Pixel fraction at which a part counts as present", value_range=(0.0, 1.0)),
    Param("overlay_alpha", 0.5, "Weight of the palette colour in overlay", value_range=(0.0, 1.0)),
    Param("publish_color", True, "Publish labels/color while it has subscribers"),
    Param("publish_overlay", True, "Publish overlay while it has subscribers"),
    Param("publish_masks", True, "Publish masks/<part> while they have subscribers"),
    Param("publish_parts", True, "Publish parts while it has subscribers"),
    Param("publish_persons", True, "Multi-person weights: publish instances and persons while they have "
          "subscribers"),
    Param("person_threshold", 0.5, "Multi-person weights: persons scoring at least this are kept",
          value_range=(0.0, 1.0)),
    Param("max_persons", 16, "Multi-person weights: at most this many persons per frame (best first); the rest "
          "are counted in diagnostics as persons_dropped", value_range=(1, 255)),
    Param("no_image_warning_s", 5.0, "Warn when no image has arrived for this long (s)", value_range=(0.5, 3600.0)),
    Param("stall_timeout_s", 3.0, "Diagnostics ERROR when frames arrive but none is published for this long (s)",
          value_range=(0.5, 600.0)),
    Param("max_latency_ms", 0.0, "Diagnostics WARN when end-to-end p50 latency exceeds this (0 = off)",
          value_range=(0.0, 60000.0)),
    Param("min_output_rate_hz", 0.0, "Diagnostics WARN when the output rate stays below this (0 = off); "
          "dropped frames alone are expected (the newest frame wins) and only counted",
          value_range=(0.0, 1000.0)),
    Param("max_input_pixels", DEFAULT_MAX_INPUT_PIXELS,
          "Frames with more pixels (width x height) are refused before decoding, with a warning, and counted "
          "in frames_rejected; bounds memory and time per frame (default 3840 x 2160)",
          value_range=(1, MAX_PIXELS)),
)
_PARAM_BY_NAME = {p.name: p for p in PARAMS}


def topic_token(name: str) -> str:
    """A class name as a valid ROS topic token ("upper-clothes" -> "upper_clothes")."""
    token = re.sub(r"[^0-9a-zA-Z_]", "_", name).strip("_") or "class"
    return token if not token[0].isdigit() else f"c{token}"


def _descriptor(param: Param) -> ParameterDescriptor:
    desc = param.description + (f" [{'|'.join(param.choices)}]" if param.choices else "")
    descriptor = ParameterDescriptor(description=desc, read_only=param.read_only)
    if param.value_range is not None and isinstance(param.default, int):
        descriptor.integer_range = [IntegerRange(
            from_value=param.value_range[0], to_value=param.value_range[1], step=1)]
    elif param.value_range is not None:
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=param.value_range[0], to_value=param.value_range[1], step=0.0)]
    return descriptor


def check_value(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None if it is."""
    param = _PARAM_BY_NAME.get(name)
    if param is None:
        return None
    if param.choices and value not in param.choices:
        return f"{name} must be one of {', '.join(param.choices)}, not '{value}'"
    if name == "device":
        try:
            resolve_device(value) if value.strip().lower() != "auto" else None
        except ValueError as err:
            return str(err)
    if name == "input_size" and list(value) != [0, 0]:  # [0, 0]: the size stored in the weights
        return check_input_size(value)
    return None


class HumanParserNode(LifecycleNode):
    """Lifecycle node: configure loads the weights, activate moves the model to the device and
    subscribes, deactivate unsubscribes and gives the device memory back.

    Callbacks only put frames in a one-slot mailbox; ``serve`` parses them.
    """

    def __init__(self, argv: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._command_line = command_line_params(sys.argv if argv is None else argv, self.get_name())
        # start-up values that could not be used ("-p x:=2.0" out of range, "-p x:=abc" of the wrong type):
        # the parameter keeps its default (or the file's value) and configure fails with this reason until
        # it is set to a good value
        self._bad_overrides: dict[str, str] = {}
        self._error = ""  # why the last transition failed (diagnostics ERROR); set by _declare too
        for param in PARAMS:
            self._declare(param)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        self._loaded: tuple[Any, Any] | None = None  # (CPU model, WeightsInfo) after configure
        self._weights_path = ""
        self._parser: HumanParser | None = None
        self._slot: LatestSlot[Any] = LatestSlot()  # the newest image message
        self._frame_lock = threading.Lock()  # held while a frame is parsed; transitions wait for it
        self._subscription = None
        self._pubs: dict[str, Any] = {}
        self._mask_pubs: dict[int, Any] = {}
        self._class_info_pub = None
        self._input_topic = ""
        self.finalized = threading.Event()  # set by the lifecycle shutdown transition: the process should end
        self._received = RateMeter()
        self._published = RateMeter()
        self._rejected = 0
        self._last_rejection: tuple[float, str] | None = None  # when and why the last frame was refused
        self._last_input = ""  # encoding and size of the last frame taken for parsing
        self._pending_since: float | None = None  # first frame received since the last output
        self._inference_ms = LatencyWindow()
        self._stage_ms = {stage: LatencyWindow() for stage in FRAME_STAGES}  # where a frame's time goes
        self._end_to_end_ms = LatencyWindow()
        self._warmup_ms = float("nan")
        self._dropped_reported = 0  # slot drops counted by the last diagnostics report
        self._tracker = PersonTracker()  # multi-person weights: ids that last while a person stays in view
        self._tracked_resolution: tuple = ()  # output_resolution and label size of the tracker's boxes
        self._persons_last = 0  # persons in the last frame
        self._persons_dropped = 0  # persons left out by max_persons, all frames
        self._persons_dropped_reported = 0
        self._activated_at = time.monotonic()
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)
        self._watchdog = self.create_timer(1.0, self._warn_if_no_image)

    # ---- parameters -------------------------------------------------------------------------
    def param(self, name: str) -> Any:
        """The current value of parameter ``name`` ([] for an unset typed array)."""
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:  # a typed array parameter nobody set
            return []

    def _declare(self, param: Param) -> None:
        descriptor = _descriptor(param)
        try:
            declared = self.declare_parameter(param.name, param.default, descriptor).value
            given = self._command_line.get(param.name, declared)
            if given is None or _plain(given) == _plain(declared):
                return
            # rcl dropped a "-p" value whose type differs from the parameter file's value for that name:
            # the file's value stays
        except (InvalidParameterValueException, InvalidParameterTypeException):
            given = self._parameter_overrides[param.name].value
            if isinstance(param.default, float) and type(given) is int:  # "-p presence_threshold:=1"
                try:
                    self.declare_parameter(param.name, float(given), descriptor, ignore_override=True)
                    return
                except InvalidParameterValueException:
                    pass
            self.declare_parameter(param.name, param.default, descriptor, ignore_override=True)
        remedy = ("restart with a valid value (read-only)" if param.read_only
                  else "not configuring until it is set to a valid value")
        reason = (f"parameter {param.name}: start-up value {given!r} {_why_refused(param, given)}; "
                  f"keeping {self.param(param.name)!r}; {remedy}")
        self._bad_overrides[param.name] = reason
        self._error = reason
        self.get_logger().error(reason)

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for param in params:
            reason = check_value(param.name, param.value) or self._refused_now(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _refused_now(self, name: str, value: Any) -> str | None:
        """Why ``value``, valid in itself, cannot be set with the weights loaded and the parser active now."""
        if name != "flip_tta" or value == self.param("flip_tta"):
            return None
        if value and self._loaded is not None and getattr(self._loaded[0], "multi_person", False):
            return "flip_tta: multi-person weights run without flip TTA"
        parser = self._parser
        if parser is not None and parser.compile_mode != "none":
            return (f"flip_tta: the network is compiled ({parser.compile_mode}) for one batch size; changing it "
                    "would recompile on the frame path: deactivate, set it, activate")
        return None

    def _after_set_parameters(self, params: list[Parameter]) -> None:
        for param in params:  # a good value replaces a refused start-up one: configure may succeed now
            self._bad_overrides.pop(param.name, None)

    def _check_all(self) -> None:
        for reason in self._bad_overrides.values():
            raise ValueError(reason)
        for param in PARAMS:
            reason = check_value(param.name, self.param(param.name))
            if reason:
                raise ValueError(reason)

    # ---- lifecycle ----------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._check_all()
            self._weights_path = str(resolve_weights_path(self.param("weights")))
            model, info = load_weights(self._weights_path)
            class_set = info.class_set()
            mask_ids = self._mask_ids(class_set)
        except (WeightsError, ValueError) as err:
            return self._fail(f"configure failed: {err}")
        self._loaded = (model, info)
        reliable = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        self._pubs = {
            "labels": self.create_lifecycle_publisher(Image, "labels", reliable),
            "color": self.create_lifecycle_publisher(Image, "labels/color", reliable),
            "overlay": self.create_lifecycle_publisher(Image, "overlay", reliable),
            "parts": self.create_lifecycle_publisher(String, "parts", reliable),
        }
        if getattr(model, "multi_person", False):
            self._pubs["instances"] = self.create_lifecycle_publisher(Image, "instances", reliable)
            self._pubs["persons"] = self.create_lifecycle_publisher(String, "persons", reliable)
        self._mask_pubs = {
            class_id: self.create_lifecycle_publisher(Image, f"masks/{topic_token(class_set.names[class_id])}",
                                                      reliable)
            for class_id in mask_ids
        }
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._class_info_pub = self.create_publisher(String, "class_info", latched)
        self._class_info_pub.publish(String(data=ClassInfoMessage.from_weights(info, self._weights_path).to_json()))
        self._error = ""
        self.get_logger().info(f"loaded {self._weights_path}: {info.architecture}, "
                               f"{class_set.num_classes} classes ({info.class_set_name})")
        if info.untrained:
            self.get_logger().warning(
                f"UNTRAINED WEIGHTS ({self._weights_path}): random initialisation, every output is meaningless. "
                "Train with training/train.py or pass weights:=<trained file>.")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        model, info = self._loaded
        size = [int(v) for v in self.param("input_size")]
        try:
            self._parser = HumanParser.from_model(
                copy.deepcopy(model), info, device=self.param("device"), precision=self.param("precision"),
                input_size=None if size == [0, 0] else tuple(size),
                resize_mode=self.param("resize_mode"), flip_tta=self.param("flip_tta"),
                compile_mode=self.param("compile"), person_threshold=self.param("person_threshold"),
                max_persons=self.param("max_persons"))
            self._warmup_ms = self._parser.warmup()
            self._activated_at = time.monotonic()  # what was received or published before counts no more
            self._pending_since = None
            # a bad qos_overrides value in the parameter file fails here
            self._subscription, qos = self._subscribe()
        except (ValueError, RuntimeError, ParameterException, InvalidQosOverridesError) as err:
            self._release_parser()  # the device memory too: a failed activate holds nothing
            return self._fail(f"activate failed: {err}")
        self._tracker.reset()  # new tracks, but ids keep increasing: an id never names two persons
        self._error = ""  # an earlier failed activate is over
        if self._parser.precision_note:
            self.get_logger().warning(self._parser.precision_note)
        # Everything alive now (torch, rclpy, the model: ~350k objects) lives as long as the node: move it out
        # of the garbage collector's reach, so that no automatic full collection (~170 ms on a 2-core CPU)
        # lands in the middle of a frame.
        gc.collect()
        gc.freeze()
        input_type = "CompressedImage" if self.param("input_transport") == "compressed" else "Image"
        self.get_logger().info(
            f"active: {self._parser.describe()}; warm-up {self._warmup_ms:.1f} ms/frame; "
            f"input {self._input_topic} ({input_type},"
            f" {qos.reliability.name.lower()}, keep last {qos.depth}); "
            f"outputs under {self.get_namespace().rstrip('/')}/")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        self._release_parser()
        self.get_logger().info("inactive: subscription closed, model released from the device")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for pub in [*self._pubs.values(), *self._mask_pubs.values()]:
            self.destroy_lifecycle_publisher(pub)
        if self._class_info_pub is not None:
            self.destroy_publisher(self._class_info_pub)
        self._pubs, self._mask_pubs, self._class_info_pub, self._loaded = {}, {}, None, None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_parser()
        self.finalized.set()
        self._publish_diagnostics()  # the last report says so; the process ends next (see run)
        self.get_logger().info("finalized (lifecycle shutdown): exiting")
        return TransitionCallbackReturn.SUCCESS

    def _release_parser(self) -> None:
        with self._frame_lock:  # never pull the model from under a frame being parsed
            self._slot.clear()
            if self._parser is not None:
                self._parser.release()
                self._parser = None
                gc.unfreeze()  # what activate froze may be garbage now; the next activate freezes again

    def _fail(self, message: str) -> TransitionCallbackReturn:
        self._error = message
        self.get_logger().error(message)
        return TransitionCallbackReturn.FAILURE

    def _mask_ids(self, class_set: ClassSet) -> list[int]:
        """Class ids of ``mask_parts``; names the loaded class set lacks get no topic and one warning (one
        parameter file serves weights of any class set: LIP has no ``skin``, CCP no ``face``)."""
        ids, missing = [], []
        for name in self.param("mask_parts"):
            try:
                ids.append(class_set.index(name))
            except ValueError:
                missing.append(name)
        if missing:
            self.get_logger().warning(
                f"mask_parts: {', '.join(repr(n) for n in missing)} not in class set '{class_set.name}', no "
                f"masks for {'it' if len(missing) == 1 else 'them'} (classes: {', '.join(class_set.names)})")
        return ids

    def _subscribe(self) -> tuple[Any, QoSProfile]:
        reliability = (ReliabilityPolicy.RELIABLE if self.param("input_reliability") == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=reliability,
                         durability=DurabilityPolicy.VOLATILE)
        compressed = self.param("input_transport") == "compressed"
        # As image_transport does: the transport's sub-topic of the (remapped) base topic.
        topic = self.resolve_topic_name("image") + "/compressed" if compressed else "image"
        overrides = QoSOverridingOptions.with_default_policies()
        sub = self.create_subscription(CompressedImage if compressed else Image, topic, self._on_image, qos,
                                       qos_overriding_options=overrides)
        self._input_topic = sub.topic_name
        return sub, qos  # qos now carries any qos_overrides from the parameter file

    # ---- frame path ---------------------------------------------------------------------------
    def _on_image(self, msg: Any) -> None:
        now = time.monotonic()
        self._received.tick(now)
        if self._pending_since is None:
            self._pending_since = now
        self._slot.put(msg)

    def serve(self, keep_going: Callable[[], bool]) -> None:
        """Parse the newest frame, over and over, on the calling thread, while ``keep_going()``.

        ``main`` calls this on the process's main thread and spins ROS in another, so
        that callbacks stay responsive while a frame is parsed.
        """
        while keep_going():
            msg = self._slot.take(timeout=0.2)
            if msg is None:
                continue
            with self._frame_lock:
                try:
                    self._process(msg)
                except Exception as err:  # a bad frame must never stop the frame loop
                    self.get_logger().error(self._reject(f"frame failed: {type(err).__name__}: {err}"),
                                            throttle_duration_sec=5.0)

    def _decode(self, msg: Any) -> tuple[np.ndarray, str]:
        limits = DecodeLimits(max_pixels=self.param("max_input_pixels"))
        try:
            if isinstance(msg, CompressedImage):
                return decode_compressed(msg.format, msg.data, limits), "rgb8"
            image = decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian),
                               limits)
        except ImageTooLarge as err:
            raise ImageTooLarge(f"{err} (max_input_pixels)") from None
        return image, msg.encoding

    def _process(self, msg: Any) -> None:
        parser = self._parser
        if parser is None:
            return
        began = time.perf_counter()
        self._last_input = (f"compressed {msg.format}" if isinstance(msg, CompressedImage)
                            else f"{msg.encoding} {msg.width}x{msg.height}")
        try:
            image, encoding = self._decode(msg)
        except ImageError as err:
            self.get_logger().warning(self._reject(f"dropped frame from {self._input_topic}: {err}"),
                                      throttle_duration_sec=5.0)
            return
        start = time.perf_counter()
        if parser.multi_person:  # the parser's own threshold and cap follow the parameters
            parser.person_threshold = self.param("person_threshold")
            parser.max_persons = self.param("max_persons")
        result = parser.parse(image, self.param("output_resolution"), resize_mode=self.param("resize_mode"),
                              flip_tta=self.param("flip_tta"))
        parsed = time.perf_counter()
        self._inference_ms.add((parsed - start) * 1e3)
        header = msg.header
        labels = result.labels
        self._pubs["labels"].publish(_image_msg(header, labels, "mono8"))
        palette = result.class_set.palette
        if self.param("publish_color") and self._pubs["color"].get_subscription_count():
            self._pubs["color"].publish(_image_msg(header, render.colorize(labels, palette), "rgb8"))
        if self.param("publish_overlay") and self._pubs["overlay"].get_subscription_count():
            base = image if image.shape[:2] == labels.shape else render.resize_nearest(image, labels.shape)
            blended = render.overlay(base, labels, palette, self.param("overlay_alpha"), result.class_set.background)
            self._pubs["overlay"].publish(_image_msg(header, *encode_like(blended, encoding)))
        if self.param("publish_masks"):
            for class_id, pub in self._mask_pubs.items():
                if pub.get_subscription_count():
                    pub.publish(_image_msg(header, result.mask(class_id), "mono8"))
        if self.param("publish_parts") and self._pubs["parts"].get_subscription_count():
            parts = PartsMessage.from_result(result, _stamp(header), header.frame_id,
                                             self.param("presence_threshold"))
            self._pubs["parts"].publish(String(data=parts.to_json()))
        if result.instances is not None:
            self._publish_persons(result, header)
        statistics_ms = result.timings_ms.get("statistics", 0.0)  # computed only for a parts subscriber
        timings = {"decode": (start - began) * 1e3, **result.timings_ms, "statistics": statistics_ms,
                   "publish": (time.perf_counter() - parsed) * 1e3 - statistics_ms}
        for stage, ms in timings.items():
            self._stage_ms[stage].add(ms)
        self._published.tick()
        self._pending_since = None
        self._end_to_end_ms.add(_age_ms(self, header))

    def _reject(self, reason: str) -> str:
        """Count a refused frame and keep why (diagnostics show it); returns ``reason``."""
        self._rejected += 1
        self._last_rejection = (time.monotonic(), reason)
        return reason

    def _publish_persons(self, result: Any, header: Any) -> None:
        """Track every frame (ids must not jump when a subscriber arrives); publish while subscribed."""
        resolution = (self.param("output_resolution"), result.labels.shape)
        if resolution != self._tracked_resolution:  # the boxes change scale with it: no old track can match
            self._tracker.reset()
            self._tracked_resolution = resolution
        # pixel edges, not the inclusive last pixel: a one-pixel-wide person still overlaps itself
        ids = self._tracker.update([(x0, y0, x1 + 1, y1 + 1) for x0, y0, x1, y1 in (p.bbox for p in result.persons)])
        self._persons_last = len(result.persons)
        self._persons_dropped += result.dropped_persons
        if not self.param("publish_persons"):
            return
        if self._pubs["instances"].get_subscription_count():
            self._pubs["instances"].publish(_image_msg(header, result.instances, "mono8"))
        if self._pubs["persons"].get_subscription_count():
            persons = PersonsMessage.from_result(result, ids, _stamp(header), header.frame_id,
                                                 self.param("presence_threshold"))
            self._pubs["persons"].publish(String(data=persons.to_json()))

    # ---- health -------------------------------------------------------------------------------
    def _since_activated(self, meter: RateMeter) -> float | None:
        """When ``meter`` last ticked, if it has since the last activate (time spent inactive is no silence)."""
        last = meter.last
        return last if last is not None and last >= self._activated_at else None

    def _warn_if_no_image(self) -> None:
        if self._parser is None:
            return
        last = self._since_activated(self._received)
        silent_for = time.monotonic() - (last if last is not None else self._activated_at)
        if silent_for >= self.param("no_image_warning_s"):
            self.get_logger().warning(
                f"no image on {self._input_topic} for {silent_for:.0f} s: is the camera publishing there, "
                f"with a compatible QoS (this node: {self.param('input_reliability')})?",
                throttle_duration_sec=max(5.0, self.param("no_image_warning_s")))

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: human parsing",
                                  hardware_id=str(self._parser.device) if self._parser else "none")
        dropped_total = self._slot.dropped
        status.level, status.message = self._health(dropped_total - self._dropped_reported,
                                                     self._persons_dropped - self._persons_dropped_reported)
        self._dropped_reported = dropped_total
        self._persons_dropped_reported = self._persons_dropped
        status.values = [KeyValue(key=key, value=str(value)) for key, value in self._figures(dropped_total).items()]
        self._diagnostics_pub.publish(DiagnosticArray(header=_now_header(self), status=[status]))

    def _figures(self, dropped_total: int) -> dict[str, Any]:
        """The key/values of the diagnostics status."""
        inference_p50, inference_p99 = self._inference_ms.percentiles(50, 99)
        end_to_end_p50, end_to_end_p99 = self._end_to_end_ms.percentiles(50, 99)
        parser = self._parser
        model = parser.describe(self.param("resize_mode"), self.param("flip_tta")) if parser else "not loaded"
        return {
            "input_topic": self._input_topic, "input_rate_hz": f"{self._received.rate():.2f}",
            "output_rate_hz": f"{self._published.rate():.2f}", "frames_received": self._received.total,
            "frames_published": self._published.total, "frames_dropped": dropped_total,
            "frames_rejected": self._rejected, "last_input": self._last_input,
            "last_rejection": self._last_rejection[1] if self._last_rejection else "",
            "inference_ms_p50": f"{inference_p50:.1f}", "inference_ms_p99": f"{inference_p99:.1f}",
            "end_to_end_ms_p50": f"{end_to_end_p50:.1f}", "end_to_end_ms_p99": f"{end_to_end_p99:.1f}",
            "warmup_ms": f"{self._warmup_ms:.1f}", "weights": self._weights_path, "model": model,
            **({"persons": self._persons_last, "persons_dropped": self._persons_dropped}
               if parser is not None and parser.multi_person else {}),
            **{f"{stage}_ms_p50": f"{window.percentiles(50)[0]:.1f}" for stage, window in self._stage_ms.items()},
        }

    def _health(self, dropped_recently: int, persons_dropped_recently: int = 0) -> tuple[bytes, str]:
        """Diagnostics level and message; only reads state (``dropped_recently``: frame drops since the last
        report; ``persons_dropped_recently``: persons beyond max_persons since then)."""
        if self.finalized.is_set():
            return DiagnosticStatus.STALE, "finalized (lifecycle shutdown): no more outputs"
        if self._error:
            return DiagnosticStatus.ERROR, self._error
        if self._parser is None:
            return DiagnosticStatus.OK, "inactive"
        now = time.monotonic()
        last_in = self._since_activated(self._received)
        stall = self.param("stall_timeout_s")
        # waiting: since the first frame that arrived after the last output (a camera that pauses and
        # resumes is not a stall, nor is a frame that arrives late after activate)
        pending = self._pending_since
        waiting = now - max(pending, self._activated_at) if pending is not None else 0.0
        if last_in is not None and now - last_in < stall and waiting > stall:
            rejection = self._last_rejection
            if rejection is not None and rejection[0] >= now - waiting:
                return (DiagnosticStatus.ERROR,
                        f"rejecting frames, none published for {stall:.0f} s: {rejection[1]}")
            return DiagnosticStatus.ERROR, f"stalled: frames arriving, none published for {stall:.0f} s"
        if last_in is None or now - last_in > self.param("no_image_warning_s"):
            return DiagnosticStatus.WARN, f"no image on {self._input_topic}"
        minimum = self.param("min_output_rate_hz")
        if minimum > 0 and now - self._activated_at >= self._published.window_s:
            rate = self._published.rate(now)
            if rate < minimum:
                return (DiagnosticStatus.WARN, f"slow: output {rate:.1f} Hz, below min_output_rate_hz "
                        f"({minimum:g}); dropped {dropped_recently} frames in the last second")
        if persons_dropped_recently:
            return (DiagnosticStatus.WARN, f"capped: {persons_dropped_recently} persons beyond max_persons "
                    f"({self.param('max_persons')}) dropped in the last second")
        limit = self.param("max_latency_ms")
        if limit > 0 and self._end_to_end_ms.percentiles(50)[0] > limit:
            return DiagnosticStatus.WARN, f"slow: end-to-end p50 above {limit:.0f} ms"
        return DiagnosticStatus.OK, "running"


def _image_msg(header: Any, pixels: np.ndarray, encoding: str) -> Image:
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    msg = Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                step=width * (pixels.shape[2] if pixels.ndim == 3 else 1))
    msg.data = array.array("B", pixels.tobytes())
    return msg


def _stamp(header: Any) -> Stamp:
    return Stamp(header.stamp.sec, header.stamp.nanosec)


def _now_header(node: LifecycleNode) -> Header:
    return Header(stamp=node.get_clock().now().to_msg())


def _age_ms(node: LifecycleNode, header: Any) -> float:
    """Now minus the input stamp: the end-to-end latency users see (clocks must agree)."""
    now = node.get_clock().now().nanoseconds
    return (now - (header.stamp.sec * 1_000_000_000 + header.stamp.nanosec)) / 1e6


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (array.array, tuple, list)) else value


def _why_refused(param: Param, value: Any) -> str:
    """Why rclpy refused ``value`` as the start-up value of ``param``, in a few words."""
    expected = param.default if isinstance(param.default, Parameter.Type) \
        else Parameter.Type.from_parameter_value(param.default)
    try:
        given = Parameter.Type.from_parameter_value(value)
    except TypeError:
        given = None
    if given != expected:
        return f"is not of type {expected.name.lower()}"
    if param.value_range is not None:
        return f"is outside [{param.value_range[0]}, {param.value_range[1]}]"
    return "is not valid"


def spin_until(stop: threading.Event, executor: SingleThreadedExecutor) -> None:
    """Spin ``executor`` until ``stop`` is set; join this thread before destroying what it spins."""
    while not stop.is_set() and rclpy.ok():
        executor.spin_once(timeout_sec=0.1)


def run(stop: threading.Event, args: list[str] | None = None) -> None:
    """The node's process until ``stop`` is set (a signal) or the node is finalized, then one ordered teardown.

    The caller owns the signals (``node_process.main``): rclpy installs no handler, so nothing that
    rclpy does at shutdown can turn a late Ctrl-C into an abort or a non-zero exit.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = HumanParserNode(sys.argv if args is None else args)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=spin_until, args=(stop, executor), name="ros_executor", daemon=True)
    try:
        if not stop.is_set() and node.param("autostart") \
                and node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()
        spinner.start()
        node.serve(lambda: not stop.is_set() and not node.finalized.is_set() and rclpy.ok())
    finally:
        stop.set()
        if spinner.is_alive():
            spinner.join()  # nothing below may run while the executor still waits on the node
        node._release_parser()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    from .node_process import main

    main()
