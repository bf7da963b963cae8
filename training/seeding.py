"""Randomness of a run: seeds derived from (seed, epoch, step, rank, ...) and the global RNG states.

Every random choice of the trainer (data order, augmentation, dropout, PRA
draws) comes from a seed that ``mix_seed`` derives from the run's seed and
where in the run it is, so the checkpoint only needs the global RNG states
(``capture_rng_states``) for a resumed run to repeat an uninterrupted one.
"""
from __future__ import annotations

import torch


def mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (deterministic, order-sensitive)."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value * 6364136223846793005 + int(part) + 1442695040888963407) % (1 << 63)
    return value


def seeded_generator(*parts: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``mix_seed(*parts)``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(mix_seed(*parts))
    return generator


def capture_rng_states() -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """torch's global CPU RNG state and, when CUDA is available, every device's."""
    states: dict[str, torch.Tensor | list[torch.Tensor]] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    """Undo ``capture_rng_states`` (the CUDA states only where CUDA is available)."""
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():  # a machine with fewer GPUs restores those it has
        for index, state in enumerate(states["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, index)
