"""Where and in what precision the torch backend runs: device and precision names, torch.compile modes."""
from __future__ import annotations

from collections.abc import Callable

import torch

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# torch.compile of the network: none (eager), one of torch.compile's modes ("reduce-overhead" captures
# CUDA graphs of inductor's kernels), or "cudagraphs" (CUDA graphs of the eager kernels: no code
# generation, so it compiles in seconds; GPU only). The first parses compile; warmup() does it.
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "cudagraphs")


def resolve_device(spec: str) -> torch.device:
    """``auto`` (CUDA if there is one), ``cpu``, ``cuda`` or ``cuda:N``; ValueError otherwise."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device '{spec}' requested but CUDA is not available")
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device '{spec}' requested but only {torch.cuda.device_count()} CUDA devices exist")
        return device
    raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not '{spec}'")


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype, str | None]:
    """The dtype to run in, and a warning when the request had to be changed for this device."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not '{precision}'")
    if device.type == "cpu" and precision == "fp16":
        return torch.float32, "fp16 is not fast on CPU; running fp32"
    return PRECISIONS[precision], None


def compiled(network: Callable, compile_mode: str, device: torch.device) -> Callable:
    if compile_mode == "none":
        return network
    if compile_mode == "cudagraphs":
        if device.type != "cuda":
            raise ValueError(f"compile mode 'cudagraphs' needs a CUDA device, not {device}")
        return torch.compile(network, backend="cudagraphs", dynamic=False)
    return torch.compile(network, mode=compile_mode, dynamic=False)
