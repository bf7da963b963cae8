"""Stage-2 masked cross-entropy and the comparison losses."""
import pytest
import torch
import torch.nn.functional as F

from human_parsing_ros.class_sets import IGNORE_INDEX
from training.losses import class_balanced_weights, focal_loss, inter_class_loss, masked_cross_entropy


def _batch(seed=0, n=2, c=5, h=6, w=7):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=gen, requires_grad=True)
    target = torch.randint(0, c, (n, h, w), generator=gen)
    target[:, 0, :3] = IGNORE_INDEX
    mask = torch.rand(n, h, w, generator=gen) < 0.4
    return logits, target, mask


def test_masked_ce_equals_ce_on_masked_pixels():
    logits, target, mask = _batch()
    loss = masked_cross_entropy(logits, target, mask)
    keep = mask & (target != IGNORE_INDEX)
    flat_logits = logits.permute(0, 2, 3, 1)[keep]
    expected = F.cross_entropy(flat_logits, target[keep])
    torch.testing.assert_close(loss, expected)
    assert keep.sum() < (target != IGNORE_INDEX).sum()


def test_masked_ce_without_mask_is_plain_ce():
    logits, target, _ = _batch(1)
    torch.testing.assert_close(masked_cross_entropy(logits, target, None),
                               F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX))


def test_masked_ce_with_weight_matches_weighted_ce():
    logits, target, _ = _batch(2)
    weight = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.1])
    torch.testing.assert_close(masked_cross_entropy(logits, target, None, weight=weight),
                               F.cross_entropy(logits, target, weight=weight,
                                               ignore_index=IGNORE_INDEX))


@pytest.mark.parametrize("loss_fn", [
    lambda lg, tg, m: masked_cross_entropy(lg, tg, m),
    lambda lg, tg, m: focal_loss(lg, tg, mask=m),
    lambda lg, tg, m: inter_class_loss(lg, tg, mask=m),
])
def test_nothing_kept_gives_connected_zero(loss_fn):
    logits, target, _ = _batch(3)
    loss = loss_fn(logits, target, torch.zeros_like(target, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.isfinite(logits.grad).all() and not logits.grad.any()


def test_masked_ce_gradient_only_on_kept_pixels():
    logits, target, mask = _batch(4)
    masked_cross_entropy(logits, target, mask).backward()
    touched = logits.grad.abs().sum(dim=1) > 0
    assert torch.equal(touched, mask & (target != IGNORE_INDEX))


def test_focal_gamma_zero_equals_ce_and_gamma_reduces_loss():
    logits, target, mask = _batch(5)
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0),
                               F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX))
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0, mask=mask),
                               masked_cross_entropy(logits, target, mask))
    assert focal_loss(logits, target, gamma=2.0) < focal_loss(logits, target, gamma=0.0)


def test_focal_matches_formula_on_one_pixel():
    logits = torch.tensor([[2.0, 0.0, -1.0]]).view(1, 3, 1, 1)
    target = torch.tensor([[[1]]])
    p_t = torch.softmax(logits.view(3), 0)[1]
    expected = -(1 - p_t) ** 2 * torch.log(p_t)
    torch.testing.assert_close(focal_loss(logits, target, gamma=2.0), expected)


def test_class_balanced_weights_order_and_normalisation():
    counts = torch.tensor([1_000_000.0, 50_000.0, 0.0, 200.0, 10.0])
    weights = class_balanced_weights(counts, beta=0.9999)
    assert weights.dtype == torch.float32
    assert weights[2] == 0.0
    assert weights[0] < weights[1] < weights[3] < weights[4]
    torch.testing.assert_close(weights.sum(), torch.tensor(5.0))
    effective = (1 - 0.9999 ** counts[[0, 4]].double()) / (1 - 0.9999)
    torch.testing.assert_close(float(weights[4] / weights[0]),
                               float(effective[0] / effective[1]), rtol=1e-5, atol=0)


def test_class_balanced_weights_limits():
    counts = torch.tensor([100.0, 10.0, 1.0])
    torch.testing.assert_close(class_balanced_weights(counts, beta=0.0), torch.ones(3))
    inverse = class_balanced_weights(counts, beta=1.0)
    torch.testing.assert_close(inverse, torch.tensor([1.0, 10.0, 100.0]) * 3 / 111)


def _inter_class_brute_force(logits, target, margin, ignore_index=IGNORE_INDEX):
    total, count = 0.0, 0
    n, c, h, w = logits.shape
    for b in range(n):
        for y in range(h):
            for x in range(w):
                i = int(target[b, y, x])
                if i == ignore_index:
                    continue
                count += 1
                for j in range(c):
                    if j != i:
                        total += max(0.0, float(logits[b, j, y, x] + margin - logits[b, i, y, x]))
    return total / count


def test_inter_class_matches_brute_force():
    logits, target, _ = _batch(6, n=2, c=4, h=3, w=4)
    expected = _inter_class_brute_force(logits.detach(), target, margin=0.7)
    assert expected > 0
    assert inter_class_loss(logits, target, margin=0.7).item() == pytest.approx(expected, rel=1e-5)


def test_inter_class_zero_when_margin_met_positive_otherwise():
    target = torch.tensor([[[0, 2]]])
    logits = torch.tensor([[[3.0, 0.0]], [[1.9, 0.5]], [[0.0, 1.5]]]).unsqueeze(0)
    assert inter_class_loss(logits, target, margin=1.0).item() == 0.0
    # Pixel 0 now misses the margin against class 1 by 0.2; pixel 1 still meets it.
    logits[0, 1, 0, 0] = 2.2
    assert inter_class_loss(logits, target, margin=1.0).item() == pytest.approx(0.2 / 2)


def test_detail_targets_hand_case():
    """A 4x4 square of class 1 in an 8x8 map of class 0. Stride 1: the Laplacian is positive on the square's
    inner border (12 pixels); stride 2 (centres at even coordinates, blocks of 2x2 after upsampling) adds
    the blocks whose centre (2,2), (2,4), (4,2) has fewer than 8 square neighbours: interior pixels (3,3),
    (3,4), (4,3); stride 4 alone (weight 0.1) never passes the 0.1 threshold."""
    from training.losses import detail_targets

    label = torch.zeros(1, 8, 8, dtype=torch.long)
    label[0, 2:6, 2:6] = 1
    ring = {(r, c) for r in range(2, 6) for c in range(2, 6) if r in (2, 5) or c in (2, 5)}
    expected = ring | {(3, 3), (3, 4), (4, 3)}
    got = detail_targets(label)
    assert got.shape == (1, 1, 8, 8)
    assert {tuple(rc) for rc in got[0, 0].nonzero().tolist()} == expected
    assert not detail_targets(torch.zeros(1, 8, 8, dtype=torch.long)).any()
    ignored = torch.full((1, 8, 8), 255)  # ignore counts as background: no boundary along padding
    assert not detail_targets(ignored).any()


def test_detail_loss_is_bce_plus_dice():
    import torch.nn.functional as F

    from training.losses import detail_loss, detail_targets

    label = torch.zeros(1, 8, 8, dtype=torch.long)
    label[0, 2:6, 2:6] = 1
    target = detail_targets(label)
    perfect = (target * 2 - 1) * 40.0  # confident and right
    assert float(detail_loss(perfect, label)) < 1e-6
    logits = torch.zeros(1, 1, 8, 8)  # p = 0.5 everywhere: BCE ln 2, Dice 1 - (2 * 0.5 n + 1) / (32 + n + 1)
    n = float(target.sum())
    expected = F.binary_cross_entropy_with_logits(logits, target) + 1 - (n + 1) / (32 + n + 1)
    torch.testing.assert_close(detail_loss(logits, label), expected)


def test_both_reductions_of_the_sampled_cross_entropy():
    """Uniform logits give every pixel CE = ln C. Of 2 x 3 x 4 = 24 pixels the mask keeps 5, one of them
    ignored: kept_mean = ln C (the mean over the 4 kept labelled pixels); sum (Eq. 1) = 4 ln C / 24."""
    classes = 5
    logits = torch.zeros(2, classes, 3, 4, requires_grad=True)
    target = torch.randint(0, classes, (2, 3, 4), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[0, 0, :3] = True
    mask[1, 2, 2:] = True
    target[1, 2, 3] = IGNORE_INDEX
    ln_c = torch.log(torch.tensor(float(classes)))
    torch.testing.assert_close(masked_cross_entropy(logits, target, mask), ln_c)
    torch.testing.assert_close(masked_cross_entropy(logits, target, mask, reduction="sum"), 4 * ln_c / 24)
    # sum: a batch that keeps fewer pixels weighs less; kept_mean does not change
    mask[0, 0, :3] = False
    torch.testing.assert_close(masked_cross_entropy(logits, target, mask), ln_c)
    torch.testing.assert_close(masked_cross_entropy(logits, target, mask, reduction="sum"), ln_c / 24)
    with pytest.raises(ValueError, match="reduction 'mean'"):
        masked_cross_entropy(logits, target, mask, reduction="mean")
