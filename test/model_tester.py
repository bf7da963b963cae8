"""Checks every segmentation architecture must pass, shared by the per-architecture tests.

Each ``check_*`` function takes the registry name and the keyword arguments for
``human_parsing_ros.models.build_model`` and raises AssertionError on failure, so
a new architecture only has to be registered to be tested (see test_models.py).
Keep inputs small: these run on a 2-core CPU.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from human_parsing_ros.class_sets import voc_palette
from human_parsing_ros.models import build_model
from human_parsing_ros.weights import WeightsInfo, load_weights, read_weights_info, save_weights
from training.losses import AUX_LOSSES, AuxContext

DEFAULT_SIZES = ((64, 48), (65, 47), (48, 64))


def _build(name: str, args: dict[str, Any], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, **args)


def _images(batch: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *size, generator=generator)


def _targets(batch: int, size: tuple[int, int], num_classes: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, num_classes, (batch, *size), generator=generator)


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (BN running stats and num_batches_tracked included), copied."""
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: nn.Module) -> list[str]:
    after = module.state_dict()
    return sorted(key for key, value in before.items() if not torch.equal(value, after[key]))


def _first_conv(module: nn.Module) -> nn.Conv2d:
    for child in module.modules():
        if isinstance(child, nn.Conv2d):
            return child
    raise AssertionError(f"{type(module).__name__} has no Conv2d")


def check_forward_backward(name: str, args: dict[str, Any], sizes: Iterable[tuple[int, int]] = DEFAULT_SIZES,
                           batch: int = 2) -> None:
    """Logits are (N, num_classes, H, W) at every size, and a loss sends gradients through the whole net."""
    model = _build(name, args)
    num_classes = args["num_classes"]
    assert model.num_classes == num_classes, f"{name}: num_classes {model.num_classes}, asked for {num_classes}"
    for index, size in enumerate(sizes):
        model.train()
        model.zero_grad(set_to_none=True)
        x = _images(batch, size, seed=index)
        logits, aux = model(x, with_aux=True)
        assert logits.shape == (batch, num_classes, *size), (
            f"{name}: input {tuple(x.shape)} gave logits {tuple(logits.shape)}")
        assert torch.isfinite(logits).all(), f"{name}: non-finite logits at {size}"
        assert len(aux) == len(model.aux_weights), f"{name}: {len(aux)} aux outputs, {len(model.aux_weights)} weights"
        for extra, kind in zip(aux, model.aux_losses):  # class logits; a detail map; two edge classes
            channels = {"detail": 1, "edge": 2}.get(kind, num_classes)
            assert extra.shape == (batch, channels, *size), f"{name}: aux logits {tuple(extra.shape)} at {size}"

        target = _targets(batch, size, num_classes, seed=index)
        loss = F.cross_entropy(logits, target) + sum(AUX_LOSSES[kind](extra, target, AuxContext((logits,)))
                                                     for extra, kind in zip(aux, model.aux_losses))
        loss.backward()
        missing = [key for key, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"{name}: no gradient reached {missing[:5]} at {size}"
        for key, p in model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {key} at {size}"
        first = _first_conv(model.encoder)
        assert first.weight.grad.abs().sum() > 0, f"{name}: zero gradient at the encoder's first conv ({size})"
        head_grads = [p.grad.abs().sum() for p in model.segmentation_head.parameters()]
        assert head_grads and all(g > 0 for g in head_grads), f"{name}: zero gradient in the head ({size})"

        # The low-resolution path the parser uses must be what forward() upsamples.
        model.eval()
        with torch.no_grad():
            low = model.forward_lowres(x)
            full = model(x)
        assert low.shape[:2] == (batch, num_classes) and low.shape[-2] <= size[0] and low.shape[-1] <= size[1]
        expected = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
        torch.testing.assert_close(full, expected)

    # The trainer runs networks channels-last; the losses get NCHW logits (their softmax is 2-3x faster so).
    model.to(memory_format=torch.channels_last).train()
    logits, aux = model(_images(batch, size, seed=0).contiguous(memory_format=torch.channels_last), with_aux=True)
    assert all(out.is_contiguous() for out in (logits, *aux)), f"{name}: channels-last logits from forward()"


def check_weights_round_trip(name: str, args: dict[str, Any], tmp_path: Path, size: tuple[int, int] = (64, 48)) -> None:
    """save_weights -> load_weights rebuilds the same network: identical tensors, identical eval outputs."""
    model = _build(name, args, seed=1)
    num_classes = args["num_classes"]
    # Move the BN running statistics off their initial values so that buffers are really compared.
    model.train()
    with torch.no_grad():
        model(_images(2, size, seed=5))
    model.eval()

    names = [f"class_{i}" for i in range(num_classes)]
    info = WeightsInfo(name, dict(args), "test_set", names, [(1, 2)], voc_palette(num_classes).tolist(),
                       (size[0], size[1]), recipe={"dataset": "none", "stages": [1]})
    path = save_weights(tmp_path / f"{name}.safetensors", model, info)
    assert path.is_file()

    loaded, loaded_info = load_weights(path)
    assert type(loaded) is type(model)
    assert not loaded.training, "load_weights must return the model in eval mode"
    assert loaded_info == info
    assert read_weights_info(path) == info

    original, restored = model.state_dict(), loaded.state_dict()
    assert set(original) == set(restored)
    for key, value in original.items():
        assert restored[key].dtype == value.dtype, f"{name}: {key} dtype changed"
        assert torch.equal(restored[key], value), f"{name}: {key} changed in the round trip"

    x = _images(1, size, seed=7)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x)), f"{name}: outputs differ after the round trip"
        # Sanity: another random network would not pass the equality above.
        other = _build(name, args, seed=2).eval()
        assert not torch.equal(other(x), model(x))


def _frozen_keys(model: nn.Module, trainable: list[nn.Module]) -> set[str]:
    """State-dict keys of everything outside the ``trainable`` modules."""
    trained = {f"{prefix}.{key}" for prefix, module in model.named_modules() if any(module is t for t in trainable)
               for key in module.state_dict()}
    return set(model.state_dict()) - trained


def check_encoder_freeze(name: str, args: dict[str, Any], mode: str | None = None,
                         size: tuple[int, int] = (64, 48)) -> None:
    """Stage 2 through the model's own ``freeze_for_stage2(mode)`` then ``train()``: frozen BatchNorm
    stays in eval mode, and a train-mode forward (aux heads included) and one SGD step leave every
    frozen tensor bit-identical, BN statistics included, while ``stage2_modules(mode)`` train."""
    model = _build(name, args, seed=3)
    num_classes = args["num_classes"]
    trainable = model.stage2_modules(mode)
    assert trainable and all(isinstance(m, nn.Module) for m in trainable)
    assert model.segmentation_head in trainable, f"{name}: stage 2 must always train the classifier"
    assert not any(m is model.encoder for m in trainable), f"{name}: stage 2 must not train the encoder"
    trainable_ids = {id(p) for m in trainable for p in m.parameters()}
    assert not any(id(p) in trainable_ids for p in model.encoder.parameters()), (
        f"{name}: a stage-2 module shares parameters with the encoder")

    params = model.freeze_for_stage2(mode)
    model.train()  # what the trainer does every epoch: frozen parts must not follow
    assert {id(p) for p in params} == trainable_ids, f"{name}: freeze_for_stage2 returned other parameters"
    assert all(p.requires_grad == (id(p) in trainable_ids) for p in model.parameters())
    trained_modules = {id(m) for t in trainable for m in t.modules()}
    frozen_bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and id(m) not in trained_modules]
    assert any(m in frozen_bn for m in model.encoder.modules()), f"{name}: encoder has no BN to check"
    assert not any(m.training for m in frozen_bn), f"{name}: frozen BatchNorm back in train mode after train()"
    assert all(m.training for t in trainable for m in t.modules()), f"{name}: a stage-2 module is not training"

    before = _snapshot(model)
    frozen = _frozen_keys(model, trainable)
    x = _images(2, size, seed=11)
    with torch.no_grad():
        model(x, with_aux=True)
    changed = sorted(set(_changed(before, model)) & frozen)
    assert not changed, f"{name}: a train-mode forward changed frozen tensors {changed[:5]}"

    optimizer = torch.optim.SGD(params, lr=0.5, momentum=0.9)
    loss = F.cross_entropy(model(x), _targets(2, size, num_classes, seed=11))
    optimizer.zero_grad()
    loss.backward()
    reached = [key for key, p in model.named_parameters() if id(p) not in trainable_ids and p.grad is not None]
    assert not reached, f"{name}: gradient reached frozen parameters {reached[:5]}"
    optimizer.step()

    changed = sorted(set(_changed(before, model)) & frozen)
    assert not changed, f"{name}: frozen tensors changed in mode {mode}: {changed[:5]}"
    for module in trainable:
        prefix = next(key for key, m in model.named_modules() if m is module)
        moved = {key[len(prefix) + 1:] for key in _changed(before, model) if key.startswith(f"{prefix}.")}
        params_moved = {key for key, _ in module.named_parameters()} & moved
        assert params_moved, f"{name}: no parameter of the trained {type(module).__name__} changed"
        # a gradient the step can show: lr x grad above float32 resolution at the parameter's value somewhere (a
        # conv bias in front of a BatchNorm gets rounding noise, 1e-12, which no step can add to it)
        eps = torch.finfo(torch.float32).eps
        with_grad = {key for key, p in module.named_parameters()
                     if p.grad is not None and (0.5 * p.grad.abs() > 4 * eps * p.detach().abs()).any()}
        unmoved = sorted(with_grad - params_moved)[:5]
        assert with_grad <= params_moved, f"{name}: parameters with a gradient did not move: {unmoved}"

    # Control: with the encoder in train mode, the same forward WOULD move its BN statistics,
    # so the bit-identity above is a real check and not an artefact of the data.
    model.encoder.train()
    with torch.no_grad():
        model(x)
    assert set(_changed(before, model)) & {k for k in frozen if k.startswith("encoder.")}, (
        f"{name}: the control step did not touch BN statistics")


def check_onnx_export(name: str, args: dict[str, Any], tmp_path: Path, size: tuple[int, int] = (64, 64)) -> None:
    """The trainer's ONNX export runs, and ONNX Runtime matches PyTorch within tolerance (dynamic size)."""
    import numpy as np
    import onnxruntime as ort

    from training.export import export_onnx

    model = _build(name, args, seed=2).eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx", size)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, *size), (2, 3, size[0] + 32, size[1])):
        x = _images(shape[0], shape[2:], seed=9)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(None, {"image": x.numpy()})
        assert got.shape == expected.shape, f"{name}: ONNX output {got.shape}, PyTorch {expected.shape}"
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3, err_msg=f"{name}: ONNX differs")


def check_model_file_export(name: str, args: dict[str, Any], tmp_path: Path, size: tuple[int, int] = (64, 64)) -> None:
    """A weights file exported to an ONNX model file: the file carries the same metadata, and the parser on
    onnxruntime gives PyTorch's logits (random input) and labels (a real photo)."""
    import numpy as np

    from human_parsing_ros.onnx_model import export_onnx_model, read_onnx_info
    from human_parsing_ros.parser import HumanParser
    from human_parsing_ros.samples import load_rgb, sample_photos

    model = _build(name, args, seed=3).eval()
    names = [f"class_{i}" for i in range(args["num_classes"])]
    info = WeightsInfo(name, dict(args), "test_set", names, [(1, 2)], voc_palette(len(names)).tolist(), size,
                       recipe={"dataset": "none"})
    weights = save_weights(tmp_path / f"{name}.safetensors", model, info)
    exported = export_onnx_model(weights, tmp_path / f"{name}.onnx")
    assert read_onnx_info(exported) == info, f"{name}: the exported file's metadata differs"
    on_torch = HumanParser(weights, device="cpu")
    on_onnx = HumanParser(exported, device="cpu", backend="onnxruntime")
    assert on_onnx.backend == "onnxruntime" and on_torch.backend == "torch"
    x = _images(1, size, seed=11)
    np.testing.assert_allclose(on_onnx.forward(x, flip_tta=True).numpy(), on_torch.forward(x, flip_tta=True).numpy(),
                               rtol=1e-3, atol=1e-4, err_msg=f"{name}: ONNX Runtime's logits differ")
    image = load_rgb(sample_photos()[0])[::4, ::4].copy()
    agree = (on_onnx.parse(image).labels == on_torch.parse(image).labels).mean()
    assert agree >= 0.999, f"{name}: {agree:.5f} of the labels agree"
