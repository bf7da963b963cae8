"""The node's health on /diagnostics: what the frame path counts (``FrameStats``), the level and message that
it and the node's state give (``health``), and the key/values published with them (``figures``)."""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from ..runtime import LatencyWindow, RateMeter

# A frame's steps inside the node, each timed (diagnostics <stage>_ms_p50): decode the message, the
# parser's own steps (HumanParser.parse timings), then build and publish the outputs.
FRAME_STAGES = ("decode", "preprocess", "forward", "labels", "statistics", "publish")
# What to do when a stage takes most of a frame's time and the node falls behind its camera (docs/ros_api.md,
# "Behaviour").
STAGE_ADVICE = {
    "decode": "decoding the input: raw instead of compressed input, or a lower camera resolution",
    "preprocess": "resizing the camera image: a lower camera resolution, or a GPU (device)",
    "forward": "the network: lighter weights, a smaller input_size, or a GPU (device)",
    "labels": "mapping the labels to the camera's size: output_resolution network, or a lower camera resolution",
    "statistics": "the parts statistics: output_resolution network, or a lower camera resolution",
    "publish": "publishing: turn off outputs nobody uses (publish_color, publish_overlay, publish_masks)",
}
# Fewer frames received than this over behind_warning_s say nothing about keeping up (a paused camera).
BEHIND_MIN_FRAMES = 5


class FrameStats:
    """Counts and times of the frames since start-up, written by the image callback and the frame loop."""

    def __init__(self) -> None:
        self.received = RateMeter()
        self.published = RateMeter()
        self.rejected = 0
        self.last_rejection: tuple[float, str] | None = None  # when and why the last frame was refused
        self.last_input = ""  # encoding and size of the last frame taken for parsing
        self.pending_since: float | None = None  # first frame received since the last output
        self.inference_ms = LatencyWindow()
        self.stage_ms = {stage: LatencyWindow() for stage in FRAME_STAGES}  # where a frame's time goes
        self.end_to_end_ms = LatencyWindow()
        self.warmup_ms = float("nan")
        self.activated_at = time.monotonic()
        self.persons_last = 0  # persons in the last frame
        self.persons_dropped = 0  # persons left out by max_persons, all frames
        self.detection_limit_frames = 0  # frames whose persons above the threshold filled the weights' limit

    def activated(self, warmup_ms: float) -> None:
        """A new activate: what was received or published before counts no more."""
        self.warmup_ms = warmup_ms
        self.activated_at = time.monotonic()
        self.pending_since = None

    def since_activated(self, meter: RateMeter) -> float | None:
        """When ``meter`` last ticked, if it has since the last activate (time spent inactive is no silence)."""
        last = meter.last
        return last if last is not None and last >= self.activated_at else None

    def reject(self, reason: str) -> str:
        """Count a refused frame and keep why (diagnostics show it); returns ``reason``."""
        self.rejected += 1
        self.last_rejection = (time.monotonic(), reason)
        return reason


@dataclass(frozen=True)
class NodeState:
    """What diagnostics need to know of the node besides its frames."""

    finalized: bool
    error: str  # why the last transition failed; "" when none did
    active: bool  # a parser is on the device
    input_topic: str
    weights_path: str = ""
    model: str = "not loaded"
    multi_person: bool = False  # the parse reports persons (multi-person weights, or map persons)
    detection_limit: int | None = None  # multi-person weights: the most persons the network returns per frame
    backend: str = ""  # what runs the network: "torch", or "onnxruntime (<its execution provider>)"
    precision: str = ""  # the dtype the network runs in
    depth: DepthState | None = None  # depth_input on: how its pairing goes


@dataclass(frozen=True)
class DepthState:
    """The depth input as diagnostics see it."""

    topic: str
    silent_s: float  # since the last depth image (since subscribing when none came)
    without_3d_s: float  # since a colour frame last got usable depth (since subscribing when none did)
    exact: int  # colour frames paired with a depth image of the same stamp
    nearest: int  # paired with the nearest one within depth_sync_tolerance_ms
    unpaired: int  # no depth image close enough: 2D only
    rejected: int  # depth images or camera_infos that could not be used
    last_rejection: str


@dataclass(frozen=True)
class Behind:
    """Frames received and processed (published or refused) over the last ``seconds``."""

    received: int
    processed: int
    seconds: float


def slowest_stage(stats: FrameStats) -> tuple[str, float, float]:
    """The stage taking the most of a frame's time (p50s of the recent frames): (stage, its ms, all stages' ms)."""
    medians = {stage: window.percentiles(50)[0] for stage, window in stats.stage_ms.items()}
    medians = {stage: ms for stage, ms in medians.items() if ms == ms}  # NaN: no frame yet
    if not medians:
        return "forward", float("nan"), float("nan")
    stage = max(medians, key=medians.get)
    return stage, medians[stage], sum(medians.values())


def behind_message(stats: FrameStats, behind: Behind, ratio: float) -> str:
    stage, stage_ms, frame_ms = slowest_stage(stats)
    return (f"behind the camera: processed {behind.processed} of {behind.received} frames received in the last "
            f"{behind.seconds:.0f} s ({behind.processed / behind.received:.0%}, below min_processed_ratio "
            f"{ratio:g}); {stage} takes {stage_ms:.0f} of {frame_ms:.0f} ms a frame (p50): {STAGE_ADVICE[stage]}")


def health(stats: FrameStats, value_of: Callable[[str], Any], state: NodeState, dropped_recently: int,
           persons_dropped_recently: int = 0, behind: Behind | None = None,
           limit_frames_recently: int = 0) -> tuple[bytes, str]:
    """Diagnostics level and message; only reads (``dropped_recently``: frame drops since the last report;
    ``persons_dropped_recently``: persons beyond max_persons since then; ``behind``: frames received and
    processed over the last behind_warning_s, None until that long has been watched; ``limit_frames_recently``:
    frames at the weights' detection limit since the last report; ``value_of``: a parameter's value)."""
    if state.finalized:
        return DiagnosticStatus.STALE, "finalized (lifecycle shutdown): no more outputs"
    if state.error:
        return DiagnosticStatus.ERROR, state.error
    if not state.active:
        return DiagnosticStatus.OK, "inactive"
    now = time.monotonic()
    last_in = stats.since_activated(stats.received)
    stall = value_of("stall_timeout_s")
    # waiting: since the first frame that arrived after the last output (a camera that pauses and
    # resumes is not a stall, nor is a frame that arrives late after activate)
    pending = stats.pending_since
    waiting = now - max(pending, stats.activated_at) if pending is not None else 0.0
    if last_in is not None and now - last_in < stall and waiting > stall:
        rejection = stats.last_rejection
        if rejection is not None and rejection[0] >= now - waiting:
            return DiagnosticStatus.ERROR, f"rejecting frames, none published for {stall:.0f} s: {rejection[1]}"
        return DiagnosticStatus.ERROR, f"stalled: frames arriving, none published for {stall:.0f} s"
    if last_in is None or now - last_in > value_of("no_image_warning_s"):
        return DiagnosticStatus.WARN, f"no image on {state.input_topic}"
    depth, depth_timeout = state.depth, value_of("depth_timeout_s")
    if depth is not None and depth.silent_s > depth_timeout:
        reason = f": {depth.last_rejection}" if depth.last_rejection else ""
        return DiagnosticStatus.WARN, f"no depth on {depth.topic} for {depth.silent_s:.0f} s: 2D outputs only{reason}"
    if depth is not None and depth.without_3d_s > depth_timeout:
        reason = depth.last_rejection or "no depth image within depth_sync_tolerance_ms of the colour stamps"
        return (DiagnosticStatus.WARN, f"depth arrives on {depth.topic} but no frame got 3D for "
                f"{depth.without_3d_s:.0f} s: {reason}")
    ratio = value_of("min_processed_ratio")
    if (ratio > 0 and behind is not None and behind.received >= BEHIND_MIN_FRAMES
            and behind.processed < ratio * behind.received):
        return DiagnosticStatus.WARN, behind_message(stats, behind, ratio)
    minimum = value_of("min_output_rate_hz")
    if minimum > 0 and now - stats.activated_at >= stats.published.window_s:
        rate = stats.published.rate(now)
        if rate < minimum:
            return (DiagnosticStatus.WARN, f"slow: output {rate:.1f} Hz, below min_output_rate_hz "
                    f"({minimum:g}); dropped {dropped_recently} frames in the last second")
    if persons_dropped_recently:
        return (DiagnosticStatus.WARN, f"capped: {persons_dropped_recently} persons beyond max_persons "
                f"({value_of('max_persons')}) dropped in the last second")
    if limit_frames_recently:
        return (DiagnosticStatus.WARN, f"capped: {limit_frames_recently} frames in the last second had as many "
                f"persons above person_threshold as the weights return ({state.detection_limit}); persons "
                "beyond that limit are cut by the network and cannot be counted")
    limit = value_of("max_latency_ms")
    if limit > 0 and stats.end_to_end_ms.percentiles(50)[0] > limit:
        return DiagnosticStatus.WARN, f"slow: end-to-end p50 above {limit:.0f} ms"
    return DiagnosticStatus.OK, "running"


def figures(stats: FrameStats, state: NodeState, dropped_total: int) -> dict[str, Any]:
    """The key/values of the diagnostics status (``dropped_total``: frames overwritten in the mailbox)."""
    inference_p50, inference_p99 = stats.inference_ms.percentiles(50, 99)
    end_to_end_p50, end_to_end_p99 = stats.end_to_end_ms.percentiles(50, 99)
    last_rejection = stats.last_rejection
    return {
        "input_topic": state.input_topic, "input_rate_hz": f"{stats.received.rate():.2f}",
        "output_rate_hz": f"{stats.published.rate():.2f}", "frames_received": stats.received.total,
        "frames_published": stats.published.total, "frames_dropped": dropped_total,
        "frames_rejected": stats.rejected, "last_input": stats.last_input,
        "last_rejection": last_rejection[1] if last_rejection else "",
        "inference_ms_p50": f"{inference_p50:.1f}", "inference_ms_p99": f"{inference_p99:.1f}",
        "end_to_end_ms_p50": f"{end_to_end_p50:.1f}", "end_to_end_ms_p99": f"{end_to_end_p99:.1f}",
        "warmup_ms": f"{stats.warmup_ms:.1f}", "weights": state.weights_path, "model": state.model,
        "backend": state.backend, "precision": state.precision,
        **({"depth_pairs_exact": state.depth.exact, "depth_pairs_nearest": state.depth.nearest,
            "frames_without_depth": state.depth.unpaired, "depth_rejected": state.depth.rejected,
            "depth_last_rejection": state.depth.last_rejection} if state.depth is not None else {}),
        **({"persons": stats.persons_last, "persons_dropped": stats.persons_dropped,
            "detection_limit": state.detection_limit, "frames_at_detection_limit": stats.detection_limit_frames}
           if state.active and state.multi_person else {}),
        **{f"{stage}_ms_p50": f"{window.percentiles(50)[0]:.1f}" for stage, window in stats.stage_ms.items()},
    }


class Reporter:
    """One DiagnosticStatus a second: the level counts only the drops since the previous report."""

    def __init__(self, stats: FrameStats) -> None:
        self._stats = stats
        self._dropped_reported = 0
        self._persons_dropped_reported = 0
        self._limit_frames_reported = 0
        self._counts: deque[tuple[float, int, int]] = deque()  # (when, frames received, frames processed)

    def behind(self, seconds: float, now: float | None = None) -> Behind | None:
        """Record the counts now; the frames received and processed over the last ``seconds`` (None until the
        node has been active that long)."""
        stats = self._stats
        now = time.monotonic() if now is None else now
        counts = self._counts
        counts.append((now, stats.received.total, stats.published.total + stats.rejected))
        while counts and counts[0][0] < stats.activated_at:  # a new activate starts a new watch
            counts.popleft()
        while len(counts) > 1 and counts[1][0] <= now - seconds:  # keep one sample at least ``seconds`` old
            counts.popleft()
        then, received, processed = counts[0]
        if now - then < seconds:
            return None
        return Behind(counts[-1][1] - received, counts[-1][2] - processed, now - then)

    def status(self, name: str, hardware_id: str, value_of: Callable[[str], Any], state: NodeState,
               dropped_total: int) -> DiagnosticStatus:
        persons_dropped = self._stats.persons_dropped
        limit_frames = self._stats.detection_limit_frames
        status = DiagnosticStatus(name=name, hardware_id=hardware_id)
        status.level, status.message = health(self._stats, value_of, state, dropped_total - self._dropped_reported,
                                              persons_dropped - self._persons_dropped_reported,
                                              self.behind(value_of("behind_warning_s")),
                                              limit_frames - self._limit_frames_reported)
        self._dropped_reported = dropped_total
        self._persons_dropped_reported = persons_dropped
        self._limit_frames_reported = limit_frames
        status.values = [KeyValue(key=key, value=str(value))
                         for key, value in figures(self._stats, state, dropped_total).items()]
        return status
