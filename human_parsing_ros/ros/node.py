"""ROS 2 adapter: a lifecycle node that feeds camera frames to HumanParser and publishes what it finds.

All parsing lives in the ROS-free core. This module declares the parameters (schema: ``parameters.py``) and
runs the lifecycle; the frames go through ``frames.FramePath``, health through ``diagnostics``.
"""
from __future__ import annotations

import array
import copy
import functools
import gc
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterUninitializedException,
)
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..backends import resolve_backend
from ..class_sets import ClassSet
from ..depth import DepthPairing
from ..errors import flattened
from ..messages import ClassInfoMessage
from ..onnx_model import read_model_info
from ..parser import HumanParser
from ..resources import resolve_weights_path
from ..weights import load_weights
from .depth_input import DepthInput
from .diagnostics import DepthState, FrameStats, NodeState, Reporter, figures, health
from .frames import FramePath, topic_token
from .interface import ClassInfo, Parts, Persons, class_info_msg
from .parameters import PARAMS, PARSE_OPTION_PARAMS, Param, Unset, check_value, parse_options
from .positions import PersonPositions
from .rcl_values import command_line_params

NODE_NAME = "human_parser"


def _reason(err: BaseException) -> str:
    """An exception as one line: its message, with its type unless it is one of ours (ValueError's kin)."""
    text = flattened(err)
    return text if isinstance(err, ValueError) else f"{type(err).__name__}: {text}"


def _logged_transition(name: str) -> Callable[[Callable], Callable]:
    """A lifecycle callback that cannot fail in silence: whatever it raises becomes FAILURE with one ERROR log
    line and diagnostics ERROR (rclpy itself would log nothing and leave diagnostics as they were)."""
    def wrap(method: Callable) -> Callable:
        @functools.wraps(method)
        def transition(self: HumanParserNode, state: LifecycleState) -> TransitionCallbackReturn:
            try:
                return method(self, state)
            except Exception as err:  # noqa: BLE001
                return self._fail(f"{name} failed: {_reason(err)}")
        return transition
    return wrap


class HumanParserNode(LifecycleNode):
    """Lifecycle node: configure loads the weights, activate moves the model to the device and
    subscribes, deactivate unsubscribes and gives the device memory back.

    Callbacks only put frames in a one-slot mailbox; ``frames.serve`` parses them.
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
        self._backend = "torch"  # made concrete at configure (resolve_backend)
        self._subscription = None
        self._class_info_pub = None
        self.finalized = threading.Event()  # set by the lifecycle shutdown transition: the process should end
        self.stats = FrameStats()
        self.frames = FramePath(self, self.stats)
        self.depth_input = DepthInput(self, DepthPairing())
        self._reporter = Reporter(self.stats)
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
        default = _rcl_default(param)
        try:
            declared = self.declare_parameter(param.name, default, descriptor).value
            given = self._command_line.get(param.name, declared)
            if given is None or _plain(given) == _plain(declared):
                if param.read_only or not _outside_range(param, declared):
                    return
                # rclpy takes a float a little outside its range (1.0000001 for [0, 1]: its tolerance); the
                # node's ranges are exact
                given = declared
                self.undeclare_parameter(param.name)
                self.declare_parameter(param.name, default, descriptor, ignore_override=True)
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
            self.declare_parameter(param.name, default, descriptor, ignore_override=True)
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
        parser = self.frames.parser
        if parser is not None and parser.compile_mode != "none":
            return (f"flip_tta: the network is compiled ({parser.compile_mode}) for one batch size; changing it "
                    "would recompile on the frame path: deactivate, set it, activate")
        return None

    def _after_set_parameters(self, params: list[Parameter]) -> None:
        for param in params:  # a good value replaces a refused start-up one: configure may succeed now
            self._bad_overrides.pop(param.name, None)
        if any(param.name in PARSE_OPTION_PARAMS for param in params) and self.frames.options is not None:
            self.frames.options = parse_options(self.param)  # the next frame parses with the new choices

    def _check_all(self) -> None:
        for reason in self._bad_overrides.values():
            raise ValueError(reason)
        for param in PARAMS:
            reason = check_value(param.name, self.param(param.name))
            if reason:
                raise ValueError(reason)

    # ---- lifecycle ----------------------------------------------------------------------------
    @_logged_transition("configure")
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._check_all()
            self._weights_path = str(resolve_weights_path(self.param("weights")))
            self._backend = resolve_backend(self._weights_path, self.param("backend"), self.param("device"))
            if self._backend == "torch":
                model, info = load_weights(self._weights_path)
            else:  # the parser opens (or first exports) the ONNX file at activate
                model, info = None, read_model_info(self._weights_path)
            class_set = info.class_set()
            mask_ids = self._mask_ids(class_set)
        except Exception as err:  # noqa: BLE001 (rclpy would swallow it: no log line, no diagnostics)
            return self._fail(f"configure failed: {_reason(err)}")
        self._loaded = (model, info)
        reliable = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        pubs = {
            "labels": self.create_lifecycle_publisher(Image, "labels", reliable),
            "color": self.create_lifecycle_publisher(Image, "labels/color", reliable),
            "overlay": self.create_lifecycle_publisher(Image, "overlay", reliable),
            "parts": self.create_lifecycle_publisher(Parts, "parts", reliable),
        }
        if getattr(model, "multi_person", False) or self.param("map_persons"):
            pubs["instances"] = self.create_lifecycle_publisher(Image, "instances", reliable)
            pubs["persons"] = self.create_lifecycle_publisher(Persons, "persons", reliable)
            if self.param("depth_input"):
                self.frames.positions = PersonPositions(self, self._markers_publisher(reliable))
        self.frames.pubs = pubs
        self.frames.mask_pubs = {
            class_id: self.create_lifecycle_publisher(Image, f"masks/{topic_token(class_set.names[class_id])}",
                                                      reliable)
            for class_id in mask_ids
        }
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._class_info_pub = self.create_publisher(ClassInfo, "class_info", latched)
        self._publish_class_info(info)
        self._error = ""
        self.get_logger().info(f"loaded {self._weights_path}: {info.architecture}, "
                               f"{class_set.num_classes} classes ({info.class_set_name})")
        if info.untrained:
            self.get_logger().warning(
                f"UNTRAINED WEIGHTS ({self._weights_path}): random initialisation, every output is meaningless. "
                "Train with training/train.py or pass weights:=<trained file>.")
        return TransitionCallbackReturn.SUCCESS

    @_logged_transition("activate")
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        model, info = self._loaded
        size = [int(v) for v in self.param("input_size")]
        try:
            options = parse_options(self.param)
            common = {"device": self.param("device"), "precision": self.param("precision"),
                      "input_size": None if size == [0, 0] else tuple(size), "compile_mode": self.param("compile"),
                      "options": options}
            if model is None:
                parser = HumanParser(self._weights_path, backend=self._backend,
                                     cache_dir=self.param("cache_dir") or None, **common)
            else:
                parser = HumanParser.from_model(copy.deepcopy(model), info, **common)
            self.frames.parser, self.frames.options = parser, options
            self.stats.activated(parser.warmup())
            # a bad qos_overrides value in the parameter file fails here
            self._subscription, qos = self._subscribe()
            if self.param("depth_input"):
                self.depth_input.subscribe()
                self.frames.depth = self.depth_input
        except Exception as err:  # noqa: BLE001 (a GPU's out-of-memory RuntimeError, a bad QoS override, ...)
            if self._subscription is not None:  # subscribed before what failed after it
                self.destroy_subscription(self._subscription)
                self._subscription = None
            self.release_parser()  # the device memory and the depth input too: a failed activate holds nothing
            return self._fail(f"activate failed: {_reason(err)}")
        self.frames.tracker.reset()  # new tracks, but ids keep increasing: an id never names two persons
        self._error = ""  # an earlier failed activate is over
        if parser.precision_note:
            self.get_logger().warning(parser.precision_note)
        self._publish_class_info(info, parser.precision_name)  # latched: now with the precision it runs in
        limit = parser.detection_limit
        if limit is not None and options.max_persons > limit:
            self.get_logger().info(f"max_persons {options.max_persons}: these weights return at most {limit} "
                                   f"persons per frame, so at most {limit} it is")
        # Everything alive now (torch, rclpy, the model: ~350k objects) lives as long as the node: move it out
        # of the garbage collector's reach, so that no automatic full collection (~170 ms on a 2-core CPU)
        # lands in the middle of a frame.
        gc.collect()
        gc.freeze()
        input_type = "CompressedImage" if self.param("input_transport") == "compressed" else "Image"
        self.get_logger().info(
            f"active: {parser.describe(options)}; warm-up {self.stats.warmup_ms:.1f} ms/frame; "
            f"input {self.frames.input_topic} ({input_type},"
            f" {qos.reliability.name.lower()}, keep last {qos.depth}); "
            f"outputs under {self.get_namespace().rstrip('/')}/")
        return super().on_activate(state)

    @_logged_transition("deactivate")
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        self.release_parser()
        self.get_logger().info("inactive: subscription closed, model released from the device")
        return super().on_deactivate(state)

    @_logged_transition("cleanup")
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for pub in [*self.frames.pubs.values(), *self.frames.mask_pubs.values()]:
            self.destroy_lifecycle_publisher(pub)
        if self.frames.positions is not None:
            self.frames.positions.close()
            if self.frames.positions.markers_pub is not None:
                self.destroy_lifecycle_publisher(self.frames.positions.markers_pub)
            self.frames.positions = None
        if self._class_info_pub is not None:
            self.destroy_publisher(self._class_info_pub)
        self.frames.pubs, self.frames.mask_pubs, self._class_info_pub, self._loaded = {}, {}, None, None
        return TransitionCallbackReturn.SUCCESS

    @_logged_transition("shutdown")
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release_parser()
        self.finalized.set()
        self._publish_diagnostics()  # the last report says so; the process ends next (see process.run)
        self.get_logger().info("finalized (lifecycle shutdown): exiting")
        return TransitionCallbackReturn.SUCCESS

    def release_parser(self) -> None:
        """Give the model's device memory back; waits for a frame being parsed (never pulled from under it). The
        depth input goes with it."""
        parser = self.frames.detach()
        self.depth_input.unsubscribe()
        self.frames.depth = None
        if parser is not None:
            parser.release()
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
        sub = self.create_subscription(CompressedImage if compressed else Image, topic, self.frames.on_image, qos,
                                       qos_overriding_options=overrides)
        self.frames.input_topic = sub.topic_name
        return sub, qos  # qos now carries any qos_overrides from the parameter file

    # ---- health -------------------------------------------------------------------------------
    def _warn_if_no_image(self) -> None:
        if self.frames.parser is None:
            return
        last = self.stats.since_activated(self.stats.received)
        silent_for = time.monotonic() - (last if last is not None else self.stats.activated_at)
        if silent_for >= self.param("no_image_warning_s"):
            self.get_logger().warning(
                f"no image on {self.frames.input_topic} for {silent_for:.0f} s: is the camera publishing there, "
                f"with a compatible QoS (this node: {self.param('input_reliability')})?",
                throttle_duration_sec=max(5.0, self.param("no_image_warning_s")))

    def _state(self) -> NodeState:
        parser, options = self.frames.parser, self.frames.options
        return NodeState(finalized=self.finalized.is_set(), error=self._error, active=parser is not None,
                         input_topic=self.frames.input_topic, weights_path=self._weights_path,
                         model=parser.describe(options) if parser is not None else "not loaded",
                         multi_person=parser is not None and (parser.multi_person or options.map_persons),
                         detection_limit=parser.detection_limit if parser is not None else None,
                         backend=parser.backend_description if parser is not None else "",
                         precision=parser.precision_name if parser is not None else "",
                         depth=self._depth_state() if self.frames.depth is not None else None)

    def _publish_class_info(self, info: Any, precision: str = "") -> None:
        message = ClassInfoMessage.from_weights(info, self._weights_path, self._backend, precision)
        header = Header(stamp=self.get_clock().now().to_msg())
        self._class_info_pub.publish(class_info_msg(message, header))

    def _markers_publisher(self, qos: QoSProfile) -> Any | None:
        """The ``markers`` publisher, or None (one warning) where visualization_msgs is not installed."""
        try:
            from visualization_msgs.msg import MarkerArray
        except ImportError:
            self.get_logger().warning("no markers topic: visualization_msgs is not installed (ros-visualization-msgs)")
            return None
        return self.create_lifecycle_publisher(MarkerArray, "markers", qos)

    def _depth_state(self) -> DepthState:
        depth, pairing = self.depth_input, self.depth_input.pairing
        return DepthState(depth.topic, depth.silent_s(), depth.without_3d_s(), pairing.exact, pairing.nearest,
                          pairing.unpaired, depth.rejected, depth.last_rejection)

    def _health(self, dropped_recently: int, persons_dropped_recently: int = 0) -> tuple[bytes, str]:
        """Diagnostics level and message now (see ``diagnostics.health``)."""
        return health(self.stats, self.param, self._state(), dropped_recently, persons_dropped_recently)

    def _figures(self, dropped_total: int) -> dict[str, Any]:
        """The key/values of the diagnostics status now."""
        return figures(self.stats, self._state(), dropped_total)

    def _publish_diagnostics(self) -> None:
        parser = self.frames.parser
        status = self._reporter.status(f"{self.get_fully_qualified_name()}: human parsing",
                                       str(parser.device) if parser else "none", self.param, self._state(),
                                       self.frames.slot.dropped)
        header = Header(stamp=self.get_clock().now().to_msg())
        self._diagnostics_pub.publish(DiagnosticArray(header=header, status=[status]))


def _rcl_default(param: Param) -> Any:
    """The default as rclpy declares it: a typed array without a value is declared by its type."""
    return getattr(Parameter.Type, param.default.type_name.upper()) if isinstance(param.default, Unset) \
        else param.default


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


def _outside_range(param: Param, value: Any) -> bool:
    return (param.value_range is not None and isinstance(value, (int, float))
            and not param.value_range[0] <= value <= param.value_range[1])


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (array.array, tuple, list)) else value


def _why_refused(param: Param, value: Any) -> str:
    """Why rclpy refused ``value`` as the start-up value of ``param``, in a few words."""
    default = _rcl_default(param)
    expected = default if isinstance(default, Parameter.Type) else Parameter.Type.from_parameter_value(default)
    try:
        given = Parameter.Type.from_parameter_value(value)
    except TypeError:
        given = None
    if given != expected:
        return f"is not of type {expected.name.lower()}"
    if param.value_range is not None:
        return f"is outside [{param.value_range[0]}, {param.value_range[1]}]"
    return "is not valid"
