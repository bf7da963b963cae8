"""SCHP's training pieces on hand-made cases with known answers (training/schp/)."""
import math

import pytest
import torch
from torch import nn

from human_parsing_ros.class_sets import IGNORE_INDEX
from training import schp


def _logits(probs):
    """Logits whose softmax over dim 1 is ``probs`` ([P, C] -> [1, C, 1, P])."""
    return torch.tensor(probs).log().t()[None, :, None, :]


def test_lovasz_softmax_hand_case():
    """Labels 1 0 1; p(class 1) = .8 .4 .3. Class 1: errors .2 .4 .7, sorted .7 .4 .2 over foreground 1 0 1,
    Jaccard 1/2, 2/3, 1 -> gradient 1/2, 1/6, 1/3 -> .35 + .4/6 + .2/3. Class 0: errors .2 .4 .7 sorted over
    foreground 0 1 0, Jaccard 1/2, 1, 1 -> gradient 1/2, 1/2, 0 -> .35 + .2. Mean of the two."""
    logits = _logits([[0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    labels = torch.tensor([[[1, 0, 1]]])
    expected = ((0.35 + 0.4 / 6 + 0.2 / 3) + (0.35 + 0.2)) / 2
    assert float(schp.lovasz_softmax(logits, labels)) == pytest.approx(expected, abs=1e-6)
    # an ignored pixel changes nothing; a batch with none valid gives a connected zero
    logits4 = _logits([[0.2, 0.8], [0.6, 0.4], [0.7, 0.3], [0.5, 0.5]])
    assert float(schp.lovasz_softmax(logits4, torch.tensor([[[1, 0, 1, IGNORE_INDEX]]]))) == pytest.approx(
        expected, abs=1e-6)
    empty = schp.lovasz_softmax(logits.requires_grad_(), torch.full((1, 1, 3), IGNORE_INDEX))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def _lovasz_one_class_at_a_time(logits, labels):
    """The Lovász-softmax written plainly: one sort per present class, the Jaccard gradient by hand."""
    probs = logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    labels = labels.reshape(-1)
    probs, labels = probs[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX]
    losses = []
    for c in labels.unique():
        foreground = (labels == c).double()
        errors, order = (foreground - probs[:, c].double()).abs().sort(descending=True)
        flags = foreground[order]
        jaccard = [torch.zeros((), dtype=torch.float64)]  # J(first i pixels predicted foreground), i = 0..P
        for i in range(1, len(flags) + 1):
            intersection = flags.sum() - flags[:i].sum()
            jaccard.append(1 - intersection / (flags.sum() + (1 - flags[:i]).sum()))
        gradient = torch.stack([jaccard[i + 1] - jaccard[i] for i in range(len(flags))])
        losses.append(torch.dot(errors, gradient))
    return torch.stack(losses).mean()


def test_lovasz_softmax_sorting_all_classes_at_once_matches_one_class_at_a_time():
    """Several classes, ignored pixels, two images: value and gradient equal the plain per-class loop."""
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 4, 6, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 4, 6), generator=generator)  # class 4 never present
    labels[0, 0, :3] = IGNORE_INDEX
    fast_input, plain_input = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    fast, plain = schp.lovasz_softmax(fast_input, labels), _lovasz_one_class_at_a_time(plain_input, labels)
    fast.backward()
    plain.backward()
    assert float(fast.detach()) == pytest.approx(float(plain.detach()), abs=1e-12)
    assert torch.allclose(fast_input.grad, plain_input.grad, atol=1e-12) and fast_input.grad.abs().sum() > 0


def test_edge_targets_mark_a_band_along_label_changes():
    """Columns 0-1 of class 0, 2-4 of class 1: both sides of the change are marked (columns 1 and 2), widened by
    3x3 to columns 0-3. The same boundary turned horizontal gives rows 0-3: SCHP marks the upper side of the
    diagonal pairs, so a horizontal boundary is as wide as a vertical one."""
    labels = torch.zeros(1, 5, 5, dtype=torch.long)
    labels[..., 2:] = 1
    edges = schp.edge_targets(labels)
    assert edges.dtype == torch.long and edges[0, :, :4].eq(1).all() and edges[0, :, 4].eq(0).all()
    rows = schp.edge_targets(labels.transpose(1, 2).contiguous())
    assert rows[0, :4].eq(1).all() and rows[0, 4].eq(0).all()
    assert not schp.edge_targets(torch.zeros(1, 5, 5, dtype=torch.long)).any()
    ignored = torch.zeros(1, 5, 5, dtype=torch.long)
    ignored[..., 3:] = IGNORE_INDEX  # labelled next to ignored is not an edge
    assert not schp.edge_targets(ignored).any()


def _schp_marks(labels):
    """SCHP's rule pixel by pixel, before the dilation: marked where the label differs from the pixel above,
    the one to the right, the lower-right or the lower-left one (both labelled)."""
    n, h, w = labels.shape
    marks = torch.zeros_like(labels, dtype=torch.bool)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                for dy, dx in ((-1, 0), (0, 1), (1, 1), (1, -1)):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        a, b = int(labels[i, y, x]), int(labels[i, y + dy, x + dx])
                        marks[i, y, x] |= a != b and IGNORE_INDEX not in (a, b)
    return marks


def test_edge_targets_equal_schps_rule_on_random_labels():
    generator = torch.Generator().manual_seed(11)
    labels = torch.randint(0, 3, (2, 6, 7), generator=generator)
    labels[0, :2, :3] = IGNORE_INDEX
    expected = torch.nn.functional.max_pool2d(_schp_marks(labels)[:, None].float(), 3, stride=1, padding=1)[:, 0]
    torch.testing.assert_close(schp.edge_targets(labels), expected.long())


def test_edge_loss_weighs_edges_by_the_non_edge_share():
    """One edge pixel of four: weights 3/4 (edge) and 1/4 (non-edge). The edge pixel's logits (0, 2) give
    CE log(1 + e^-2); the others (0, 0) give ln 2. Weighted mean: (.75 a + 3 x .25 b) / (.75 + .75)."""
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 1, 0, 0] = 2.0
    edges = torch.tensor([[[1, 0, 0, 0]]])
    a, b = math.log(1 + math.exp(-2)), math.log(2)
    expected = (0.75 * a + 3 * 0.25 * b) / 1.5
    assert float(schp.edge_loss(logits, edges)) == pytest.approx(expected)
    everywhere = schp.edge_loss(logits.requires_grad_(), torch.ones(1, 1, 4, dtype=torch.long))
    assert float(everywhere.detach()) == 0.0 and everywhere.requires_grad  # nothing to balance: no NaN


def test_consistency_between_parsing_implied_and_predicted_edges():
    """A 1x4 strip parsed 0 0 1 1 (one-hot): the implied edge probability is 0 1 1 0. Predicted edges 0 1 0 0.
    On the union (pixels 1 and 2): smooth L1 of 0 and of 1, i.e. 0 and 0.5; mean 0.25."""
    parsing = torch.full((1, 2, 1, 4), -30.0)
    parsing[0, 0, 0, :2] = 30.0
    parsing[0, 1, 0, 2:] = 30.0
    torch.testing.assert_close(schp.parsing_edge_probability(parsing.softmax(1))[0, 0],
                               torch.tensor([0.0, 1.0, 1.0, 0.0]))
    edge = torch.full((1, 2, 1, 4), -30.0)
    edge[0, 0, 0, [0, 2, 3]] = 30.0
    edge[0, 1, 0, 1] = 30.0
    labels = torch.zeros(1, 1, 4, dtype=torch.long)
    assert float(schp.consistency_loss(parsing, edge, labels)) == pytest.approx(0.25, abs=1e-6)
    labels[0, 0, 2] = IGNORE_INDEX  # the disagreeing pixel ignored: nothing left to disagree on
    assert float(schp.consistency_loss(parsing, edge, labels)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("reached", [1.0, 0.1])
def test_parsing_edge_probability_equals_the_plain_eight_neighbour_comparison(reached):
    """Random distributions, odd sizes: value and gradient equal comparing every pixel with its 8 neighbours
    (replicate padding) and taking the largest distance, whether the loss reaches every pixel or, as the
    consistency loss, a few (the backward visits only the neighbour pairs a non-zero gradient reaches)."""
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 4, 5, 7, generator=generator, dtype=torch.float64)
    fast_input, plain_input = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    fast = schp.parsing_edge_probability(fast_input.softmax(1))
    probs = plain_input.softmax(1)
    padded = torch.nn.functional.pad(probs, (1, 1, 1, 1), mode="replicate")
    plain = 0.5 * torch.stack([(probs - padded[..., 1 + dy:6 + dy, 1 + dx:8 + dx]).abs().sum(1)
                               for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]).amax(0)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-12)
    weights = torch.randn(fast.shape, generator=generator, dtype=torch.float64)
    weights *= torch.rand(fast.shape, generator=generator, dtype=torch.float64) < reached
    (fast * weights).sum().backward()
    (plain * weights).sum().backward()
    torch.testing.assert_close(fast_input.grad, plain_input.grad, rtol=0, atol=1e-12)


def test_soft_targets_and_their_kl():
    """After m = 1 cycle the target is half the teacher's softmax, half the one-hot label; m = 3: 3/4, 1/4."""
    teacher = _logits([[0.6, 0.4], [0.1, 0.9]])
    labels = torch.tensor([[[1, 0]]])
    one = schp.soft_targets(teacher, labels, cycle=1)
    torch.testing.assert_close(one[0, :, 0].t(), torch.tensor([[0.3, 0.7], [0.55, 0.45]]))
    three = schp.soft_targets(teacher, labels, cycle=3)
    torch.testing.assert_close(three[0, :, 0].t(), torch.tensor([[0.45, 0.55], [0.325, 0.675]]))
    # KL(target || p) averaged over pixels and classes; zero when the student predicts the target
    assert float(schp.soft_target_kl(one.log(), one, labels)) == pytest.approx(0.0, abs=1e-7)
    student = _logits([[0.5, 0.5], [0.5, 0.5]])
    expected = sum(t * math.log(t / 0.5) for t in (0.3, 0.7, 0.55, 0.45)) / 4
    assert float(schp.soft_target_kl(student, one, labels)) == pytest.approx(expected, abs=1e-6)


def test_refined_targets_mix_the_teachers_parsing_and_edges_with_the_labels():
    """Cycle 1: half the teacher's softmax, half the one-hot labels, for the parsing classes and for the
    edges of the labels (a 1x4 strip labelled 0 0 1 1: SCHP marks pixel 1, the left one of the changing pair;
    dilated, the edges are 1 1 1 0)."""
    teacher = _logits([[0.6, 0.4], [0.6, 0.4], [0.2, 0.8], [0.2, 0.8]])
    teacher_edges = _logits([[0.9, 0.1]] * 4)
    labels = torch.tensor([[[0, 0, 1, 1]]])
    refined = schp.refined_targets(teacher, teacher_edges, labels, cycle=1)
    torch.testing.assert_close(refined.parsing[0, :, 0].t(), torch.tensor([[0.8, 0.2], [0.8, 0.2], [0.1, 0.9],
                                                                            [0.1, 0.9]]))
    torch.testing.assert_close(refined.edges[0, :, 0].t(), torch.tensor([[0.45, 0.55]] * 3 + [[0.95, 0.05]]))
    assert schp.refined_targets(teacher, None, labels, cycle=1).edges is None


def test_online_aggregation_is_the_running_mean_of_the_cycle_models():
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(nn.Linear(3, 2))
    aggregated = nn.Linear(3, 2)
    aggregated.load_state_dict(models[0].state_dict())
    schp.aggregate_weights(aggregated, models[1], cycle=1)  # (w0 + w1) / 2
    schp.aggregate_weights(aggregated, models[2], cycle=2)  # 2/3 of that + w2 / 3 = the mean of the three
    for name, value in aggregated.state_dict().items():
        torch.testing.assert_close(value, sum(m.state_dict()[name] for m in models) / 3)
    with pytest.raises(ValueError, match="cycle"):
        schp.aggregate_weights(aggregated, models[0], cycle=0)


def test_batchnorm_reestimation_averages_the_batch_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Dropout(0.0))
    model[0].running_mean.fill_(7.0)  # stale statistics from before the aggregation
    batches = [torch.randn(8, 4) * (i + 1) + i for i in range(3)]
    model.eval()
    schp.reestimate_batchnorm(model, batches)
    torch.testing.assert_close(model[0].running_mean, torch.stack([b.mean(0) for b in batches]).mean(0))
    torch.testing.assert_close(model[0].running_var, torch.stack([b.var(0) for b in batches]).mean(0))
    assert model[0].momentum == 0.1 and not model.training


def test_ce2p_batch_loss_refines_every_output_and_checks_both_parsing_outputs_against_the_edges():
    """The trainer's loss for CE2P's three outputs, summed from the pieces tested above: outside the cycles
    the parsing outputs take CE + Lovász and the edges the balanced loss; during a cycle both parsing outputs
    take the KL towards the same refined labels and the edges the KL towards the refined edges; in both, the
    consistency term compares the edges with the fusion output and with the parsing branch (SCHP's code)."""
    from training.engine import StageLoss, batch_loss
    from training.losses import ce_lovasz
    from training.schp import CONSISTENCY_WEIGHT

    generator = torch.Generator().manual_seed(2)
    fusion, branch = (torch.randn(2, 4, 6, 5, generator=generator) for _ in range(2))
    edge, teacher, teacher_edge = (torch.randn(2, c, 6, 5, generator=generator) for c in (2, 4, 2))
    labels = torch.randint(0, 4, (2, 6, 5), generator=generator)
    labels[1, :2] = IGNORE_INDEX
    terms, loss = [(1.0, "ce_lovasz"), (1.0, "edge")], StageLoss("ce_lovasz")
    consistency = sum(schp.consistency_loss(p, edge, labels) for p in (fusion, branch))

    plain, _ = batch_loss(fusion, [branch, edge], labels, loss, terms, None)
    expected = (ce_lovasz(fusion, labels) + ce_lovasz(branch, labels)
                + schp.edge_loss(edge, schp.edge_targets(labels)) + CONSISTENCY_WEIGHT * consistency)
    torch.testing.assert_close(plain, expected)

    soft = schp.refined_targets(teacher, teacher_edge, labels, cycle=2)
    refined, _ = batch_loss(fusion, [branch, edge], labels, loss, terms, None, soft)
    expected = sum(0.5 * schp.soft_target_kl(p, soft.parsing, labels) + 0.5 * schp.lovasz_softmax(p, labels)
                   for p in (fusion, branch))
    expected = expected + schp.soft_target_kl(edge, soft.edges, labels) + CONSISTENCY_WEIGHT * consistency
    torch.testing.assert_close(refined, expected)
