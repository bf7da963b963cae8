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
# Values per buffer of the steps that map a whole axis of the output (confidence rows, per-row class counts):
# they run in slices of the output so that no buffer is (output height or width) x (network grid or classes),
# which a 8M x 1 frame would make gigabytes; per-frame memory stays a few bytes per output pixel.
SLICE_VALUES = 1 << 23
# Per-line class counts (lines x classes) up to this many values are made whole; beyond, a slice at a time.
DENSE_COUNTS = 1 << 22
# Robust boxes leave out this percentage of a class's pixels at each end of x and of y (see ClassStatistics).
BOX_TRIM_PERCENT = 1


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
    lo_ids = argmax_lo.to(dtype)
    # the same gather either way; the smaller intermediate first (a tall frame: columns first)
    if out_h * lo_ids.shape[1] <= lo_ids.shape[0] * out_w:
        torch.index_select(lo_ids.index_select(0, y0), 1, x0, out=labels)
    else:
        torch.index_select(lo_ids.index_select(1, x0), 0, y0, out=labels)
    if not bool(uniform.all()):
        _label_boundary_cells(flat, out_w, logits, uniform, (y0, wy), (x0, wx))
    return labels, confidence_map(logits, network_hw, placement, out_hw) if with_confidence else None


def confidence_map(logits: torch.Tensor, network_hw: tuple[int, int], placement: Placement,
                   out_hw: tuple[int, int]) -> torch.Tensor:
    """The max softmax probability of low-resolution ``logits``, bilinear at ``out_hw`` like the labels.

    Computed in slices of output rows (``SLICE_VALUES``): the same values, element by element, as the whole
    map at once, without a (output rows x network columns) intermediate."""
    (y0, y1, wy), (x0, x1, wx) = _output_taps(logits.shape[1:], network_hw, placement, out_hw, logits.device)
    confidence_lo = logits.float().softmax(dim=0).amax(dim=0)
    out_h, out_w = out_hw
    out = torch.empty((out_h, out_w), dtype=confidence_lo.dtype, device=confidence_lo.device)
    step = max(1, SLICE_VALUES // max(confidence_lo.shape[1], out_w))
    for top in range(0, out_h, step):
        rows = slice(top, top + step)
        out[rows] = _lerp_rows(_lerp_rows(confidence_lo, y0[rows], y1[rows], wy[rows]).t(), x0, x1, wx).t()
    return out


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


@dataclass
class ClassStatistics:
    """Per-class figures of one label map (arrays indexed by class id).

    ``boxes`` is the full extent of each class's pixels; ``robust_boxes`` leaves out, at each end of x and of
    y, the ``BOX_TRIM_PERCENT`` % of its pixels farthest out (k = n * BOX_TRIM_PERCENT // 100 of n pixels:
    x_min is the (k+1)-th smallest x of the class's pixels, x_max the (k+1)-th largest; likewise y), so that a
    few stray pixels across the image do not stretch it. With fewer than 100 pixels k is 0: both are equal.
    """

    pixel_counts: torch.Tensor  # int64 [C]
    confidence_sums: torch.Tensor  # float32 [C]
    boxes: torch.Tensor  # int64 [C, 4]: x_min, y_min, x_max, y_max (inclusive); -1 where absent
    robust_boxes: torch.Tensor  # int64 [C, 4]: the same, trimmed; -1 where absent


def trimmed_count(pixels: int) -> int:
    """How many of a class's ``pixels`` a robust box leaves out at each end of each axis."""
    return pixels * BOX_TRIM_PERCENT // 100


def class_statistics(labels: torch.Tensor, confidence: torch.Tensor, num_classes: int) -> ClassStatistics:
    h, w = labels.shape
    flat = labels.reshape(-1).long()
    # Accumulate in float64: a float32 running sum over a megapixel class drifts by percents.
    conf_sums = torch.bincount(flat, weights=confidence.reshape(-1).double(), minlength=num_classes)[:num_classes]
    counts = torch.bincount(flat, minlength=num_classes)[:num_classes]
    del flat
    trim = counts * BOX_TRIM_PERCENT // 100
    # per class, the first index along an axis where the running pixel count passes each of: 0 (the first
    # pixel), trim (the robust start), counts - 1 - trim (the robust end), counts - 1 (the last pixel)
    passes = torch.stack([torch.zeros_like(counts), trim, counts - 1 - trim, counts - 1])  # 4 x C
    ys = _axis_positions(labels, num_classes, passes, counts > 0, axis=0)
    xs = _axis_positions(labels, num_classes, passes, counts > 0, axis=1)
    boxes = torch.stack([xs[0], ys[0], xs[3], ys[3]], dim=1)
    robust = torch.stack([xs[1], ys[1], xs[2], ys[2]], dim=1)
    boxes[counts == 0] = -1
    robust[counts == 0] = -1
    return ClassStatistics(counts, conf_sums.float(), boxes, robust)


def _axis_positions(labels: torch.Tensor, num_classes: int, passes: torch.Tensor, present: torch.Tensor,
                    axis: int) -> torch.Tensor:
    """For each class and each row of ``passes`` (T x C pixel counts), the first index along ``axis`` of
    ``labels`` (H x W class ids: 0 rows, 1 columns) where the class's running pixel count (lines 0..index)
    exceeds it; 0 where it never does (or where the class is not ``present``).

    The (lines x classes) counts are made whole when they are small (any camera frame), from slices of rows
    (contiguous memory); along the long axis of an extreme shape (8M x 1) they are made and searched a slice
    of lines at a time. Either way no buffer exceeds a few times ``SLICE_VALUES`` besides the frame's own."""
    length = labels.shape[axis]
    if length * num_classes <= DENSE_COUNTS:
        counts = _line_counts(labels, num_classes, axis)
        cumulative = counts.cumsum(0)
        beyond = cumulative[:, None, :] > passes[None]  # lines x T x C
        found = beyond.to(torch.uint8).argmax(dim=0)
        return torch.where(present & beyond.any(dim=0), found, 0)
    lines = labels if axis == 0 else labels.t()
    across = lines.shape[1]
    found = torch.where(present, -1, 0).expand_as(passes).clone()  # absent classes: nothing to look for
    running = torch.zeros(num_classes, dtype=torch.int64, device=labels.device)
    step = max(1, SLICE_VALUES // max(across, num_classes))
    for start in range(0, length, step):
        block = lines[start:start + step].long()
        rows = block.shape[0]
        pairs = torch.arange(rows, device=labels.device)[:, None] * num_classes + block
        per_line = torch.bincount(pairs.reshape(-1), minlength=rows * num_classes).view(rows, num_classes)
        cumulative = per_line.cumsum(0) + running  # rows x C
        running = cumulative[-1]
        beyond = cumulative[:, None, :] > passes[None]  # rows x T x C
        first = beyond.to(torch.uint8).argmax(dim=0) + start
        found = torch.where((found < 0) & beyond.any(dim=0), first, found)
        if bool((found >= 0).all()):
            break
    return found.clamp(min=0)


def _line_counts(labels: torch.Tensor, num_classes: int, axis: int) -> torch.Tensor:
    """int64 (rows or columns) x C: how many pixels of each class each row (``axis`` 0) or column (1) holds,
    one bincount over (line, class) pairs per slice of rows."""
    height, width = labels.shape
    step = max(1, SLICE_VALUES // max(width, 1))
    if axis == 0:
        out = torch.empty((height, num_classes), dtype=torch.int64, device=labels.device)
    else:
        out = torch.zeros(width * num_classes, dtype=torch.int64, device=labels.device)
        columns = torch.arange(width, device=labels.device)[None, :] * num_classes
    for start in range(0, height, step):
        block = labels[start:start + step].long()
        rows = block.shape[0]
        if axis == 0:
            pairs = torch.arange(rows, device=labels.device)[:, None] * num_classes + block
            out[start:start + rows] = torch.bincount(pairs.reshape(-1), minlength=rows * num_classes).view(
                rows, num_classes)
        else:
            out += torch.bincount((columns + block).reshape(-1), minlength=width * num_classes)
    return out if axis == 0 else out.view(width, num_classes)
