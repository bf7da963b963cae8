"""Give weights files their class set's current palette, touching nothing else.

    python -m human_parsing_ros.tools.set_palette human_parsing_ros/data/weights/default.safetensors

A weights file carries its palette in its metadata (``palette``), so a palette change in the class-set
registry reaches a file only when it is rewritten. This rewrites the ``palette`` entry from the registry's
class set of the same name (``--class-set`` to name another) and keeps every tensor and every other metadata
entry as it was, byte for byte; the file is replaced atomically, with its permissions kept.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from ..class_sets import get_class_set
from ..errors import add_debug_flag, run_cli
from ..weights import WeightsError, read_weights_info


def read_raw(path: str | os.PathLike) -> tuple[dict[str, str], dict]:
    """The metadata strings and tensors of a safetensors file, as stored."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as handle:
        return dict(handle.metadata() or {}), {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118


def set_palette(path: str | os.PathLike, class_set: str | None = None) -> bool:
    """Rewrite ``path``'s palette to the registry's ``class_set`` (default: the one the file names).

    WeightsError naming the file if it is no weights file or its class names differ from the class set's.
    Returns whether the file changed (False: it already had that palette, and was left alone).
    """
    from safetensors.torch import save_file

    path = Path(path)
    info = read_weights_info(path)  # validates the file; WeightsError naming it otherwise
    target = get_class_set(class_set or info.class_set_name)
    if tuple(info.class_names) != target.names:
        raise WeightsError(f"{path}: its classes are not those of class set {target.name}; palette left alone")
    palette = target.palette.tolist()
    if info.palette == palette:
        return False
    metadata, tensors = read_raw(path)
    metadata["palette"] = json.dumps(palette)
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True


def main(argv: list[str] | None = None) -> None:
    """The command: one line on stderr for a missing or broken file (``errors.run_cli``)."""
    run_cli(_main, argv, prog="set_palette")


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m human_parsing_ros.tools.set_palette",
                                     description="Give weights files their class set's current palette "
                                                 "(tensors and other metadata untouched).")
    parser.add_argument("weights", nargs="+", help="weights files to rewrite in place")
    parser.add_argument("--class-set", default=None, help="take the palette of this class set (default: the one "
                                                          "each file names)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    for weights in args.weights:
        changed = set_palette(weights, args.class_set)
        print(f"{weights}: {'palette rewritten' if changed else 'palette already current, left alone'}")


if __name__ == "__main__":
    main()
