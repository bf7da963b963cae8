"""launch/parser.launch.py: checked statically everywhere, run through `launch` where it is installed."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILE = ROOT / "launch" / "parser.launch.py"


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _kw(call: ast.Call, key: str):
    for kw in call.keywords:
        if kw.arg == key:
            return kw.value
    return None


def test_launch_file_declares_the_documented_arguments():
    tree = ast.parse(LAUNCH_FILE.read_text())
    declared = {c.args[0].value: c for c in _calls(tree, "DeclareLaunchArgument")}
    assert {"image_topic", "weights", "device", "params_file", "namespace"} <= set(declared)
    assert _kw(declared["namespace"], "default_value").value == "/human_parsing"
    for call in declared.values():
        assert _kw(call, "description") is not None


def test_launch_file_starts_the_installed_console_script():
    tree = ast.parse(LAUNCH_FILE.read_text())
    (node,) = _calls(tree, "Node")
    assert _kw(node, "package").value == "human_parsing_ros"
    assert _kw(node, "executable").value == "parser_node"
    assert _kw(node, "name").value == "human_parser"
    setup_py = (ROOT / "setup.py").read_text()
    assert '"parser_node = human_parsing_ros.ros.process:main"' in setup_py
    assert 'f"share/{PACKAGE}/launch", glob("launch/*.launch.py")' in setup_py
    # The default parameter file it points at is installed from config/.
    assert '"config", "parser.yaml"' in LAUNCH_FILE.read_text() and (ROOT / "config" / "parser.yaml").is_file()


def test_launch_file_runs_under_launch(tmp_path):
    pytest.importorskip("launch_ros", reason="ROS 2 launch/launch_ros are not installed (not on PyPI)")
    import rclpy
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    import launch
    from human_parsing_msgs.msg import ClassInfo
    from human_parsing_ros.tools.harness import Client
    from human_parsing_ros.tools.random_weights import make_random_weights

    weights = make_random_weights(tmp_path / "w.safetensors", input_size=(96, 96))
    service = launch.LaunchService()
    service.include_launch_description(IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={"weights": str(weights), "device": "cpu", "image_topic": "/launch_cam/image_raw",
                          "params_file": str(ROOT / "config" / "parser.yaml")}.items()))
    import threading

    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    rclpy.init()
    client = Client("/launch_cam/image_raw", {"class_info": ClassInfo}, "/human_parsing", name="launch_probe")
    try:
        client.wait_for_node()
        client.wait_for(lambda: client.received.get("class_info"), 10.0, "class_info")
    finally:
        client.close()
        rclpy.try_shutdown()
        service.shutdown()
        runner.join(10.0)
