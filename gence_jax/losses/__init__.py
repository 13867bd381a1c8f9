"""Per-example classification losses, optax style: ``loss(logits, labels, *, where=None, axis_name=None, **hp)``.

* `gence`: Generative Cross-Entropy (Zhan, Zhou & Shen 2026), normalised over the global batch.
* `mgce`, `mgce_probs`, `mgce_nu`: Minimax Generalized Cross-Entropy (Bondugula et al., AISTATS 2026).
* `adafocal` (+ `adafocal_init`, `adafocal_update`): AdaFocal, a stateful baseline (per-bin gammas updated from
  validation calibration each epoch; Ghosh, Schaaf & Gormley 2022).
* baselines: `cross_entropy`, `generalized_ce` (`lq`), `mae`, `focal`, `flsd53`, `dual_focal`, `brier`, `nce_rce`.
* long tail (`class_counts` of the training split): `logit_adjusted` (+ `posthoc_logit_adjustment`), `ldam`,
  `ldam_drw`, `class_balanced_ce` (+ `effective_number_weights`), `balanced_softmax`.
* `get_loss(name, **hparams)`: a `Loss` with ``per_example`` and ``probs`` (its probability link).
* `checked(loss)`: raise on out-of-range labels and NaN/Inf logits instead of returning NaN.
* soft (probability) targets ``[..., K]``: `cross_entropy_soft`, `generalized_ce_soft`, `mae_soft`, `focal_soft`,
  `brier_soft`, `nce_rce_soft`, `gence_soft`, `mgce_soft`; `soft_variant(name)` gives a registered loss's.

This package imports only jax: no TensorFlow, no Flax.
"""

from gence_jax.losses.adafocal import AdaFocalState, adafocal, adafocal_init, adafocal_update, adafocal_validation_stats
from gence_jax.losses.baselines import brier, cross_entropy, dual_focal, flsd53, focal, generalized_ce, lq, mae, nce_rce
from gence_jax.losses.checked import LossInputError, check_inputs, checked
from gence_jax.losses.generative_ce import gence
from gence_jax.losses.minimax_gce import mgce, mgce_l1_penalty, mgce_nu, mgce_probs, mgce_worst_case
from gence_jax.losses.hooks import StateSpec, mgce_objective_report
from gence_jax.losses.longtail import (
  LDAMDRWState,
  balanced_softmax,
  class_balanced_ce,
  effective_number_weights,
  ldam,
  ldam_drw,
  ldam_drw_init,
  ldam_drw_update,
  ldam_margins,
  logit_adjusted,
  posthoc_logit_adjustment,
)
from gence_jax.losses.registry import (
  Loss,
  available_losses,
  data_hparams,
  get_loss,
  register_loss,
  soft_variant,
  softmax_probs,
)
from gence_jax.losses.soft import (
  SOFT_VARIANTS,
  brier_soft,
  cross_entropy_soft,
  focal_soft,
  gence_soft,
  generalized_ce_soft,
  mae_soft,
  mgce_soft,
  nce_rce_soft,
)

__all__ = [
  "AdaFocalState",
  "adafocal",
  "adafocal_init",
  "adafocal_update",
  "adafocal_validation_stats",
  "Loss",
  "LossInputError",
  "available_losses",
  "data_hparams",
  "mgce_objective_report",
  "register_loss",
  "StateSpec",
  "LDAMDRWState",
  "balanced_softmax",
  "class_balanced_ce",
  "effective_number_weights",
  "ldam",
  "ldam_drw",
  "ldam_drw_init",
  "ldam_drw_update",
  "ldam_margins",
  "logit_adjusted",
  "posthoc_logit_adjustment",
  "brier",
  "check_inputs",
  "checked",
  "cross_entropy",
  "dual_focal",
  "flsd53",
  "focal",
  "gence",
  "generalized_ce",
  "get_loss",
  "lq",
  "mae",
  "mgce",
  "mgce_l1_penalty",
  "mgce_nu",
  "mgce_probs",
  "mgce_worst_case",
  "nce_rce",
  "softmax_probs",
  "SOFT_VARIANTS",
  "soft_variant",
  "brier_soft",
  "cross_entropy_soft",
  "focal_soft",
  "gence_soft",
  "generalized_ce_soft",
  "mae_soft",
  "mgce_soft",
  "nce_rce_soft",
]
