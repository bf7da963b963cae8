"""Who runs the network's forward pass. Pre- and post-processing (letterbox, label map, statistics) stay in
inference.py and the parser, shared, so every backend gives the same ``ParseResult``.

    torch        PyTorch eager or torch.compile: every architecture, the only one for multi-person weights
    onnxruntime  ONNX Runtime on an exported file (onnx_model.py): CPU; CUDA (and TensorRT, with an engine
                 cache) execution providers where the installed onnxruntime has them
    auto         onnxruntime where it is installed and runs on the device, else torch
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from .onnx_model import INPUT_NAME, onnx_info
from .weights import WeightsError, WeightsInfo

BACKENDS = ("auto", "torch", "onnxruntime")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not '{name}'")
    return name


def onnxruntime_providers() -> list[str]:
    """The execution providers of the installed onnxruntime; [] without one."""
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def choose_backend(requested: str, device: torch.device, multi_person: bool) -> str:
    """``requested`` made concrete: ``auto`` is onnxruntime when it is installed and has a provider for
    ``device`` (and the weights are single-map), else torch."""
    check_backend(requested)
    if requested != "auto":
        return requested
    providers = onnxruntime_providers()
    usable = "CPUExecutionProvider" in providers if device.type == "cpu" else bool(set(GPU_PROVIDERS) & set(providers))
    return "onnxruntime" if usable and not multi_person else "torch"


class OnnxRuntimeNetwork:
    """An exported file in an ONNX Runtime session: normalised N x 3 x H x W in, low-resolution logits out, as
    the torch model's ``forward_lowres`` (on the parser's device)."""

    def __init__(self, path: str | os.PathLike, device: torch.device, threads: int,
                 engine_cache: str | os.PathLike | None = None) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ValueError("backend onnxruntime: onnxruntime is not installed (pip install onnxruntime)") from None

        self.path = Path(path)
        self.device = device
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # the same thread budget torch has in this process
        options.inter_op_num_threads = 1
        self.providers = _providers(device, onnxruntime.get_available_providers(), engine_cache)
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as err:  # noqa: BLE001 (onnxruntime's own error types, one per failure kind)
            raise WeightsError(f"{self.path}: ONNX Runtime cannot load it ({' '.join(str(err).split())})") from None
        self.info: WeightsInfo = onnx_info(self.session.get_modelmeta().custom_metadata_map, self.path)
        channels = self.session.get_outputs()[0].shape[1]
        if channels != len(self.info.class_names):
            raise WeightsError(f"{self.path}: class count mismatch: the graph has {channels} outputs, the metadata "
                               f"names {len(self.info.class_names)} classes")

    @property
    def provider(self) -> str:
        """The execution provider ONNX Runtime runs first (the session's, after any it could not start)."""
        return self.session.get_providers()[0]

    def __call__(self, network_in: torch.Tensor) -> torch.Tensor:
        image = network_in.float().contiguous().cpu().numpy()
        (logits,) = self.session.run(None, {INPUT_NAME: image})
        return torch.from_numpy(logits).to(self.device)


def _providers(device: torch.device, available: list[str], engine_cache: str | os.PathLike | None) -> list:
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    gpu = [name for name in GPU_PROVIDERS if name in available]
    if not gpu:
        raise ValueError(f"device {device}: this onnxruntime has no GPU execution provider (it has "
                         f"{', '.join(available)}); install onnxruntime-gpu, or use device cpu or backend torch")
    options = {"device_id": device.index or 0}
    chosen: list = []
    for name in gpu:
        if name == "TensorrtExecutionProvider":  # the engine is built on first use and cached
            cache = Path(engine_cache).expanduser() if engine_cache else None
            trt = {**options, "trt_engine_cache_enable": cache is not None, "trt_fp16_enable": False}
            if cache is not None:
                cache.mkdir(parents=True, exist_ok=True)
                trt["trt_engine_cache_path"] = str(cache)
            chosen.append((name, trt))
        else:
            chosen.append((name, options))
    return [*chosen, "CPUExecutionProvider"]
