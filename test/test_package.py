"""Packaging: package.xml, the parameter file and the node's declared parameters agree."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_package_xml_is_format_3_ament_python_with_runtime_deps():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "human_parsing_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    # rosdep keys only (rosdep stops at an unknown one: safetensors has none, pip installs it); no cv_bridge,
    # which the node does not use (it decodes images itself)
    assert deps == {"rclpy", "sensor_msgs", "std_msgs", "builtin_interfaces", "human_parsing_msgs", "geometry_msgs",
                    "visualization_msgs", "diagnostic_msgs",
                    "lifecycle_msgs", "ament_index_python", "launch", "launch_ros", "python3-numpy", "python3-pil",
                    "python3-yaml", "python3-torch", "python3-torchvision", "python3-scipy"}
    # every message package the ROS wing imports is declared
    import re

    pattern = r"^\s*from (\w+_msgs|builtin_interfaces)\.msg import"
    imported = {name for path in (ROOT / "human_parsing_ros" / "ros").glob("*.py")
                for name in re.findall(pattern, path.read_text(), re.MULTILINE)}
    assert imported and imported <= deps, imported - deps
    assert (ROOT / "resource" / "human_parsing_ros").is_file()


def test_parameter_file_holds_a_valid_value_for_every_parameter():
    """config/parser.yaml: values only (as --params-file reads them), every one the node's own check accepts."""
    from human_parsing_ros.ros.parameters import PARAMS, check_value

    doc = yaml.safe_load((ROOT / "config" / "parser.yaml").read_text())
    values = doc["/**"]["ros__parameters"]
    assert set(values) == {p.name for p in PARAMS}
    for name, value in values.items():
        assert check_value(name, value) is None, name


def test_the_parameter_table_is_the_generated_one():
    """docs/ros_api.md's "## Parameters" table is markdown_table() of PARAMS (regenerate: python -m
    human_parsing_ros.ros.parameters)."""
    from human_parsing_ros.ros.parameters import markdown_table

    readme = (ROOT / "docs" / "ros_api.md").read_text()
    begin = "<!-- parameters: generated from human_parsing_ros/ros/parameters.py -->\n"
    end = "<!-- end parameters -->"
    assert readme.count(begin) == 1 and readme.count(end) == 1
    section = readme[readme.index("## Parameters\n"):]
    block = section[section.index(begin) + len(begin):section.index(end)]
    assert block == markdown_table()


def test_parameter_checks_cover_types_ranges_and_the_parser_own():
    from human_parsing_ros.parse_options import ParseOptions
    from human_parsing_ros.ros.parameters import check_value, parse_options

    assert "presence_threshold" in check_value("presence_threshold", 2.0)
    assert "boolean" in check_value("flip_tta", "yes") and "strings" in check_value("mask_parts", [1])
    assert check_value("presence_threshold", 1) is None  # an integer for a number: rcl's "-p x:=1" is taken
    defaults = {"output_resolution": "input", "resize_mode": "letterbox", "flip_tta": False,
                "person_threshold": 0.5, "max_persons": 16, "map_persons": False}
    assert parse_options(defaults.__getitem__) == ParseOptions(person_threshold=0.5)
    # a negative person_threshold (the parameter's default, -1) is the weights file's own: None
    assert parse_options({**defaults, "person_threshold": -1.0}.__getitem__) == ParseOptions()
    assert check_value("person_threshold", -1.0) is None and "person_threshold" in check_value("person_threshold", 2.0)


def test_parameter_validation_gives_reasons():
    pytest.importorskip("rclpy")  # topic_token
    from human_parsing_ros.ros.frames import topic_token
    from human_parsing_ros.ros.parameters import check_value

    assert "precision" in check_value("precision", "fp8")
    assert "device" in check_value("device", "gpu")
    assert "input_size" in check_value("input_size", [10, 10])
    assert check_value("input_size", [480, 640]) is None
    assert topic_token("upper-clothes") == "upper_clothes" and topic_token("t-shirt") == "t_shirt"


@pytest.fixture(scope="module")
def model_and_info(tmp_path_factory):
    from human_parsing_ros.tools.random_weights import make_random_weights
    from human_parsing_ros.weights import load_weights

    return load_weights(make_random_weights(tmp_path_factory.mktemp("package") / "w.safetensors",
                                            input_size=(96, 96)))


@pytest.mark.parametrize("size", [[10, 10], [96, 5000], [96], [96, 96, 96], [96.5, 96], [0, 96]])
def test_node_and_parser_refuse_the_same_input_sizes(size, model_and_info):
    from human_parsing_ros.parser import HumanParser
    from human_parsing_ros.ros.parameters import check_value
    from human_parsing_ros.weights import check_input_size

    reason = check_input_size(size)
    assert reason and check_value("input_size", size) == reason
    model, info = model_and_info
    with pytest.raises(ValueError) as refused:
        HumanParser.from_model(model, info, device="cpu", input_size=size)
    assert str(refused.value) == reason
    assert check_value("input_size", [0, 0]) is None  # the node's "size from the weights"


def test_the_ros_api_page_documents_every_parameter_and_topic():
    from human_parsing_ros.ros.parameters import PARAMS

    page = (ROOT / "docs" / "ros_api.md").read_text()
    missing = [p.name for p in PARAMS if f"`{p.name}`" not in page]
    assert not missing, f"docs/ros_api.md lacks parameters {missing}"
    readme = (ROOT / "README.md").read_text()
    for topic in ("`labels`", "`labels/color`", "`overlay`", "`masks/<part>`", "`parts`", "`class_info`"):
        assert topic in readme and topic in page


@pytest.mark.parametrize("where", ["prefix", "scheme", "user"])
def test_share_files_are_found_where_a_plain_pip_install_puts_them(tmp_path, monkeypatch, where):
    """``pip install .`` (not -e) copies config/ and launch/ to <data>/share/human_parsing_ros, <data> being the
    environment's prefix (a venv), the platform scheme's (Debian's system pip: /usr/local) or the user's
    (--user), and the package to site-packages, which holds no config/: found there, without ament's index."""
    import sys
    import sysconfig

    from human_parsing_ros import resources

    data = {name: tmp_path / name for name in ("prefix", "scheme", "user")}
    installed = data[where] / "share" / "human_parsing_ros" / "config" / "parser.yaml"
    installed.parent.mkdir(parents=True)
    installed.write_text((ROOT / "config" / "parser.yaml").read_text())
    monkeypatch.setattr(sys, "prefix", str(data["prefix"]))
    monkeypatch.setattr(sysconfig, "get_path", lambda name, scheme=None: str(data["user" if scheme else "scheme"]))
    monkeypatch.setattr(resources, "_SOURCE_ROOT", tmp_path / "site-packages")
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    assert resources.share_file("config", "parser.yaml") == installed
    with pytest.raises(FileNotFoundError, match="config/absent.yaml"):
        resources.share_file("config", "absent.yaml")


ROS_PACKAGES = ("rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "diagnostic_msgs", "lifecycle_msgs")
# Run in a fresh interpreter: a finder ahead of every other refuses the ROS packages, then each module named on
# the command line is imported; prints what failed and which human_parsing_ros.ros modules got loaded.
_IMPORT_WITHOUT_ROS = """
import importlib, json, sys
BLOCKED = set(sys.argv[1].split(","))
class RefuseRos:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: no ROS here")
        return None
sys.meta_path.insert(0, RefuseRos())
failed = {}
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
    except Exception as err:
        failed[name] = f"{type(err).__name__}: {err}"
loaded = sorted(m for m in sys.modules if m == "human_parsing_ros.ros" or m.startswith("human_parsing_ros.ros."))
print(json.dumps({"failed": failed, "ros_loaded": loaded}))
"""


def _modules(under: Path) -> list[str]:
    names = []
    for path in sorted(under.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _import_without_ros(modules: list[str]) -> dict:
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", _IMPORT_WITHOUT_ROS, ",".join(ROS_PACKAGES), *modules],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_core_imports_without_ros_and_never_imports_the_ros_wing():
    """Every module of human_parsing_ros outside ros/ imports where rclpy and the ROS message packages cannot be
    imported, and none of them imports human_parsing_ros.ros."""
    package = ROOT / "human_parsing_ros"
    core = [name for name in _modules(package) if not name.startswith("human_parsing_ros.ros")]
    assert "human_parsing_ros.parser" in core and "human_parsing_ros.tools.harness" in core
    found = _import_without_ros(core)
    assert found["failed"] == {}
    assert found["ros_loaded"] == []


def test_the_ros_wing_schema_and_rcl_values_import_without_ros():
    found = _import_without_ros(["human_parsing_ros.ros", "human_parsing_ros.ros.parameters",
                                 "human_parsing_ros.ros.rcl_values"])
    assert found["failed"] == {}


def test_the_ros_wing_has_no_import_circle_and_no_long_module():
    """Imports between human_parsing_ros/ros/ modules (at any depth in a module) form no cycle; each module
    stays under 450 lines."""
    import ast

    ros = ROOT / "human_parsing_ros" / "ros"
    graph: dict[str, set[str]] = {}
    for path in ros.glob("*.py"):
        assert len(path.read_text().splitlines()) < 450, path.name
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets |= {node.module} if node.module else {alias.name for alias in node.names}
        graph[path.stem] = {t.partition(".")[0] for t in targets} - {path.stem}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
                   for nxt in graph.get(start, ()))

    circles = [name for name in graph if reaches(name, name, {name})]
    assert not circles, graph
    assert "process" not in graph["node"] and "node" in graph["process"]
