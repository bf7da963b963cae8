"""Isolate every test run's DDS traffic (its own domain, localhost only, large-frame transport); the `ros` fixture."""
import os
from pathlib import Path

import pytest

os.environ["ROS_DOMAIN_ID"] = str(10 + os.getpid() % 90)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
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
