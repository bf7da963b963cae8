"""The newest-frame mailbox and the meters behind the node's no-backlog policy and diagnostics."""
import threading
import time

from human_parsing_ros.runtime import LatencyWindow, LatestSlot, RateMeter, summary


def test_slot_keeps_only_the_newest_item_and_counts_the_rest_as_dropped():
    slot = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True and slot.put(3) is True
    assert slot.take(timeout=0) == 3 and slot.dropped == 2
    assert slot.take(timeout=0.01) is None
    slot.put(4)
    slot.clear()
    assert slot.take(timeout=0) is None and slot.dropped == 2


def test_slot_wakes_a_waiting_taker_at_once():
    slot = LatestSlot()
    got = []
    taker = threading.Thread(target=lambda: got.append((slot.take(timeout=5.0), time.monotonic())))
    taker.start()
    time.sleep(0.1)
    put_at = time.monotonic()
    slot.put("frame")
    taker.join(2.0)
    assert got and got[0][0] == "frame" and got[0][1] - put_at < 0.5


def test_rate_meter_measures_events_per_second_in_its_window():
    meter = RateMeter(window_s=5.0)
    for i in range(11):
        meter.tick(now=100.0 + i * 0.1)  # 10 Hz for one second
    assert abs(meter.rate(now=101.0) - 10.0) < 1e-6
    assert meter.rate(now=200.0) == 0.0 and meter.total == 11


def test_latency_window_percentiles_and_summary():
    window = LatencyWindow(size=100)
    for value in range(1, 201):
        window.add(float(value))  # only the last 100 (101..200) remain
    p50, p99 = window.percentiles(50, 99)
    assert abs(p50 - 150.5) < 1e-9 and 198 < p99 <= 200
    stats = summary([1.0, 2.0, 3.0])
    assert stats["n"] == 3 and stats["p50"] == 2.0 and stats["mean"] == 2.0
