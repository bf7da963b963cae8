"""The optional depth input (parameter ``depth_input``): ``depth`` (sensor_msgs/Image, ``16UC1`` in mm or
``32FC1`` in m, REP-118) and ``depth/camera_info``, made into ``DepthFrame``s that the frame path pairs with
colour frames by stamp (``human_parsing_ros.depth.DepthPairing``). A bad depth image or camera_info costs one
warning line and the 3D of the frames it would have served; the 2D outputs go on."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from ..depth import (
    DEPTH_ENCODINGS,
    DepthError,
    DepthFrame,
    DepthPairing,
    Intrinsics,
    check_registered,
    depth_in_metres,
)

DTYPES = {"16UC1": np.uint16, "32FC1": np.float32}


class DepthInput:
    """Subscribes ``depth`` and ``depth/camera_info`` of ``node``; fills ``pairing``."""

    def __init__(self, node: Any, pairing: DepthPairing) -> None:
        self._node = node
        self.pairing = pairing
        self.camera: tuple[Intrinsics, str] | None = None  # the newest usable camera_info and its frame
        self.rejected = 0
        self.last_rejection = ""
        self.last_located: float | None = None  # time.monotonic() of the last frame that got its depth
        self.topic = ""
        self._subs: list[Any] = []
        self._subscribed_at = time.monotonic()

    def subscribe(self) -> None:
        qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.BEST_EFFORT)  # accepts reliable publishers too
        depth = self._node.create_subscription(Image, "depth", self.on_depth, qos)
        info = self._node.create_subscription(CameraInfo, "depth/camera_info", self.on_camera_info, qos)
        self._subs = [depth, info]
        self.topic = depth.topic_name
        self._subscribed_at = time.monotonic()
        self.last_located = None

    def unsubscribe(self) -> None:
        for sub in self._subs:
            self._node.destroy_subscription(sub)
        self._subs = []
        self.camera = None
        self.pairing.clear()

    def on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self.camera = (Intrinsics.from_k(msg.k, msg.width, msg.height, self._subs[1].topic_name),
                           msg.header.frame_id)
        except DepthError as err:
            self.camera = None
            self._reject(str(err))

    def on_depth(self, msg: Image) -> None:
        """Only keeps the message: it is decoded if a colour frame pairs with it (with the camera_info that
        arrived by then; a driver's first camera_info may come just after its first depth image)."""
        self.pairing.add(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec, msg)

    def pair(self, header: Any) -> Image | None:
        """The depth message that goes with the colour frame of ``header`` (counted), not yet decoded."""
        tolerance_ns = int(self._node.param("depth_sync_tolerance_ms") * 1e6)
        return self.pairing.pair(header.stamp.sec * 1_000_000_000 + header.stamp.nanosec, tolerance_ns)

    def decode(self, msg: Image, colour_hw: tuple[int, int], needed: bool = True) -> DepthFrame | None:
        """The paired depth message decoded, or None when it cannot be used (counted, one throttled warning);
        ``needed`` False (nobody wants 3D of this frame): not decoded, the pairing alone counts as 3D."""
        if not needed:
            self.last_located = time.monotonic()
            return None
        try:
            frame = self.frame(msg)
            check_registered(frame.camera, colour_hw)
        except DepthError as err:
            self._reject(f"{self.topic}: {err}")
            return None
        self.last_located = time.monotonic()
        return frame

    def frame(self, msg: Image) -> DepthFrame:
        """The depth frame of ``msg`` with the newest camera_info; DepthError naming what is wrong."""
        camera_of_msg = self.camera  # read once: the camera_info callback may replace it meanwhile
        if camera_of_msg is None:
            raise DepthError("no usable camera_info yet on depth/camera_info: no 3D until one arrives")
        camera, camera_frame = camera_of_msg
        if (msg.width, msg.height) != (camera.width, camera.height):
            raise DepthError(f"depth image is {msg.width}x{msg.height}, its camera_info describes "
                             f"{camera.width}x{camera.height}")
        if msg.encoding not in DEPTH_ENCODINGS:
            raise DepthError(f"encoding '{msg.encoding}': depth must be {' or '.join(DEPTH_ENCODINGS)} (REP-118)")
        dtype = np.dtype(DTYPES[msg.encoding]).newbyteorder(">" if msg.is_bigendian else "<")
        row = msg.width * dtype.itemsize
        if msg.step < row or len(msg.data) < msg.step * msg.height:
            raise DepthError(f"{len(msg.data)} bytes with step {msg.step} cannot hold {msg.height} rows of {row}")
        rows = np.frombuffer(bytes(msg.data), np.uint8, msg.step * msg.height).reshape(msg.height, msg.step)
        values = rows[:, :row].copy().view(dtype).reshape(msg.height, msg.width)
        metres = depth_in_metres(values, msg.encoding, self._node.param("min_depth"), self._node.param("max_depth"))
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        return DepthFrame(stamp, metres, camera, msg.header.frame_id or camera_frame)

    def without_3d_s(self) -> float:
        """Seconds since a colour frame last got usable depth (since subscribing, when none did)."""
        return time.monotonic() - (self._subscribed_at if self.last_located is None else self.last_located)

    def silent_s(self) -> float:
        """Seconds since the last depth frame (since subscribing, when none came yet)."""
        last = self.pairing.last_received
        return time.monotonic() - (self._subscribed_at if last is None else last)

    def _reject(self, reason: str) -> None:
        self.rejected += 1
        self.last_rejection = reason
        self._node.get_logger().warning(f"depth: {reason}", throttle_duration_sec=5.0)
