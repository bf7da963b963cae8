"""The ``parser_node`` process: take over the stop signals first, then import, run and tear down the node.

SIGINT and SIGTERM are blocked from the first line of ``main``, before rclpy, DDS or
PyTorch start a thread (threads inherit the mask), and one thread takes them with
``sigwait``. No Python or rclpy handler exists that shutdown could remove, so any
number of signals, at any moment, end the process with exit code 0: during the
imports at once (nothing to tear down yet, no traceback), later through the node's
ordered teardown (``run``). So this module imports rclpy and the node only inside
``run`` and ``spin_until``; the node never imports this module.

    python -m human_parsing_ros.ros.process --ros-args ...    # what the parser_node script runs
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

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


def spin_until(stop: threading.Event, executor: Any) -> None:
    """Spin ``executor`` until ``stop`` is set; join this thread before destroying what it spins."""
    import rclpy

    while not stop.is_set() and rclpy.ok():
        executor.spin_once(timeout_sec=0.1)


def run(stop: threading.Event, args: list[str] | None = None) -> None:
    """The node's process until ``stop`` is set (a signal) or the node is finalized, then one ordered teardown.

    The caller owns the signals (``main``): rclpy installs no handler, so nothing that rclpy does at
    shutdown can turn a late Ctrl-C into an abort or a non-zero exit.
    """
    import rclpy  # rclpy, the DDS library and PyTorch: seconds
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.signals import SignalHandlerOptions

    from .node import HumanParserNode

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = HumanParserNode(sys.argv if args is None else args)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=spin_until, args=(stop, executor), name="ros_executor", daemon=True)
    try:
        if not stop.is_set() and node.param("autostart") \
                and node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()
        spinner.start()
        node.frames.serve(lambda: not stop.is_set() and not node.finalized.is_set() and rclpy.ok())
    finally:
        stop.set()
        if spinner.is_alive():
            spinner.join()  # nothing below may run while the executor still waits on the node
        node.release_parser()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


def main(args: list[str] | None = None) -> None:
    stop, running = take_stop_signals()
    import rclpy  # noqa: F401  (the slow imports, while a signal still ends the process at once)

    from . import node  # noqa: F401

    running.set()
    run(stop, args)


if __name__ == "__main__":
    main()
