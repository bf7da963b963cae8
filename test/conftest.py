"""Isolate every test run's DDS traffic (its own domain, localhost only, large-frame transport); the `ros` fixture."""
import os
import tempfile
from pathlib import Path

import pytest


def _domain_id() -> int:
    """A DDS domain of its own for this test process: from the pid, or under pytest-xdist from the session's
    pid and the worker's index, so that two workers of one run never share one."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return 10 + os.getpid() % 90
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    return 10 + (os.getppid() % max(1, 90 // count)) * count + int(worker.removeprefix("gw")) % count


os.environ["ROS_DOMAIN_ID"] = str(_domain_id())
if os.environ.get("PYTEST_XDIST_WORKER"):  # workers share the cores: one thread each (children inherit it)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
# ONNX exports of weights files (backend onnxruntime) go to a cache of the run's own, never the user's ~/.cache
os.environ["HPR_CACHE_DIR"] = tempfile.mkdtemp(prefix="hpr-test-cache-")
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE",
                      str(Path(__file__).resolve().parent.parent / "config" / "fastdds_large_images.xml"))

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


@pytest.fixture(scope="module")
def ros():
    """rclpy initialised for one test module's DDS clients (the module skips itself where rclpy is missing)."""
    import rclpy

    rclpy.init()
    yield
    rclpy.try_shutdown()
