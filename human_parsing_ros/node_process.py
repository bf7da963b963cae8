"""The ``parser_node`` process: take over the stop signals first, then import, run and tear down the node.

SIGINT and SIGTERM are blocked from the first line of ``main``, before rclpy, DDS or
PyTorch start a thread (threads inherit the mask), and one thread takes them with
``sigwait``. No Python or rclpy handler exists that shutdown could remove, so any
number of signals, at any moment, end the process with exit code 0: during the
imports at once (nothing to tear down yet, no traceback), later through the node's
ordered teardown (``node.run``).
"""
from __future__ import annotations

import os
import signal
import threading

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


def take_stop_signals() -> tuple[threading.Event, threading.Event]:
    """Block SIGINT/SIGTERM in this thread and its future threads; a daemon thread takes them.

    Returns (``stop``: set by the first signal, ``running``: set by the caller once there is
    something to tear down; a signal before that ends the process at once with 0).
    """
    stop, running = threading.Event(), threading.Event()
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    def take() -> None:
        while True:
            signal.sigwait(STOP_SIGNALS)
            if not running.is_set():
                os._exit(0)  # still importing: nothing to release, and no KeyboardInterrupt traceback
            stop.set()

    threading.Thread(target=take, name="stop_signals", daemon=True).start()
    return stop, running


def main(args: list[str] | None = None) -> None:
    stop, running = take_stop_signals()
    from .node import run  # rclpy, the DDS library and PyTorch: seconds

    running.set()
    run(stop, args)


if __name__ == "__main__":
    main()
