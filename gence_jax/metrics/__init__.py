"""Calibration and OOD-detection metrics (jit-able, mask-aware, mergeable).

Conventions (see ``docs/calibration.md``):

* ``probs`` [N, K] are class probabilities under the model's own link (softmax, or the MGCE link); ``labels`` [N]
  integers; ``where`` an optional [N] bool mask: masked rows count nowhere.
* Binned metrics use ``num_bins`` equal-width bins with edges b / M, bins (lo, hi], confidence 0 in the first bin
  and exactly 1.0 in the last; bin = clip(ceil(c M) - 1, 0, M - 1).
* Metrics return scalar jnp arrays as fractions (multiply by 100 for %).
* Every binned metric has a ``*_from_stats`` form over :class:`CalibrationStats` (mergeable with :func:`merge`,
  psum-able); :class:`EvalStats` accumulates accuracy / NLL / Brier and the binned stats batch by batch.
* Long-tail metrics (per-class accuracy and top-label ECE, balanced accuracy, many/medium/few-shot accuracy from
  the training ``class_counts``) leave classes without test examples out of their means.
* OOD scores are oriented so that higher = more in-distribution; detection metrics treat in-distribution as the
  positive class by default.
"""

from gence_jax.metrics._binned import (
  CalibrationStats,
  bin_edges,
  bin_index,
  calibration_stats,
  classwise_ece,
  classwise_ece_from_stats,
  ece,
  ece_from_stats,
  mce,
  mce_from_stats,
  merge,
  sce,
  sce_from_stats,
)
from gence_jax.metrics._longtail import (
  balanced_accuracy,
  longtail_metrics,
  per_class_accuracy,
  per_class_ece,
  shot_accuracy,
  shot_groups,
)
from gence_jax.metrics._bootstrap import (
  BOOTSTRAP_METRICS,
  INTERVAL_METHODS,
  BootstrapStats,
  bootstrap_adaptive_ece,
  bootstrap_intervals,
  bootstrap_intervals_from_stats,
  bootstrap_metrics,
  bootstrap_stats,
  bootstrap_weights,
  resample_interval,
)
from gence_jax.metrics._estimators import (
  SmoothECEStats,
  equal_mass_stats,
  l2_calibration_error,
  l2_calibration_error_from_stats,
  rmsce,
  smooth_ece,
  smooth_ece_from_stats,
  smooth_ece_stats,
)
from gence_jax.metrics._ood import (
  HIGHER_IS_IN_DISTRIBUTION,
  OOD_SCORES,
  aupr,
  auroc,
  energy,
  entropy,
  fpr_at_95_tpr,
  fpr_at_tpr,
  max_prob,
)
from gence_jax.metrics._scalar import (
  EvalStats,
  accuracy,
  adaptive_ece,
  adaptive_ece_from_confidences,
  brier,
  compute_eval_stats,
  eval_stats,
  nll,
  update_eval_stats,
)
from gence_jax.metrics._top_label import (
  TOP_LABEL_BOOTSTRAP,
  TOP_LABEL_METRICS,
  UNDEFINED,
  bootstrap_top_label_intervals,
  top_label_metrics,
  top_label_stats,
)
from gence_jax.metrics._binned import equal_mass_edges
from gence_jax.checks import PROBS_SUM_ATOL

__all__ = [
  "TOP_LABEL_BOOTSTRAP",
  "TOP_LABEL_METRICS",
  "UNDEFINED",
  "bootstrap_top_label_intervals",
  "equal_mass_edges",
  "top_label_metrics",
  "top_label_stats",
  "BOOTSTRAP_METRICS",
  "BootstrapStats",
  "INTERVAL_METHODS",
  "SmoothECEStats",
  "bootstrap_adaptive_ece",
  "bootstrap_intervals",
  "bootstrap_intervals_from_stats",
  "bootstrap_metrics",
  "bootstrap_stats",
  "bootstrap_weights",
  "equal_mass_stats",
  "l2_calibration_error",
  "l2_calibration_error_from_stats",
  "resample_interval",
  "rmsce",
  "smooth_ece",
  "smooth_ece_from_stats",
  "smooth_ece_stats",
  "CalibrationStats",
  "EvalStats",
  "HIGHER_IS_IN_DISTRIBUTION",
  "OOD_SCORES",
  "PROBS_SUM_ATOL",
  "accuracy",
  "adaptive_ece",
  "adaptive_ece_from_confidences",
  "aupr",
  "auroc",
  "balanced_accuracy",
  "bin_edges",
  "bin_index",
  "brier",
  "calibration_stats",
  "classwise_ece",
  "classwise_ece_from_stats",
  "compute_eval_stats",
  "ece",
  "ece_from_stats",
  "energy",
  "entropy",
  "eval_stats",
  "fpr_at_95_tpr",
  "fpr_at_tpr",
  "longtail_metrics",
  "max_prob",
  "mce",
  "mce_from_stats",
  "merge",
  "nll",
  "per_class_accuracy",
  "per_class_ece",
  "sce",
  "sce_from_stats",
  "shot_accuracy",
  "shot_groups",
  "update_eval_stats",
]
