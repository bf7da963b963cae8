"""HumanParser: a weights file in, label maps and part presence out. No ROS anywhere.

    parser = HumanParser("model.safetensors", device="auto", precision="fp16")
    result = parser.parse(rgb_uint8_image)
    result.labels            # H x W uint8 class ids at the image's resolution
    result.presence(0.005)   # per-class messages.Part: presence, pixel fraction, box, confidence
    parser.parse(image, resize_mode="stretch", flip_tta=True)  # per-call options (validated)
    HumanParser(..., device="cuda", precision="fp16", compile_mode="reduce-overhead")  # torch.compile, CUDA graphs
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .class_sets import ClassSet
from .inference import (
    ClassStatistics,
    Placement,
    class_statistics,
    confidence_map,
    logits_to_labels,
    merge_flipped,
    network_input,
    place_image,
)
from .messages import Part
from .models import SegmentationModel
from .multi_person import merge_persons
from .weights import WeightsInfo, check_input_size, load_weights

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
RESIZE_MODES = ("letterbox", "stretch")
# torch.compile of the network: none (eager), one of torch.compile's modes ("reduce-overhead" captures
# CUDA graphs of inductor's kernels), or "cudagraphs" (CUDA graphs of the eager kernels: no code
# generation, so it compiles in seconds; GPU only). The first parses compile; warmup() does it.
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "cudagraphs")
OUTPUT_RESOLUTIONS = ("input", "network")


def resolve_device(spec: str) -> torch.device:
    """``auto`` (CUDA if there is one), ``cpu``, ``cuda`` or ``cuda:N``; ValueError otherwise."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device '{spec}' requested but CUDA is not available")
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device '{spec}' requested but only {torch.cuda.device_count()} CUDA devices exist")
        return device
    raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not '{spec}'")


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype, str | None]:
    """The dtype to run in, and a warning when the request had to be changed for this device."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not '{precision}'")
    if device.type == "cpu" and precision == "fp16":
        return torch.float32, "fp16 is not fast on CPU; running fp32"
    return PRECISIONS[precision], None


def check_resize_mode(mode: str) -> str:
    """``mode`` if it is a resize mode; ValueError naming it otherwise."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, not '{mode}'")
    return mode


def check_flip_tta(flip_tta: bool) -> bool:
    """``flip_tta`` as a bool; ValueError for anything but True or False."""
    if not isinstance(flip_tta, (bool, np.bool_)):
        raise ValueError(f"flip_tta must be True or False, not '{flip_tta}'")
    return bool(flip_tta)


def check_person_threshold(value: Any) -> float:
    """``value`` as a score threshold in [0, 1]; ValueError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"person_threshold must be a number within 0..1, not {value!r}")
    return float(value)


def check_max_persons(value: Any) -> int:
    """``value`` as a person cap (1..255: ids must fit a mono8 image); ValueError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= 255:
        raise ValueError(f"max_persons must be an integer within 1..255, not {value!r}")
    return int(value)


def _compiled(network: Callable, compile_mode: str, device: torch.device) -> Callable:
    if compile_mode == "none":
        return network
    if compile_mode == "cudagraphs":
        if device.type != "cuda":
            raise ValueError(f"compile mode 'cudagraphs' needs a CUDA device, not {device}")
        return torch.compile(network, backend="cudagraphs", dynamic=False)
    return torch.compile(network, mode=compile_mode, dynamic=False)


@dataclass(frozen=True)
class PersonDetection:
    """One person of a multi-person parse: its value in ``ParseResult.instances``, score and visible extent."""

    instance: int  # k: the person's pixels are instances == k
    score: float  # sqrt(box score x predicted part mIoU), RP R-CNN's
    bbox: tuple[int, int, int, int]  # x_min, y_min, x_max, y_max of its pixels, inclusive


@dataclass
class ParseResult:
    labels: np.ndarray  # H x W uint8
    class_set: ClassSet
    compute_statistics: Callable[[], ClassStatistics] | None = field(repr=False)  # dropped once used
    timings_ms: dict[str, float] = field(default_factory=dict)  # each step of the parse, ms
    _statistics: ClassStatistics | None = field(default=None, init=False, repr=False)
    # multi-person weights only: H x W uint8 (0 = nobody, k = persons[k - 1]), the persons (best score
    # first), and how many persons above the threshold the person cap left out
    instances: np.ndarray | None = None
    persons: list[PersonDetection] = field(default_factory=list)
    dropped_persons: int = 0
    # float64 [persons + 1, C]: row k sums the part probability of person k's pixels of each class
    person_confidence_sums: np.ndarray | None = field(default=None, repr=False)

    @property
    def statistics(self) -> ClassStatistics:
        """Per-class pixel counts, confidence sums and boxes (on the CPU), computed on first use and kept.

        A node with nobody subscribed to ``parts`` never pays for them; their time is then
        added to ``timings_ms["statistics"]``.
        """
        if self._statistics is None:
            start = time.perf_counter()
            self._statistics = self.compute_statistics()
            self.compute_statistics = None  # frees the logits and label tensors it held
            self.timings_ms["statistics"] = (time.perf_counter() - start) * 1e3
        return self._statistics

    def presence(self, threshold: float) -> list[Part]:
        """Every class; ``present`` when its pixel fraction is at least ``threshold`` (and above 0).

        Figures at full precision (``Part.rounded`` gives the wire's).
        """
        total = max(1, self.labels.size)
        counts = self.statistics.pixel_counts.tolist()
        sums = self.statistics.confidence_sums.tolist()
        boxes = self.statistics.boxes.tolist()
        parts = []
        for class_id, name in enumerate(self.class_set.names):
            count = counts[class_id]
            fraction = count / total
            parts.append(Part(
                class_id, name, count > 0 and fraction >= threshold, fraction,
                tuple(boxes[class_id]) if count else None,
                sums[class_id] / count if count else 0.0,
            ))
        return parts

    def mask(self, class_id: int) -> np.ndarray:
        """0/255 mono8 mask of one class."""
        return (self.labels == class_id).astype(np.uint8) * 255

    def person_presence(self, person: PersonDetection, threshold: float) -> list[Part]:
        """Every class, within one person: ``pixel_fraction`` is of the person's pixels, ``bbox`` in image
        pixels, ``mean_confidence`` the mean of the person's part probability over the class's pixels."""
        if self.instances is None or self.person_confidence_sums is None:
            raise ValueError("person_presence needs a multi-person parse (rp_rcnn weights)")
        ys, xs = np.nonzero(self.instances == person.instance)
        ids = self.labels[ys, xs].astype(np.int64)
        counts = np.bincount(ids, minlength=self.class_set.num_classes)
        total = max(1, len(ids))
        sums = self.person_confidence_sums[person.instance]
        parts = []
        for class_id, name in enumerate(self.class_set.names):
            count = int(counts[class_id])
            box = None
            if count:
                on = ids == class_id
                box = (int(xs[on].min()), int(ys[on].min()), int(xs[on].max()), int(ys[on].max()))
            fraction = count / total
            parts.append(Part(class_id, name, count > 0 and fraction >= threshold, fraction, box,
                              float(sums[class_id]) / count if count else 0.0))
        return parts


class HumanParser:
    """Loads a weights file once and parses RGB images on CPU or GPU."""

    def __init__(
        self,
        weights: str | os.PathLike,
        device: str = "auto",
        precision: str = "fp32",
        input_size: tuple[int, int] | None = None,
        resize_mode: str = "letterbox",
        flip_tta: bool = False,
        compile_mode: str = "none",
        person_threshold: float | None = None,
        max_persons: int = 16,
    ) -> None:
        model, info = load_weights(weights)
        self._setup(model, info, device, precision, input_size, resize_mode, flip_tta, compile_mode,
                    person_threshold, max_persons)
        self.weights_path = str(weights)

    @classmethod
    def from_model(cls, model: SegmentationModel, info: WeightsInfo, **options: Any) -> HumanParser:
        """Wrap a model already in memory (the trainer's evaluation uses this)."""
        parser = cls.__new__(cls)
        parser._setup(model, info, **options)
        parser.weights_path = "<in memory>"
        return parser

    def _setup(self, model: SegmentationModel, info: WeightsInfo, device: str = "auto", precision: str = "fp32",
               input_size: tuple[int, int] | None = None, resize_mode: str = "letterbox",
               flip_tta: bool = False, compile_mode: str = "none", person_threshold: float | None = None,
               max_persons: int = 16) -> None:
        self.info = info
        self.multi_person = bool(getattr(model, "multi_person", False))
        self.person_threshold = check_person_threshold(
            info.recipe.get("min_score", 0.5) if person_threshold is None else person_threshold)
        self.max_persons = check_max_persons(max_persons)
        if self.multi_person and (flip_tta or compile_mode != "none"):
            raise ValueError(f"{info.architecture}: flip TTA and compile modes are for single-map parsers; "
                             "multi-person weights run with flip_tta false and compile_mode none")
        self.class_set = info.class_set()
        if self.class_set.num_classes > 256:
            raise ValueError(f"{self.class_set.num_classes} classes do not fit a mono8 label image")
        self.device = resolve_device(device)
        self.dtype, self.precision_note = resolve_precision(precision, self.device)
        size = info.input_size if input_size is None else input_size
        reason = check_input_size(size)
        if reason:
            raise ValueError(reason)
        self.network_hw = (int(size[0]), int(size[1]))
        self._resize_mode = check_resize_mode(resize_mode)
        self._flip_tta = check_flip_tta(flip_tta)
        self.model = model.eval().to(self.device, self.dtype).to(memory_format=torch.channels_last)
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, not '{compile_mode}'")
        self.compile_mode = compile_mode
        self._network = None if self.multi_person else _compiled(self.model.forward_lowres, compile_mode,
                                                                   self.device)
        self._mean = torch.tensor(info.mean, device=self.device)
        self._std = torch.tensor(info.std, device=self.device)
        self._flip_perm = torch.tensor(self.class_set.flip_permutation(), device=self.device)

    @property
    def resize_mode(self) -> str:
        """The resize mode ``parse`` uses when the call names none."""
        return self._resize_mode

    @property
    def flip_tta(self) -> bool:
        """Whether ``parse`` and ``forward`` use flip TTA when the call does not say."""
        return self._flip_tta

    @property
    def num_classes(self) -> int:
        return self.class_set.num_classes

    def describe(self, resize_mode: str | None = None, flip_tta: bool | None = None) -> str:
        """One line: architecture, classes, input, device, dtype; options default to the constructor's."""
        resize_mode = self._resize_mode if resize_mode is None else resize_mode
        flip_tta = self._flip_tta if flip_tta is None else flip_tta
        args = ", ".join(f"{key}={value}" for key, value in sorted(self.info.architecture_args.items())
                         if key != "num_classes")
        return (f"{self.info.architecture}({args}), {self.num_classes} classes ({self.info.class_set_name}), "
                f"input {self.network_hw[0]}x{self.network_hw[1]} {resize_mode}, "
                f"{self.device} {str(self.dtype).replace('torch.', '')}, flip TTA {'on' if flip_tta else 'off'}"
                + (f", compiled ({self.compile_mode})" if self.compile_mode != "none" else ""))

    @torch.inference_mode()
    def forward(self, network_in: torch.Tensor, flip_tta: bool | None = None) -> torch.Tensor:
        """Low-resolution logits (C x h x w, float32) for one prepared input, with flip TTA if asked.

        ``flip_tta`` None: the constructor's choice.
        """
        flip_tta = self._flip_tta if flip_tta is None else check_flip_tta(flip_tta)
        if not flip_tta:
            return self._run_network(network_in)[0].float()
        both = self._run_network(torch.cat([network_in, network_in.flip(-1)]))
        return merge_flipped(both[0], both[1], self._flip_perm)

    def _run_network(self, network_in: torch.Tensor) -> torch.Tensor:
        if self.compile_mode == "none":
            return self._network(network_in)
        if self.compile_mode in ("reduce-overhead", "cudagraphs"):
            torch.compiler.cudagraph_mark_step_begin()  # each call is a new step: its output buffer is reused
        # a CUDA graph's output lives in a buffer the next call overwrites; the result (and the statistics
        # computed from it later) must not
        return self._network(network_in).clone()

    @torch.inference_mode()
    def parse(self, image: np.ndarray, output_resolution: str = "input", resize_mode: str | None = None,
              flip_tta: bool | None = None) -> ParseResult:
        """Parse one H x W x 3 uint8 RGB image.

        ``resize_mode`` and ``flip_tta`` None: the constructor's choice; any other value is
        checked like the constructor's (ValueError naming it).
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape[:2]:
            raise ValueError(f"image must be H x W x 3 uint8 RGB, at least 1 x 1, got {image.dtype} "
                             f"{list(image.shape)}")
        if output_resolution not in OUTPUT_RESOLUTIONS:
            raise ValueError(f"output resolution must be 'input' or 'network', not '{output_resolution}'")
        resize_mode = self._resize_mode if resize_mode is None else check_resize_mode(resize_mode)
        flip_tta = self._flip_tta if flip_tta is None else check_flip_tta(flip_tta)
        start = time.perf_counter()
        height, width = image.shape[:2]
        placement = place_image((height, width), self.network_hw, resize_mode)
        image = np.ascontiguousarray(image)
        pixels = torch.from_numpy(image if image.flags.writeable else image.copy())  # torch wants writable
        if self.device.type == "cuda":
            pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        network_in = network_input(pixels, self.network_hw, placement, self._mean, self._std, self.dtype)
        out_hw = (height, width) if output_resolution == "input" else (placement.height, placement.width)
        if self.multi_person:
            if flip_tta:
                raise ValueError(f"flip_tta is not available for multi-person weights ({self.info.architecture})")
            return self._parse_persons(network_in, placement, out_hw, start)
        t_pre = time.perf_counter()
        logits = self.forward(network_in, flip_tta)
        self._sync()
        t_fwd = time.perf_counter()
        labels, _ = logits_to_labels(logits, self.network_hw, placement, out_hw, with_confidence=False)
        labels_np = labels.to(torch.uint8).cpu().numpy()
        t_labels = time.perf_counter()
        timings = {"preprocess": t_pre - start, "forward": t_fwd - t_pre, "labels": t_labels - t_fwd}
        return ParseResult(labels_np, self.class_set, self._statistics(logits, labels, placement, out_hw),
                           {key: value * 1e3 for key, value in timings.items()})

    def _statistics(self, logits: torch.Tensor, labels: torch.Tensor, placement: Placement,
                    out_hw: tuple[int, int], persons: tuple[torch.Tensor, np.ndarray] | None = None,
                    ) -> Callable[[], ClassStatistics]:
        """The deferred per-class statistics of one parse (computed only if someone asks for them).

        With ``persons`` (the H x W mask of pixels nobody owns, and the persons' confidence sums per class),
        the semantic map's confidence counts only where nobody is and the persons' sums are added."""
        num_classes, network_hw = self.num_classes, self.network_hw

        def statistics() -> ClassStatistics:
            with torch.inference_mode():
                confidence = confidence_map(logits, network_hw, placement, out_hw)
                if persons is not None:
                    confidence = confidence * persons[0]
                stats = class_statistics(labels, confidence, num_classes)
                sums = stats.confidence_sums.cpu()
                if persons is not None:
                    sums = (sums.double() + torch.from_numpy(persons[1])).float()
                return ClassStatistics(stats.pixel_counts.cpu(), sums, stats.boxes.cpu())

        return statistics

    def _parse_persons(self, network_in: torch.Tensor, placement: Placement, out_hw: tuple[int, int],
                       start: float) -> ParseResult:
        """The multi-person parse: persons pasted at ``out_hw`` over the semantic map (``multi_person``)."""
        t_pre = time.perf_counter()
        result = self.model(network_in)[0]
        self._sync()
        t_fwd = time.perf_counter()
        semantic = result["semantic"].float().clamp_min(1e-8).log()  # log-probabilities: softmax gives them back
        background, _ = logits_to_labels(semantic, self.network_hw, placement, out_hw, with_confidence=False)
        scale = torch.tensor([out_hw[1] / placement.width, out_hw[0] / placement.height] * 2,
                             device=semantic.device)
        offset = torch.tensor([placement.left, placement.top] * 2, device=semantic.device)
        boxes = (result["boxes"].float() - offset) * scale
        merged = merge_persons(result["parts"].float(), boxes, result["scores"].float(), background, *out_hw,
                               self.person_threshold, self.max_persons)
        labels = merged.labels.to(torch.uint8)
        instances = merged.instances.to(torch.uint8).cpu().numpy()
        cells = (len(merged.persons) + 1) * self.num_classes
        person_sums = torch.bincount((merged.instances * self.num_classes + merged.labels).reshape(-1),
                                     weights=merged.confidence.reshape(-1).double(), minlength=cells)
        person_sums = person_sums[:cells].reshape(-1, self.num_classes).cpu().numpy()
        nobody = merged.instances == 0
        persons = []
        for k, index in enumerate(merged.persons, start=1):
            ys, xs = np.nonzero(instances == k)
            persons.append(PersonDetection(k, float(result["scores"][index]),
                                           (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))))
        t_labels = time.perf_counter()
        timings = {"preprocess": t_pre - start, "forward": t_fwd - t_pre, "labels": t_labels - t_fwd}
        return ParseResult(labels.cpu().numpy(), self.class_set,
                           self._statistics(semantic, labels, placement, out_hw, (nobody, person_sums.sum(0))),
                           {key: value * 1e3 for key, value in timings.items()}, instances=instances,
                           persons=persons, dropped_persons=merged.dropped, person_confidence_sums=person_sums)

    def warmup(self, iterations: int = 2) -> float:
        """Run dummy frames so the first real one is not slow; returns the last time in ms."""
        dummy = np.zeros((*self.network_hw, 3), dtype=np.uint8)
        elapsed = 0.0
        for _ in range(iterations):
            start = time.perf_counter()
            self.parse(dummy)
            elapsed = (time.perf_counter() - start) * 1e3
        return elapsed

    def release(self) -> None:
        """Give device memory back; the parser is unusable afterwards."""
        self.model = self._network = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
