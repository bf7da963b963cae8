"""Import a published SCHP checkpoint (Self-Correction for Human Parsing) as this package's weights file.

    human_parsing_import_schp exp-schp-201908261155-lip.pth schp_lip.safetensors --dataset lip

SCHP's files hold a dict whose ``state_dict`` keys carry DataParallel's ``module.`` prefix. They
are read with ``torch.load(weights_only=True)``: tensors only, no pickled code ever runs. The
network is the zoo's ``ce2p`` with SCHP's ResNet-101; the result parses exactly as SCHP's own
network does: SCHP feeds BGR, the node RGB, so the first convolution's input channels are reversed
and the normalisation is stored in RGB order; SCHP's in-place ABN scales by |weight| + eps, so each
BatchNorm weight is stored that way.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import torch

from ..class_sets import get_class_set
from ..errors import UserError, add_debug_flag, run_cli
from ..models import build_model
from ..models.ce2p.state import abn_as_batchnorm, match_state, read_state
from ..weights import WeightsInfo, save_weights

# SCHP dataset name -> (our class set, the input size SCHP evaluates at: height, width)
SCHP_DATASETS = {"lip": ("lip", (473, 473)), "atr": ("atr", (512, 512)), "pascal": ("pascal_person_part", (512, 512))}
# SCHP's BGR mean and std, (0.406, 0.456, 0.485) and (0.225, 0.224, 0.229), in RGB order
SCHP_MEAN_RGB, SCHP_STD_RGB = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# SCHP module prefix -> ours (first match wins: the parsing classifier before the rest of its decoder)
_PREFIXES = (("decoder.conv4.", "aux_heads.0."), ("decoder.", "decoder.parsing."),
             ("context_encoding.", "decoder.context_encoding."), ("edge.", "decoder.edge."),
             ("fushion.3.", "segmentation_head."), ("fushion.", "decoder.fusion."))
_ENCODER_PREFIXES = ("conv1.", "bn1.", "conv2.", "bn2.", "conv3.", "bn3.", "layer1.", "layer2.", "layer3.", "layer4.")


class SchpImportError(UserError, ValueError):
    """A file that is not an SCHP checkpoint this importer understands; the message names it and why."""


def ce2p_key(schp_key: str) -> str | None:
    """Our name for an SCHP state-dict key (without ``module.``), or None if it is not one of SCHP's."""
    if schp_key.startswith(_ENCODER_PREFIXES):
        return "encoder." + schp_key
    for old, new in _PREFIXES:
        if schp_key.startswith(old):
            return new + schp_key[len(old):]
    return None


def read_schp_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of an SCHP checkpoint, ``module.`` stripped; SchpImportError naming the file otherwise."""
    return read_state(path, "checkpoint", SchpImportError)


def check_schp_tensors(state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """SchpImportError naming the file and the first tensor that is not floating point or holds NaN/Inf
    (SCHP's networks have no integer buffers: in-place ABN keeps no batch counter)."""
    for key, value in state.items():
        if not value.is_floating_point():
            raise SchpImportError(f"{path}: tensor {key} is {str(value.dtype).replace('torch.', '')}; "
                                  "an SCHP checkpoint holds floating-point tensors only")
        if not bool(torch.isfinite(value).all()):
            raise SchpImportError(f"{path}: tensor {key} holds NaN or Inf values")


def convert_schp_state(state: dict[str, torch.Tensor], path: str | os.PathLike = "<state>") -> dict[str, torch.Tensor]:
    """SCHP's tensors under ``ce2p``'s names, first convolution turned from BGR to RGB input, BatchNorm weights
    as SCHP's in-place ABN applies them (|w| + eps)."""
    converted = {}
    for key, value in state.items():
        ours = ce2p_key(key)
        if ours is None:
            raise SchpImportError(f"{path}: tensor {key} is not part of SCHP's CE2P network")
        converted[ours] = value
    first = converted.get("encoder.conv1.weight")
    if first is None or first.dim() != 4:
        raise SchpImportError(f"{path}: no 4-D tensor conv1.weight (the first convolution): not an SCHP CE2P "
                              "checkpoint")
    converted["encoder.conv1.weight"] = first.flip(1)
    return abn_as_batchnorm(converted)


def import_schp(source: str | os.PathLike, output: str | os.PathLike, dataset: str) -> Path:
    """Write ``output`` (safetensors) from SCHP checkpoint ``source`` trained on ``dataset`` (lip | atr | pascal)."""
    if dataset not in SCHP_DATASETS:
        raise SchpImportError(f"dataset must be one of {', '.join(SCHP_DATASETS)}, not '{dataset}'")
    class_set_name, input_size = SCHP_DATASETS[dataset]
    class_set = get_class_set(class_set_name)
    state = read_schp_state(source)
    check_schp_tensors(state, source)
    classes = state.get("fushion.3.weight")
    if classes is None:
        raise SchpImportError(f"{source}: no fushion.3.weight: not an SCHP CE2P checkpoint")
    if classes.shape[0] != class_set.num_classes:
        raise SchpImportError(f"{source}: {classes.shape[0]} classes, but SCHP's {dataset} has "
                              f"{class_set.num_classes}: wrong --dataset?")
    converted = convert_schp_state(state, source)
    model = build_model("ce2p", num_classes=class_set.num_classes, encoder="resnet101_schp")
    model.load_state_dict(match_state(source, converted, model.state_dict(), "SCHP's CE2P network", SchpImportError))
    recipe = {"untrained": False, "source": "SCHP (Self-Correction for Human Parsing)", "dataset": dataset,
              "imported_from": Path(source).name, "stages": [], "sampling": "none"}
    info = WeightsInfo.for_class_set("ce2p", {"num_classes": class_set.num_classes, "encoder": "resnet101_schp"},
                                     class_set, input_size, recipe)
    info = dataclasses.replace(info, mean=SCHP_MEAN_RGB, std=SCHP_STD_RGB)
    return save_weights(output, model.eval(), info)


def main(argv: list[str] | None = None) -> None:
    """The ``human_parsing_import_schp`` command: one line on stderr for a user's mistake (``errors.run_cli``)."""
    run_cli(_main, argv, prog="human_parsing_import_schp")


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="human_parsing_import_schp",
                                     description="Import an SCHP checkpoint (.pth) as a weights file for the node.")
    parser.add_argument("source", help="SCHP checkpoint, e.g. exp-schp-201908261155-lip.pth")
    parser.add_argument("output", help="the .safetensors file to write")
    parser.add_argument("--dataset", required=True, choices=sorted(SCHP_DATASETS),
                        help="what the checkpoint was trained on (sets the class set and input size)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if Path(args.output).is_dir():
        raise SchpImportError(f"{args.output}: is a folder; give the path of the .safetensors file to write")
    path = import_schp(args.source, args.output, args.dataset)
    print(f"wrote {path}: SCHP CE2P ResNet-101, {args.dataset} classes, input "
          f"{SCHP_DATASETS[args.dataset][1][0]}x{SCHP_DATASETS[args.dataset][1][1]}")


if __name__ == "__main__":
    main()
