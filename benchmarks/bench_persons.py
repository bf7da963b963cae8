"""Multi-person parsing latency on this machine: frames with 1, 2 and 4 persons, against the single-map parser.

    .venv/bin/python benchmarks/bench_persons.py [--weights persons.safetensors] [--frames 10] [--device cpu]

Frames are CCP composites of the bundled photos (training/composites.py) at the camera size 480x640, each
with exactly n persons; both parsers see the same frames at their own input sizes (letterbox), through
HumanParser.parse (everything but decoding). Prints p50/p99 per person count, and writes them as JSON with
--json. Figures are for the machine it runs on; the README says which.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # training/ for the composites

from human_parsing_ros.parser import HumanParser  # noqa: E402
from human_parsing_ros.resources import DEFAULT_WEIGHTS, PERSONS_WEIGHTS, SAMPLES  # noqa: E402
from human_parsing_ros.runtime import summary  # noqa: E402
from training.composites import compose  # noqa: E402
from training.instances import ccp_people  # noqa: E402


def frames_with(count: int, persons: int, size: tuple[int, int] = (480, 640), seed: int = 0) -> list[np.ndarray]:
    """``count`` composites with exactly ``persons`` persons each (placements that fail are drawn again)."""
    people, _ = ccp_people(SAMPLES, "all")
    frames, attempt = [], 0
    while len(frames) < count:
        frame = compose(people, np.random.default_rng([seed, persons, attempt]), size, (persons, persons))
        attempt += 1
        if len(frame.placements) == persons:
            frames.append(frame.image)
    return frames


def time_parser(parser: HumanParser, frames: list[np.ndarray], warmup: int = 2) -> dict:
    for frame in frames[:warmup]:
        parser.parse(frame)
    times, found = [], []
    for frame in frames:
        start = time.perf_counter()
        result = parser.parse(frame)
        times.append((time.perf_counter() - start) * 1e3)
        found.append(len(result.persons))
    return {**summary(times), "persons_found_mean": float(np.mean(found)) if result.instances is not None else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=str(PERSONS_WEIGHTS), help="multi-person weights file")
    parser.add_argument("--single", default=str(DEFAULT_WEIGHTS), help="single-map weights to compare with")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    multi = HumanParser(args.weights, device=args.device)
    single = HumanParser(args.single, device=args.device)
    print(f"multi-person: {multi.describe()}\nsingle-map:   {single.describe()}\n"
          f"threads {torch.get_num_threads()}, {args.frames} frames of 480x640 per person count")
    rows = {}
    for persons in (1, 2, 4):
        frames = frames_with(args.frames, persons)
        rows[persons] = {"multi_person": time_parser(multi, frames), "single_map": time_parser(single, frames)}
        m, s = rows[persons]["multi_person"], rows[persons]["single_map"]
        print(f"{persons} person(s): multi-person p50 {m['p50']:.0f} ms p99 {m['p99']:.0f} ms "
              f"(found {m['persons_found_mean']:.1f} on average); single-map p50 {s['p50']:.0f} ms "
              f"p99 {s['p99']:.0f} ms; ratio {m['p50'] / s['p50']:.2f}x", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": args.device, "threads": torch.get_num_threads(),
                                               "multi": multi.describe(), "single": single.describe(),
                                               "per_person_count": rows}, indent=2))


if __name__ == "__main__":
    main()
