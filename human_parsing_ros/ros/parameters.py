"""The node's parameters: one schema (``PARAMS``), its checks, the ``ParseOptions`` built from it, and the
parameter table of docs/ros_api.md generated from it. ROS-free: rclpy reads the schema in ``node.py``.

    python -m human_parsing_ros.ros.parameters    # prints the table of docs/ros_api.md, "## Parameters"
"""
from __future__ import annotations

import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..backends import BACKENDS
from ..devices import COMPILE_MODES, PRECISIONS, resolve_device
from ..image_codec import MAX_PIXELS, DecodeLimits
from ..parse_options import MAX_PERSONS_LIMIT, OUTPUT_RESOLUTIONS, RESIZE_MODES, ParseOptions
from ..weights import check_input_size


@dataclass(frozen=True)
class Unset:
    """The default of a typed parameter that has no value until a file or ``-p`` gives one."""

    type_name: str  # rclpy's Parameter.Type member, lower case


STRING_ARRAY = Unset("string_array")
# A 4K UHD camera; larger frames are refused (memory and time per frame grow with the pixels).
DEFAULT_MAX_INPUT_PIXELS = 3840 * 2160


@dataclass(frozen=True)
class Param:
    name: str
    default: Any  # a value (its type is the parameter's type) or an Unset
    description: str  # markdown: the docs table's "meaning"; also the descriptor's (ros2 param describe)
    read_only: bool = False
    choices: tuple[str, ...] = ()
    value_range: tuple[float, float] | tuple[int, int] | None = None


PARAMS = (
    Param("weights", "", "`.safetensors` weights file, or an exported `.onnx` model file (backend `onnxruntime`, "
          "`openvino` or `auto`); empty = the default installed with the package", True),
    Param("device", "auto", "`auto` (CUDA if present), `cpu`, `cuda` or `cuda:N`", True),
    Param("backend", "torch", "what runs the network ([backends](backends.md)): `torch` (PyTorch, every weights "
          "file), `onnxruntime` (an exported `.onnx` file, or a `.safetensors` file exported once into `cache_dir`; "
          "single-map weights; int8 files; CUDA/TensorRT providers of onnxruntime-gpu on a GPU), `openvino` (the "
          "same files on the CPU; `precision: bf16` where the CPU has it), or `auto` (single-map weights: openvino "
          "on the CPU, else onnxruntime where installed; multi-person weights: torch)", True, tuple(BACKENDS)),
    Param("cache_dir", "", "where `.safetensors` weights are exported to ONNX for the ONNX backends (`onnx/`) and "
          "TensorRT engines are kept (`tensorrt/`); empty = `$HPR_CACHE_DIR`, else `~/.cache/human_parsing_ros`",
          True),
    Param("precision", "fp32", "network precision; fp16 falls back to fp32 on CPU, with a warning", True,
          tuple(PRECISIONS)),
    Param("compile", "none", "`torch.compile` the network at activate: `none` (eager), `default`, "
          "`reduce-overhead` (inductor kernels in CUDA graphs), `max-autotune`, or `cudagraphs` (CUDA graphs of "
          "the eager kernels, GPU only, compiles in seconds); the warm-up compiles (seconds to minutes). Not yet "
          "measured on a GPU", True, tuple(COMPILE_MODES)),
    Param("input_size", [0, 0], "network input `[height, width]`, each side 16..4096 (the one rule weights files "
          "and `HumanParser` use too); `[0, 0]` = the size stored in the weights", True),
    Param("input_transport", "raw", "`raw`: subscribe to `image` (sensor_msgs/Image); `compressed`: to "
          "`<image>/compressed` (JPEG/PNG)", True, ("raw", "compressed")),
    Param("input_reliability", "best_effort", "input QoS reliability (`best_effort` also accepts reliable "
          "cameras); `qos_overrides.<topic>.subscription.{reliability,history,depth}` in a parameter file "
          "override the input QoS (a bad value fails activate with one error line)", True,
          ("best_effort", "reliable")),
    Param("mask_parts", STRING_ARRAY, "class names that get a `masks/<name>` topic (characters other than "
          "letters, digits and `_` become `_`); a name the loaded class set lacks gets no topic and one warning. "
          "None unless set: `config/parser.yaml` asks for `hair` and `skin`", True),
    Param("autostart", True, "configure and activate on start-up; `false`: wait for a lifecycle manager", True),
    Param("resize_mode", "letterbox", "`letterbox` keeps the aspect ratio (pads with the mean colour); "
          "`stretch` fills the network input", choices=RESIZE_MODES),
    Param("output_resolution", "input", "`input`: labels at the camera's resolution; `network`: at the resized "
          "size (the image region of the network input, so scaled, not cropped; outputs keep the camera's "
          "`frame_id`, so scale the camera's intrinsics by the size ratio before projecting them)",
          choices=OUTPUT_RESOLUTIONS),
    Param("flip_tta", False, "average with the mirrored image, left/right classes swapped (about 2x compute); "
          "refused with multi-person weights, and while active with a `compile` mode (the compiled network has "
          "one batch size: deactivate, set, activate)"),
    Param("presence_threshold", 0.005, "pixel fraction from which a part is `present` (in `parts` and `persons`)",
          value_range=(0.0, 1.0)),
    Param("overlay_alpha", 0.5, "palette weight in `overlay`", value_range=(0.0, 1.0)),
    Param("publish_color", True, "publish `labels/color` (only computed while subscribed)"),
    Param("publish_overlay", True, "publish `overlay` (only computed while subscribed)"),
    Param("publish_masks", True, "publish `masks/<part>` (each only computed while subscribed)"),
    Param("publish_parts", True, "publish `parts` (only computed while subscribed)"),
    Param("publish_persons", True, "publish `instances` and `persons` (multi-person weights, or `map_persons`; "
          "each only while subscribed; persons are tracked either way)"),
    Param("map_persons", True, "single-map weights (the default): persons are the connected regions of the map "
          "(people who touch in the image are one person), published on `instances` and `persons`; false: no "
          "persons. Multi-person weights ignore it", True),
    Param("person_threshold", -1.0, "multi-person weights: persons scoring at least this (sqrt(box score x "
          "predicted part mIoU)) are kept; negative (the default, -1): the weights file's own threshold, "
          "calibrated on real photos (`min_score`: 0.25 for the shipped persons weights)", value_range=(-1.0, 1.0)),
    Param("max_persons", 16, "at most this many persons per frame, best (multi-person) or largest (map) first; "
          "the rest are counted in diagnostics (`persons_dropped`, and a WARN for the second they were dropped "
          "in). Multi-person weights return at most their own detection limit (`detections` in the file, diagnostics "
          "`detection_limit`: 20 for the shipped persons weights), so the cap is min(max_persons, that limit); "
          "the network cuts persons beyond its limit without counting them, so a frame whose persons above "
          "`person_threshold` fill the limit is counted in `frames_at_detection_limit` (and a WARN)",
          value_range=(1, MAX_PERSONS_LIMIT)),
    Param("depth_input", False, "also subscribe to `depth` (sensor_msgs/Image, `16UC1` mm or `32FC1` m, registered "
          "to the colour camera, any resolution) and `depth/camera_info`: `parts` and `persons` then give each part "
          "and person a 3D `location` in the depth optical frame ([3D from depth](ros_api.md#3d-from-depth))", True),
    Param("depth_sync_tolerance_ms", 20.0, "a colour frame takes the depth image of the same stamp, else the "
          "nearest one at most this far (ms); none that close: that frame has no 3D", value_range=(0.0, 1000.0)),
    Param("min_depth", 0.1, "depth readings nearer than this (m) are invalid", value_range=(0.0, 100.0)),
    Param("max_depth", 10.0, "depth readings farther than this (m) are invalid", value_range=(0.0, 1000.0)),
    Param("depth_timeout_s", 2.0, "diagnostics WARN when depth_input is on and no depth image came for this long "
          "(s); the 2D outputs go on", value_range=(0.1, 3600.0)),
    Param("no_image_warning_s", 5.0, "warn (log, and diagnostics WARN) after this long without an image (s)",
          value_range=(0.5, 3600.0)),
    Param("stall_timeout_s", 3.0, "diagnostics ERROR when frames arrive but none has been published for this "
          "long (s) since the first of them", value_range=(0.5, 600.0)),
    Param("max_latency_ms", 0.0, "diagnostics WARN above this end-to-end p50 (0 = off)",
          value_range=(0.0, 60000.0)),
    Param("min_output_rate_hz", 0.0, "diagnostics WARN while the output rate (5 s window) is below this "
          "(0 = off); dropped frames alone are expected (the newest frame wins) and only counted",
          value_range=(0.0, 1000.0)),
    Param("min_processed_ratio", 0.2, "diagnostics WARN (`behind the camera`, naming the slowest stage of a "
          "frame and what to do about it) while the frames processed (published or refused) over the last "
          "`behind_warning_s` are fewer than this fraction of the frames received (0 = off)",
          value_range=(0.0, 1.0)),
    Param("behind_warning_s", 10.0, "the window (s) over which `min_processed_ratio` is judged: the node must "
          "have been behind for that long", value_range=(1.0, 600.0)),
    Param("max_input_pixels", DEFAULT_MAX_INPUT_PIXELS, "frames with more pixels (width x height) are refused "
          "before decoding, with a throttled warning, and counted in `frames_rejected` (default 3840 x 2160)",
          value_range=(1, MAX_PIXELS)),
    Param("min_image_side", 8, "frames with a side shorter than this (pixels) are refused before decoding "
          "(counted in `frames_rejected`)", value_range=(1, 4096)),
    Param("max_aspect_ratio", 20.0, "frames whose long side is more than this many times the short side are "
          "refused before decoding", value_range=(1.0, 1000.0)),
    Param("max_jpeg_scans", 32, "compressed input: a progressive JPEG with more scans (each one a pass over the "
          "whole image) is refused before decoding; libjpeg's default progression has 10",
          value_range=(1, 100000)),
    Param("max_decode_ms", 1000.0, "compressed input: a frame whose decoding took longer is refused (0 = no "
          "limit); the bounds above keep known decode bombs from being decoded at all",
          value_range=(0.0, 60000.0)),
)
PARAM_BY_NAME = {p.name: p for p in PARAMS}
# The parameters that make the node's ParseOptions (same names as its fields); changing one rebuilds it.
PARSE_OPTION_PARAMS = ("output_resolution", "resize_mode", "flip_tta", "person_threshold", "max_persons",
                       "map_persons")


def parse_options(value_of: Callable[[str], Any]) -> ParseOptions:
    """The ``ParseOptions`` that the parameters' current values (``value_of(name)``) ask for."""
    return ParseOptions(**{name: option_value(name, value_of(name)) for name in PARSE_OPTION_PARAMS})


def option_value(name: str, value: Any) -> Any:
    """Parameter ``name``'s value as its ``ParseOptions`` field takes it: a negative person_threshold means the
    weights file's own (None)."""
    if name == "person_threshold" and _is_number(value, False) and value < 0:
        return None
    return value


def decode_limits(value_of: Callable[[str], Any]) -> DecodeLimits:
    """The ``DecodeLimits`` that the parameters' current values (``value_of(name)``) ask for."""
    return DecodeLimits(max_pixels=value_of("max_input_pixels"), min_side=value_of("min_image_side"),
                        max_aspect_ratio=value_of("max_aspect_ratio"), max_jpeg_scans=value_of("max_jpeg_scans"),
                        max_decode_ms=value_of("max_decode_ms"))


def _is_number(value: Any, integer: bool) -> bool:
    return not isinstance(value, bool) and isinstance(value, int if integer else (int, float))


def _type_error(param: Param, value: Any) -> str | None:
    default = param.default
    if isinstance(default, (Unset, list)):
        if not isinstance(value, (list, tuple, array.array)):
            return f"{param.name} must be a list, not {value!r}"
        if isinstance(default, Unset) and not all(isinstance(v, str) for v in value):  # input_size: check_value
            return f"{param.name} must be a list of strings, not {list(value)!r}"
        return None
    kind = "a boolean" if isinstance(default, bool) else "an integer" if isinstance(default, int) \
        else "a number" if isinstance(default, float) else "a string"
    fits = isinstance(value, bool) if isinstance(default, bool) else \
        _is_number(value, isinstance(default, int)) if isinstance(default, (int, float)) else isinstance(value, str)
    return None if fits else f"{param.name} must be {kind}, not {value!r}"


def check_value(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None if it is (or if ``name`` is none of
    ``PARAMS``): its type, range and choices, then what the parser itself would refuse."""
    param = PARAM_BY_NAME.get(name)
    if param is None:
        return None
    reason = _type_error(param, value)
    if reason:
        return reason
    if param.value_range is not None and not param.value_range[0] <= value <= param.value_range[1]:
        return f"{name} must be within {param.value_range[0]}..{param.value_range[1]}, not {value!r}"
    if param.choices and value not in param.choices:
        return f"{name} must be one of {', '.join(param.choices)}, not '{value}'"
    if name == "device" and value.strip().lower() != "auto":
        try:
            resolve_device(value)
        except ValueError as err:
            return str(err)
    if name == "input_size" and list(value) != [0, 0]:  # [0, 0]: the size stored in the weights
        return check_input_size(value)
    if name in PARSE_OPTION_PARAMS:  # the parser's own check of that field
        try:
            ParseOptions(**{name: option_value(name, value)})
        except ValueError as err:
            return str(err)
    return None


def _default_text(default: Any) -> str:
    if isinstance(default, Unset):
        return "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, str):
        return f"`{default}`" if default else '`""`'
    return f"`{default}`"


def _values_text(param: Param) -> str:
    if param.choices:
        return ", ".join(f"`{choice}`" for choice in param.choices)
    if param.value_range is not None:
        return f"{param.value_range[0]}..{param.value_range[1]}"
    return ""


def markdown_table(params: Sequence[Param] = PARAMS) -> str:
    """docs/ros_api.md's parameter table (markdown), one row per parameter, ending in a newline."""
    rows = ["| parameter | default | read-only | values | meaning |", "| --- | --- | --- | --- | --- |"]
    for param in params:
        cells = (f"`{param.name}`", _default_text(param.default), "yes" if param.read_only else "no",
                 _values_text(param), param.description)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
