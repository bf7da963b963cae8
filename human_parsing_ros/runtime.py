"""Thread-safe pieces of the node's frame path that need no ROS: the newest-frame slot and the meters."""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds at most one pending item; a newer one replaces it and counts as a drop.

    The subscription callback puts, the worker takes, so a camera faster than
    the model never builds a queue: the worker always gets the newest frame.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Store ``item``; True if it replaced one the worker never saw."""
        with self._cond:
            replaced = self._item is not None
            if replaced:
                self.dropped += 1
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """The pending item, waiting up to ``timeout``; None on time-out."""
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def clear(self) -> None:
        """Forget the pending item (not counted as a drop)."""
        with self._cond:
            self._item = None


class RateMeter:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self.total = 0
        self.last: float | None = None

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(now)
            self.total += 1
            self.last = now
            self._trim(now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._times) < 2:
                return 0.0
            span = max(now - self._times[0], self._times[-1] - self._times[0])
            return (len(self._times) - 1) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()


class LatencyWindow:
    """The last ``size`` latencies (ms), with percentiles."""

    def __init__(self, size: int = 200) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value_ms: float) -> None:
        with self._lock:
            self._values.append(value_ms)

    def percentiles(self, *quantiles: float) -> list[float]:
        """The given percentiles (0..100) of the window; NaN for each while it is empty."""
        with self._lock:
            if not self._values:
                return [float("nan")] * len(quantiles)
            values = np.fromiter(self._values, dtype=np.float64)
        return [float(np.percentile(values, quantile)) for quantile in quantiles]

    def __len__(self) -> int:
        return len(self._values)


def summary(values: list[float]) -> dict[str, Any]:
    """p50 / p99 / mean / count of a list of figures (for benchmarks and reports)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "mean": float("nan")}
    return {"n": int(arr.size), "p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)),
            "mean": float(arr.mean())}
