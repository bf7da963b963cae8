"""Score weights on real scenes: do they find the people in a room and see nobody where there is nobody?

    python training/evaluate_scenes.py --scenes ~/data/real_scenes                 # both installed weights
    python training/evaluate_scenes.py --scenes DIR --weights my.safetensors --json scores.json --markdown t.md

``--scenes`` is a folder of photos with COCO-style person annotations (``training/scene_set.py``;
docs/real_scenes.md builds the project's set). Each weights file is run through ``HumanParser`` on every
photo at its own resolution, as the node runs it. Persons come from the multi-person network
(``--persons network``, multi-person weights) or from the connected regions of the map
(``--persons map``, ``human_parsing_ros/map_persons.py``, any weights); ``auto`` picks the network's where
there is one. Printed per weights file (``scene_metrics.py``): person recall and precision at box IoU 0.5
by person size, persons per people-free photo, the map's coverage of each person by size and its part
pixels on people-free photos; for network persons also a sweep of the score threshold.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from human_parsing_ros.errors import add_debug_flag, run_cli
from training.scene_metrics import SIZE_BINS, SceneTally
from training.scene_set import ScenePhoto, SceneSetError, load_scene_set, person_mask

DETECTION_FLOOR = 0.05  # network persons are kept down to this score, so that any higher threshold can be read
SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def installed_weights() -> list[Path]:
    from human_parsing_ros.resources import DEFAULT_WEIGHTS, PERSONS_WEIGHTS

    return [Path(DEFAULT_WEIGHTS), Path(PERSONS_WEIGHTS)]


def person_sources(multi_person: bool, persons: str, both: bool) -> list[str]:
    """Where persons come from for weights that are (or not) ``multi_person``: "network" and/or "map"."""
    if persons == "network" and not multi_person:
        raise SceneSetError("single-map weights have no network persons; use --persons map")
    first = "network" if multi_person and persons != "map" else "map"
    return [first] + (["map"] if both and first != "map" else [])


def score_parser(parser: Any, photos: list[ScenePhoto], sources: list[str]) -> dict[str, SceneTally]:
    """A tally per person source of ``parser`` (a ``HumanParser``) on ``photos``. Network persons are kept down
    to ``DETECTION_FLOOR`` (read them at ``parser.person_threshold`` or any higher threshold). The map scored is
    the labels of single-map weights; for multi-person weights it is the parts of the persons scoring at least
    ``parser.person_threshold`` only (the node's merged ``labels`` also hold the network's semantic branch
    outside persons, which one parse at the floor cannot give back)."""
    from human_parsing_ros.map_persons import persons_from_map
    from human_parsing_ros.samples import load_rgb

    tallies = {source: SceneTally() for source in sources}
    for photo in photos:
        rgb = load_rgb(photo.image)
        if parser.multi_person:
            result = parser.parse(rgb, person_threshold=DETECTION_FLOOR, max_persons=255)
            kept = [p.instance for p in result.persons if p.score >= parser.person_threshold]
            labels = np.where(np.isin(result.instances, kept), result.labels, 0)
        else:
            result = parser.parse(rgb)
            labels = result.labels
        truth = [p.box for p in photo.persons]
        masks = [] if photo.people_free else [person_mask(p, photo.height, photo.width) for p in photo.persons]
        for source, tally in tallies.items():
            found = result.persons if source == "network" else persons_from_map(labels)[1]
            boxes = [(p.bbox[0], p.bbox[1], p.bbox[2] + 1, p.bbox[3] + 1) for p in found]  # inclusive -> exclusive
            tally.add_persons(photo.height, boxes, [p.score for p in found], truth, photo.crowds)
            if photo.people_free:
                tally.add_people_free_map(labels)
            else:
                tally.add_coverage(labels, photo.height, truth, masks)
    return tallies


def weights_label(path: Path) -> str:
    """A weights file's name in the table: its file name, with its run's folder for the trainer's
    ``model.safetensors`` (runs of one recipe would otherwise share a name)."""
    return f"{path.parent.name}/{path.name}" if path.name == "model.safetensors" and path.parent.name else path.name


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def markdown_rows(name: str, summary: dict[str, Any]) -> list[str]:
    """One table row per weights file (the README's table)."""
    bins = [b for b, _, _ in SIZE_BINS]
    recall = " / ".join(_pct(summary["recall_by_size"][b]) for b in bins)
    coverage = " / ".join(_pct(summary["coverage_by_size"][b]) for b in bins)
    per_photo = summary["persons_per_people_free_photo"]
    return [f"| {name} | {summary['threshold']:.2f} | {_pct(summary['recall'])} ({recall}) | "
            f"{_pct(summary['precision'])} | {'-' if per_photo is None else f'{per_photo:.2f}'} | {coverage} | "
            f"{_pct(summary['part_pixels_on_people_free'])} ({summary['people_free_photos_over_1pct']}) |"]


TABLE_HEAD = ["| weights (persons from) | threshold | person recall (<20% / 20-50% / >50% of height) | precision | "
              "persons per people-free photo | map coverage (<20% / 20-50% / >50%) | part pixels on people-free "
              "photos (photos > 1%) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]


def sweep_rows(tally: SceneTally) -> list[str]:
    """Recall, precision and persons per people-free photo at each ``SWEEP`` threshold."""
    rows = ["| threshold | recall | recall (>= 20% of height) | precision | persons per people-free photo |",
            "| ---: | ---: | ---: | ---: | ---: |"]
    for threshold in SWEEP:
        s = tally.summary(threshold)
        rows.append(f"| {threshold:.1f} | {_pct(s['recall'])} | {_pct(s['recall_at_least_20pct'])} | "
                    f"{_pct(s['precision'])} | {s['persons_per_people_free_photo']:.2f} |")
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="evaluate_scenes.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=Path, required=True, help="folder with images/ and annotations.json")
    parser.add_argument("--weights", type=Path, action="append", default=None,
                        help="weights file (repeat for several; default: both installed weights)")
    parser.add_argument("--persons", choices=("auto", "network", "map"), default="auto",
                        help="where persons come from (auto: the network's for multi-person weights)")
    parser.add_argument("--both", action="store_true",
                        help="for multi-person weights, also score persons from the map")
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos (a quick look)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table here")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from human_parsing_ros.parser import HumanParser

    args = parse_args(argv)
    photos = load_scene_set(args.scenes)[: args.limit]
    people_free = sum(p.people_free for p in photos)
    print(f"{args.scenes}: {len(photos)} photos, {len(photos) - people_free} with "
          f"{sum(len(p.persons) for p in photos)} annotated persons, {people_free} with nobody")
    report: dict[str, Any] = {"scenes": str(args.scenes), "photos": len(photos), "people_free": people_free,
                              "weights": {}}
    rows, sweeps = list(TABLE_HEAD), []
    for weights in args.weights or installed_weights():
        parser = HumanParser(weights, device=args.device)
        tallies = score_parser(parser, photos, person_sources(parser.multi_person, args.persons, args.both))
        for source, tally in tallies.items():
            threshold = parser.person_threshold if source == "network" else 0.0
            summary = tally.summary(threshold)
            name = f"{weights_label(Path(weights))} ({source})"
            report["weights"][name] = {"summary": summary,
                                       "sweep": [tally.summary(t) for t in SWEEP] if source == "network" else []}
            rows += markdown_rows(name, summary)
            if source == "network":
                sweeps += [f"\n{name}: the score threshold", *sweep_rows(tally)]
    text = "\n".join(rows + sweeps)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main, prog="evaluate_scenes.py")
