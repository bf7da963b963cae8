"""The node behind its camera (#35): a real node process whose forward pass is slowed down (test/slow_forward.py,
loaded as sitecustomize: no test hook in the product) falls far behind a 10 Hz camera, and /diagnostics says so
with a WARN naming the slow stage and what to do."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from human_parsing_ros.resources import share_file  # noqa: E402
from human_parsing_ros.ros.diagnostics import STAGE_ADVICE  # noqa: E402
from human_parsing_ros.tools.harness import Client, NodeProcess  # noqa: E402
from human_parsing_ros.tools.random_weights import make_random_weights  # noqa: E402

HERE = Path(__file__).parent


def test_a_node_far_behind_its_camera_warns_naming_the_slow_stage(ros, tmp_path):
    weights = make_random_weights(tmp_path / "ccp.safetensors", "ccp", input_size=(64, 64))
    hook = tmp_path / "hook"
    hook.mkdir()
    shutil.copy(HERE / "slow_forward.py", hook / "sitecustomize.py")

    ns, camera = "/behind_ns", "/behind_cam/image_raw"
    # 1 s per forward pass before a 10 Hz camera: at most 1 frame in 10 processed, whatever the machine's speed
    # (a slower machine is only further behind); stall_timeout_s far above a frame's time, so no stall ERROR
    node = NodeProcess(share_file("config", "parser.yaml"), ns, {"image": camera},
                       {"weights": str(weights), "device": "cpu", "min_processed_ratio": 0.5,
                        "behind_warning_s": 3.0, "stall_timeout_s": 60.0},
                       log_path=tmp_path / "node.log",
                       env={"HP_TEST_FORWARD_DELAY_S": "1.0",
                            "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])})
    node.start()
    client = Client(camera, {"labels": Image, "/diagnostics": DiagnosticArray}, ns, name="behind_probe")
    frame = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)

    def warnings() -> list[str]:
        return [s.message for a in client.received.get("/diagnostics") for s in a.status
                if f"{ns}/" in s.name and s.level == s.WARN and "behind the camera" in s.message]

    try:
        client.wait_for_node()
        client.wait_for(lambda: client.subs[0].get_publisher_count(), 20.0, "labels to match")
        deadline = time.monotonic() + 120.0
        while not warnings() and time.monotonic() < deadline:
            client.publish(client.image_msg(frame))
            time.sleep(0.1)
        assert warnings(), node.log()[-3000:]
        message = warnings()[-1]
        assert "forward" in message and STAGE_ADVICE["forward"] in message, message
        assert "below min_processed_ratio 0.5" in message, message
        assert client.received.get("labels"), "the slowed node still publishes"
    finally:
        client.close()
        code = node.stop()
    assert code == 0, node.log()[-2000:]
