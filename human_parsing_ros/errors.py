"""One-line errors: what the package and the trainer say when a file cannot be read or an input is wrong.

``one_line`` shortens a library's message; ``run_cli`` runs a command-line entry point so that a user's
mistake (a missing or broken file, an unknown name) ends in one line on stderr and exit status 1, while a bug
keeps its traceback. ``--debug`` or ``HUMAN_PARSING_DEBUG=1`` shows the traceback of user errors too.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

DEBUG_ENV = "HUMAN_PARSING_DEBUG"
DEBUG_FLAG = "--debug"


class UserError(Exception):
    """Marks an error caused by what the user gave (a file, a name, a value), not by a bug: its message says
    what is wrong and names the thing, and a command-line tool shows just that message. Package errors derive
    from it together with the built-in type they refine (``class SchpImportError(UserError, ValueError)``)."""


def flattened(error: BaseException) -> str:
    """``error``'s whole message on one line (whitespace and line breaks collapsed), or "(no message)"."""
    return " ".join(str(error).split()) or "(no message)"


def one_line(error: BaseException) -> str:
    """``error`` as "Type: first line of its message" (libraries often raise multi-line messages)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


# What run_cli always reports in one line: UserError (WeightsError, SchpImportError, ClassSetError, ... derive
# from it), and file-system errors (missing file, a directory where a file should be, no permission, disk full).
# A command may add library errors it knows to be the user's: run_cli(main, extra_user_errors=(SomeError,)).
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, OSError)


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    """True when ``argv`` (default: the process's arguments) holds ``--debug`` or HUMAN_PARSING_DEBUG is set to
    anything but empty or 0."""
    args = sys.argv[1:] if argv is None else argv
    return DEBUG_FLAG in args or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def add_debug_flag(parser) -> None:
    """Add ``--debug`` to an argparse parser (``run_cli`` acts on it; the parser only documents it)."""
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help=f"show the full traceback of any error (or set {DEBUG_ENV}=1)")


def user_message(error: BaseException) -> str:
    """The one line a user sees for ``error``: its message's first line (a file-system error's message names
    the file), else its type."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def run_cli(main: Callable[[list[str] | None], object], argv: Sequence[str] | None = None, prog: str | None = None,
            extra_user_errors: tuple[type[BaseException], ...] = ()) -> None:
    """Call ``main(argv)`` as a command's entry point: a user error (``USER_ERRORS`` and ``extra_user_errors``,
    e.g. ``WeightsError``) is printed as ``prog: message`` in one line on stderr and exits with status 1; any
    other exception keeps its traceback. With ``--debug`` in ``argv`` or HUMAN_PARSING_DEBUG=1 user errors keep
    theirs too. Ctrl-C exits with status 130 without a traceback. ``main``'s own ``sys.exit`` passes through."""
    args = list(sys.argv[1:] if argv is None else argv)
    prog = prog or os.path.basename(sys.argv[0]) or "human_parsing"
    try:
        main(args)
    except KeyboardInterrupt:
        if debug_requested(args):
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if debug_requested(args) or not isinstance(error, USER_ERRORS + tuple(extra_user_errors)):
            raise
        print(f"{prog}: {user_message(error)}", file=sys.stderr, flush=True)
        sys.exit(1)
