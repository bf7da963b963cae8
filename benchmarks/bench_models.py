"""Model zoo figures: parameters, FLOPs, CPU latency, and GPU fp16 throughput when there is a GPU.

    .venv/bin/python benchmarks/bench_models.py [--size 473 --classes 59 --threads 2]

Every registered architecture (and the named variants below) at --size x --size
with --classes classes, aux heads off (parameters of training-only heads, such as C-DLinkNet's
deep supervision and STDC's detail head, are not counted: the parse never runs them). FLOPs are counted by PyTorch's
FlopCounterMode (multiply-adds count as 2 FLOPs). CPU latency: batch 1, median.
On CUDA: fp16, channels-last, batch 1 and 8, images per second.
"""
from __future__ import annotations

import argparse
import time

import torch

from human_parsing_ros.models import build_model, semantic_architectures

# (label, architecture, arguments): architectures with variants are listed per variant.
VARIANTS = {
    "deeplabv3plus": [("DeepLabv3+ MobileNetV2 (default)", {}),
                      ("DeepLabv3+ ResNet-50", {"encoder": "resnet50", "decoder_channels": 256})],
    "stdc": [("STDC1-Seg", {"variant": "stdc1"}), ("STDC2-Seg", {"variant": "stdc2"})],
    "cdlinknet": [("C-DLinkNet ResNet-101", {})],
    "ddrnet": [("DDRNet-23-slim", {"variant": "23-slim"}), ("DDRNet-23", {"variant": "23"})],
    "ce2p": [("CE2P ResNet-101 (SCHP's)", {}), ("CE2P MobileNetV2", {"encoder": "mobilenet_v2"})],
}


def entries() -> list[tuple[str, str, dict]]:
    out = []
    for name in semantic_architectures():
        for label, args in VARIANTS.get(name, [(name, {})]):
            out.append((label, name, args))
    return out


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def median_ms(fn, iterations: int, sync=lambda: None) -> float:
    times = []
    for i in range(iterations + 2):
        start = time.perf_counter()
        fn()
        sync()
        if i >= 2:
            times.append((time.perf_counter() - start) * 1e3)
    return float(torch.tensor(times).median())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=473)
    parser.add_argument("--classes", type=int, default=59)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="architecture names to include")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    print(f"{args.size}x{args.size}, {args.classes} classes, aux off; CPU {args.threads} threads"
          + (f"; GPU {torch.cuda.get_device_name()}" if cuda else "; no GPU"))
    print("| network | params (M) | GFLOPs | CPU ms (batch 1) |" + (" GPU fp16 img/s b1 | b8 |" if cuda else ""))
    print("| --- | --- | --- | --- |" + (" --- | --- |" if cuda else ""))
    for label, name, extra in entries():
        if args.only and name not in args.only:
            continue
        torch.manual_seed(0)
        model = build_model(name, num_classes=args.classes, **extra).eval()
        params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("aux_heads.")) / 1e6
        x = torch.randn(1, 3, args.size, args.size)
        flops = count_flops(model, x) / 1e9
        with torch.inference_mode():
            cpu = median_ms(lambda m=model, t=x: m(t), args.iterations)
        row = f"| {label} | {params:.2f} | {flops:.1f} | {cpu:.0f} |"
        if cuda:
            gpu = model.cuda().half().to(memory_format=torch.channels_last)
            rates = []
            for batch in (1, 8):
                xb = torch.randn(batch, 3, args.size, args.size, device="cuda", dtype=torch.half).contiguous(
                    memory_format=torch.channels_last)
                with torch.inference_mode():
                    ms = median_ms(lambda m=gpu, t=xb: m(t), 20, torch.cuda.synchronize)
                rates.append(batch * 1000.0 / ms)
            row += f" {rates[0]:.0f} | {rates[1]:.0f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
