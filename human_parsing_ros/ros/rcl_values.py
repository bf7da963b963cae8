"""Start-up parameter values (``--ros-args -p name:=value``) typed exactly as rcl types them, without ROS.

The node compares them with what rclpy declared, to name a value that rcl dropped or rclpy refused; a value
typed differently from rcl's own reading would be called wrong although rcl accepted it.
"""
from __future__ import annotations

import ctypes
import functools
import math
from typing import Any

import yaml


def command_line_params(argv: list[str], node_name: str) -> dict[str, Any]:
    """The ``-p name:=value`` start-up values for node ``node_name`` in ``argv``, read as rcl reads them."""
    values: dict[str, Any] = {}
    in_ros_args = False
    words = iter(argv)
    for word in words:
        if word in ("--ros-args", "--"):
            in_ros_args = word == "--ros-args"
        elif in_ros_args and word in ("-p", "--param"):
            name, assign, text = next(words, "").partition(":=")
            node, _, name = name.rpartition(":")  # "human_parser:name" targets one node by name
            if assign and node in ("", node_name):
                values[name] = parameter_value(text)
    return values


# rcl's YAML value parser (rcl_yaml_param_parser, get_value): these plain scalars are booleans; then a whole
# C strtol(base 0) number is an integer, a whole strtod number a double, anything else a string.
_RCL_TRUE = frozenset(("Y", "y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"))
_RCL_FALSE = frozenset(("N", "n", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"))
_RCL_SPECIAL_FLOATS = {f"{sign}.{word}": float(f"{sign}{word[:3]}") for sign in ("", "+", "-")
                       for word in ("inf", "Inf", "INF")} | {word: math.nan for word in (".nan", ".NaN", ".NAN")}


def parameter_value(text: str) -> Any:
    """A ``-p`` value's text typed as rcl types it (so that a value rcl accepted is never called wrong):
    "yes"/"on"/"True" ... are booleans, "010" is 8 and "0x10" 16 (C's strtol), "1e-3" a double (strtod),
    a quoted scalar a string, "[...]" a list of such values; anything else is a string."""
    try:
        node = yaml.compose(text)  # YAML's nodes keep what a loader loses: whether a scalar was quoted
    except yaml.YAMLError:
        return text
    if isinstance(node, yaml.ScalarNode):
        return _rcl_scalar(node)
    if isinstance(node, yaml.SequenceNode) and all(isinstance(item, yaml.ScalarNode) for item in node.value):
        return [_rcl_scalar(item) for item in node.value]
    return text


def _rcl_scalar(node: yaml.ScalarNode) -> Any:
    text = node.value
    if node.style:  # quoted: a string, whatever it looks like
        return text
    if text in _RCL_TRUE or text in _RCL_FALSE:
        return text in _RCL_TRUE
    if text in _RCL_SPECIAL_FLOATS:
        return _RCL_SPECIAL_FLOATS[text]
    for integer in (True, False):
        number = _c_number(text, integer)
        if number is not None:
            return number
    return text


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library this process (and rcl in it) already uses; None where it cannot be opened by that name
    (Windows), where Python's own number parsing stands in."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except (OSError, TypeError):
        return None
    end = ctypes.POINTER(ctypes.c_void_p)
    libc.strtol.argtypes, libc.strtol.restype = (ctypes.c_char_p, end, ctypes.c_int), ctypes.c_long
    libc.strtod.argtypes, libc.strtod.restype = (ctypes.c_char_p, end), ctypes.c_double
    return libc


def _c_number(text: str, integer: bool) -> int | float | None:
    """C's strtol (base 0) value of the whole of ``text`` if ``integer``, else its strtod value; None where it
    reads less than all of it or overflows. Python's ``int``/``float`` stand in without a C library."""
    libc = _libc()
    if libc is None:
        try:
            return int(text) if integer else float(text)
        except ValueError:
            return None
    parse, base = (libc.strtol, (0,)) if integer else (libc.strtod, ())
    data = ctypes.create_string_buffer(text.encode())
    end = ctypes.c_void_p()
    ctypes.set_errno(0)
    value = parse(data, ctypes.byref(end), *base)
    read = (end.value or 0) - ctypes.addressof(data)
    return value if text and read == len(data.value) and ctypes.get_errno() == 0 else None
