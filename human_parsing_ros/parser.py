"""HumanParser: a weights file in, label maps and part presence out. No ROS anywhere.

    parser = HumanParser("model.safetensors", device="auto", precision="fp16")
    result = parser.parse(rgb_uint8_image)
    result.labels            # H x W uint8 class ids at the image's resolution
    result.presence(0.005)   # per-class presence.Part: presence, pixel fraction, box, confidence
    parser.parse(image, ParseOptions(resize_mode="stretch", flip_tta=True))  # per-call options (checked)
    parser.parse(image, flip_tta=True)  # or fields of the parser's own options replaced
    HumanParser(..., device="cuda", precision="fp16", compile_mode="reduce-overhead")  # torch.compile, CUDA graphs
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backends import OnnxRuntimeNetwork, OpenVinoNetwork, open_network, require_runtime, resolve_backend
from .devices import COMPILE_MODES, PRECISIONS, compiled, resolve_device, resolve_precision
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
from .models import ServableModel
from .multi_person import merge_persons
from .onnx_model import cached_export, default_cache_dir, is_onnx_file
from .parse_options import (
    MAX_PERSONS_LIMIT,
    OUTPUT_RESOLUTIONS,
    RESIZE_MODES,
    ParseOptions,
    check_flip_tta,
    check_person_threshold,
)
from .parse_result import ParseResult
from .presence import PersonDetection
from .weights import WeightsInfo, check_input_size, load_weights

# names defined in devices, backends, parse_options and presence, kept here for the callers that read them with
# the parser
__all__ = [
    "COMPILE_MODES", "OUTPUT_RESOLUTIONS", "PRECISIONS", "RESIZE_MODES", "HumanParser", "ParseOptions",
    "ParseResult", "PersonDetection", "resolve_backend", "resolve_device", "resolve_precision",
]

OPTION_FIELDS = tuple(option.name for option in fields(ParseOptions))


class HumanParser:
    """Loads a weights file once and parses RGB images on CPU or GPU.

    ``options`` (a ``ParseOptions``) are the parser's default per-frame choices; ``option_fields``
    (``resize_mode=``, ``flip_tta=``, ``person_threshold=``, ``max_persons=``, ``output_resolution=``)
    replace fields of them. Multi-person weights refuse flip TTA and compile modes (ValueError).
    """

    def __init__(
        self,
        weights: str | os.PathLike,
        device: str = "auto",
        precision: str = "fp32",
        input_size: tuple[int, int] | None = None,
        compile_mode: str = "none",
        options: ParseOptions | None = None,
        backend: str = "torch",
        cache_dir: str | os.PathLike | None = None,
        **option_fields: Any,
    ) -> None:
        """``weights``: a .safetensors weights file, or an exported .onnx file (backend onnxruntime, openvino or auto).
        ``backend``: torch, onnxruntime, openvino or auto (backends.py); a weights file runs on onnxruntime or
        openvino through its ONNX export, made once into ``cache_dir`` (default: ``onnx_model.default_cache_dir()``)."""
        chosen = resolve_backend(weights, backend, device)
        if chosen == "torch":
            model, info = load_weights(weights)
            self._setup(model, info, device, precision, input_size, compile_mode, options, option_fields)
        else:
            require_runtime(chosen)  # before any export
            cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
            onnx_path = weights if is_onnx_file(weights) else cached_export(weights, cache / "onnx")
            network = open_network(chosen, onnx_path, resolve_device(device), torch.get_num_threads(), precision,
                                   cache / "tensorrt")
            self._setup(network, network.info, device, precision, input_size, compile_mode, options, option_fields)
        self.weights_path = str(weights)

    @classmethod
    def from_model(cls, model: ServableModel, info: WeightsInfo, device: str = "auto", precision: str = "fp32",
                   input_size: tuple[int, int] | None = None, compile_mode: str = "none",
                   options: ParseOptions | None = None, **option_fields: Any) -> HumanParser:
        """Wrap a model already in memory (the trainer's evaluation and the node use this); backend torch."""
        parser = cls.__new__(cls)
        parser._setup(model, info, device, precision, input_size, compile_mode, options, option_fields)
        parser.weights_path = "<in memory>"
        return parser

    def _setup(self, model: ServableModel | OnnxRuntimeNetwork | OpenVinoNetwork, info: WeightsInfo, device: str,
               precision: str, input_size: tuple[int, int] | None, compile_mode: str, options: ParseOptions | None,
               option_fields: dict[str, Any]) -> None:
        self.info = info
        exported = isinstance(model, (OnnxRuntimeNetwork, OpenVinoNetwork))
        self.backend = model.name if exported else "torch"
        self.multi_person = False if exported else model.multi_person
        self._min_score = check_person_threshold(info.recipe.get("min_score", 0.5))
        self._options = self._resolve(options, option_fields, ParseOptions())
        if self.multi_person and (self._options.flip_tta or compile_mode != "none"):
            raise ValueError(f"{info.architecture}: flip TTA and compile modes are for single-map parsers; "
                             "multi-person weights run with flip_tta false and compile_mode none")
        if exported and compile_mode != "none":
            raise ValueError(f"compile mode '{compile_mode}' is for the torch backend; {self.backend} compiles itself")
        self.class_set = info.class_set()
        if self.class_set.num_classes > 256:
            raise ValueError(f"{self.class_set.num_classes} classes do not fit a mono8 label image")
        self.device = resolve_device(device)
        self.dtype, self.precision_note = resolve_precision(precision, self.device)
        if exported:  # the input stays float32; the runtime picks its own compute precision
            self.dtype = torch.float32
            if model.precision != precision:
                self.precision_note = f"{self.backend} runs {model.precision} here, not {precision}"
        size = info.input_size if input_size is None else input_size
        reason = check_input_size(size)
        if reason:
            raise ValueError(reason)
        self.network_hw = (int(size[0]), int(size[1]))
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, not '{compile_mode}'")
        self.compile_mode = compile_mode
        # the one choice of parse path: a frame of a multi-person parser never meets the single-map code
        if exported:
            self.model, self._network = None, model
            self._parse_frame = self._parse_map
        elif self.multi_person:
            self.model = model.eval().to(self.device, self.dtype).to(memory_format=torch.channels_last)
            self._network = None
            self._parse_frame = self._parse_persons
        else:
            self.model = model.eval().to(self.device, self.dtype).to(memory_format=torch.channels_last)
            self._network = compiled(self.model.forward_lowres, compile_mode, self.device)
            self._parse_frame = self._parse_map
        self._mean = torch.tensor(info.mean, device=self.device)
        self._std = torch.tensor(info.std, device=self.device)
        self._flip_perm = torch.tensor(self.class_set.flip_permutation(), device=self.device)

    def _resolve(self, options: ParseOptions | None, option_fields: dict[str, Any],
                 default: ParseOptions) -> ParseOptions:
        """``options`` (``default`` if None) with ``option_fields`` replaced and person_threshold None resolved to
        the weights' ``min_score``; TypeError for anything but a ParseOptions or an unknown field name."""
        if options is None:
            options = default
        elif not isinstance(options, ParseOptions):
            raise TypeError(f"options must be a ParseOptions, not {type(options).__name__} {options!r}")
        if option_fields:
            unknown = sorted(set(option_fields) - set(OPTION_FIELDS))
            if unknown:
                raise TypeError(f"unknown parse option '{unknown[0]}' (known: {', '.join(OPTION_FIELDS)})")
            options = replace(options, **option_fields)
        if options.person_threshold is None:
            options = replace(options, person_threshold=self._min_score)
        return options

    @property
    def options(self) -> ParseOptions:
        """The options ``parse`` uses when the call gives none (person_threshold resolved)."""
        return self._options

    @property
    def resize_mode(self) -> str:
        return self._options.resize_mode

    @property
    def flip_tta(self) -> bool:
        return self._options.flip_tta

    @property
    def person_threshold(self) -> float:
        return self._options.person_threshold

    @property
    def max_persons(self) -> int:
        return self._options.max_persons

    @property
    def backend_description(self) -> str:
        """``torch``, or ``<backend> (<the execution provider or device it runs on>)``."""
        return "torch" if self.backend == "torch" else f"{self.backend} ({self._network.provider})"

    @property
    def precision_name(self) -> str:
        """What the network computes in: fp32, fp16 or bf16."""
        if self.backend != "torch":
            return self._network.precision
        return next(name for name, dtype in PRECISIONS.items() if dtype == self.dtype)

    @property
    def num_classes(self) -> int:
        return self.class_set.num_classes

    @property
    def detection_limit(self) -> int | None:
        """Multi-person weights: the most persons the network returns per frame (the weights' ``detections``);
        a frame has at most min(max_persons, detection_limit) persons. None for single-map weights."""
        limit = getattr(self.model, "detection_limit", None) if self.multi_person else None
        return None if limit is None else int(limit)

    def describe(self, options: ParseOptions | None = None) -> str:
        """One line: architecture, classes, input, device, dtype; ``options`` None: the parser's own."""
        options = self._resolve(options, {}, self._options)
        args = ", ".join(f"{key}={value}" for key, value in sorted(self.info.architecture_args.items())
                         if key != "num_classes")
        return (f"{self.info.architecture}({args}), {self.num_classes} classes ({self.info.class_set_name}), "
                f"input {self.network_hw[0]}x{self.network_hw[1]} {options.resize_mode}, "
                f"{self.device} {self.precision_name}, "
                + (f"{self.backend_description}, " if self.backend != "torch" else "")
                + f"flip TTA {'on' if options.flip_tta else 'off'}"
                + (", persons from the map" if options.map_persons and not self.multi_person else "")
                + (f", compiled ({self.compile_mode})" if self.compile_mode != "none" else ""))

    @torch.inference_mode()
    def forward(self, network_in: torch.Tensor, flip_tta: bool | None = None) -> torch.Tensor:
        """Low-resolution logits (C x h x w, float32) for one prepared input, with flip TTA if asked.

        ``flip_tta`` None: the parser's options'. Single-map weights only.
        """
        flip_tta = self._options.flip_tta if flip_tta is None else check_flip_tta(flip_tta)
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
    def parse(self, image: np.ndarray, options: ParseOptions | None = None, **option_fields: Any) -> ParseResult:
        """Parse one H x W x 3 uint8 RGB image.

        ``options`` None: the parser's (``self.options``); ``option_fields`` replace fields of them, checked
        like ``ParseOptions``'s own (ValueError naming the value). A person_threshold of None is the weights'.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape[:2]:
            raise ValueError(f"image must be H x W x 3 uint8 RGB, at least 1 x 1, got {image.dtype} "
                             f"{list(image.shape)}")
        return self._parse_frame(image, self._resolve(options, option_fields, self._options))

    def _prepare(self, image: np.ndarray, options: ParseOptions
                 ) -> tuple[torch.Tensor, Placement, tuple[int, int], float]:
        """The network input of ``image``, where the image sits in it, the output size and the start time."""
        start = time.perf_counter()
        height, width = image.shape[:2]
        placement = place_image((height, width), self.network_hw, options.resize_mode)
        image = np.ascontiguousarray(image)
        pixels = torch.from_numpy(image if image.flags.writeable else image.copy())  # torch wants writable
        if self.device.type == "cuda":
            pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        network_in = network_input(pixels, self.network_hw, placement, self._mean, self._std, self.dtype)
        out_hw = (height, width) if options.output_resolution == "input" else (placement.height, placement.width)
        return network_in, placement, out_hw, start

    def _parse_map(self, image: np.ndarray, options: ParseOptions) -> ParseResult:
        """The single-map parse: one label per pixel from the network's logits."""
        network_in, placement, out_hw, start = self._prepare(image, options)
        t_pre = time.perf_counter()
        logits = self.forward(network_in, options.flip_tta)
        self._sync()
        t_fwd = time.perf_counter()
        labels, _ = logits_to_labels(logits, self.network_hw, placement, out_hw, with_confidence=False)
        labels_np = labels.to(torch.uint8).cpu().numpy()
        t_labels = time.perf_counter()
        timings = {"preprocess": t_pre - start, "forward": t_fwd - t_pre, "labels": t_labels - t_fwd}
        result = ParseResult(labels_np, self.class_set, self._statistics(logits, labels, placement, out_hw),
                             timings)
        if options.map_persons:  # part of the labels step, as a multi-person parse's persons are
            self._add_map_persons(result, logits, labels, placement, options.max_persons)
            timings["labels"] = time.perf_counter() - t_fwd
        result.timings_ms = {key: value * 1e3 for key, value in timings.items()}
        return result

    def _add_map_persons(self, result: ParseResult, logits: torch.Tensor, labels: torch.Tensor,
                         placement: Placement, max_persons: int) -> None:
        """``result`` with the persons of its map (``persons_from_map``, largest first, those beyond
        ``max_persons`` counted in ``dropped_persons``) and their per-class confidence sums (deferred)."""
        from .map_persons import persons_from_map  # scipy, only for parsers asked for map persons

        instances, persons = persons_from_map(result.labels, max_persons=MAX_PERSONS_LIMIT)
        if len(persons) > max_persons:
            result.dropped_persons = len(persons) - max_persons
            persons = persons[:max_persons]
            instances[instances > max_persons] = 0
        num_classes, network_hw, shape = self.num_classes, self.network_hw, result.labels.shape

        def person_confidence() -> np.ndarray:
            with torch.inference_mode():
                confidence = confidence_map(logits, network_hw, placement, shape)
                cells = (len(persons) + 1) * num_classes
                owner = torch.from_numpy(instances).to(labels.device).long()
                sums = torch.bincount((owner * num_classes + labels.long()).reshape(-1),
                                      weights=confidence.reshape(-1).double(), minlength=cells)
                return sums[:cells].reshape(-1, num_classes).cpu().numpy()

        result.instances, result.persons = instances, persons
        result.compute_person_confidence = person_confidence

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
                return ClassStatistics(stats.pixel_counts.cpu(), sums, stats.boxes.cpu(), stats.robust_boxes.cpu())

        return statistics

    def _parse_persons(self, image: np.ndarray, options: ParseOptions) -> ParseResult:
        """The multi-person parse: persons pasted at the output size over the semantic map."""
        if options.flip_tta:
            raise ValueError(f"flip_tta is not available for multi-person weights ({self.info.architecture})")
        network_in, placement, out_hw, start = self._prepare(image, options)
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
        scores = result["scores"].float()
        merged = merge_persons(result["parts"].float(), boxes, scores, background, *out_hw,
                               options.person_threshold, options.max_persons)
        limit = self.detection_limit
        at_limit = limit is not None and int((scores >= options.person_threshold).sum()) >= limit
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
                                           (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())), len(ys)))
        t_labels = time.perf_counter()
        timings = {"preprocess": t_pre - start, "forward": t_fwd - t_pre, "labels": t_labels - t_fwd}
        return ParseResult(labels.cpu().numpy(), self.class_set,
                           self._statistics(semantic, labels, placement, out_hw, (nobody, person_sums.sum(0))),
                           {key: value * 1e3 for key, value in timings.items()}, instances=instances,
                           persons=persons, dropped_persons=merged.dropped,
                           compute_person_confidence=lambda: person_sums,
                           detection_limit_reached=at_limit)

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
