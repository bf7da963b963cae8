"""Every GPU check in one run (under 10 minutes on an H100/H200), written to one JSON file.

    python benchmarks/gpu_suite.py                          # CUDA: benchmarks/results/gpu/<date>_<device>.json
    python benchmarks/gpu_suite.py --device cpu --dry-run --out /tmp/suite.json   # checks its own plumbing

Sections of the JSON:
  correctness  labels in fp32, fp16 and bf16 on real photos against CPU fp32, for the default weights and
               each zoo network (random weights with the classifier bias zeroed, so that the labels follow
               the image); target: at least 99.5% of pixels agree
  latency      HumanParser.parse p50 at 640x480, 1280x720 and 1920x1200 for the same networks, fp16
               channels-last, eager and compiled (compile_mode cudagraphs on a GPU: CUDA graphs, compiled in
               seconds; the default also with reduce-overhead, inductor's kernels in CUDA graphs); network
               throughput at batch 1 and 8; peak frames/s of the default at 960x544 (batch 8)
  backends     onnxruntime on this device (its CUDA and TensorRT execution providers on a GPU, fp32 and fp16;
               the CPU provider in a dry run): the default weights' labels on real photos against PyTorch fp32 on
               the CPU, parse p50 per size, and frames/s at batch 8 at the peak size; "skipped" with the reason
               where onnxruntime or its GPU providers are not installed (onnxruntime-gpu is)
  node         the node over DDS on this device, camera 1920x1200 at 30 Hz: end-to-end p50/p99, drops
               (reported as skipped, with the reason, where rclpy is not installed)
  trainer      stage-1 and stage-2 step time with bf16 AMP, and data-loader images/s with 16 workers, for
               the default and PSPNet-R50: data-bound when the loader delivers fewer images/s than the steps
               take
  runs         a whole DTPR run (training/dtpr.py) on this device, tiny, on the bundled CCP photos, for what the
               test suite trains on a CPU only: class-balanced CE then PRA stage 2 (bf16) exported to ONNX, and
               CE2P with SCHP's losses through a self-correction cycle (fp16 loss scaling); each run's losses
               or error
A dry run (--dry-run, any device) uses small sizes, few iterations and two networks: it checks that every
section runs and writes its figures, and is what the test suite runs.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    # Run as a file, Python puts benchmarks/ on sys.path, not the repository root: add the root so that
    # `training` and the sibling benchmarks import. Script-only: never runs on import or with -m.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from bench_models import median_ms

from human_parsing_ros.class_sets import get_class_set
from human_parsing_ros.models import build_model
from human_parsing_ros.parser import HumanParser
from human_parsing_ros.resources import DEFAULT_WEIGHTS
from human_parsing_ros.samples import SAMPLES, load_rgb, sample_photos
from human_parsing_ros.weights import WeightsInfo, load_weights

RESULTS = Path(__file__).resolve().parent / "results" / "gpu"
FULL = {"sizes": [(640, 480), (1280, 720), (1920, 1200)], "iterations": 30, "photos": 4, "net_input": None,
        "node_frame": (1920, 1200), "node_hz": 30.0, "node_frames": 90, "train_size": 473, "train_batch": 16,
        "train_iterations": 10, "workers": 16, "peak": (960, 544), "run_crop": 256}
# DRY's camera runs at 2 Hz: the node drops frames that arrive while it parses, and at 5 Hz a 2-core CPU busy with
# other work (CI beside a training run) received 3 of 8 (2 of 8 at 2 Hz under heavier load).
DRY = {"sizes": [(160, 120)], "iterations": 3, "photos": 1, "net_input": (96, 96), "node_frame": (160, 120),
       "node_hz": 2.0, "node_frames": 8, "train_size": 64, "train_batch": 2, "train_iterations": 2, "workers": 2,
       "peak": (160, 96), "run_crop": 64}
# (label, architecture, arguments): the default's architecture is listed by its weights file instead.
ZOO = [("BiSeNetV2", "bisenetv2", {}), ("C-DLinkNet R101", "cdlinknet", {}), ("DANet R50", "danet", {}),
       ("DDRNet-23-slim", "ddrnet", {"variant": "23-slim"}), ("PSPNet R50", "pspnet", {}),
       ("STDC1-Seg", "stdc", {"variant": "stdc1"}), ("DeepLabv3+ R50", "deeplabv3plus", {"encoder": "resnet50"}),
       ("CE2P (SCHP R101)", "ce2p", {})]
DRY_ZOO = ZOO[:1]


def networks(zoo: list[tuple[str, str, dict]], net_input: tuple[int, int] | None) -> list[tuple[str, Any, Any]]:
    """(label, model, WeightsInfo): the default weights, then each zoo network with random weights."""
    model, info = load_weights(DEFAULT_WEIGHTS)
    out = [("default", model, _resized(info, net_input))]
    class_set = get_class_set("ccp")
    for label, name, args in zoo:
        torch.manual_seed(0)
        zoo_model = build_model(name, num_classes=class_set.num_classes, encoder_weights=None, **args)
        with torch.no_grad():
            zoo_model.segmentation_head.bias.zero_()
        zoo_info = WeightsInfo.for_class_set(name, {"num_classes": class_set.num_classes, **args}, class_set,
                                             net_input or info.input_size, {"untrained": True})
        out.append((label, zoo_model, zoo_info))
    return out


def _resized(info: WeightsInfo, net_input: tuple[int, int] | None) -> WeightsInfo:
    if net_input is None:
        return info
    return WeightsInfo.for_class_set(info.architecture, info.architecture_args, info.class_set(), net_input,
                                     info.recipe)


def precisions(device: torch.device) -> list[str]:
    """fp16 on a CPU falls back to fp32 (the parser says so): only fp32 and bf16 are distinct there."""
    return ["fp32", "fp16", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]


def check_correctness(nets: list, device: torch.device, photos: list[np.ndarray]) -> dict[str, Any]:
    """Per network and precision: the fraction of pixels whose label equals CPU fp32's."""
    out = {}
    for label, model, info in nets:
        reference = HumanParser.from_model(copy.deepcopy(model), info, device="cpu")
        expected = [reference.parse(photo).labels for photo in photos]
        reference.release()
        agreement = {}
        for precision in precisions(device):
            parser = HumanParser.from_model(copy.deepcopy(model), info, device=str(device), precision=precision)
            same = sum(int((parser.parse(photo).labels == labels).sum()) for photo, labels in zip(photos, expected))
            agreement[precision] = same / sum(labels.size for labels in expected)
            parser.release()
        out[label] = {"agreement": agreement, "passes_99_5": all(v >= 0.995 for v in agreement.values())}
        print(f"[correctness] {label}: " + ", ".join(f"{k} {v:.4f}" for k, v in agreement.items()), flush=True)
    return out


def measure_latency(nets: list, device: torch.device, plan: dict) -> dict[str, Any]:
    """parse p50 per size, eager and compiled; network images/s at batch 1 and 8; the default's peak rate."""
    precision = "fp16" if device.type == "cuda" else "fp32"
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    photo = load_rgb(sample_photos()[0])
    out = {}
    for label, model, info in nets:
        entry: dict[str, Any] = {"precision": precision, "parse_ms_p50": {}}
        modes = compile_modes(device, default=label == "default")
        for mode in modes:
            torch._dynamo.reset()  # every network shares forward_lowres's code: never hit dynamo's cache limit
            parser = HumanParser.from_model(copy.deepcopy(model), info, device=str(device), precision=precision,
                                            compile_mode=mode)
            timings = {}
            for width, height in plan["sizes"]:
                frame = _resize(photo, width, height)
                for _ in range(3):  # warm-up; compiles on the first call when compiled
                    parser.parse(frame)
                timings[f"{width}x{height}"] = median_ms(lambda f=frame, p=parser: p.parse(f), plan["iterations"], sync)
            entry["parse_ms_p50"]["eager" if mode == "none" else f"compiled ({mode})"] = timings
            parser.release()
        entry["images_per_s"] = _throughput(model, info, device, precision, plan, sync)
        out[label] = entry
        print(f"[latency] {label}: {entry}", flush=True)
    label, model, info = nets[0]
    out["peak"] = _peak(model, info, device, precision, plan, sync)
    print(f"[latency] peak: {out['peak']}", flush=True)
    return out


def compile_modes(device: torch.device, default: bool) -> list[str]:
    """Eager, then CUDA graphs (seconds to compile) on a GPU, plus inductor for the default network; on a
    CPU (the dry run) inductor alone."""
    if device.type != "cuda":
        return ["none", "default"]
    return ["none", "cudagraphs"] + (["reduce-overhead"] if default else [])


def _resize(photo: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(photo).resize((width, height), Image.BILINEAR))


def _throughput(model, info, device, precision, plan, sync) -> dict[str, float]:
    parser = HumanParser.from_model(copy.deepcopy(model), info, device=str(device), precision=precision)
    rates = {}
    with torch.inference_mode():
        for batch in (1, 8):
            x = torch.randn(batch, 3, *parser.network_hw, device=device, dtype=parser.dtype).contiguous(
                memory_format=torch.channels_last)
            for _ in range(3):
                parser.model.forward_lowres(x)
            ms = median_ms(lambda t=x: parser.model.forward_lowres(t), plan["iterations"], sync)
            rates[f"batch{batch}"] = batch * 1000.0 / ms
    parser.release()
    return rates


def _peak(model, info, device, precision, plan, sync) -> dict[str, float]:
    """Frames/s of the default network at ``plan['peak']`` (width x height input), batch 8, compiled."""
    width, height = plan["peak"]
    torch._dynamo.reset()
    sized = WeightsInfo.for_class_set(info.architecture, info.architecture_args, info.class_set(), (height, width),
                                      info.recipe)
    parser = HumanParser.from_model(copy.deepcopy(model), sized, device=str(device), precision=precision,
                                    compile_mode="cudagraphs" if device.type == "cuda" else "none")
    x = torch.randn(8, 3, height, width, device=device, dtype=parser.dtype).contiguous(
        memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            parser._network(x)
        ms = median_ms(lambda: parser._network(x), plan["iterations"], sync)
    parser.release()
    return {"input": f"{width}x{height}", "batch": 8, "frames_per_s": 8 * 1000.0 / ms}


def measure_backends(device: torch.device, plan: dict, photos: list[np.ndarray], workdir: Path) -> dict[str, Any]:
    """The default weights on onnxruntime on ``device``: agreement with PyTorch fp32 (CPU), parse p50 per size,
    network frames/s at batch 8 (the session directly)."""
    from human_parsing_ros.backends import GPU_PROVIDERS, onnxruntime_providers

    providers = onnxruntime_providers()
    if device.type == "cuda" and not set(GPU_PROVIDERS) & set(providers):
        return {"skipped": f"onnxruntime has no GPU execution provider here (has: {providers or 'no onnxruntime'})"}
    reference = HumanParser(DEFAULT_WEIGHTS, device="cpu")
    expected = [reference.parse(photo).labels for photo in photos]
    out: dict[str, Any] = {}
    for precision in ("fp32", "fp16") if device.type == "cuda" else ("fp32",):
        parser = HumanParser(DEFAULT_WEIGHTS, device=str(device), backend="onnxruntime", precision=precision,
                             cache_dir=workdir / "cache")
        entry: dict[str, Any] = {"backend": parser.backend_description, "precision": parser.precision_name,
                                 "agreement": min(float((parser.parse(photo).labels == labels).mean())
                                                  for photo, labels in zip(photos, expected)),
                                 "parse_ms_p50": {}}
        for width, height in plan["sizes"]:
            frame = _resize(photos[0], width, height)
            entry["parse_ms_p50"][f"{width}x{height}"] = median_ms(lambda f=frame, q=parser: q.parse(f),
                                                                   plan["iterations"])
        batch = np.zeros((8, 3, plan["peak"][1], plan["peak"][0]), np.float32)
        session = parser._network.session
        seconds = median_ms(lambda s=session, b=batch: s.run(None, {"image": b}), plan["iterations"]) / 1e3
        entry["network_frames_per_s_batch8"] = 8 / seconds
        out[precision] = entry
        print(f"[backends] {precision}: {entry}", flush=True)
    return out


def measure_node(device: torch.device, plan: dict, workdir: Path) -> dict[str, Any]:
    """The node over DDS with ``plan['node_frame']`` frames at ``plan['node_hz']``."""
    try:
        import rclpy  # noqa: F401
    except ImportError as error:
        print(f"[node] skipped: {error}", flush=True)
        return {"skipped": f"rclpy is not installed ({error}); carry the ros-* wheels"}
    from bench_serving import bench_node

    width, height = plan["node_frame"]
    frame = _resize(load_rgb(sample_photos()[0]), width, height)
    precision = "fp16" if device.type == "cuda" else "fp32"
    period_ms = 1000.0 / plan["node_hz"]
    # bench_node plays its latency phase at 1.5x the given time and its overload phase at twice the rate
    latency, fast = bench_node(DEFAULT_WEIGHTS, frame, str(device), precision,
                               {"resize_mode": "letterbox", "flip_tta": False}, period_ms / 1.5, plan["node_frames"],
                               workdir / "node.log")
    out = {"frame": f"{width}x{height}", "camera_hz": plan["node_hz"], "end_to_end_ms_p50": latency["p50"],
           "end_to_end_ms_p99": latency["p99"], "received": latency["n"], "node_steps_ms_p50": latency["stages"],
           "overload": fast}
    print(f"[node] {out}", flush=True)
    return out


def measure_trainer(device: torch.device, plan: dict) -> dict[str, Any]:
    """Step times (bf16 AMP) and data-loader images/s for the default architecture and PSPNet-R50."""
    from bench_training import median, step_times

    from training.engine import StageLoss, StageState
    from training.sampling import PixelSampler, keep_probabilities
    from training.schedules import make_optimizer, make_scheduler

    size, batch = plan["train_size"], plan["train_batch"]
    amp = "bf16"
    loader_rate = _loader_images_per_s(size, batch, plan["workers"], plan["train_iterations"])
    out: dict[str, Any] = {"crop": size, "batch": batch, "amp": amp, "workers": plan["workers"],
                           "loader_images_per_s": loader_rate}
    for label, name, args in (("default", "deeplabv3plus", {}), ("PSPNet R50", "pspnet", {})):
        torch.manual_seed(0)
        model = build_model(name, num_classes=59, encoder_weights=None, **args).to(device)
        model = model.to(memory_format=torch.channels_last).train()
        images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
        target = torch.randint(0, 59, (batch, size, size), device=device)
        optimizer = make_optimizer(model.parameters(), 0.01, 0.9, 1e-4)
        stage1 = StageState(1, optimizer, make_scheduler(optimizer, 100), StageLoss("ce"))
        step1 = median(step_times(model, stage1, amp, (images, target), device, plan["train_iterations"]))
        sampler = PixelSampler(keep_probabilities(torch.linspace(0.9, 0.1, 59), "min").to(device))
        params = model.freeze_for_stage2(None)
        optimizer2 = make_optimizer(params, 0.01, 0.9, 1e-4)
        stage2 = StageState(2, optimizer2, make_scheduler(optimizer2, 100), StageLoss("ce", sampler=sampler))
        step2 = median(step_times(model, stage2, amp, (images, target), device, plan["train_iterations"]))
        gpu_rate = batch * 1000.0 / step1
        out[label] = {"stage1_step_ms": step1, "stage2_step_ms": step2, "stage1_images_per_s": gpu_rate,
                      "data_bound": loader_rate < gpu_rate}
        print(f"[trainer] {label}: {out[label]}", flush=True)
    return out


# (label, config changes): the runs of the "runs" section
TRAINING_RUNS = (
    ("class_balanced + PRA, bf16, ONNX", {"amp": "bf16", "stage1": {"epochs": 1, "loss": "class_balanced"},
                                          "stage2": {"epochs": 1, "sampling": "pra"},
                                          "export": {"onnx": "model.onnx"}}),
    ("CE2P + self-correction, fp16", {"amp": "fp16", "stage1": {"epochs": 1, "loss": "ce_lovasz"},
                                      "stage2": {"epochs": 0}, "self_correction": {"cycles": 1, "cycle_epochs": 1},
                                      "model": {"architecture": "ce2p",
                                                "args": {"encoder": "mobilenet_v2", "encoder_weights": None}}}),
)


def check_training_runs(device: torch.device, plan: dict, workdir: Path) -> dict[str, Any]:
    """Each of ``TRAINING_RUNS`` through the trainer on ``device``: its epochs' losses, or the error it raised."""
    from training.config import load_config, merge
    from training.dtpr import run

    base = {"name": "suite", "seed": 0, "device": str(device),
            "dataset": {"name": "ccp", "root": str(SAMPLES), "train_split": "all", "val_split": "all"},
            "model": {"architecture": "deeplabv3plus", "args": {"encoder_weights": None}},
            "input": {"crop_size": [plan["run_crop"]] * 2, "eval_size": [plan["run_crop"], plan["run_crop"] * 3 // 4]},
            "optim": {"batch_size": 2, "workers": 0, "eval_batch_size": 2},
            "stage1": {"cpa_epoch": 1, "cpa_source": "train"}, "log": {"tensorboard": False, "progress": False}}
    out: dict[str, Any] = {}
    for index, (label, changes) in enumerate(TRAINING_RUNS):
        config = merge(load_config(overrides={**base, "output_dir": str(workdir / f"run{index}")}).to_dict(),
                       changes)
        began = time.perf_counter()
        try:
            history = run(config)["history"]
            out[label] = {"losses": [h["loss"] for h in history], "seconds": time.perf_counter() - began}
        except Exception as error:  # the figure is whether it runs: keep the others going
            out[label] = {"error": f"{type(error).__name__}: {error}"}
        print(f"[runs] {label}: {out[label]}", flush=True)
    return out


def _loader_images_per_s(size: int, batch: int, workers: int, batches: int) -> float:
    """The trainer's own dataset and augmentation over the bundled CCP photos, sampled with replacement."""
    from torch.utils.data import DataLoader, RandomSampler

    from training.datasets import build_dataset
    from training.transforms import TrainTransform

    class_set = get_class_set("ccp")
    dataset = build_dataset("ccp", SAMPLES, "all", TrainTransform((size, size), (0.5, 2.0), 10.0,
                                                                 class_set.flip_permutation(), 0.2), seed=0)
    prefetched = 2 * max(1, workers)  # DataLoader's default: two batches ready per worker
    count = batch * (prefetched + max(batches, 4 * prefetched))  # time well past what was made in advance
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, persistent_workers=False,
                        sampler=RandomSampler(dataset, replacement=True, num_samples=count,
                                              generator=torch.Generator().manual_seed(0)))
    iterator = iter(loader)
    for _ in range(prefetched):  # the workers' start-up and the batches they made ahead
        next(iterator)
    start = time.perf_counter()
    seen = sum(len(images) for images, _ in iterator)
    return seen / (time.perf_counter() - start)


def run_suite(device: torch.device, dry_run: bool, out_path: Path) -> dict[str, Any]:
    plan = DRY if dry_run else FULL
    started = time.perf_counter()
    nets = networks(DRY_ZOO if dry_run else ZOO, plan["net_input"])
    photos = [load_rgb(p) for p in sample_photos()[:plan["photos"]]]
    if dry_run:
        photos = [photo[::4, ::4].copy() for photo in photos]
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "date": datetime.date.today().isoformat(), "torch": torch.__version__, "python": platform.python_version(),
        "dry_run": dry_run, "plan": {k: v for k, v in plan.items()}}
    sections = {"correctness": lambda: check_correctness(nets, device, photos),
                "latency": lambda: measure_latency(nets, device, plan),
                "backends": lambda: measure_backends(device, plan, photos, Path(workdir)),
                "node": lambda: measure_node(device, plan, Path(workdir)),
                "trainer": lambda: measure_trainer(device, plan),
                "runs": lambda: check_training_runs(device, plan, Path(workdir))}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hp_gpu_suite_") as workdir:
        for name, section in sections.items():
            began = time.perf_counter()
            try:
                report[name] = section()
            except Exception as error:  # one failing section must not lose the others' figures
                report[name] = {"error": f"{type(error).__name__}: {error}"}
                print(f"[{name}] FAILED: {type(error).__name__}: {error}", flush=True)
            report.setdefault("section_seconds", {})[name] = time.perf_counter() - began
            report["seconds"] = time.perf_counter() - started
            out_path.write_text(json.dumps(report, indent=2, default=str))  # after every section
    print(f"[suite] {report['seconds']:.0f} s; wrote {out_path}", flush=True)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (the suite) or cpu (with --dry-run)")
    parser.add_argument("--dry-run", action="store_true", help="small sizes, two networks: checks the plumbing")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default: benchmarks/results/gpu/<date>_<device>.json)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; use --device cpu --dry-run to check the suite's plumbing")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    default_out = RESULTS / f"{datetime.date.today().isoformat()}_{name.replace(' ', '_')}.json"
    run_suite(device, args.dry_run, args.out or default_out)


if __name__ == "__main__":
    main()
