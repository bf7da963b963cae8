"""An untrained stand-in for the default weights, for trying the plumbing before any training.

    human_parsing_random_weights random.safetensors --class-set ccp
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from ..class_sets import get_class_set
from ..errors import UserError, add_debug_flag, run_cli
from ..models import build_model
from ..weights import WeightsInfo, save_weights

DEFAULT_ARCHITECTURE = "deeplabv3plus"
DEFAULT_ARCHITECTURE_ARGS = {"encoder": "mobilenet_v2", "output_stride": 16, "decoder_channels": 128}
DEFAULT_INPUT_SIZE = (400, 400)  # the paper's training crop


def make_random_weights(path: str | os.PathLike, class_set: str = "ccp", seed: int = 0,
                        input_size: tuple[int, int] = DEFAULT_INPUT_SIZE) -> Path:
    """Write an UNTRAINED weights file (random initialisation) of the default architecture.

    Its outputs are meaningless; it exists so the serving path can run before
    any training. The metadata marks it ``untrained`` and the node says so loudly.
    """
    classes = get_class_set(class_set)
    torch.manual_seed(seed)
    model = build_model(DEFAULT_ARCHITECTURE, num_classes=classes.num_classes, **DEFAULT_ARCHITECTURE_ARGS)
    recipe = {"untrained": True, "dataset": None, "stages": [], "sampling": None,
              "note": f"random initialisation (seed {seed}); not trained, outputs are meaningless"}
    info = WeightsInfo.for_class_set(DEFAULT_ARCHITECTURE, {"num_classes": classes.num_classes,
                                                            **DEFAULT_ARCHITECTURE_ARGS},
                                     classes, input_size, recipe)
    return save_weights(path, model, info)


def main(argv: list[str] | None = None) -> None:
    """The ``human_parsing_random_weights`` command: one line on stderr for a user's mistake (``errors.run_cli``)."""
    run_cli(_main, argv, prog="human_parsing_random_weights")


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="human_parsing_random_weights",
                                     description="Write an UNTRAINED (random) weights file for testing the node.")
    parser.add_argument("output", help="path of the .safetensors file to write")
    parser.add_argument("--class-set", default="ccp")
    parser.add_argument("--seed", type=int, default=0)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if Path(args.output).is_dir():
        raise UserError(f"{args.output}: is a folder; give the path of the .safetensors file to write")
    get_class_set(args.class_set)  # an unknown name is refused before any folder is made
    path = make_random_weights(args.output, args.class_set, args.seed)
    print(f"wrote UNTRAINED random weights to {path} (for plumbing tests only; outputs are meaningless)")


if __name__ == "__main__":
    main()
