"""One-line error texts: what the package and the trainer say when a file cannot be read."""
from __future__ import annotations


def one_line(error: BaseException) -> str:
    """``error`` as "Type: first line of its message" (libraries often raise multi-line messages)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
