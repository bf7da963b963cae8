"""A contact sheet of real photos with what each weights file makes of them (the README's real-scene picture).

    python training/tools/scene_sheet.py --scenes data/real_scenes/eval --photos 000000012345.jpg ... \
        --out docs/images/real_scenes.jpg

One row per photo: the photo, then per weights file (default: both installed) its parse over it, each
person it reports outlined (map persons for single-map weights, ``human_parsing_ros/map_persons.py``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from human_parsing_ros.errors import add_debug_flag, run_cli


def parsed_picture(parser, image: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` with ``parser``'s map over it and its persons outlined."""
    from human_parsing_ros import render
    from human_parsing_ros.map_persons import persons_from_map

    result = parser.parse(image)
    instances, persons = ((result.instances, result.persons) if parser.multi_person
                          else persons_from_map(result.labels))
    picture = render.overlay(image, result.labels, result.class_set.palette, alpha, result.class_set.background)
    return render.outline_persons(picture, instances, [(p.instance, p.instance, p.bbox) for p in persons])


def scene_sheet(photos: list[Path], weights: list[Path], out: Path, height: int = 240) -> Path:
    """Write the sheet of ``photos`` parsed by each of ``weights`` to ``out``."""
    from PIL import Image

    from human_parsing_ros import render
    from human_parsing_ros.parser import HumanParser
    from human_parsing_ros.samples import load_rgb

    parsers = [HumanParser(w, device="cpu") for w in weights]
    tiles = []
    for photo in photos:
        image = load_rgb(photo)
        tiles += [image] + [parsed_picture(parser, image) for parser in parsers]
    sheet = render.contact_sheet(tiles, columns=1 + len(parsers), height=height)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(out, quality=85, optimize=True)
    return out


def main(argv: list[str] | None = None) -> int:
    from training.evaluate_scenes import installed_weights

    parser = argparse.ArgumentParser(prog="scene_sheet.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=Path, required=True, help="folder with images/")
    parser.add_argument("--photos", nargs="+", required=True, help="file names under images/")
    parser.add_argument("--weights", type=Path, action="append", default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--height", type=int, default=240)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    photos = [args.scenes / "images" / name for name in args.photos]
    print(scene_sheet(photos, args.weights or installed_weights(), args.out, args.height))
    return 0


if __name__ == "__main__":
    run_cli(main, prog="scene_sheet.py")
