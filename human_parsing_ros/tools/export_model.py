"""Turn a weights file into an exported ONNX model file that carries the weights file's metadata.

    human_parsing_export_model default.safetensors default.onnx
    human_parsing_export_model default.safetensors default.onnx --check photo.jpg   # and compare with PyTorch
    human_parsing_export_model default.safetensors default_int8.onnx --int8 calibration/*.jpg   # int8

The node and ``HumanParser`` run the written file with ``backend onnxruntime`` and need nothing else.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError, add_debug_flag, run_cli
from ..onnx_model import ONNX_SUFFIX, export_onnx_model


def main(argv: list[str] | None = None) -> None:
    """The ``human_parsing_export_model`` command: one line on stderr for a user's mistake."""
    run_cli(_main, argv, prog="human_parsing_export_model")


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="human_parsing_export_model",
                                     description="Export a .safetensors weights file to ONNX (with its metadata).")
    parser.add_argument("weights", help="the .safetensors weights file")
    parser.add_argument("output", help=f"the {ONNX_SUFFIX} file to write")
    parser.add_argument("--check", nargs="*", default=[], metavar="IMAGE",
                        help="parse these photos with PyTorch and with the written file; print the pixels that agree")
    parser.add_argument("--int8", nargs="+", default=None, metavar="PHOTO",
                        help="quantize to int8, calibrated on these photos (use training photos, never test photos; "
                             "a few dozen suffice); the file's metadata names them and the method")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if Path(args.output).suffix.lower() != ONNX_SUFFIX:
        raise UserError(f"{args.output}: the exported file's name must end in {ONNX_SUFFIX}")
    photos = [Path(photo) for photo in args.int8] if args.int8 else None
    for photo in photos or []:
        if not photo.is_file():
            raise UserError(f"{photo}: no such calibration photo")
    path = export_onnx_model(args.weights, args.output, photos)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    for image in args.check:
        print(f"{image}: {agreement(args.weights, path, image) * 100:.3f}% of pixels agree with PyTorch")


def agreement(weights: str | Path, exported: str | Path, image_path: str | Path) -> float:
    """The fraction of pixels whose label is the same in PyTorch (fp32, CPU) and in ONNX Runtime."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from ..parser import HumanParser

    try:
        with Image.open(image_path) as handle:
            image = np.asarray(handle.convert("RGB"))
    except (OSError, UnidentifiedImageError) as err:
        raise UserError(f"{image_path}: cannot read the photo ({err})") from None
    torch_labels = HumanParser(weights, device="cpu").parse(image).labels
    onnx_labels = HumanParser(exported, device="cpu", backend="onnxruntime").parse(image).labels
    return float((torch_labels == onnx_labels).mean())


if __name__ == "__main__":
    main()
