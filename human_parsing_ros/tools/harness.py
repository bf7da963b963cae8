"""Drive a parser_node process over real DDS: start it, play frames to it, collect what it publishes.

Used by the demo, the tests and the benchmark, so all three exercise the node
exactly as a user's camera and behaviours would.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..resources import share_file


def use_large_image_transport() -> None:
    """Point Fast DDS at the package's large-message profile unless the user chose a profile.

    Call before ``rclpy.init()``; child processes inherit it. Without it, frames over
    512 KiB never cross processes with Fast DDS's default shared-memory segment.
    """
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in os.environ and "FASTRTPS_DEFAULT_PROFILES_FILE" not in os.environ:
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(share_file("config", "fastdds_large_images.xml"))


NODE_MODULE = "human_parsing_ros.ros.process"  # the parser_node console script runs its main()


def node_command() -> list[str]:
    """The console script a user runs; the module itself when the script is not on PATH, or when the installed
    script runs another module than this source tree's (an install made before the node's module moved)."""
    script = shutil.which("parser_node")
    if script is None:
        candidate = Path(sys.executable).parent / "parser_node"
        script = str(candidate) if candidate.exists() else None
    if script and _installed_entry_point("parser_node") not in (None, f"{NODE_MODULE}:main"):
        script = None
    return [script] if script else [sys.executable, "-m", NODE_MODULE]


def _installed_entry_point(name: str) -> str | None:
    """``module:function`` of the installed console script ``name``; None where no metadata names it."""
    from importlib.metadata import entry_points

    found = entry_points(group="console_scripts", name=name)
    return next((entry.value for entry in found), None)


class NodeProcess:
    """``parser_node --ros-args --params-file ... -r ... -p ...`` as a child process."""

    def __init__(self, params_file: str | Path | None = None, namespace: str = "/human_parsing",
                 remaps: dict[str, str] | None = None, params: dict[str, Any] | None = None,
                 log_path: str | Path | None = None, env: dict[str, str] | None = None) -> None:
        args = ["--ros-args"]
        if params_file is not None:
            args += ["--params-file", str(params_file)]
        args += ["-r", f"__ns:={namespace}"]
        for src, dst in (remaps or {}).items():
            args += ["-r", f"{src}:={dst}"]
        for name, value in (params or {}).items():
            args += ["-p", f"{name}:={_param_text(value)}"]
        self.command = node_command() + args
        self.log_path = Path(log_path) if log_path else None
        # faulthandler: a native crash leaves every thread's Python stack in the log
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> NodeProcess:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        # the child keeps its own copy of the log's descriptor; ours closes at once
        with open(self.log_path, "w") if self.log_path else contextlib.nullcontext(subprocess.DEVNULL) as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, env=self.env)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 10.0) -> int | None:
        """``sig`` (Ctrl-C by default; both it and SIGTERM shut down cleanly), then SIGKILL if it hangs.

        Returns the exit code: 0 for a clean shutdown.
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_param_text(v) for v in value) + "]"
    return str(value)


@dataclass
class Received:
    """Everything the client got, by topic, with arrival times (wall clock, like ROS stamps)."""

    messages: dict[str, list[tuple[float, Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, topic: str, msg: Any) -> None:
        with self.lock:
            self.messages.setdefault(topic, []).append((time.time(), msg))

    def get(self, topic: str) -> list[Any]:
        with self.lock:
            return [m for _, m in self.messages.get(topic, [])]

    def timed(self, topic: str) -> list[tuple[float, Any]]:
        with self.lock:
            return list(self.messages.get(topic, []))


NODE_START_TIMEOUT_S = 300.0


class Client:
    """A camera publisher plus subscribers to the node's outputs, spinning in a background thread.

    Needs ``rclpy.init()`` done by the caller.
    """

    def __init__(self, camera_topic: str, outputs: dict[str, type], namespace: str = "/human_parsing",
                 compressed: bool = False, camera_reliable: bool = False, name: str = "hp_client") -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        self.node = rclpy.create_node(name)
        self.namespace = namespace.rstrip("/")
        self.received = Received()
        camera_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE if camera_reliable
                                else ReliabilityPolicy.BEST_EFFORT)
        self.camera = self.node.create_publisher(CompressedImage if compressed else Image, camera_topic, camera_qos)
        self.subs = []
        for rel, msg_type in outputs.items():
            latched = rel == "class_info"
            qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            self.subs.append(self.subscribe(rel, msg_type, qos))
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=_spin_until, args=(self._stop, self.executor), daemon=True)
        self._thread.start()

    def subscribe(self, rel: str, msg_type: type, qos: Any) -> Any:
        topic = rel if rel.startswith("/") else f"{self.namespace}/{rel}"
        return self.node.create_subscription(msg_type, topic, lambda m, t=rel: self.received.add(t, m), qos)

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.05)

    def wait_for_node(self, timeout: float = NODE_START_TIMEOUT_S) -> None:
        """Until the node's input subscription matches our camera (it subscribes on activate, after loading
        torch and the weights and a warm-up: seconds when idle, over a minute on a machine busy four times over;
        the default only guards against a hang)."""
        self.wait_for(lambda: self.camera.get_subscription_count() > 0, timeout, "the node's image subscription")

    def image_msg(self, rgb: np.ndarray, stamp_ns: int | None = None, frame_id: str = "camera",
                  encoding: str = "rgb8") -> Any:
        from sensor_msgs.msg import Image

        msg = Image()
        self._stamp(msg, stamp_ns, frame_id)
        msg.height, msg.width = rgb.shape[:2]
        msg.encoding = encoding
        msg.step = rgb.shape[1] * (rgb.shape[2] if rgb.ndim == 3 else 1) * rgb.itemsize
        import array

        msg.data = array.array("B", np.ascontiguousarray(rgb).tobytes())
        return msg

    def compressed_msg(self, data: bytes, fmt: str = "jpeg", stamp_ns: int | None = None,
                       frame_id: str = "camera") -> Any:
        from sensor_msgs.msg import CompressedImage

        msg = CompressedImage(format=fmt)
        self._stamp(msg, stamp_ns, frame_id)
        msg.data = list(data) if not isinstance(data, (bytes, bytearray)) else bytes(data)
        return msg

    def _stamp(self, msg: Any, stamp_ns: int | None, frame_id: str) -> None:
        now = self.node.get_clock().now().nanoseconds if stamp_ns is None else stamp_ns
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        msg.header.frame_id = frame_id

    def publish(self, msg: Any) -> None:
        self.camera.publish(msg)

    def resend_until(self, msg: Any, condition: Callable[[], bool], timeout: float, what: str,
                     every: float = 5.0) -> None:
        """Wait for ``condition`` after publishing ``msg``, sending it again every ``every`` s meanwhile.

        The camera topic is best effort, as cameras are: under load a large frame can lose a UDP
        fragment and never arrive, so one send is not a fair test; a camera would send the next frame.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.wait_for(condition, min(every, max(deadline - time.monotonic(), 0.0)), what)
                return
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}") from None
            self.publish(msg)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.executor.shutdown()
        self.node.destroy_node()


def stamp_ns(header: Any) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def image_array(msg: Any) -> np.ndarray:
    """A received mono8/rgb8/bgr8 sensor_msgs/Image as a numpy array."""
    channels = {"mono8": 1, "rgb8": 3, "bgr8": 3}[msg.encoding]
    data = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)[:, :msg.width * channels]
    return data.reshape(msg.height, msg.width, channels) if channels > 1 else data.reshape(msg.height, msg.width)


def _spin_until(stop: threading.Event, executor: Any) -> None:
    """Spin the client's ``executor`` until ``stop`` is set (the node's own loop is in ``ros.process``)."""
    import rclpy

    while not stop.is_set() and rclpy.ok():
        executor.spin_once(timeout_sec=0.1)
