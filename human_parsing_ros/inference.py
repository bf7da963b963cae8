"""Tensor steps of one parse: fit the image to the network, map logits back, per-class statistics.

Everything here runs on whatever device its tensors live on, so the GPU path
never makes a host round trip until the final label map.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Interpolated values computed at once for boundary cells (cells x candidate classes x block pixels):
# bounds that step's memory to about 4 MB per buffer, whatever the image size and the number of classes.
BOUNDARY_VALUES = 1 << 20


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


def merge_flipped(logits: torch.Tensor, mirrored_logits: torch.Tensor, flip_perm: torch.Tensor) -> torch.Tensor:
    """Flip test: the mean of ``logits`` and those of the mirrored input, mirrored back with left/right classes
    swapped (``flip_perm``: class id -> its mirror's id). Both [..., C, h, w]; float32 out."""
    back = mirrored_logits.flip(-1).index_select(-3, flip_perm)
    return (logits.float() + back.float()) * 0.5


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
    with_confidence: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Labels and confidence at ``out_hw`` for the image region of low-resolution ``logits`` (CxHxW).

    Equal to bilinear-upsampling the logits and taking the argmax, without
    upsampling every class: where the four bilinear taps of a pixel agree on
    the argmax, the interpolated logits (a convex combination) agree too; only
    the other tap cells are interpolated, and there only for the classes that
    can win (``_label_boundary_cells``).
    Confidence (None unless ``with_confidence``) is the max softmax probability, interpolated
    from low resolution (``confidence_map``).
    """
    (y0, _, wy), (x0, _, wx) = _output_taps(logits.shape[1:], network_hw, placement, out_hw, logits.device)

    logits = logits.float()
    argmax_lo = logits.argmax(dim=0)

    # A tap cell (i, j)-(i+1, j+1) is uniform when its four corners share one argmax;
    # replicating the last row/column matches the clamped taps at the border.
    padded = F.pad(argmax_lo[None, None].float(), (0, 1, 0, 1), mode="replicate")[0, 0]
    corner = padded[:-1, :-1]
    uniform = (corner == padded[:-1, 1:]) & (corner == padded[1:, :-1]) & (corner == padded[1:, 1:])
    # uint8 ids where they fit (a quarter of int64's memory traffic), plus one spare slot that the
    # boundary step's padding writes to
    dtype = torch.uint8 if logits.shape[0] <= 256 else torch.long
    out_h, out_w = out_hw
    flat = torch.empty(out_h * out_w + 1, dtype=dtype, device=logits.device)
    labels = flat[:-1].view(out_h, out_w)
    torch.index_select(argmax_lo.to(dtype).index_select(0, y0), 1, x0, out=labels)
    if not bool(uniform.all()):
        _label_boundary_cells(flat, out_w, logits, uniform, (y0, wy), (x0, wx))
    return labels, confidence_map(logits, network_hw, placement, out_hw) if with_confidence else None


def confidence_map(logits: torch.Tensor, network_hw: tuple[int, int], placement: Placement,
                   out_hw: tuple[int, int]) -> torch.Tensor:
    """The max softmax probability of low-resolution ``logits``, bilinear at ``out_hw`` like the labels."""
    (y0, y1, wy), (x0, x1, wx) = _output_taps(logits.shape[1:], network_hw, placement, out_hw, logits.device)
    confidence_lo = logits.float().softmax(dim=0).amax(dim=0)
    return _lerp_rows(_lerp_rows(confidence_lo, y0, y1, wy).t(), x0, x1, wx).t()


def _output_taps(lo_hw: tuple[int, int], network_hw: tuple[int, int], placement: Placement,
                 out_hw: tuple[int, int], device: torch.device) -> tuple[tuple, tuple]:
    """Bilinear taps (rows, columns) from ``out_hw`` output pixels into the low-resolution grid."""
    (lo_h, lo_w), (out_h, out_w) = lo_hw, out_hw
    scale_y, scale_x = lo_h / network_hw[0], lo_w / network_hw[1]  # network input pixels -> logit cells
    taps_y = _source_taps(out_h, placement.height / out_h * scale_y, placement.top * scale_y, lo_h, device)
    taps_x = _source_taps(out_w, placement.width / out_w * scale_x, placement.left * scale_x, lo_w, device)
    return taps_y, taps_x


def _blocks(taps: torch.Tensor, weights: torch.Tensor, cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each tap cell's output indices along one axis, as a (cells x longest block) table, and their weights.

    ``taps`` (the first tap of every output index) never decreases, so each cell's outputs are one
    run; the padding past a run is -1.
    """
    count = torch.bincount(taps, minlength=cells)
    first = torch.cumsum(count, 0) - count
    offset = torch.arange(max(1, int(count.max())), device=taps.device)
    index = first[:, None] + offset
    valid = offset < count[:, None]
    return torch.where(valid, index, -1), weights[index.clamp(max=taps.numel() - 1)]


def _label_boundary_cells(flat_labels: torch.Tensor, out_w: int, logits: torch.Tensor, uniform: torch.Tensor,
                          taps_y: tuple[torch.Tensor, torch.Tensor], taps_x: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Write the argmax of the bilinear logits into every non-uniform tap cell of ``flat_labels``.

    ``flat_labels``: the label map, row-major with rows of ``out_w``, plus one spare slot at the end.
    A tap cell's output pixels form a block, interpolated from its four corners; blocks are
    computed whole (a few dense ops per group of cells, not per pixel). Exact, and cheap: the
    interpolated logits are convex combinations of the corners, so a class whose largest corner
    logit is below the largest smallest corner logit (of any class) never wins in that cell.
    Cells are grouped by how many classes can win (up to 2, 4, 8, ...; usually 2-4 of tens) and
    only those are interpolated, at most ``BOUNDARY_VALUES`` at a time, so memory grows with
    neither the classes nor the output size.
    """
    (y0, wy), (x0, wx) = taps_y, taps_x
    num_classes, lo_h, lo_w = logits.shape
    row_index, row_weight = _blocks(y0, wy, lo_h)
    col_index, col_weight = _blocks(x0, wx, lo_w)
    spare = flat_labels.numel() - 1
    row_start = torch.where(row_index >= 0, row_index * out_w, -(spare + 1))  # padding rows land below 0
    cells = (~uniform).flatten().nonzero()[:, 0]
    top, left = cells // lo_w, cells % lo_w
    bottom, right = (top + 1).clamp(max=lo_h - 1), (left + 1).clamp(max=lo_w - 1)
    per_cell = logits.permute(1, 2, 0)  # lo_h x lo_w x C (a view)
    corners = torch.stack([per_cell[top, left], per_cell[top, right], per_cell[bottom, left],
                           per_cell[bottom, right]], dim=1)  # cells x 4 x C
    can_win = corners.amax(dim=1) >= corners.amin(dim=1).amax(dim=1, keepdim=True)  # cells x C
    group_of_cell = can_win.sum(dim=1).float().log2().ceil().long()
    # per cell: the classes that can win in ascending ids (argmax's tie-breaking, as in a full
    # interpolation), then the others (padding a group's k; they never win)
    ranked = torch.argsort((~can_win).to(torch.uint8), dim=1, stable=True)
    block = row_index.shape[1] * col_index.shape[1]
    for group in group_of_cell.unique().tolist():
        k = min(2 ** group, num_classes)
        in_group = (group_of_cell == group).nonzero()[:, 0]
        step = max(1, BOUNDARY_VALUES // (k * block))
        for start in range(0, in_group.numel(), step):
            chunk = in_group[start:start + step]
            cell_top, cell_left = top[chunk], left[chunk]
            candidates = ranked[chunk, :k]  # cells x k
            near = corners[chunk].gather(2, candidates[:, None, :].expand(-1, 4, -1))[:, :, None]  # cells x 4 x 1 x k
            weight_y = row_weight[cell_top, :, None]  # cells x block rows x 1
            weight_x = col_weight[cell_left, None, :, None]  # cells x 1 x block cols x 1
            # along y at the two x taps, then along x: the order of F.interpolate's separable bilinear;
            # classes innermost, where argmax is fast
            at_left = near[:, 0] * (1 - weight_y) + near[:, 2] * weight_y  # cells x block rows x k
            at_right = near[:, 1] * (1 - weight_y) + near[:, 3] * weight_y
            value = at_left[:, :, None] * (1 - weight_x) + at_right[:, :, None] * weight_x  # cells x rows x cols x k
            best = candidates.gather(1, value.argmax(dim=-1).flatten(1))
            where = row_start[cell_top, :, None] + col_index[cell_left, None, :]  # flat index; padding: < 0
            where = torch.where((where >= 0) & (col_index[cell_left, None, :] >= 0), where, spare)
            flat_labels.index_put_((where.flatten(),), best.flatten().to(flat_labels.dtype))


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
