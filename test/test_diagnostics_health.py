"""diagnostics.health and Reporter without a node: behind the camera (#35) and the weights' detection limit."""
import time

import pytest

pytest.importorskip("diagnostic_msgs")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402

from human_parsing_ros.ros.diagnostics import (  # noqa: E402
    STAGE_ADVICE,
    Behind,
    FrameStats,
    NodeState,
    Reporter,
    health,
)
from human_parsing_ros.ros.parameters import PARAMS  # noqa: E402

DEFAULTS = {param.name: param.default for param in PARAMS}
STATE = NodeState(finalized=False, error="", active=True, input_topic="/cam/image_raw", multi_person=True,
                  detection_limit=20)


def _receiving(stats: FrameStats) -> None:
    now = time.monotonic()
    stats.received.tick(now - 0.2)
    stats.received.tick(now)


def test_the_window_counts_received_and_processed_frames_over_the_last_seconds():
    stats = FrameStats()
    start = stats.activated_at
    reporter = Reporter(stats)
    assert reporter.behind(3.0, start + 1.0) is None  # not watched for 3 s yet
    for k in range(30):
        stats.received.tick(start + 1.0 + k * 0.1)
    stats.published.tick(start + 2.0)
    stats.reject("a bomb")  # a refused frame was processed too
    assert reporter.behind(3.0, start + 2.0) is None
    behind = reporter.behind(3.0, start + 4.0)
    assert behind == Behind(received=30, processed=2, seconds=3.0)
    assert reporter.behind(3.0, start + 8.0) == Behind(0, 0, pytest.approx(4.0))  # only the last samples count


def test_behind_warns_naming_the_slowest_stage_and_what_to_do():
    stats = FrameStats()
    _receiving(stats)
    for stage, ms in {"decode": 4.0, "forward": 950.0, "labels": 10.0, "publish": 2.0}.items():
        stats.stage_ms[stage].add(ms)
    values = {**DEFAULTS, "min_processed_ratio": 0.5}
    level, message = health(stats, values.get, STATE, 0, behind=Behind(received=40, processed=4, seconds=10.0))
    assert level == DiagnosticStatus.WARN
    assert message.startswith("behind the camera: processed 4 of 40 frames received in the last 10 s (10%")
    assert "forward takes 950 of 966 ms" in message and STAGE_ADVICE["forward"] in message
    # half processed is not below 0.5; too few frames say nothing; 0 turns it off
    assert health(stats, values.get, STATE, 0, behind=Behind(40, 20, 10.0)) == (DiagnosticStatus.OK, "running")
    assert health(stats, values.get, STATE, 0, behind=Behind(4, 0, 10.0)) == (DiagnosticStatus.OK, "running")
    off = {**values, "min_processed_ratio": 0.0}
    assert health(stats, off.get, STATE, 0, behind=Behind(40, 0, 10.0)) == (DiagnosticStatus.OK, "running")
    stats.stage_ms["decode"].add(5000.0)
    stats.stage_ms["decode"].add(5000.0)
    message = health(stats, values.get, STATE, 0, behind=Behind(40, 4, 10.0))[1]
    assert "decode takes" in message and STAGE_ADVICE["decode"] in message


def test_frames_at_the_weights_detection_limit_warn_that_more_may_have_been_cut():
    stats = FrameStats()
    _receiving(stats)
    level, message = health(stats, DEFAULTS.get, STATE, 0, limit_frames_recently=3)
    assert level == DiagnosticStatus.WARN
    assert "3 frames" in message and "(20)" in message and "cannot be counted" in message
    assert health(stats, DEFAULTS.get, STATE, 0) == (DiagnosticStatus.OK, "running")


def test_depth_that_stops_or_arrives_without_giving_3d_is_a_warning():
    from dataclasses import replace

    from human_parsing_ros.ros.diagnostics import DepthState

    stats = FrameStats()
    _receiving(stats)
    stats.published.tick()
    flowing = DepthState("/cam/depth", silent_s=0.1, without_3d_s=0.1, exact=10, nearest=0, unpaired=0, rejected=0,
                         last_rejection="")
    value_of = DEFAULTS.get
    assert health(stats, value_of, replace(STATE, depth=flowing), 0)[0] == DiagnosticStatus.OK
    stopped = replace(flowing, silent_s=5.0, without_3d_s=5.0)
    level, message = health(stats, value_of, replace(STATE, depth=stopped), 0)
    assert level == DiagnosticStatus.WARN and message.startswith("no depth on /cam/depth for 5 s")
    useless = replace(flowing, without_3d_s=5.0, unpaired=40)  # depth arrives, stamps never close enough
    level, message = health(stats, value_of, replace(STATE, depth=useless), 0)
    assert level == DiagnosticStatus.WARN and "no frame got 3D for 5 s" in message
    assert "depth_sync_tolerance_ms" in message
