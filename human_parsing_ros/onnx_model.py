"""Exported model files: a weights file turned into ONNX that carries the weights file's metadata.

    python -m human_parsing_ros.tools.export_model default.safetensors default.onnx

The ONNX graph is the network's ``forward_lowres`` (normalised 1x3xHxW image in, logits at the decoder's
resolution out; dynamic batch and size), so every backend shares the parser's own pre- and post-processing.
Its ``metadata_props`` hold the weights file's metadata keys (the same JSON texts, see weights.py) plus
``exported_from`` (the weights file's name and sha256) and ``onnx_graph``. Writing needs PyTorch and the
``onnx`` package; reading the metadata needs the ``onnx`` package or, without it, ONNX Runtime.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from .errors import flattened
from .weights import WeightsError, WeightsInfo, new_file_mode, read_weights_info

ONNX_SUFFIX = ".onnx"
OPSET = 17
GRAPH = "forward_lowres"  # what the file's graph computes (metadata key onnx_graph)
INPUT_NAME, OUTPUT_NAME = "image", "logits"


def is_onnx_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == ONNX_SUFFIX


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_onnx_model(weights: str | os.PathLike, out: str | os.PathLike,
                      int8_photos: list[Path] | None = None) -> Path:
    """Write ``weights`` (a .safetensors weights file of a single-map network) as ONNX with its metadata, atomically.

    ``int8_photos``: quantize to int8 (ONNX Runtime's static QDQ quantization: per-channel int8 weights, uint8
    activations whose ranges are calibrated (min/max) on these photos, letterboxed as the parser does); the
    file's ``quantization`` metadata names the method and the photos. Multi-person weights are refused (their
    network returns a variable number of persons; they run with the torch backend)."""
    import onnx
    import torch

    from .weights import load_weights

    class _LowResolution(torch.nn.Module):  # what torch.onnx traces: forward_lowres as forward
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model.forward_lowres(x)

    weights, out = Path(weights), Path(out)
    model, info = load_weights(weights)
    if model.multi_person:
        raise WeightsError(f"{weights}: {info.architecture} is a multi-person network; only single-map networks "
                           "export to ONNX (multi-person weights run with the torch backend)")
    network = _LowResolution(model.eval().float()).eval()
    dummy = torch.zeros(1, 3, *info.input_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.onnx.export(network, (dummy,), tmp, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                                        OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"}},
                          opset_version=OPSET, dynamo=False)
        metadata = {**info.to_metadata(), "onnx_graph": json.dumps(GRAPH),
                    "exported_from": json.dumps({"file": weights.name, "sha256": file_sha256(weights)})}
        if int8_photos:
            metadata["quantization"] = json.dumps(quantize_int8(tmp, info, int8_photos))
        graph = onnx.load(tmp)
        onnx.helper.set_model_props(graph, metadata)
        onnx.save(graph, tmp)
        os.chmod(tmp, new_file_mode())  # mkstemp made it 0600: readable by a node of another user
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


QUANTIZATION_METHOD = ("ONNX Runtime static quantization, QDQ format: per-channel symmetric int8 weights, uint8 "
                       "activations calibrated by min/max over the calibration photos (letterboxed to the input size)")


def quantize_int8(path: str | os.PathLike, info: WeightsInfo, photos: list[Path]) -> dict:
    """Replace the fp32 ONNX file at ``path`` by its int8 quantization calibrated on ``photos``; what was done."""
    import numpy as np
    import torch
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from PIL import Image, UnidentifiedImageError

    from .inference import network_input, place_image

    mean, std = torch.tensor(info.mean), torch.tensor(info.std)

    def prepared(photo: Path) -> np.ndarray:
        try:
            with Image.open(photo) as handle:
                image = torch.from_numpy(np.array(handle.convert("RGB")))
        except (OSError, UnidentifiedImageError) as err:
            raise WeightsError(f"{photo}: cannot read the calibration photo ({err})") from None
        placement = place_image(tuple(image.shape[:2]), info.input_size, "letterbox")
        return network_input(image, info.input_size, placement, mean, std, torch.float32).contiguous().numpy()

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self.remaining = iter(photos)

        def get_next(self) -> dict | None:
            photo = next(self.remaining, None)
            return None if photo is None else {INPUT_NAME: prepared(photo)}

    shaped = f"{path}.shaped.onnx"
    try:
        quant_pre_process(str(path), shaped)
        quantize_static(shaped, str(path), Photos(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        if os.path.exists(shaped):
            os.unlink(shaped)
    return {"precision": "int8", "method": QUANTIZATION_METHOD, "photos": [Path(p).name for p in photos]}


def quantization_of(metadata: dict[str, str]) -> dict:
    """The ``quantization`` record of an exported file's metadata ({} for an fp32 file)."""
    return json.loads(metadata["quantization"]) if "quantization" in metadata else {}


def cached_export(weights: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The ONNX file of ``weights`` in the cache (exported on first use, keyed by the file's sha256)."""
    weights = Path(weights)
    if not weights.is_file():
        raise WeightsError(f"{weights}: no such weights file")
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / "onnx"
    target = folder / f"{weights.stem}-{file_sha256(weights)[:16]}-opset{OPSET}{ONNX_SUFFIX}"
    if not target.is_file():
        export_onnx_model(weights, target)
    return target


def default_cache_dir() -> Path:
    """``$HPR_CACHE_DIR``, else ``$XDG_CACHE_HOME/human_parsing_ros``, else ``~/.cache/human_parsing_ros``."""
    if os.environ.get("HPR_CACHE_DIR"):
        return Path(os.environ["HPR_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "human_parsing_ros"


def onnx_info(metadata: dict[str, str], path: str | os.PathLike) -> WeightsInfo:
    """The weights metadata an exported file carries; WeightsError naming the file when it is not one of ours."""
    if metadata.get("onnx_graph") != json.dumps(GRAPH):
        raise WeightsError(f"{path}: not a human_parsing_ros model file (no onnx_graph '{GRAPH}' in its metadata; "
                           "export one with python -m human_parsing_ros.tools.export_model)")
    keys = {key: value for key, value in metadata.items() if key not in ("onnx_graph", "exported_from", "quantization")}
    return WeightsInfo.from_metadata(keys, path)


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an exported file, read with the ``onnx`` package (both backends' extras have it)
    or else with ONNX Runtime."""
    if not Path(path).is_file():
        raise WeightsError(f"{path}: no such model file")
    try:
        import onnx
    except ImportError:
        return _metadata_by_onnxruntime(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 (protobuf's DecodeError, and whatever onnx raises on a bad file)
        raise WeightsError(f"{path}: not a readable ONNX file ({flattened(err)})") from None
    return {prop.key: prop.value for prop in model.metadata_props}


def _metadata_by_onnxruntime(path: str | os.PathLike) -> dict[str, str]:
    try:
        import onnxruntime
    except ImportError:
        raise WeightsError(f"{path}: reading an exported .onnx file needs onnx or onnxruntime "
                           "(pip install human_parsing_ros[onnxruntime] or [openvino])") from None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 (onnxruntime's own error types)
        raise WeightsError(f"{path}: ONNX Runtime cannot load it ({flattened(err)})") from None
    return dict(session.get_modelmeta().custom_metadata_map)


def read_onnx_info(path: str | os.PathLike) -> WeightsInfo:
    """Only the weights metadata of an exported file."""
    return onnx_info(read_onnx_metadata(path), path)


def read_model_info(path: str | os.PathLike) -> WeightsInfo:
    """The metadata of a .safetensors weights file or of an exported .onnx model file."""
    return read_onnx_info(path) if is_onnx_file(path) else read_weights_info(path)
