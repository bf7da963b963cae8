"""Trainer benchmark: stage-1 step, stage-2 step and PRA sampling time, one model and size, one run.

    .venv/bin/python benchmarks/bench_training.py [--size 400 --batch 16 --device cuda --amp bf16]

Targets: a stage-2 step at most 0.5x a stage-1 step (no encoder backward), PRA
sampling at most 3% of a stage-2 step.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from human_parsing_ros.models import build_model  # noqa: E402
from training.engine import StageState, autocast, compute_loss, generator, make_optimizer, make_scheduler  # noqa: E402
from training.losses import PixelSampler, keep_probabilities  # noqa: E402


def step_times(model, state: StageState, config: dict, batch, device, iterations: int) -> list[float]:
    images, target = batch
    times = []
    for i in range(iterations + 2):
        start = time.perf_counter()
        with autocast(config, device):
            logits = model(images)
        loss, _ = compute_loss(logits.float(), target, state, config, generator(0, 0, i, device=device))
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:  # warm-up
            times.append((time.perf_counter() - start) * 1e3)
    return times


def median(values: list[float]) -> float:
    return float(torch.tensor(values).median())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=59)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--trains", default="decoder", choices=("decoder", "classifier"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    config = {"amp": args.amp, "stage1": {"loss": "ce"}, "inter_class": {"weight": 0.0, "stages": []},
              "optim": {"momentum": 0.9, "weight_decay": 1e-4}}
    torch.manual_seed(0)
    model = build_model("deeplabv3plus", num_classes=args.classes).to(device)
    model = model.to(memory_format=torch.channels_last).train()
    images = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(
        memory_format=torch.channels_last)
    # A realistic long-tailed target: large background, a few mid-size classes, small ones.
    target = torch.zeros(args.batch, args.size, args.size, dtype=torch.long, device=device)
    for cls in range(1, 12):
        side = args.size // (2 + cls)
        top, left = cls * 5 % args.size, cls * 7 % args.size
        target[:, top:top + side, left:left + side] = cls
    batch = (images, target)

    opt1 = make_optimizer(model.parameters(), 0.01, config)
    stage1 = StageState(1, opt1, make_scheduler(opt1, 100), None, None)
    t1 = step_times(model, stage1, config, batch, device, args.iterations)

    cpa = torch.linspace(0.9, 0.1, args.classes)
    sampler = PixelSampler(keep_probabilities(cpa, "min").to(device))
    params = model.freeze_for_stage2(args.trains)
    opt2 = make_optimizer(params, 0.01, config)
    stage2 = StageState(2, opt2, make_scheduler(opt2, 100), sampler, None)
    t2 = step_times(model, stage2, config, batch, device, args.iterations)

    sample_ms = []
    for i in range(50):
        start = time.perf_counter()
        sampler(target, generator(0, 1, i, device=device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        sample_ms.append((time.perf_counter() - start) * 1e3)

    s1, s2, sp = median(t1), median(t2), median(sample_ms)
    print(f"deeplabv3plus/mobilenet_v2, {args.classes} classes, batch {args.batch} x {args.size}x{args.size}, "
          f"{device}, amp {args.amp}, torch threads {torch.get_num_threads()}, stage 2 trains {args.trains}")
    print(f"stage-1 step    {s1:8.1f} ms (median of {len(t1)})")
    print(f"stage-2 step    {s2:8.1f} ms = {s2 / s1:.2f}x stage 1 (target <= 0.5)")
    print(f"PRA sampling    {sp:8.2f} ms = {100 * sp / s2:.2f}% of a stage-2 step (target <= 3%)")


if __name__ == "__main__":
    main()
