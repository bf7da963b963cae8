"""SCHP's training code in one place (Li et al., "Self-Correction for Human Parsing"): CE2P's losses
(``losses.py``) and the self-correction cycles (``cycles.py``).

Facts from SCHP's code (utils/criterion.py, utils/schp.py, train.py); the code is ours. Where SCHP's
code and its description differ, the docstrings say which we follow:

* ``edge_targets``: a pixel is an edge where its label differs from a neighbour's (both labelled),
  marked on the side SCHP marks and widened by a 3x3 dilation, as SCHP generates them from the labels.
* ``lovasz_softmax``: the Lovász extension of the Jaccard loss over the classes present in the batch
  (SCHP weighs it 0.5 beside 0.5 cross-entropy on the parsing and fusion outputs).
* ``edge_loss``: cross-entropy on the two edge classes, each weighted by the other's share of the
  batch's pixels (edges are rare, so they weigh more); unlabelled pixels count as non-edge, as in SCHP.
* ``consistency_loss``: SCHP's code compares argmaxes on the pixels where *both* maps say edge, which
  is identically zero with no gradient; we take what it describes: on the union of pixels where either
  the parsing-implied edge or the predicted edge is likely, a smooth L1 between the two probabilities
  (parsing-implied edge = half the L1 distance between a pixel's class distribution and its most
  different 8-neighbour's: the probability that their classes differ, for one-hot maps exactly 0 or 1).
* ``soft_target_kl``: label refinement, KL(target || softmax(logits)) with the target
  m/(m+1) x the aggregated model's probabilities + 1/(m+1) x the one-hot labels after m cycles, averaged
  over valid pixels and classes as SCHP's ``F.kl_div`` does. (SCHP mixes its logits, not probabilities,
  with the one-hot labels before a softmax; we mix probabilities, the formula it publishes.)
  ``refined_targets``: as SCHP, the aggregated model's final parsing output refines the labels of every
  parsing output, and its edge output the edge maps.
* ``aggregate_weights`` / ``reestimate_batchnorm``: online model aggregation w_m = m/(m+1) w_{m-1} +
  1/(m+1) w, then the BatchNorm statistics of the aggregated model recomputed over the training data.
"""
from training.schp.cycles import (
    CyclePlan,
    aggregate_weights,
    cycle_lr_factor,
    cycle_plan,
    reestimate_batchnorm,
    update_aggregated,
)
from training.schp.losses import (
    CONSISTENCY_WEIGHT,
    SoftTargets,
    consistency_loss,
    edge_branch_loss,
    edge_loss,
    edge_targets,
    lovasz_grad,
    lovasz_softmax,
    parsing_edge_probability,
    refined_targets,
    soft_target_kl,
    soft_targets,
)

__all__ = ["CONSISTENCY_WEIGHT", "CyclePlan", "SoftTargets", "aggregate_weights", "consistency_loss", "cycle_lr_factor",
           "cycle_plan", "edge_branch_loss", "edge_loss", "edge_targets", "lovasz_grad", "lovasz_softmax",
           "parsing_edge_probability", "reestimate_batchnorm", "refined_targets", "soft_target_kl", "soft_targets",
           "update_aggregated"]
