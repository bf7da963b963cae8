"""Train a human parser with DTPR (or a multi-person parser, RP R-CNN) and write the node's weights file.

    python training/train.py --config training/configs/ccp_mobilenetv2.yaml
    python training/train.py --config ... --resume            # continue from runs/<name>/checkpoint.pt
    python training/train.py --config ... --overwrite         # start over in a directory that holds a run
    torchrun --nproc_per_node 4 training/train.py --config ...  # one process per GPU
    python training/train.py --config ... stage2.epochs=0 name=baseline   # key=value overrides
    python -m training.train --config ...                     # the same, as a module (from the repository root)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a file (python/torchrun training/train.py), Python puts training/ on sys.path, not the repository
    # root, so `import training` would fail: add the root. Script-only: never runs on import or with -m.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from human_parsing_ros.models import is_multi_person
from human_parsing_ros.weights import WeightsError
from training.checkpoint import CheckpointError
from training.config import load_config, parse_overrides
from training.distributed import teardown_distributed
from training.dtpr import run
from training.engine import NonFiniteError
from training.label_statistics import LabelIdError, UnreadableDataError
from training.runs import RunDirectoryError

# Errors that say what is wrong in one line (a file, a step, a value): no traceback for these. (Every
# FileNotFoundError the trainer raises names the missing path.)
USER_ERRORS = (CheckpointError, FileNotFoundError, LabelIdError, NonFiniteError, RunDirectoryError,
               UnreadableDataError, WeightsError)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="recipe YAML (training/configs/)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from the run's checkpoint.pt")
    mode.add_argument("--overwrite", action="store_true",
                      help="delete an earlier run's files in output_dir and start over (refused without it)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. stage2.eta=0.5")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = load_config(args.config, parse_overrides(args.overrides))
    try:
        if is_multi_person(config["model"]["architecture"]):
            from training.person_training import run_persons

            run_persons(config, resume=args.resume, overwrite=args.overwrite)
        else:
            run(config, resume=args.resume, overwrite=args.overwrite)
    except USER_ERRORS as error:
        print(f"[dtpr] error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        teardown_distributed()


if __name__ == "__main__":
    main()
