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
import os
import shutil
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a file (python/torchrun training/train.py), Python puts training/ on sys.path, not the repository
    # root, so `import training` would fail: add the root. Script-only: never runs on import or with -m.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from human_parsing_ros.errors import add_debug_flag
from human_parsing_ros.models import is_multi_person
from training.cli import run_training_cli
from training.config import load_config, parse_overrides
from training.distributed import teardown_distributed
from training.dtpr import run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="recipe YAML (training/configs/)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from the run's checkpoint.pt")
    mode.add_argument("--overwrite", action="store_true",
                      help="delete an earlier run's files in output_dir and start over (refused without it)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. stage2.eta=0.5")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = load_config(args.config, parse_overrides(args.overrides))
    created = first_missing_folder(Path(config.output_dir))
    try:
        if is_multi_person(config.model.architecture):
            from training.person_training import run_persons

            run_persons(config, resume=args.resume, overwrite=args.overwrite)
        else:
            run(config, resume=args.resume, overwrite=args.overwrite)
    except BaseException:
        if created is not None:
            remove_unstarted_run(created, Path(config.output_dir))
        raise
    finally:
        teardown_distributed()


def first_missing_folder(out: Path) -> Path | None:
    """The outermost folder of ``out`` (itself included) that does not exist yet, or None."""
    out = out.absolute()
    missing = None
    for folder in (out, *out.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def remove_unstarted_run(created: Path, out: Path) -> None:
    """Delete ``created`` (the outermost folder of ``out`` that this command made) when the run stopped before
    its first checkpoint (a failed start-up check): no half-made run folder is left behind. Rank 0 only; a run
    with a checkpoint stays (--resume continues it)."""
    if os.environ.get("RANK", "0") != "0" or not created.is_dir() or (out / "checkpoint.pt").exists():
        return
    shutil.rmtree(created, ignore_errors=True)


if __name__ == "__main__":
    run_training_cli(main, "train.py")
