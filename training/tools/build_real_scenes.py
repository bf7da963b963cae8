"""Build the real-scene photo sets from the public repositories that hold them (training/real_scenes/).

    python training/tools/build_real_scenes.py --out data/real_scenes       # clones 4 small GitHub repos

Every photo is a COCO 2017 photo with its Flickr licence (``training/real_scenes/manifest.csv``: repository,
commit and path, licence, sha256), taken from four small public COCO subsets on GitHub at pinned commits;
person boxes and masks come from the same repositories' COCO annotation files (CC BY 4.0). Written:

- ``OUT/eval/``: the evaluation set (``training/evaluate_scenes.py``): images/, annotations.json, sources.csv;
- ``OUT/validation/``: photos for choices and score calibration, never trained on, same layout;
- ``OUT/backgrounds/``: people-free photos behind composed persons and as hard negatives (training).

The photos are not in this repository: most are CC BY-NC licensed (research use), and none may be sold.
``--mirror DIR`` reads bare repositories from ``DIR/<owner>+<name>/repo`` instead of cloning.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from human_parsing_ros.errors import UserError, add_debug_flag, run_cli

MANIFEST = Path(__file__).resolve().parents[1] / "real_scenes" / "manifest.csv"
COCO_PERSON = 1
SETS = ("eval", "validation", "backgrounds")


class BuildError(UserError, RuntimeError):
    """A repository that cannot be cloned or read, or a photo whose bytes are not the manifest's."""


def read_manifest(path: Path = MANIFEST) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def git_dir(repo: str, mirror: Path | None, cache: Path) -> Path:
    """A bare clone of GitHub repository ``repo``: the mirror's, the cache's, or a new one in the cache."""
    key = repo.replace("/", "+")
    for candidate in ([mirror / key / "repo"] if mirror else []) + [cache / key]:
        if candidate.is_dir():
            return candidate
    target = cache / key
    target.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["git", "clone", "--bare", "--quiet", f"https://github.com/{repo}", str(target)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"cannot clone https://github.com/{repo}: {done.stderr.strip().splitlines()[-1:]}")
    return target


def git_file(repo_dir: Path, commit: str, path: str) -> bytes:
    done = subprocess.run(["git", "--git-dir", str(repo_dir), "show", f"{commit}:{path}"], capture_output=True)
    if done.returncode != 0:
        raise BuildError(f"{repo_dir}: no {path} at {commit[:10]} ({done.stderr.decode().strip()})")
    return done.stdout


def person_annotations(coco: dict[str, Any], ids: set[int]) -> tuple[list[dict], list[dict]]:
    """(the ``images`` entries, the person annotations) of ``ids`` in a COCO instances file."""
    images = [{k: img[k] for k in ("id", "file_name", "height", "width", "license") if k in img}
              for img in coco["images"] if img["id"] in ids]
    persons = [{k: ann[k] for k in ("id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation")}
               for ann in coco["annotations"] if ann["image_id"] in ids and ann["category_id"] == COCO_PERSON]
    return images, persons


def build(out: Path, rows: list[dict[str, str]], mirror: Path | None, cache: Path) -> dict[str, int]:
    """Write every set of ``rows`` under ``out``; the number of photos per set."""
    repos = {row["repo"]: git_dir(row["repo"], mirror, cache) for row in rows}
    wanted: dict[tuple[str, str, str], dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for row in rows:
        folder = out / row["set"] / ("images" if row["set"] != "backgrounds" else "")
        folder.mkdir(parents=True, exist_ok=True)
        data = git_file(repos[row["repo"]], row["commit"], row["path"])
        if hashlib.sha256(data).hexdigest() != row["sha256"]:
            raise BuildError(f"{row['repo']}@{row['commit'][:10]}:{row['path']}: bytes differ from the manifest's")
        (folder / row["file"]).write_bytes(data)
        wanted[(row["repo"], row["commit"], row["annotations"])][row["set"]].add(int(row["coco_id"]))
    images: dict[str, list] = defaultdict(list)
    persons: dict[str, list] = defaultdict(list)
    for (repo, commit, path), by_set in wanted.items():
        coco = json.loads(git_file(repos[repo], commit, path))
        for name, ids in by_set.items():
            found_images, found_persons = person_annotations(coco, ids)
            images[name] += found_images
            persons[name] += found_persons
    for name in ("eval", "validation"):
        chosen = [row for row in rows if row["set"] == name]
        if not chosen:
            continue
        coco = {"info": {"description": f"human_parsing_ros real scenes, {name} set (COCO 2017 photos)",
                         "annotations_licence": "CC BY 4.0, COCO Consortium"},
                "images": sorted(images[name], key=lambda img: img["file_name"]),
                "annotations": persons[name], "categories": [{"id": COCO_PERSON, "name": "person"}]}
        (out / name / "annotations.json").write_text(json.dumps(coco))
        with open(out / name / "sources.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(chosen[0]))
            writer.writeheader()
            writer.writerows(chosen)
    return {name: sum(row["set"] == name for row in rows) for name in SETS}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="build_real_scenes.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/real_scenes"))
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--mirror", type=Path, default=None, help="bare repositories at DIR/<owner>+<name>/repo")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "human_parsing_ros" / "git")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = [row for row in read_manifest() if row["set"] in args.sets]
    counts = build(args.out, rows, args.mirror, args.cache)
    print(", ".join(f"{name}: {count} photos" for name, count in counts.items() if count) + f" under {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main, prog="build_real_scenes.py")
