"""human_parsing_msgs, the typed messages: every field documented in its .msg file, and the package that
./run.sh builds round-trips over real DDS between two processes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")

MSG = Path(__file__).resolve().parent.parent / "human_parsing_msgs" / "msg"


def test_every_field_of_every_message_is_documented():
    """A field line is preceded by a comment (its own, or its group's: fields written together share one)."""
    undocumented = []
    for path in sorted(MSG.glob("*.msg")):
        lines = path.read_text().splitlines()
        assert lines[0].startswith("# "), f"{path.name}: no description at the top"
        previous = ""
        for number, line in enumerate(lines, start=1):
            if line and not line.startswith("#") and not previous:
                undocumented.append(f"{path.name}:{number} {line}")
            previous = line
    assert len(list(MSG.glob("*.msg"))) == 6 and not undocumented, undocumented


RECEIVER = r"""
import sys, time, rclpy
from human_parsing_msgs.msg import Persons
rclpy.init()
node = rclpy.create_node("typed_receiver")
got = []
node.create_subscription(Persons, "/typed_trial/persons", got.append, 10)
deadline = time.time() + 60
while not got and time.time() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
person = got[0].persons[0]
print(got[0].header.frame_id, got[0].header.stamp.sec, person.id, person.parts[1].name, person.bbox.width,
      round(person.location.position.z, 3), got[0].depth_frame_id)
"""


def test_the_built_package_round_trips_between_two_processes(ros):
    msg = pytest.importorskip("human_parsing_msgs.msg", reason="human_parsing_msgs is not built (./run.sh builds it)")
    persons = msg.Persons(width=640, height=480, presence_threshold=0.005, depth_frame_id="depth_optical_frame")
    persons.header.frame_id, persons.header.stamp.sec = "color_optical_frame", 42
    person = msg.Person(id=7, instance=1, score=0.9, pixel_fraction=0.2, has_location=True)
    person.bbox.x_offset, person.bbox.y_offset, person.bbox.width, person.bbox.height = 10, 20, 100, 300
    person.location.position.z = 2.0
    person.parts = [msg.Part(id=0, name="background"), msg.Part(id=1, name="hair", present=True, pixel_fraction=0.1)]
    persons.persons = [person]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
    node = rclpy.create_node("typed_sender")
    try:
        publisher = node.create_publisher(msg.Persons, "/typed_trial/persons", 10)
        while receiver.poll() is None:  # until the receiver has one and exits (it gives up after 60 s)
            publisher.publish(persons)
            rclpy.spin_once(node, timeout_sec=0.2)
        out, err = receiver.communicate(timeout=30)
    finally:
        if receiver.poll() is None:
            receiver.kill()
        node.destroy_node()
    assert receiver.returncode == 0, err[-2000:]
    assert out.split() == ["color_optical_frame", "42", "7", "hair", "100", "2.0", "depth_optical_frame"]


def test_pip_installed_it_and_every_msg_file_is_built():
    """./run.sh (and a user without a distro) installs human_parsing_msgs with pip: the environment knows the
    distribution and its files (so pip can uninstall it), at the version of its package.xml and pyproject."""
    import importlib.metadata
    import re

    import tomllib

    pytest.importorskip("human_parsing_msgs.msg", reason="human_parsing_msgs is not built (./run.sh builds it)")
    root = MSG.parent
    listed = set(re.findall(r'"msg/(\w+)\.msg"', (root / "CMakeLists.txt").read_text()))
    assert listed == {path.stem for path in MSG.glob("*.msg")}
    dist = importlib.metadata.distribution("human-parsing-msgs")
    version = re.search(r"<version>(.+)</version>", (root / "package.xml").read_text()).group(1)
    assert dist.version == version == tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    files = {str(path) for path in dist.files}
    for name in listed:  # rosidl names the Python module of a message after it in snake case
        module = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
        assert any(path.endswith(f"human_parsing_msgs/msg/_{module}.py") for path in files), name
    assert any("human_parsing_msgs__rosidl_typesupport_c" in path for path in files)
