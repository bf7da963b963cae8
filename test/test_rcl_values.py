"""Start-up parameter values typed as rcl types them (rcl_yaml_param_parser's get_value), without ROS; the node's
DDS tests check the same forms against real rcl."""
from __future__ import annotations

import math

import pytest

from human_parsing_ros.ros import rcl_values
from human_parsing_ros.ros.rcl_values import command_line_params, parameter_value


@pytest.mark.parametrize("text, expected", [
    ("yes", True), ("On", True), ("Y", True), ("off", False), ("FALSE", False),
    ("tRue", "tRue"),  # rcl knows three spellings of each word, not every case
    ("010", 8), ("0x10", 16), ("-7", -7),  # C's strtol, base 0: octal and hexadecimal too
    ("08", 8.0),  # not octal, so strtod reads it: a double, which an integer parameter refuses
    ("1e-3", 0.001), (".inf", math.inf), ("-.Inf", -math.inf),
    ("1e999", "1e999"), ("1_000", "1_000"),  # out of range, or not C's syntax: strings
    ('"5"', "5"), ("'yes'", "yes"),  # quoted: strings
    ("[a, b]", ["a", "b"]), ("[yes, 010]", [True, 8]), ("['on', '010']", ["on", "010"]),
    ("[[1]]", "[[1]]"), ("a: b", "a: b"), ("", ""),
])
def test_values_are_typed_as_rcl_types_them(text, expected):
    value = parameter_value(text)
    assert value == expected and type(value) is type(expected)


def test_a_nan_is_a_double():
    assert math.isnan(parameter_value(".NaN"))


def test_only_this_nodes_values_after_ros_args():
    argv = ["parser_node", "-p", "x:=1", "--ros-args", "-p", "a:=yes", "--param", "human_parser:b:=2",
            "-p", "other:c:=3", "-r", "d:=e", "--", "-p", "f:=4"]
    assert command_line_params(argv, "human_parser") == {"a": True, "b": 2}


def test_without_the_c_library_pythons_parsing_stands_in(monkeypatch):
    """Where ctypes cannot open the C library by that name (Windows), numbers still come out typed."""
    monkeypatch.setattr(rcl_values, "_libc", lambda: None)
    assert parameter_value("16") == 16 and parameter_value("1e-3") == 0.001
    assert parameter_value("abc") == "abc" and parameter_value("[1, 2]") == [1, 2]
