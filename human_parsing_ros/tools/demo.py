"""The main job, end to end: bundled frames -> camera topic -> parser_node -> overlays and part presence on disk.

    human_parsing_demo --out demo_out
    human_parsing_demo --picture docs/images/parsing_example.jpg   # the README's picture; no ROS needed

A user's mistake (missing or broken weights, an unknown device, an output path that is a file) ends in one line
on stderr, exit status 1 and no output folder; ``--debug`` or HUMAN_PARSING_DEBUG=1 shows the traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .. import render
from ..errors import UserError, add_debug_flag, run_cli
from ..models import is_multi_person
from ..resources import DEFAULT_WEIGHTS, share_file
from ..runtime import summary
from ..samples import load_rgb, sample_photos
from ..weights import WeightsInfo, load_weights
from .harness import Client, NodeProcess, image_array, stamp_ns, use_large_image_transport
from .random_weights import make_random_weights

BANNER = "!" * 78


class DemoError(UserError, ValueError):
    """A demo argument that cannot work (an unknown device); the message names it."""


def pick_weights(weights: str | None, out: Path) -> tuple[Path, WeightsInfo]:
    """The weights to run and what they hold: given, else installed default, else a freshly made UNTRAINED file
    (in ``out``, created for it). Every tensor is loaded once here, so a broken file is refused (WeightsError
    naming it) before the output folder or the node exist."""
    if weights:
        path = Path(weights)
    elif DEFAULT_WEIGHTS.is_file():
        path = DEFAULT_WEIGHTS
    else:
        out.mkdir(parents=True, exist_ok=True)
        path = make_random_weights(out / "untrained_random.safetensors")
    _, info = load_weights(path)
    return path, info


def check_device(device: str) -> None:
    """DemoError unless the node could run on ``device`` here (the node would otherwise exit on start)."""
    from ..parser import resolve_device

    try:
        resolve_device(device)
    except ValueError as error:
        raise DemoError(f"--device {device}: {error}") from None


def run_demo(out: Path, weights: str | None = None, rate_hz: float = 4.0, loops: int = 2,
             device: str = "auto", timeout: float = 120.0) -> dict:
    import rclpy
    from sensor_msgs.msg import Image

    from human_parsing_msgs.msg import ClassInfo, Parts, Persons

    if out.exists() and not out.is_dir():
        raise DemoError(f"{out}: exists and is not a folder (--out)")
    check_device(device)
    weights_path, info = pick_weights(weights, out)
    untrained = info.untrained
    out.mkdir(parents=True, exist_ok=True)
    if untrained:
        print(f"{BANNER}\n!! UNTRAINED WEIGHTS: {weights_path} is a random initialisation.\n"
              f"!! The overlays below show the plumbing working, NOT real parses.\n{BANNER}", flush=True)
    multi_person = is_multi_person(info.architecture)
    frames, names = demo_frames(multi_person)
    camera = "/demo/camera/image_raw"
    node = NodeProcess(share_file("config", "parser.yaml"), remaps={"image": camera},
                       params={"weights": str(weights_path), "device": device}, log_path=out / "node.log")
    use_large_image_transport()
    rclpy.init()
    client = None
    try:
        node.start()
        outputs = {"labels": Image, "overlay": Image, "parts": Parts, "class_info": ClassInfo}
        if multi_person:
            outputs.update({"instances": Image, "persons": Persons})
        client = Client(camera, outputs, name="human_parsing_demo")
        client.wait_for(lambda: node.alive() is False or client.camera.get_subscription_count() > 0, timeout,
                        "the node to come up")
        if not node.alive():
            raise RuntimeError(f"parser_node exited; its log:\n{node.log()}")
        client.wait_for(lambda: len(client.received.get("overlay")) > 0 or _matched(client), 10.0,
                        "the output subscriptions to match")
        sent: dict[int, str] = {}
        for i in range(loops * len(frames)):
            msg = client.image_msg(frames[i % len(frames)], frame_id="demo_camera")
            sent[stamp_ns(msg.header)] = names[i % len(names)]
            client.publish(msg)
            time.sleep(1.0 / rate_hz)
        client.wait_for(lambda: _done(client, sent), 30.0, "the last outputs")
    finally:
        if client is not None:
            client.close()
        node.stop()
        rclpy.try_shutdown()
    return _write_outputs(out, client, sent, weights_path, untrained, loops * len(frames))


def view_json(view: object) -> str:
    """A received message's view (``human_parsing_ros.messages``) as the JSON of the demo's records."""
    return json.dumps(dataclasses.asdict(view), indent=1)


def demo_frames(multi_person: bool) -> tuple[list[np.ndarray], list[str]]:
    """The bundled photos (and their names); for multi-person weights, pairs of them side by side, so that
    every frame shows two people."""
    photos = sample_photos()
    frames = [load_rgb(photo) for photo in photos]
    if not multi_person:
        return frames, [photo.stem for photo in photos]
    pairs, names = [], []
    for i in range(len(frames)):
        left, right = frames[i], frames[(i + 1) % len(frames)]
        height = min(left.shape[0], right.shape[0])
        fit = [render.resize_nearest(f, (height, round(f.shape[1] * height / f.shape[0]))) for f in (left, right)]
        pairs.append(np.ascontiguousarray(np.concatenate(fit, axis=1)))
        names.append(f"{photos[i].stem}+{photos[(i + 1) % len(photos)].stem}")
    return pairs, names


def _matched(client: Client) -> bool:
    return all(sub.get_publisher_count() > 0 for sub in client.subs if "class_info" not in sub.topic_name)


def _done(client: Client, sent: dict[int, str]) -> bool:
    last = max(sent)
    return any(stamp_ns(msg.header) == last for msg in client.received.get("labels")) or len(
        client.received.get("labels")) + 1 >= len(sent)


def _write_outputs(out: Path, client: Client, sent: dict[int, str], weights: Path, untrained: bool,
                   published: int) -> dict:
    from PIL import Image as PILImage

    from ..ros.interface import class_info_from_msg, parts_from_msg, persons_from_msg

    latencies = [(arrived - stamp_ns(msg.header) / 1e9) * 1e3 for arrived, msg in client.received.timed("labels")]
    info = [class_info_from_msg(msg) for msg in client.received.get("class_info")]
    labels_by_stamp = {stamp_ns(msg.header): image_array(msg) for msg in client.received.get("labels")}
    instances_by_stamp = {stamp_ns(msg.header): image_array(msg) for msg in client.received.get("instances")}
    persons_by_stamp = {}
    for msg in client.received.get("persons"):
        persons = persons_from_msg(msg)
        persons_by_stamp[persons.stamp.sec * 1_000_000_000 + persons.stamp.nanosec] = persons
        (out / f"persons_{sent.get(persons.stamp.sec * 1_000_000_000 + persons.stamp.nanosec, 'unknown')}.json"
         ).write_text(view_json(persons))
    pictures: dict[str, tuple[np.ndarray, render.Legend | None]] = {}  # per photo: latest overlay, its legend
    for msg in client.received.get("overlay"):
        name = sent.get(stamp_ns(msg.header), "unknown")
        picture = image_array(msg)
        instances, persons = instances_by_stamp.get(stamp_ns(msg.header)), persons_by_stamp.get(stamp_ns(msg.header))
        if instances is not None and persons is not None and instances.shape == picture.shape[:2]:
            picture = render.outline_persons(picture, instances,
                                             [(p.instance, p.id, p.bbox) for p in persons.persons])
        labels = labels_by_stamp.get(stamp_ns(msg.header))
        legend = None
        if info and labels is not None:
            legend = render.Legend.of(labels, info[0].names, np.asarray(info[0].palette, np.uint8))
            PILImage.fromarray(np.concatenate([picture, render.render_legend(legend, picture.shape[0])], axis=1)
                               ).save(out / f"overlay_{name}.png")
        else:
            PILImage.fromarray(picture).save(out / f"overlay_{name}.png")
        pictures[name] = (picture, legend)
    sheet = out / "contact_sheet.png"
    if pictures:  # legends drawn at the sheet's scale, so that they stay readable there
        shown = [pictures[name] for name in sorted(pictures)]
        PILImage.fromarray(render.contact_sheet([picture for picture, _ in shown],
                                                legends=[legend for _, legend in shown])).save(sheet)
    present: dict[str, int] = {}
    for msg in client.received.get("parts"):
        parts = parts_from_msg(msg)
        name = sent.get(parts.stamp.sec * 1_000_000_000 + parts.stamp.nanosec, "unknown")
        (out / f"parts_{name}.json").write_text(view_json(parts))
        for part in parts.present():
            present[part.name] = present.get(part.name, 0) + 1
    labels = client.received.get("labels")
    result = {
        "published": published, "labels": len(labels), "overlays": len(client.received.get("overlay")),
        "parts": len(client.received.get("parts")), "class_set": info[0].class_set if info else None,
        "latency_ms": summary(latencies), "untrained": untrained, "weights": str(weights),
        "top_parts": sorted(present.items(), key=lambda kv: -kv[1])[:5], "out": str(out),
        "contact_sheet": str(sheet) if pictures else None,
        "persons": {sent.get(stamp, "unknown"): len(p.persons) for stamp, p in sorted(persons_by_stamp.items())}
        if persons_by_stamp else None,
    }
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    return result


PICTURE_PHOTOS = ("0880", "0900", "0920")  # the bundled photos in the README's picture
PICTURE_INPUT_SIZE = (416, 416)


def example_picture(path: str | os.PathLike, weights: str | os.PathLike = DEFAULT_WEIGHTS,
                    photos: tuple[str, ...] = PICTURE_PHOTOS, height: int = 300, device: str = "cpu",
                    alpha: float = 0.5, quality: int = 85) -> Path:
    """Write the README's picture (docs/images/parsing_example.jpg): per bundled photo, the photo and the
    ``weights``' parse over it (the node's overlay, ``alpha`` as its default ``overlay_alpha``) with a legend of the
    classes found, in one row ``height`` pixels high; parsed through ``HumanParser`` at 416 x 416 (no ROS)."""
    from PIL import Image as PILImage

    from ..parser import HumanParser

    parser = HumanParser(weights, device=device, input_size=PICTURE_INPUT_SIZE)
    by_stem = {photo.stem: photo for photo in sample_photos()}
    missing = [stem for stem in photos if stem not in by_stem]
    if missing:
        raise DemoError(f"no bundled photo {missing[0]} (bundled: {', '.join(sorted(by_stem))})")
    pairs, legends = [], []
    for stem in photos:
        image = load_rgb(by_stem[stem])
        result = parser.parse(image)
        palette = result.class_set.palette
        parsed = render.overlay(image, result.labels, palette, alpha, result.class_set.background)
        gap = np.full((image.shape[0], max(4, image.shape[1] // 40), 3), 255, np.uint8)
        pairs.append(np.concatenate([image, gap, parsed], axis=1))
        legends.append(render.Legend.of(result.labels, result.class_set.names, palette, result.class_set.background))
    sheet = render.contact_sheet(pairs, columns=len(pairs), height=height, legends=legends)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(sheet).save(path, quality=quality, optimize=True)
    return path


def main(argv: list[str] | None = None) -> None:
    """The ``human_parsing_demo`` command: one line on stderr for a user's mistake (see ``errors.run_cli``)."""
    run_cli(_main, argv, prog="human_parsing_demo")


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="human_parsing_demo",
                                     description="Run parser_node on the bundled sample frames over DDS.")
    parser.add_argument("--out", default="demo_out", help="folder for overlays, parts JSON and the node log")
    parser.add_argument("--weights", default=None, help="weights file (default: installed, else untrained random)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rate", type=float, default=4.0, help="camera rate in Hz")
    parser.add_argument("--loops", type=int, default=2, help="times to play the sample frames")
    parser.add_argument("--picture", default=None, metavar="PATH",
                        help="instead: write the README's picture (bundled photos, their parse and legends; no ROS) "
                             "to PATH, e.g. docs/images/parsing_example.jpg; --weights and --device apply")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.picture:
        path = example_picture(args.picture, args.weights or DEFAULT_WEIGHTS,
                               device="cpu" if args.device == "auto" else args.device)
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
        return
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    result = run_demo(Path(args.out), args.weights, args.rate, args.loops, args.device)
    lat = result["latency_ms"]
    top = ", ".join(f"{name} {n}x" for name, n in result["top_parts"]) or "none"
    print(f"demo: {result['labels']}/{result['published']} frames parsed, {result['overlays']} overlays and "
          f"{result['parts']} part reports in {result['out']}/, end-to-end p50 {lat['p50']:.0f} ms "
          f"p99 {lat['p99']:.0f} ms, class set {result['class_set']}, most present: {top}"
          + ("  [UNTRAINED WEIGHTS: not real parses]" if result["untrained"] else ""))
    if result["persons"] is not None:
        counts = sorted(set(result["persons"].values()))
        print(f"multi-person weights: persons per frame {counts}, each outlined in its own colour with its id "
              f"in the overlays; persons_<frame>.json hold the persons messages")
    print(f"contact sheet (every frame, with a legend): {result['contact_sheet']}")
    sys.exit(0 if result["labels"] > 0 else 1)


if __name__ == "__main__":
    main()
