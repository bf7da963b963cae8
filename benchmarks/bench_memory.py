"""Memory and time per frame at camera sizes: peak RSS and ms/frame of decoding and of HumanParser.parse plus
its statistics (what the node computes for a parts subscriber: the worst case).

    .venv/bin/python benchmarks/bench_memory.py [--sizes 640x480 1920x1080 3840x2160] [--frames 3]
    .venv/bin/python benchmarks/bench_memory.py --parse-only --sizes 3840x2160 8000000x1 1x8000000

``--parse-only``: no decoding; a black frame of each size (any shape: a 1-pixel-wide or -high frame too, which
the node refuses before decoding but HumanParser takes) straight to HumanParser.parse(...).presence(0.005).

Each size runs in a fresh process (peak RSS is a per-process high-water mark), on the
CPU with the default weights. Per size it prints the RSS after loading and warming up,
the peak RSS while decoding (raw rgb8 and JPEG, as the node does) and parsing, the
growth over the loaded RSS, and the p50 time per frame of each step.
"""
from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import time

import numpy as np


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    """Reset the kernel's peak RSS (Linux >= 4.0: write 5 to clear_refs); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def _peak_since_reset_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return _peak_mb()


def measure(width: int, height: int, frames: int) -> dict:
    import torch
    from PIL import Image

    from human_parsing_ros.image_codec import decode_compressed, decode_raw
    from human_parsing_ros.parser import HumanParser
    from human_parsing_ros.resources import DEFAULT_WEIGHTS
    from human_parsing_ros.samples import load_rgb, sample_photos

    torch.set_num_threads(max(1, torch.get_num_threads()))
    parser = HumanParser(DEFAULT_WEIGHTS, device="cpu")
    parser.warmup()
    photo = Image.fromarray(load_rgb(sample_photos()[0])).resize((width, height), Image.BILINEAR)
    rgb = np.ascontiguousarray(np.asarray(photo))
    raw = rgb.tobytes()
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", quality=90)
    jpeg = buf.getvalue()
    loaded = _rss_mb()
    _reset_peak()
    times: dict[str, list[float]] = {"decode_raw": [], "decode_jpeg": [], "parse": []}
    for _ in range(frames):
        start = time.perf_counter()
        image = decode_raw("rgb8", height, width, width * 3, raw)
        times["decode_raw"].append(time.perf_counter() - start)
        start = time.perf_counter()
        decode_compressed("jpeg", jpeg)
        times["decode_jpeg"].append(time.perf_counter() - start)
        start = time.perf_counter()
        _ = parser.parse(image).statistics  # what the node computes for a parts subscriber (the worst case)
        times["parse"].append(time.perf_counter() - start)
    peak = _peak_since_reset_mb()
    return {"size": f"{width}x{height}", "loaded_rss_mb": round(loaded), "peak_rss_mb": round(peak),
            "growth_mb": round(peak - loaded), "torch_threads": torch.get_num_threads(),
            **{f"{key}_ms_p50": round(float(np.median(values)) * 1e3, 1) for key, values in times.items()}}


def measure_parse(width: int, height: int, frames: int) -> dict:
    """Peak RSS growth of HumanParser.parse(black frame).presence(0.005), the default weights on the CPU."""
    import torch

    from human_parsing_ros.parser import HumanParser
    from human_parsing_ros.resources import DEFAULT_WEIGHTS

    parser = HumanParser(DEFAULT_WEIGHTS, device="cpu")
    parser.warmup()
    frame = np.zeros((height, width, 3), np.uint8)
    loaded = _rss_mb()
    _reset_peak()
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        parser.parse(frame).presence(0.005)
        times.append(time.perf_counter() - start)
    peak = _peak_since_reset_mb()
    return {"size": f"{width}x{height}", "loaded_rss_mb": round(loaded), "peak_rss_mb": round(peak),
            "growth_mb": round(peak - loaded), "torch_threads": torch.get_num_threads(),
            "parse_ms_p50": round(float(np.median(times)) * 1e3, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["640x480", "1920x1080", "3840x2160"])
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--parse-only", action="store_true",
                    help="parse a black frame of each size (any shape), no decoding")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one size in this process
    args = ap.parse_args()
    if args.one:
        width, height = (int(v) for v in args.one.split("x"))
        print(json.dumps((measure_parse if args.parse_only else measure)(width, height, args.frames)))
        return
    if args.parse_only:
        print(f"{'size (WxH)':>16} {'loaded RSS':>11} {'peak RSS':>9} {'growth':>8} {'parse+presence':>15}")
        for size in args.sizes:
            out = subprocess.run([sys.executable, __file__, "--one", size, "--frames", str(args.frames),
                                  "--parse-only"], capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{row['size']:>16} {row['loaded_rss_mb']:>8} MB {row['peak_rss_mb']:>6} MB {row['growth_mb']:>5} MB "
                  f"{row['parse_ms_p50']:>12} ms")
        return
    print(f"{'size':>10} {'loaded RSS':>11} {'peak RSS':>9} {'growth':>8} {'decode rgb8':>12} "
          f"{'decode JPEG':>12} {'parse':>10}")
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", size, "--frames", str(args.frames)],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        row = json.loads(out)
        print(f"{row['size']:>10} {row['loaded_rss_mb']:>8} MB {row['peak_rss_mb']:>6} MB {row['growth_mb']:>5} MB "
              f"{row['decode_raw_ms_p50']:>9} ms {row['decode_jpeg_ms_p50']:>9} ms {row['parse_ms_p50']:>7} ms")


if __name__ == "__main__":
    main()
