"""The trainer's command-line entry points: a user's mistake (a missing or wrong file, a recipe key or value, a
dataset, weights or checkpoint the trainer cannot use, a full disk) ends in one line on stderr and a non-zero
exit status; a bug keeps its traceback, as does every error under ``--debug`` or HUMAN_PARSING_DEBUG=1."""
from __future__ import annotations

import sys
from collections.abc import Callable

from human_parsing_ros.errors import one_line, run_cli
from training.checkpoint import DiskFullError, is_disk_full


def run_training_cli(main: Callable[[list[str] | None], int | None], prog: str) -> None:
    """Run ``main(argv)`` as command ``prog`` (``errors.run_cli``); its return value is the exit status."""
    def call(argv: list[str] | None) -> None:
        try:
            code = main(argv)
        except Exception as error:  # a full disk under any library's error type: one line, not its traceback
            if isinstance(error, DiskFullError) or not is_disk_full(error):
                raise
            raise DiskFullError(f"no space left on device ({one_line(error)})") from error
        if code:
            sys.exit(code)

    run_cli(call, prog=prog)  # the trainer's errors, WeightsError included, derive from UserError
