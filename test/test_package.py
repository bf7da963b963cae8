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
    assert deps == {"rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "lifecycle_msgs", "ament_index_python",
                    "launch", "launch_ros", "python3-numpy", "python3-pil", "python3-yaml", "python3-torch",
                    "python3-torchvision", "python3-scipy"}
    assert (ROOT / "resource" / "human_parsing_ros").is_file()


def test_parameter_file_documents_exactly_the_declared_parameters():
    pytest.importorskip("rclpy")
    from human_parsing_ros.ros.parameters import PARAMS, check_value

    doc = yaml.safe_load((ROOT / "config" / "parser.yaml").read_text())
    values = doc["/**"]["ros__parameters"]
    assert set(values) == {p.name for p in PARAMS}
    for name, value in values.items():
        assert check_value(name, value) is None, name


def test_parameter_validation_gives_reasons():
    pytest.importorskip("rclpy")
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
    pytest.importorskip("rclpy")
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


def test_readme_documents_every_parameter_and_topic():
    pytest.importorskip("rclpy")
    from human_parsing_ros.ros.parameters import PARAMS

    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in PARAMS if f"`{p.name}`" not in readme]
    assert not missing, f"README lacks parameters {missing}"
    for topic in ("`labels`", "`labels/color`", "`overlay`", "`masks/<part>`", "`parts`", "`class_info`"):
        assert topic in readme


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
