"""Backends side by side: the bare forward pass, parser.parse and the node end to end, one run, with ratios.

    ./run.sh bench-backends [--backends torch onnxruntime openvino:bf16] [--threads 2] [--frames 40]
    ./run.sh bench-backends --int8 default_int8.onnx     # adds onnxruntime on that int8 file

A backend may name a precision (``openvino:bf16``).

(1) forward and (2) parse are timed in one process, the backends in turns inside every iteration (forward of
each, then parse of each), so that a drifting machine affects all alike; (3) the node end to end over DDS (camera
stamp -> labels received) runs one node per backend, one after the other, at a camera rate each keeps up with.
Targets (issue #33): the best CPU backend's forward p50 <= 0.45x PyTorch eager's; its parse <= 1.25x and node
end-to-end p50 <= 1.35x its own forward.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from human_parsing_ros.backends import onnxruntime_providers, openvino_installed
from human_parsing_ros.inference import network_input, place_image
from human_parsing_ros.parser import HumanParser
from human_parsing_ros.resources import DEFAULT_WEIGHTS
from human_parsing_ros.runtime import summary

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import bench_node, camera_frame, time_calls  # noqa: E402


def installed_backends() -> list[str]:
    return ["torch", *(["onnxruntime"] if onnxruntime_providers() else []),
            *(["openvino"] if openvino_installed() else [])]


def make_parser(spec: str, weights: Path, int8: Path | None, cache: Path) -> HumanParser:
    """``backend[:precision]``; precision int8 runs the ``int8`` file."""
    backend, _, precision = spec.partition(":")
    if precision == "int8":
        return HumanParser(int8, device="cpu", backend=backend)
    return HumanParser(weights, device="cpu", backend=backend, precision=precision or "fp32", cache_dir=cache)


def bench_in_process(parsers: dict[str, HumanParser], frame, iterations: int) -> dict[str, dict]:
    """forward and parse p50/p99 of each parser, timed in turns."""
    inputs = {}
    for name, parser in parsers.items():
        placement = place_image(frame.shape[:2], parser.network_hw, "letterbox")
        inputs[name] = network_input(torch.from_numpy(frame.copy()), parser.network_hw, placement, parser._mean,
                                     parser._std, parser.dtype)
    times: dict[str, dict[str, list[float]]] = {name: {"forward": [], "parse": []} for name in parsers}
    with torch.inference_mode():
        for step in range(iterations + 3):  # the first three warm up
            for name, parser in parsers.items():
                forward = time_calls(lambda p=parser, x=inputs[name]: p.forward(x), 1, parser._sync)
                parse = time_calls(lambda p=parser: p.parse(frame), 1, parser._sync)
                if step >= 3:
                    times[name]["forward"] += forward
                    times[name]["parse"] += parse
    return {name: {"forward": summary(t["forward"]), "parse": summary(t["parse"]),
                   "description": parsers[name].describe()} for name, t in times.items()}


def report(results: dict[str, dict], threads: int, frame_hw: tuple[int, int]) -> None:
    eager = results["torch"]["forward"]["p50"]
    print(f"frame {frame_hw[1]}x{frame_hw[0]} rgb8, {threads} threads, CPU")
    print("| backend | forward p50 ms | x eager | parse p50 ms | parse / forward | node e2e p50 ms "
          "| e2e / node forward |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, figures in results.items():
        forward, parse, node = figures["forward"]["p50"], figures["parse"]["p50"], figures.get("node")
        e2e = f"{node['p50']:.1f} | {node['p50'] / node['stages']['forward']:.2f}" if node else "- | -"
        print(f"| {name} | {forward:.1f} | {forward / eager:.2f} | {parse:.1f} | {parse / forward:.2f} | {e2e} |")
    for name, figures in results.items():
        print(f"{name}: {figures['description']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--backends", nargs="*", default=None, help="default: every installed one")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--frames", type=int, default=40, help="frames per node; 0 skips the node")
    parser.add_argument("--int8", type=Path, default=None, help="an int8 file (human_parsing_export_model --int8)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the nodes' processes
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    workdir = Path(tempfile.mkdtemp(prefix="hp_bench_backends_"))
    backends = args.backends or installed_backends()
    if "torch" not in backends:
        backends = ["torch", *backends]  # the ratios are against PyTorch eager
    if args.int8:
        backends += ["onnxruntime:int8"]  # int8 files are calibrated for ONNX Runtime (OpenVINO refuses them)
    frame = camera_frame(args.width, args.height)
    parsers = {spec: make_parser(spec, Path(args.weights), args.int8, workdir / "cache") for spec in backends}
    results = bench_in_process(parsers, frame, args.iterations)
    del parsers
    if args.frames:
        for spec in backends:
            backend, _, precision = spec.partition(":")
            weights = args.int8 if precision == "int8" else Path(args.weights)
            log = workdir / f"node_{spec.replace(':', '_')}.log"
            latency, _ = bench_node(weights, frame, "cpu", "fp32" if precision in ("", "int8") else precision,
                                    {"backend": backend, "cache_dir": str(workdir / "cache")},
                                    results[spec]["parse"]["p50"], args.frames, log)
            results[spec]["node"] = latency
    report(results, args.threads, frame.shape[:2])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": args.threads, "frame": [args.width, args.height],
                                         "cpu": cpu_name(), "results": results}, indent=1) + "\n")
    sys.stdout.flush()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            return next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        return ""


if __name__ == "__main__":
    main()
