"""Tensor steps of one parse: fit the image to the network, map logits back, per-class statistics.

Everything here runs on whatever device its tensors live on, so the GPU path
never makes a host round trip until the final label map.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Boundary pixels interpolated over all classes at once: bounds that step's memory to about
# BOUNDARY_CHUNK x classes x 4 bytes x 6 buffers (16384 x 59 classes: ~23 MB), whatever the image size.
BOUNDARY_CHUNK = 16384


@dataclass(frozen=True)
class Placement:
    """Where the resized image sits inside the network input."""

    height: int  # resized image size inside the network input
    width: int
    top: int  # padding before it
    left: int


def place_image(image_hw: tuple[int, int], network_hw: tuple[int, int], mode: str) -> Placement:
    """``letterbox`` keeps the aspect ratio and pads (centred); ``stretch`` fills the input."""
    (h, w), (net_h, net_w) = image_hw, network_hw
    if mode == "stretch":
        return Placement(net_h, net_w, 0, 0)
    if mode != "letterbox":
        raise ValueError(f"resize mode must be 'letterbox' or 'stretch', not '{mode}'")
    scale = min(net_h / h, net_w / w)
    rh, rw = max(1, min(net_h, round(h * scale))), max(1, min(net_w, round(w * scale)))
    return Placement(rh, rw, (net_h - rh) // 2, (net_w - rw) // 2)


def network_input(
    image: torch.Tensor,
    network_hw: tuple[int, int],
    placement: Placement,
    mean: torch.Tensor,
    std: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    """uint8 HxWx3 RGB -> normalised 1x3xHxW network input (padding = the mean colour)."""
    batch = image.permute(2, 0, 1).unsqueeze(0)
    if batch.device.type == "cpu":
        batch = batch.contiguous(memory_format=torch.channels_last)  # the CPU's fast uint8 resize path
    else:
        batch = batch.float()
    if batch.shape[-2:] != (placement.height, placement.width):
        batch = F.interpolate(batch, size=(placement.height, placement.width), mode="bilinear",
                              align_corners=False, antialias=True)
    batch = (batch.float() / 255.0 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    net_h, net_w = network_hw
    if (placement.height, placement.width) != (net_h, net_w):
        pad = (placement.left, net_w - placement.width - placement.left,
               placement.top, net_h - placement.height - placement.top)
        batch = F.pad(batch, pad)
    return batch.to(dtype).contiguous(memory_format=torch.channels_last)


def _source_taps(out_len: int, scale: float, offset: float, in_len: int, device: torch.device):
    """Bilinear taps (i0, i1, weight of i1) for each output index, as F.interpolate computes them
    with align_corners=False, for the map src = (dst + 0.5) * scale + offset - 0.5."""
    src = (torch.arange(out_len, device=device, dtype=torch.float32) + 0.5) * scale + offset - 0.5
    src = src.clamp(min=0.0, max=in_len - 1)
    i0 = src.floor().long()
    i1 = (i0 + 1).clamp(max=in_len - 1)
    return i0, i1, src - i0


def logits_to_labels(
    logits: torch.Tensor,
    network_hw: tuple[int, int],
    placement: Placement,
    out_hw: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and confidence at ``out_hw`` for the image region of low-resolution ``logits`` (CxHxW).

    Equal to bilinear-upsampling the logits and taking the argmax, without
    upsampling every class: where the four bilinear taps of a pixel agree on
    the argmax, the interpolated logits (a convex combination) agree too; only
    the remaining boundary pixels are interpolated over all classes.
    Confidence is the max softmax probability, interpolated from low resolution.
    """
    num_classes, lo_h, lo_w = logits.shape
    out_h, out_w = out_hw
    device = logits.device
    scale_y, scale_x = lo_h / network_hw[0], lo_w / network_hw[1]  # network input pixels -> logit cells
    y0, y1, wy = _source_taps(out_h, placement.height / out_h * scale_y, placement.top * scale_y, lo_h, device)
    x0, x1, wx = _source_taps(out_w, placement.width / out_w * scale_x, placement.left * scale_x, lo_w, device)

    logits = logits.float()
    confidence_lo, argmax_lo = logits.softmax(dim=0).max(dim=0)

    # A tap cell (i, j)-(i+1, j+1) is uniform when its four corners share one argmax;
    # replicating the last row/column matches the clamped taps at the border.
    padded = F.pad(argmax_lo[None, None].float(), (0, 1, 0, 1), mode="replicate")[0, 0]
    corner = padded[:-1, :-1]
    uniform = (corner == padded[:-1, 1:]) & (corner == padded[1:, :-1]) & (corner == padded[1:, 1:])
    labels = _gather_nearest(argmax_lo, y0, x0)
    rows, cols = (~_gather_nearest(uniform, y0, x0)).nonzero(as_tuple=True)
    if rows.numel():
        # Interpolate all classes at the boundary pixels only, a bounded chunk at a time, so the
        # memory for all classes never grows with the output size: along y at the two x taps,
        # then along x (the order F.interpolate's separable bilinear uses).
        per_pixel = logits.permute(1, 2, 0)  # lo_h x lo_w x C (a view)
        for start in range(0, rows.numel(), BOUNDARY_CHUNK):
            r, c = rows[start:start + BOUNDARY_CHUNK], cols[start:start + BOUNDARY_CHUNK]
            top, bottom, left, right = y0[r], y1[r], x0[c], x1[c]
            weight_y, weight_x = wy[r, None], wx[c, None]
            at_left = per_pixel[top, left] * (1 - weight_y) + per_pixel[bottom, left] * weight_y
            at_right = per_pixel[top, right] * (1 - weight_y) + per_pixel[bottom, right] * weight_y
            labels[r, c] = (at_left * (1 - weight_x) + at_right * weight_x).argmax(dim=1)
    confidence = _lerp_rows(_lerp_rows(confidence_lo, y0, y1, wy).t(), x0, x1, wx).t()
    return labels, confidence


def _gather_nearest(grid: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    return grid.index_select(0, rows).index_select(1, cols)


def _lerp_rows(grid: torch.Tensor, i0: torch.Tensor, i1: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Linear interpolation along the first axis of ``grid`` at taps (i0, i1, weight)."""
    shape = (-1,) + (1,) * (grid.dim() - 1)
    weight = weight.view(shape)
    return grid.index_select(0, i0) * (1 - weight) + grid.index_select(0, i1) * weight


def _first(hits: torch.Tensor) -> torch.Tensor:
    """Index of the first True along dim 0, per column (0 where a column has none)."""
    return hits.to(torch.uint8).argmax(dim=0)


@dataclass
class ClassStatistics:
    """Per-class figures of one label map (arrays indexed by class id)."""

    pixel_counts: torch.Tensor  # int64 [C]
    confidence_sums: torch.Tensor  # float32 [C]
    boxes: torch.Tensor  # int64 [C, 4]: x_min, y_min, x_max, y_max (inclusive); -1 where absent


def class_statistics(labels: torch.Tensor, confidence: torch.Tensor, num_classes: int) -> ClassStatistics:
    h, w = labels.shape
    lab = labels.long()
    flat = lab.reshape(-1)
    # Accumulate in float64: a float32 running sum over a megapixel class drifts by percents.
    conf_sums = torch.bincount(flat, weights=confidence.reshape(-1).double(), minlength=num_classes)[:num_classes]
    # Which classes occur in each row and each column: one bincount each over (index, class) pairs.
    rows = torch.arange(h, device=lab.device)[:, None] * num_classes + lab
    cols = torch.arange(w, device=lab.device)[None, :] * num_classes + lab
    per_row = torch.bincount(rows.reshape(-1), minlength=h * num_classes).view(h, num_classes)
    in_col = torch.bincount(cols.reshape(-1), minlength=w * num_classes).view(w, num_classes) > 0
    counts = per_row.sum(dim=0)
    in_row = per_row > 0
    boxes = torch.stack([_first(in_col), _first(in_row), w - 1 - _first(in_col.flip(0)),
                         h - 1 - _first(in_row.flip(0))], dim=1)
    boxes[counts == 0] = -1
    return ClassStatistics(counts, conf_sums.float(), boxes)
