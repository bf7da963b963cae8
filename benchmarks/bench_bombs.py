"""Output frame rate of the real node over DDS, compressed input: good frames alone, then with decode bombs
interleaved 1:1 (a 1 x 8M PNG, a progressive JPEG whose last scan repeats thousands of times, a BMP sent as
jpeg). A bomb must cost the node next to nothing: the target is a rate with bombs within 20 % of the rate
without.

    .venv/bin/python benchmarks/bench_bombs.py [--seconds 10] [--rounds 4] [--rate 30] [--size 640x480]
        [--weights FILE] [--input-size H W]

The camera sends good JPEG frames (a bundled photo) at ``--rate``; in the bombs phase a bomb follows each good
frame half a period later; in a control phase a second good frame does (the same message rate as with bombs).
Phases alternate good, bombs, control (machine noise falls on all); each output rate counts the ``labels``
published for that phase's good frames, over the phase's length. The node runs on the
CPU with the default weights unless ``--weights``; its own process, its own DDS domain, localhost only.
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def bombs(photo: np.ndarray, scans: int = 2_000,
          bmp_size: tuple[int, int] = (160, 120)) -> list[tuple[str, bytes, str]]:
    """(name, bytes, format field) of each bomb, each about the size of a good frame or smaller: the node refuses
    them all from their first bytes (a progressive JPEG at its 33rd scan, whether it has 2,000 or 20,000), so
    bigger bombs would only measure DDS moving megabytes (``--scans``, ``--bmp-size`` to try)."""
    from PIL import Image

    from human_parsing_ros.image_codec import jpeg_scan_count

    thin = io.BytesIO()
    Image.fromarray(np.zeros((1, 8_000_000, 3), np.uint8)).save(thin, format="PNG")
    small = Image.fromarray(photo).resize((16, 16))  # a tiny image: its last scan is a few dozen bytes
    progressive = io.BytesIO()
    small.save(progressive, format="JPEG", quality=90, progressive=True)
    data = progressive.getvalue()
    last = data.rindex(b"\xff\xda")  # the last start-of-scan: repeat that scan, keep the end-of-image marker
    repeated = data[:last] + data[last:-2] * (scans - jpeg_scan_count(data, 1000) + 1) + data[-2:]
    bmp = io.BytesIO()
    Image.fromarray(photo).resize(bmp_size).save(bmp, format="BMP")
    return [("png_1x8M", thin.getvalue(), "png"), (f"jpeg_{scans}_scans", repeated, "jpeg"),
            ("bmp_as_jpeg", bmp.getvalue(), "jpeg")]


def run_phase(client, good: bytes, bomb_list: list, seconds: float, rate: float, tag: str) -> int:
    """Send for ``seconds``; returns how many good frames were sent. Messages are built once (this process
    shares the CPU with the node: it should spend it on publishing, not on copying bytes into messages)."""
    period = 1.0 / rate
    good_msg = client.compressed_msg(good, frame_id=tag)
    bomb_msgs = [client.compressed_msg(data, fmt=fmt, frame_id=name if name.startswith(tag) else "bomb")
                 for name, data, fmt in bomb_list]
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        tick = start + sent * period
        time.sleep(max(0.0, tick - time.monotonic()))
        client.publish(good_msg)
        if bomb_msgs:
            time.sleep(max(0.0, tick + period / 2 - time.monotonic()))
            client.publish(bomb_msgs[sent % len(bomb_msgs)])
        sent += 1
    return sent


def labels_for(client, tag: str) -> int:
    return sum(1 for m in client.received.get("labels") if m.header.frame_id == tag)


def diagnostics(client, key: str) -> str:
    for array_msg in reversed(client.received.get("/diagnostics")):
        for status in array_msg.status:
            for kv in status.values:
                if kv.key == key:
                    return kv.value
    return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    ap.add_argument("--rate", type=float, default=30.0, help="good frames per second")
    ap.add_argument("--size", default="640x480", help="good frame size, WxH")
    ap.add_argument("--weights", default="", help="weights file (default: the installed default)")
    ap.add_argument("--rounds", type=int, default=4, help="good/bombs phase pairs")
    ap.add_argument("--scans", type=int, default=2000, help="scans of the progressive JPEG bomb")
    ap.add_argument("--bmp-size", default="160x120", help="size of the BMP sent as jpeg, WxH")
    ap.add_argument("--input-size", type=int, nargs=2, default=(0, 0), metavar=("H", "W"),
                    help="the node's input_size (default: the weights')")
    args = ap.parse_args()

    os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from human_parsing_ros.tools.harness import use_large_image_transport

    use_large_image_transport()
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from PIL import Image as PILImage
    from sensor_msgs.msg import Image

    from human_parsing_ros.resources import share_file
    from human_parsing_ros.samples import load_rgb, sample_photos
    from human_parsing_ros.tools.harness import Client, NodeProcess

    width, height = (int(v) for v in args.size.split("x"))
    photo = np.asarray(PILImage.fromarray(load_rgb(sample_photos()[0])).resize((width, height)))
    buf = io.BytesIO()
    PILImage.fromarray(photo).save(buf, format="JPEG", quality=90)
    good = buf.getvalue()
    bomb_list = bombs(photo, args.scans, tuple(int(v) for v in args.bmp_size.split("x")))

    rclpy.init()
    ns, camera = "/bench_bombs", "/bench_bombs_cam/image_raw"
    params = {"device": "cpu", "input_transport": "compressed", "input_size": list(args.input_size),
              **({"weights": args.weights} if args.weights else {})}
    log = Path(tempfile.mkdtemp(prefix="bench_bombs_")) / "node.log"
    node = NodeProcess(share_file("config", "parser.yaml"), ns, {"image": camera}, params, log_path=log)
    node.start()
    client = Client(camera + "/compressed", {"labels": Image, "/diagnostics": DiagnosticArray}, ns,
                    compressed=True, name="bench_bombs_camera")
    try:
        client.wait_for_node(120.0)
        client.wait_for(lambda: client.subs[0].get_publisher_count(), 20.0, "labels to match")

        def warmed() -> bool:
            client.publish(client.compressed_msg(good, frame_id="warmup"))
            time.sleep(0.2)
            return labels_for(client, "warmup") > 0

        client.wait_for(warmed, 60.0, "a first output")
        print(f"good frame {width}x{height} JPEG {len(good) / 1e3:.0f} KB at {args.rate:g} Hz; bombs: "
              + ", ".join(f"{name} {len(data) / 1e3:.0f} KB" for name, data, _ in bomb_list))
        rates: dict[str, list[float]] = {"good frames alone": [], "with bombs 1:1": [], "good at 2x (control)": []}
        client.wait_for(lambda: diagnostics(client, "frames_rejected") != "?", 10.0, "a diagnostics report")
        rejected_before = int(diagnostics(client, "frames_rejected"))
        for round_index in range(args.rounds):
            for name, kind in (("good frames alone", "good"), ("with bombs 1:1", "bombs"),
                               ("good at 2x (control)", "double")):
                tag = f"{kind}_{round_index}"
                # the control sends a second good frame where the bombs phase sends a bomb: the same message
                # rate, so what a bomb costs beyond being one more message shows as the difference
                interleaved = {"good": [], "bombs": bomb_list, "double": [(f"{tag}_extra", good, "jpeg")]}[kind]
                run_phase(client, good, interleaved, args.seconds, args.rate, tag)
                time.sleep(2.0)  # the last frame's outputs
                outputs = labels_for(client, tag) + labels_for(client, f"{tag}_extra")
                rates[name].append(outputs / args.seconds)
                print(f"  round {round_index + 1} {name:>18}: {rates[name][-1]:.2f} Hz", flush=True)
        time.sleep(1.5)
        rejected = int(diagnostics(client, "frames_rejected")) - rejected_before
        alone, mixed, double = (float(np.mean(values)) for values in rates.values())
        print(f"output rate, good frames alone: {alone:.2f} Hz; with bombs interleaved 1:1: {mixed:.2f} Hz "
              f"({mixed / alone:.0%}); good frames at twice the rate (control): {double:.2f} Hz "
              f"({double / alone:.0%}); bombs refused: {rejected}; decode p50 "
              f"{diagnostics(client, 'decode_ms_p50')} ms, forward p50 {diagnostics(client, 'forward_ms_p50')} ms; "
              f"node log {log}")
        if not node.alive():
            print(node.log()[-2000:])
    finally:
        client.close()
        node.stop()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
