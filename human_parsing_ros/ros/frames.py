"""The frame path: the newest-frame mailbox, then for each frame taken from it decode, parse (with the node's
``ParseOptions``), publish the outputs that have subscribers, and count and time it all (``FrameStats``)."""
from __future__ import annotations

import array
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rclpy.lifecycle import LifecycleNode
from sensor_msgs.msg import CompressedImage, Image

from .. import render
from ..depth import DepthFrame, locate_labels, with_locations
from ..image_codec import ImageError, ImageTooLarge, decode_compressed, decode_raw, encode_like
from ..messages import PartsMessage, PersonsMessage, Stamp
from ..parse_options import ParseOptions
from ..parser import HumanParser
from ..runtime import LatestSlot
from ..tracking import PersonTracker
from .diagnostics import FrameStats
from .interface import parts_msg, persons_msg
from .parameters import decode_limits


def topic_token(name: str) -> str:
    """A class name as a valid ROS topic token ("upper-clothes" -> "upper_clothes")."""
    token = re.sub(r"[^0-9a-zA-Z_]", "_", name).strip("_") or "class"
    return token if not token[0].isdigit() else f"c{token}"


class FramePath:
    """Frames from the subscription to the outputs. The node sets ``parser`` and ``options`` at activate
    (``options`` again whenever a parse parameter changes), ``pubs`` and ``mask_pubs`` at configure.

    ``node`` gives the parameters (``node.param``), the logger and the clock.
    """

    def __init__(self, node: LifecycleNode, stats: FrameStats) -> None:
        self._node = node
        self.stats = stats
        self.slot: LatestSlot[Any] = LatestSlot()  # the newest image message
        self.lock = threading.Lock()  # held while a frame is parsed; transitions wait for it
        self.parser: HumanParser | None = None
        self.options: ParseOptions | None = None  # replaced whole (frozen), never changed in place
        self.pubs: dict[str, Any] = {}
        self.mask_pubs: dict[int, Any] = {}
        self.input_topic = ""
        self.depth: Any = None  # the node's DepthInput while depth_input is on and the node active
        self.positions: Any = None  # PersonPositions, with depth_input and persons
        self.tracker = PersonTracker()  # multi-person weights: ids that last while a person stays in view
        self._tracked_resolution: tuple = ()  # output_resolution and label size of the tracker's boxes

    def detach(self) -> HumanParser | None:
        """Stop parsing: empty the mailbox and hand the parser back (waits for a frame being parsed)."""
        with self.lock:
            self.slot.clear()
            parser, self.parser = self.parser, None
        return parser

    def on_image(self, msg: Any) -> None:
        """The subscription's callback: only drops the message in the mailbox."""
        now = time.monotonic()
        self.stats.received.tick(now)
        if self.stats.pending_since is None:
            self.stats.pending_since = now
        self.slot.put(msg)

    def serve(self, keep_going: Callable[[], bool]) -> None:
        """Parse the newest frame, over and over, on the calling thread, while ``keep_going()``.

        The process runner calls this on the main thread and spins ROS in another, so that callbacks stay
        responsive while a frame is parsed.
        """
        while keep_going():
            msg = self.slot.take(timeout=0.2)
            if msg is None:
                continue
            with self.lock:
                try:
                    self.process(msg)
                except Exception as err:  # a bad frame must never stop the frame loop
                    self._node.get_logger().error(self.stats.reject(f"frame failed: {type(err).__name__}: {err}"),
                                                  throttle_duration_sec=5.0)

    def _decode(self, msg: Any) -> tuple[np.ndarray, str]:
        limits = decode_limits(self._node.param)
        try:
            if isinstance(msg, CompressedImage):
                return decode_compressed(msg.format, msg.data, limits), "rgb8"
            image = decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian),
                               limits)
        except ImageTooLarge as err:
            raise ImageTooLarge(f"{err} (max_input_pixels)") from None
        return image, msg.encoding

    def process(self, msg: Any) -> None:
        """One frame, start to end (the caller holds ``lock``)."""
        parser, options, param, stats = self.parser, self.options, self._node.param, self.stats
        if parser is None:
            return
        began = time.perf_counter()
        stats.last_input = (f"compressed {msg.format}" if isinstance(msg, CompressedImage)
                            else f"{msg.encoding} {msg.width}x{msg.height}")
        try:
            image, encoding = self._decode(msg)
        except ImageError as err:
            self._node.get_logger().warning(stats.reject(f"dropped frame from {self.input_topic}: {err}"),
                                            throttle_duration_sec=5.0)
            return
        # paired before the parse: the depth buffer holds about a second, and a slow parse must not outlast it
        paired = self.depth.pair(msg.header) if self.depth is not None else None
        start = time.perf_counter()
        result = parser.parse(image, options)
        parsed = time.perf_counter()
        stats.inference_ms.add((parsed - start) * 1e3)
        header = msg.header
        labels = result.labels
        self.pubs["labels"].publish(_image_msg(header, labels, "mono8"))
        palette = result.class_set.palette
        if param("publish_color") and self.pubs["color"].get_subscription_count():
            self.pubs["color"].publish(_image_msg(header, render.colorize(labels, palette), "rgb8"))
        if param("publish_overlay") and self.pubs["overlay"].get_subscription_count():
            base = image if image.shape[:2] == labels.shape else render.resize_nearest(image, labels.shape)
            blended = render.overlay(base, labels, palette, param("overlay_alpha"), result.class_set.background)
            self.pubs["overlay"].publish(_image_msg(header, *encode_like(blended, encoding)))
        if param("publish_masks"):
            for class_id, pub in self.mask_pubs.items():
                if pub.get_subscription_count():
                    pub.publish(_image_msg(header, result.mask(class_id), "mono8"))
        wants_parts = param("publish_parts") and self.pubs["parts"].get_subscription_count()
        depth = None
        if paired is not None:  # decoded only for a consumer of 3D
            depth = self.depth.decode(paired, image.shape[:2], wants_parts or result.instances is not None)
        if wants_parts:
            threshold = param("presence_threshold")
            parts = result.presence(threshold)
            if depth is not None:
                background = result.class_set.background
                parts = with_locations(parts, _locate(labels, [part.id for part in parts
                                                               if part.present and part.id != background], depth))
            message = PartsMessage.from_parts(parts, _stamp(header), header.frame_id, labels.shape[1],
                                              labels.shape[0], threshold, depth.frame_id if depth else "")
            self.pubs["parts"].publish(parts_msg(message))
        if result.instances is not None:
            self.publish_persons(result, header, options, depth)
        statistics_ms = result.timings_ms.get("statistics", 0.0)  # computed only for a parts subscriber
        timings = {"decode": (start - began) * 1e3, **result.timings_ms, "statistics": statistics_ms,
                   "publish": (time.perf_counter() - parsed) * 1e3 - statistics_ms}
        for stage, ms in timings.items():
            stats.stage_ms[stage].add(ms)
        stats.published.tick()
        stats.pending_since = None
        stats.end_to_end_ms.add(_age_ms(self._node, header))

    def publish_persons(self, result: Any, header: Any, options: ParseOptions, depth: DepthFrame | None = None,
                        ) -> None:
        """Track every frame (ids must not jump when a subscriber arrives); publish while subscribed."""
        resolution = (options.output_resolution, result.labels.shape)
        if resolution != self._tracked_resolution:  # the boxes change scale with it: no old track can match
            self.tracker.reset()
            self._tracked_resolution = resolution
        # pixel edges, not the inclusive last pixel: a one-pixel-wide person still overlaps itself
        ids = self.tracker.update([(x0, y0, x1 + 1, y1 + 1) for x0, y0, x1, y1 in (p.bbox for p in result.persons)])
        self.stats.persons_last = len(result.persons)
        self.stats.persons_dropped += result.dropped_persons
        self.stats.detection_limit_frames += bool(result.detection_limit_reached)
        if not self._node.param("publish_persons"):
            return
        if self.pubs["instances"].get_subscription_count():
            self.pubs["instances"].publish(_image_msg(header, result.instances, "mono8"))
        locations = (_locate(result.instances, [person.instance for person in result.persons], depth)
                     if depth is not None else None)
        if self.positions is not None:  # without depth this frame: no positions, and the grace period runs
            self.positions.publish(header, depth.frame_id if depth else "", [
                (person_id, locations[person.instance]) for person_id, person in zip(ids, result.persons)
                if locations is not None and person.instance in locations])
        if self.pubs["persons"].get_subscription_count():
            threshold = self._node.param("presence_threshold")
            height, width = result.labels.shape
            persons = PersonsMessage.from_persons(
                [(person_id, person, result.person_presence(person, threshold))
                 for person_id, person in zip(ids, result.persons)],
                _stamp(header), header.frame_id, width, height, threshold, result.dropped_persons, locations,
                depth.frame_id if depth is not None else "")
            self.pubs["persons"].publish(persons_msg(persons))


def _image_msg(header: Any, pixels: np.ndarray, encoding: str) -> Image:
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    msg = Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                step=width * (pixels.shape[2] if pixels.ndim == 3 else 1))
    msg.data = array.array("B", pixels.tobytes())
    return msg


def _locate(labels: np.ndarray, ids: list[int], depth: DepthFrame) -> dict[int, Any]:
    """Where each label value of ``ids`` is; the colour camera is the depth camera (registered depth) at the
    label image's size."""
    colour = depth.camera.scaled_to(labels.shape[1], labels.shape[0])
    return locate_labels(labels, ids, depth.metres, colour, depth.camera)


def _stamp(header: Any) -> Stamp:
    return Stamp(header.stamp.sec, header.stamp.nanosec)


def _age_ms(node: LifecycleNode, header: Any) -> float:
    """Now minus the input stamp: the end-to-end latency users see (clocks must agree)."""
    now = node.get_clock().now().nanoseconds
    return (now - (header.stamp.sec * 1_000_000_000 + header.stamp.nanosec)) / 1e6
