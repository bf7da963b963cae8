"""Trainer benchmark: stage-1 step, stage-2 step and PRA sampling time, one model and size, one run.

    .venv/bin/python benchmarks/bench_training.py [--size 400 --batch 16 --device cuda --amp bf16]
    .venv/bin/python benchmarks/bench_training.py --architecture ce2p --encoder mobilenet_v2 --loss ce_lovasz \
        --size 256 --batch 8

The stage-1 step is the trainer's: the main output's loss plus every auxiliary head's (CE2P: the parsing
branch's CE + Lovász, the edge and consistency losses); stage 2 trains the main output only.

Targets: a stage-2 step at most 0.5x a stage-1 step (no encoder backward), PRA
sampling at most 3% of a stage-2 step.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a file (python benchmarks/bench_training.py), Python puts benchmarks/ on sys.path, not the repository
    # root, so `import training` would fail: add the root. Script-only: never runs on import or with -m.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from human_parsing_ros.models import build_model
from training.engine import StageLoss, StageState, autocast, aux_loss_terms, batch_loss
from training.sampling import PixelSampler, keep_probabilities
from training.schedules import make_optimizer, make_scheduler
from training.seeding import seeded_generator


def step_times(model: torch.nn.Module, state: StageState, amp: str, batch: tuple[torch.Tensor, torch.Tensor],
               device: torch.device, iterations: int) -> list[float]:
    """Milliseconds per optimisation step of ``state``'s stage, after two warm-up steps."""
    images, target = batch
    aux_terms = aux_loss_terms(model) if state.stage == 1 else []
    times = []
    for i in range(iterations + 2):
        start = time.perf_counter()
        with autocast(amp, device):
            logits, aux = model(images, with_aux=True) if aux_terms else (model(images), [])
        loss, _ = batch_loss(logits, aux, target, state.loss, aux_terms, seeded_generator(0, 0, i, device=device))
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:  # warm-up
            times.append((time.perf_counter() - start) * 1e3)
    return times


def median(values: list[float]) -> float:
    """The median of ``values`` (torch's: the lower middle value for an even count)."""
    return float(torch.tensor(values).median())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="deeplabv3plus", help="a zoo architecture (default: %(default)s)")
    parser.add_argument("--encoder", default=None, help="its encoder (default: the architecture's own)")
    parser.add_argument("--loss", default="ce", choices=("ce", "ce_lovasz"),
                        help="the stage-1 loss of the main output (default: %(default)s)")
    parser.add_argument("--size", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=59)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--trains", default="decoder", choices=("decoder", "classifier"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    encoder = {"encoder": args.encoder} if args.encoder else {}
    model = build_model(args.architecture, num_classes=args.classes, **encoder).to(device)
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

    optimizer1 = make_optimizer(model.parameters(), 0.01, momentum=0.9, weight_decay=1e-4)
    stage1 = StageState(1, optimizer1, make_scheduler(optimizer1, 100), StageLoss(args.loss))
    stage1_ms = step_times(model, stage1, args.amp, batch, device, args.iterations)

    cpa = torch.linspace(0.9, 0.1, args.classes)
    sampler = PixelSampler(keep_probabilities(cpa, "min").to(device))
    params = model.freeze_for_stage2(args.trains)
    optimizer2 = make_optimizer(params, 0.01, momentum=0.9, weight_decay=1e-4)
    stage2 = StageState(2, optimizer2, make_scheduler(optimizer2, 100), StageLoss("ce", sampler=sampler))
    stage2_ms = step_times(model, stage2, args.amp, batch, device, args.iterations)

    sample_ms = []
    for i in range(50):
        start = time.perf_counter()
        sampler(target, seeded_generator(0, 1, i, device=device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        sample_ms.append((time.perf_counter() - start) * 1e3)

    step1, step2, sampling = median(stage1_ms), median(stage2_ms), median(sample_ms)
    print(f"{args.architecture}/{args.encoder or 'its own encoder'}, stage-1 loss {args.loss} "
          f"+ aux heads {list(model.aux_losses)}, "
          f"{args.classes} classes, batch {args.batch} x {args.size}x{args.size}, {device}, amp {args.amp}, "
          f"torch threads {torch.get_num_threads()}, stage 2 trains {args.trains}")
    print(f"stage-1 step    {step1:8.1f} ms (median of {len(stage1_ms)})")
    print(f"stage-2 step    {step2:8.1f} ms = {step2 / step1:.2f}x stage 1 (target <= 0.5)")
    print(f"PRA sampling    {sampling:8.2f} ms = {100 * sampling / step2:.2f}% of a stage-2 step (target <= 3%)")


if __name__ == "__main__":
    main()
