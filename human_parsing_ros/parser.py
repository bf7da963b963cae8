"""HumanParser: a weights file in, label maps and part presence out. No ROS anywhere.

    parser = HumanParser("model.safetensors", device="auto", precision="fp16")
    result = parser.parse(rgb_uint8_image)
    result.labels            # H x W uint8 class ids at the image's resolution
    result.presence(0.005)   # per-class presence, pixel fraction, box, confidence
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .class_sets import ClassSet
from .inference import ClassStatistics, class_statistics, logits_to_labels, network_input, place_image
from .models import SegmentationModel
from .weights import WeightsInfo, load_weights

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
RESIZE_MODES = ("letterbox", "stretch")
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


@dataclass
class PartPresence:
    class_id: int
    name: str
    present: bool
    pixel_fraction: float
    bbox: tuple[int, int, int, int] | None  # x_min, y_min, x_max, y_max (inclusive), None when absent
    mean_confidence: float


@dataclass
class ParseResult:
    labels: np.ndarray  # H x W uint8
    class_set: ClassSet
    statistics: ClassStatistics  # on the CPU
    timings_ms: dict[str, float] = field(default_factory=dict)

    def presence(self, threshold: float) -> list[PartPresence]:
        """Every class; ``present`` when its pixel fraction is at least ``threshold`` (and above 0)."""
        total = max(1, self.labels.size)
        counts = self.statistics.pixel_counts.tolist()
        sums = self.statistics.confidence_sums.tolist()
        boxes = self.statistics.boxes.tolist()
        parts = []
        for cid, name in enumerate(self.class_set.names):
            fraction = counts[cid] / total
            parts.append(PartPresence(
                cid, name, counts[cid] > 0 and fraction >= threshold, fraction,
                tuple(boxes[cid]) if counts[cid] else None,
                sums[cid] / counts[cid] if counts[cid] else 0.0,
            ))
        return parts

    def mask(self, class_id: int) -> np.ndarray:
        """0/255 mono8 mask of one class."""
        return (self.labels == class_id).astype(np.uint8) * 255


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
    ) -> None:
        model, info = load_weights(weights)
        self._setup(model, info, device, precision, input_size, resize_mode, flip_tta)
        self.weights_path = str(weights)

    @classmethod
    def from_model(cls, model: SegmentationModel, info: WeightsInfo, **options) -> HumanParser:
        """Wrap a model already in memory (the trainer's evaluation uses this)."""
        parser = cls.__new__(cls)
        parser._setup(model, info, **options)
        parser.weights_path = "<in memory>"
        return parser

    def _setup(self, model, info, device="auto", precision="fp32", input_size=None,
               resize_mode="letterbox", flip_tta=False) -> None:
        self.info = info
        self.class_set = info.class_set()
        if self.class_set.num_classes > 256:
            raise ValueError(f"{self.class_set.num_classes} classes do not fit a mono8 label image")
        self.device = resolve_device(device)
        self.dtype, self.precision_note = resolve_precision(precision, self.device)
        self.network_hw = tuple(int(v) for v in (input_size or info.input_size))
        if len(self.network_hw) != 2 or min(self.network_hw) < 16:
            raise ValueError(f"input size must be [height, width], each at least 16, not {list(self.network_hw)}")
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, not '{resize_mode}'")
        self.resize_mode = resize_mode
        self.flip_tta = bool(flip_tta)
        self.model = model.eval().to(self.device, self.dtype).to(memory_format=torch.channels_last)
        self._mean = torch.tensor(info.mean, device=self.device)
        self._std = torch.tensor(info.std, device=self.device)
        self._flip_perm = torch.tensor(self.class_set.flip_permutation(), device=self.device)

    @property
    def num_classes(self) -> int:
        return self.class_set.num_classes

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in sorted(self.info.architecture_args.items())
                         if k != "num_classes")
        return (f"{self.info.architecture}({args}), {self.num_classes} classes ({self.info.class_set_name}), "
                f"input {self.network_hw[0]}x{self.network_hw[1]} {self.resize_mode}, "
                f"{self.device} {str(self.dtype).replace('torch.', '')}, flip TTA {'on' if self.flip_tta else 'off'}")

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Low-resolution logits (C x h x w, float32) for one prepared input, with flip TTA if enabled."""
        if not self.flip_tta:
            return self.model.forward_lowres(x)[0].float()
        both = self.model.forward_lowres(torch.cat([x, x.flip(-1)]))
        mirrored = both[1].flip(-1).index_select(0, self._flip_perm)
        return (both[0].float() + mirrored.float()) * 0.5

    @torch.inference_mode()
    def parse(self, image: np.ndarray, output_resolution: str = "input") -> ParseResult:
        """Parse one H x W x 3 uint8 RGB image."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be H x W x 3 uint8 RGB, got {image.dtype} {list(image.shape)}")
        if output_resolution not in OUTPUT_RESOLUTIONS:
            raise ValueError(f"output resolution must be 'input' or 'network', not '{output_resolution}'")
        start = time.perf_counter()
        h, w = image.shape[:2]
        placement = place_image((h, w), self.network_hw, self.resize_mode)
        image = np.ascontiguousarray(image)
        pixels = torch.from_numpy(image if image.flags.writeable else image.copy())  # torch wants writable
        if self.device.type == "cuda":
            pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        x = network_input(pixels, self.network_hw, placement, self._mean, self._std, self.dtype)
        t_pre = time.perf_counter()
        logits = self.forward(x)
        self._sync()
        t_fwd = time.perf_counter()
        out_hw = (h, w) if output_resolution == "input" else (placement.height, placement.width)
        labels, confidence = logits_to_labels(logits, self.network_hw, placement, out_hw)
        stats = class_statistics(labels, confidence, self.num_classes)
        labels_np = labels.to(torch.uint8).cpu().numpy()
        stats = ClassStatistics(stats.pixel_counts.cpu(), stats.confidence_sums.cpu(), stats.boxes.cpu())
        t_post = time.perf_counter()
        timings = {"preprocess": t_pre - start, "forward": t_fwd - t_pre, "postprocess": t_post - t_fwd}
        return ParseResult(labels_np, self.class_set, stats, {k: v * 1e3 for k, v in timings.items()})

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
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
