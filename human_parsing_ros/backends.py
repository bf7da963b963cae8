"""Who runs the network's forward pass. Pre- and post-processing (letterbox, label map, statistics) stay in
inference.py and the parser, shared, so every backend gives the same ``ParseResult``.

    torch        PyTorch eager or torch.compile: every architecture, the only one for multi-person weights
    onnxruntime  ONNX Runtime on an exported file (onnx_model.py): CPU; CUDA (and TensorRT, with an engine
                 cache) execution providers where the installed onnxruntime has them
    openvino     OpenVINO on the same exported file: CPU, fp32 or bf16 (where the CPU has bf16 instructions)
    auto         for a single-map network: openvino on the CPU, else onnxruntime where it is installed and runs
                 on the device, else torch (the order of their speed on this project's CPU, docs/backends.md)

An exported network (``OnnxRuntimeNetwork``, ``OpenVinoNetwork``) takes the normalised float32 N x 3 x H x W
input and returns the low-resolution logits, as the torch model's ``forward_lowres`` does; it knows the file's
``info``, its ``name``, the ``provider`` it runs on and the ``precision`` it computes in.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

import torch

from .devices import resolve_device
from .errors import flattened
from .models import is_multi_person
from .onnx_model import INPUT_NAME, is_onnx_file, onnx_info, quantization_of, read_onnx_metadata
from .weights import WeightsError, WeightsInfo, read_weights_info

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not '{name}'")
    return name


def onnxruntime_providers() -> list[str]:
    """The execution providers of the installed onnxruntime; [] without one."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def openvino_installed() -> bool:
    try:
        return importlib.util.find_spec("openvino") is not None
    except ImportError:
        return False


def require_runtime(backend: str) -> None:
    """ValueError naming what to install when ``backend`` (onnxruntime or openvino) cannot be imported."""
    try:
        importlib.import_module(backend)
    except ImportError:
        raise ValueError(f"backend {backend}: {backend} is not installed (pip install {backend})") from None


def choose_backend(requested: str, device: torch.device, multi_person: bool) -> str:
    """``requested`` made concrete. ``auto``: torch for multi-person weights; on the CPU openvino, else
    onnxruntime, whichever is installed first; on a GPU onnxruntime where it has a GPU provider; else torch."""
    check_backend(requested)
    if requested != "auto":
        return requested
    if multi_person:
        return "torch"
    providers = onnxruntime_providers()
    if device.type == "cpu":
        if openvino_installed():
            return "openvino"
        return "onnxruntime" if "CPUExecutionProvider" in providers else "torch"
    return "onnxruntime" if set(GPU_PROVIDERS) & set(providers) else "torch"


def resolve_backend(path: str | os.PathLike, backend: str, device: str) -> str:
    """The backend that runs ``path``: ``auto`` asks ``choose_backend`` (a multi-person weights file stays with
    torch, an int8 file goes to onnxruntime); an exported .onnx file needs one that runs exported files."""
    check_backend(backend)
    if is_onnx_file(path):
        chosen = choose_backend(backend, resolve_device(device), multi_person=False)
        if chosen == "openvino" and backend == "auto" and quantization_of(read_onnx_metadata(path)):
            chosen = "onnxruntime"  # int8 files are calibrated for it (OpenVINO refuses them)
        if chosen == "torch":
            why = ("backend torch runs .safetensors weights files" if backend == "torch" else
                   f"no installed runtime runs it on {device}: install onnxruntime or openvino for the CPU, "
                   "onnxruntime-gpu for CUDA")
            raise ValueError(f"{path}: an exported ONNX file runs with backend onnxruntime or openvino; {why}")
        return chosen
    if backend != "auto":
        return backend
    return choose_backend(backend, resolve_device(device), is_multi_person(read_weights_info(path).architecture))


class OnnxRuntimeNetwork:
    """An exported file in an ONNX Runtime session on the parser's device; fp32, or int8 for a quantized file."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: torch.device, threads: int,
                 engine_cache: str | os.PathLike | None = None, precision: str = "fp32") -> None:
        require_runtime("onnxruntime")
        import onnxruntime

        self.path = Path(path)
        self.device = device
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # the same thread budget torch has in this process
        options.inter_op_num_threads = 1
        # ONNX Runtime's threads spin after each run by default: they would take the cores from the torch steps
        # that follow the forward pass (the label map) and from the rest of the robot
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.providers = _providers(device, onnxruntime.get_available_providers(), engine_cache, precision == "fp16")
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as err:  # noqa: BLE001 (onnxruntime's own error types, one per failure kind)
            raise WeightsError(f"{self.path}: ONNX Runtime cannot load it ({flattened(err)})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.info: WeightsInfo = onnx_info(metadata, self.path)
        fp16 = precision == "fp16" and self.provider == "TensorrtExecutionProvider"  # TensorRT builds fp16 kernels
        self.precision = quantization_of(metadata).get("precision", "fp16" if fp16 else "fp32")
        check_class_count(self.path, self.session.get_outputs()[0].shape[1], self.info)

    @property
    def provider(self) -> str:
        """The execution provider ONNX Runtime runs first (the session's, after any it could not start)."""
        return self.session.get_providers()[0]

    def __call__(self, network_in: torch.Tensor) -> torch.Tensor:
        image = network_in.float().contiguous().cpu().numpy()
        (logits,) = self.session.run(None, {INPUT_NAME: image})
        return torch.from_numpy(logits).to(self.device)


class OpenVinoNetwork:
    """An exported file compiled by OpenVINO for the CPU; ``precision`` bf16 where the CPU has it, else fp32."""

    name = "openvino"
    provider = "CPU"

    def __init__(self, path: str | os.PathLike, device: torch.device, threads: int, precision: str) -> None:
        require_runtime("openvino")
        import openvino

        if device.type != "cpu":
            raise ValueError(f"backend openvino runs on the CPU here, not on {device}; use onnxruntime or torch")
        self.path = Path(path)
        core = openvino.Core()
        try:
            model = core.read_model(str(self.path))
            runtime_info = model.get_rt_info()  # ONNX metadata_props land under "framework"
            keys = list(runtime_info["framework"].keys()) if "framework" in runtime_info else []
            metadata = {key: model.get_rt_info(["framework", key]).astype(str) for key in keys}
        except Exception as err:  # noqa: BLE001 (OpenVINO raises RuntimeError with a multi-line text)
            raise WeightsError(f"{self.path}: OpenVINO cannot read it ({_last_line(err)})") from None
        self.info: WeightsInfo = onnx_info(metadata, self.path)
        if quantization_of(metadata):
            raise WeightsError(f"{self.path}: an int8 file runs with backend onnxruntime, which it was calibrated "
                               f"for; OpenVINO runs it less accurately (CCP test mIoU 47.7 against 56.0, "
                               "docs/backends.md)")
        check_class_count(self.path, model.outputs[0].get_partial_shape()[1].get_length(), self.info)
        bf16 = precision == "bf16" and "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        self.precision = "bf16" if bf16 else "fp32"
        compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32"})
        self.request = compiled.create_infer_request()

    def __call__(self, network_in: torch.Tensor) -> torch.Tensor:
        outputs = self.request.infer({0: network_in.float().contiguous().numpy()})
        return torch.from_numpy(outputs[0].copy())  # the request reuses its output buffer on the next call


def check_class_count(path: Path, channels: object, info: WeightsInfo) -> None:
    if channels != len(info.class_names):
        raise WeightsError(f"{path}: class count mismatch: the graph has {channels} outputs, the metadata "
                           f"names {len(info.class_names)} classes")


def _last_line(error: BaseException) -> str:
    """OpenVINO's exceptions put the call stack first and the cause on their last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _providers(device: torch.device, available: list[str], engine_cache: str | os.PathLike | None,
               fp16: bool) -> list:
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
            trt = {**options, "trt_engine_cache_enable": cache is not None, "trt_fp16_enable": fp16}
            if cache is not None:
                cache.mkdir(parents=True, exist_ok=True)
                trt["trt_engine_cache_path"] = str(cache)
            chosen.append((name, trt))
        else:
            chosen.append((name, options))
    return [*chosen, "CPUExecutionProvider"]


def open_network(backend: str, path: str | os.PathLike, device: torch.device, threads: int, precision: str,
                 engine_cache: str | os.PathLike | None = None) -> OnnxRuntimeNetwork | OpenVinoNetwork:
    """The exported file ``path`` on ``backend`` (onnxruntime or openvino)."""
    if backend == "openvino":
        return OpenVinoNetwork(path, device, threads, precision)
    if backend == "onnxruntime":
        return OnnxRuntimeNetwork(path, device, threads, engine_cache, precision)
    raise ValueError(f"backend {backend} does not run exported files")
