r"""Long-tail baselines: losses that use the training split's class counts.

Every loss here is a per-example function ``loss(logits, labels, *, class_counts, where=None, axis_name=None, **hp)``
(`ldam_drw` reads the counts through its state instead, see there) with the conventions of
`gence_jax.losses.baselines`: one value per example, no reduction, ``where=False`` rows give 0 and no gradient,
out-of-range labels give NaN, bfloat16/float16 logits are computed in float32, ``axis_name`` is unused (no loss here
couples examples).

``class_counts`` is static Python data: the number of training examples of each class in the training split the data
regime realised, a sequence of K positive integers (``get_loss(name, data={"class_counts": counts})`` fills it).
Everything derived from it (log-priors, margins, weights) is computed once per trace in float64 NumPy and enters the
computation as a constant. A zero count raises (the log-prior and the margin are undefined for an empty class).

Notation: ``z`` the logits, ``n_c`` the training count of class c, ``pi_c = n_c / sum_j n_j`` the training prior,
``e_y`` the one-hot label, ``CE(v, y) = -log softmax(v)_y``.

Evaluation: the probability link of every loss here is the softmax of the raw logits. The logit adjustments, margins
and weights act at training time only; `posthoc_logit_adjustment` is the separate, explicit evaluation-time
correction of Menon et al.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gence_jax.losses._common import check_hparam, check_logits_labels, compute_dtype, finalize
from gence_jax.losses.baselines import log_prob_of_label

#: Cao et al. 2019's schedule: 200 epochs, re-weighting from epoch 161 on (epoch // 160 in their 0-based loop).
DRW_EPOCH = 160
#: Class-balanced beta of Cui et al. 2019 for CIFAR, also Cao et al.'s deferred re-weighting value.
CB_BETA = 0.9999


# ---------------------------------------------------------------------------------------------- class counts
def check_class_counts(class_counts, fn: str, num_classes: int | None = None) -> np.ndarray:
  """`class_counts` as a 1-D int64 NumPy array of positive counts (at least 2), of length `num_classes` if given.

  Raises a one-line TypeError/ValueError starting with `fn` and naming `class_counts`.
  """
  if isinstance(class_counts, jax.core.Tracer):
    raise TypeError(f"{fn}: `class_counts` must be static per-class training counts (a tuple of ints), got a tracer.")
  try:
    counts = np.asarray(class_counts)
  except Exception as e:  # ragged nesting and the like
    raise TypeError(f"{fn}: `class_counts` must be a flat sequence of ints, got {type(class_counts).__name__}.") from e
  if counts.dtype == np.bool_ or not np.issubdtype(counts.dtype, np.integer):
    raise TypeError(f"{fn}: `class_counts` must be integer training counts per class, got dtype {counts.dtype}.")
  if counts.ndim != 1 or counts.shape[0] < 2:
    raise ValueError(
      f"{fn}: `class_counts` must have one count per class (at least 2 classes), got shape {counts.shape}."
    )
  if num_classes is not None and counts.shape[0] != num_classes:
    raise ValueError(f"{fn}: `class_counts` has {counts.shape[0]} entries but `logits` has {num_classes} classes.")
  if np.any(counts < 1):
    bad = int(np.argmax(counts < 1))
    raise ValueError(
      f"{fn}: `class_counts` must be positive (each class needs a training example), got {counts[bad]} for class {bad}."
    )
  return counts.astype(np.int64)


def _checked(logits, labels, where, class_counts, fn):
  """Checked (logits, labels, where) and the counts, the counts checked first (so their errors name them)."""
  check_class_counts(class_counts, fn)
  logits, labels, where = check_logits_labels(logits, labels, where, fn=fn)
  return logits, labels, where, check_class_counts(class_counts, fn, logits.shape[-1])


def _log_prior(counts: np.ndarray) -> np.ndarray:
  return np.log(counts.astype(np.float64)) - np.log(np.sum(counts, dtype=np.float64))


def _const(values: np.ndarray, dtype) -> jax.Array:
  return jnp.asarray(values, dtype=dtype)


def _effective_number_weights(counts: np.ndarray, beta: float) -> np.ndarray:
  k = counts.shape[0]
  if beta == 0:
    return np.ones(k)
  effective = -np.expm1(counts * np.log(beta))  # 1 - beta^n, accurate for beta near 1
  w = (1.0 - beta) / effective
  return w * (k / np.sum(w))


def _ldam_margins(counts: np.ndarray, max_margin: float) -> np.ndarray:
  m = counts.astype(np.float64) ** -0.25
  return m * (max_margin / np.max(m))


def _of_label(per_class: jax.Array, labels: jax.Array) -> jax.Array:
  """per_class[labels] for a [K] vector (out-of-range labels clipped; `finalize` marks their rows NaN)."""
  return jnp.take(per_class, jnp.clip(labels, 0, per_class.shape[0] - 1), axis=0)


def _check_beta(fn, name, beta):
  return check_hparam(fn, name, beta, low=0.0, high=1.0, high_inclusive=False)


# ---------------------------------------------------------------------------------------------- helpers
def effective_number_weights(class_counts: Sequence[int], beta: float = CB_BETA) -> jax.Array:
  r"""Class-balanced weights by the effective number of samples (Cui et al. 2019).

  .. math:: E_c = \frac{1 - \beta^{n_c}}{1 - \beta}, \qquad w_c = \frac{K}{\sum_j 1/E_j} \cdot \frac{1}{E_c}

  i.e. :math:`w_c \propto (1 - \beta)/(1 - \beta^{n_c})`, normalised so that :math:`\sum_c w_c = K` (as in the
  paper's code). ``beta = 0`` gives all ones; ``beta -> 1`` gives weights proportional to :math:`1/n_c`.
  ``beta`` in [0, 1), default 0.9999 (the paper's CIFAR value). Returns a ``[K]`` array (float64 with x64 enabled).
  Cui, Jia, Lin, Song & Belongie, "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019.
  """
  _check_beta("effective_number_weights", "beta", beta)
  counts = check_class_counts(class_counts, "effective_number_weights")
  return jnp.asarray(_effective_number_weights(counts, float(beta)))


def ldam_margins(class_counts: Sequence[int], max_margin: float = 0.5) -> jax.Array:
  r"""LDAM's per-class margins :math:`\Delta_c = C / n_c^{1/4}`, with C chosen so that the largest margin (that of
  the rarest class) equals ``max_margin`` (Cao et al. 2019; the released code's ``max_m = 0.5``)."""
  check_hparam("ldam_margins", "max_margin", max_margin, low=0.0)
  counts = check_class_counts(class_counts, "ldam_margins")
  return jnp.asarray(_ldam_margins(counts, float(max_margin)))


def posthoc_logit_adjustment(
  logits: jax.typing.ArrayLike, class_counts: Sequence[int], tau: float = 1.0
) -> jax.Array:
  r"""Post-hoc logit adjustment for evaluation (Menon et al. 2021).

  .. math:: \tilde z_c = z_c - \tau \log \pi_c, \qquad \pi_c = n_c / \textstyle\sum_j n_j

  Predicting :math:`\arg\max_c \tilde z_c` targets the balanced error; ``softmax`` of the result estimates the
  class posterior under a uniform class prior. Apply it to the logits of a model trained with an unadjusted loss
  (not after `logit_adjusted` or `balanced_softmax`, which already adjust during training). ``tau >= 0``, default 1.
  Returns ``[..., K]`` in the compute dtype (float32 for bfloat16/float16 inputs).
  Menon, Jayasumana, Rawat, Jain, Veit & Kumar, "Long-tail learning via logit adjustment", ICLR 2021.
  """
  fn = "posthoc_logit_adjustment"
  check_hparam(fn, "tau", tau, low=0.0)
  check_class_counts(class_counts, fn)
  logits = jnp.asarray(logits)
  if not jnp.issubdtype(logits.dtype, jnp.floating) or logits.ndim < 1:
    raise TypeError(f"{fn}: `logits` must be a floating-point array [..., K], got dtype {logits.dtype}.")
  counts = check_class_counts(class_counts, fn, logits.shape[-1])
  dtype = compute_dtype(logits.dtype)
  return logits.astype(dtype) - tau * _const(_log_prior(counts), dtype)


# ---------------------------------------------------------------------------------------------- losses
def logit_adjusted(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  class_counts: jax.typing.ArrayLike | Sequence[int],
  tau: float = 1.0,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Logit-adjusted cross-entropy (Menon et al. 2021).

  .. math:: \ell(z, y) = -\log \frac{e^{z_y + \tau \log \pi_y}}{\sum_c e^{z_c + \tau \log \pi_c}}
            = \mathrm{CE}(z + \tau \log \pi, y)

  with :math:`\pi` the training class prior. ``tau >= 0``, default 1 (the paper's choice); ``tau = 0`` is
  cross-entropy. The adjustment is training-time only: the probability link for evaluation is ``softmax(z)`` of the
  raw logits, which then estimates the balanced (uniform-prior) posterior.
  Menon, Jayasumana, Rawat, Jain, Veit & Kumar, "Long-tail learning via logit adjustment", ICLR 2021.
  """
  del axis_name
  fn = "logit_adjusted"
  check_hparam(fn, "tau", tau, low=0.0)
  logits, labels, where, counts = _checked(logits, labels, where, class_counts, fn)
  adjusted = logits + tau * _const(_log_prior(counts), logits.dtype)
  return finalize(-log_prob_of_label(adjusted, labels), labels, logits.shape[-1], where)


def balanced_softmax(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  class_counts: jax.typing.ArrayLike | Sequence[int],
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Balanced softmax cross-entropy (Ren et al. 2020).

  .. math:: \ell(z, y) = -\log \frac{n_y e^{z_y}}{\sum_c n_c e^{z_c}} = \mathrm{CE}(z + \log n, y)

  equal to `logit_adjusted` with ``tau = 1`` (``log n`` and ``log pi`` differ by a constant per row). Training-time
  only: the probability link for evaluation is ``softmax(z)`` of the raw logits.
  Ren, Yu, Ma, Zhao, Yi & Li, "Balanced Meta-Softmax for Long-Tailed Visual Recognition", NeurIPS 2020.
  """
  del axis_name
  fn = "balanced_softmax"
  logits, labels, where, counts = _checked(logits, labels, where, class_counts, fn)
  adjusted = logits + _const(np.log(counts.astype(np.float64)), logits.dtype)
  return finalize(-log_prob_of_label(adjusted, labels), labels, logits.shape[-1], where)


def class_balanced_ce(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  class_counts: jax.typing.ArrayLike | Sequence[int],
  beta: float = CB_BETA,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Class-balanced cross-entropy by effective number of samples (Cui et al. 2019, with softmax CE).

  .. math:: \ell(z, y) = w_y \, \mathrm{CE}(z, y), \qquad w_c \propto \frac{1 - \beta}{1 - \beta^{n_c}},
            \quad \sum_c w_c = K

  (`effective_number_weights`). ``beta`` in [0, 1), default 0.9999; ``beta = 0`` is cross-entropy. The per-example
  value is ``w_y * CE``: a training program's mean over the batch divides by the number of examples, not by the
  batch's sum of weights (PyTorch's ``cross_entropy(weight=...)`` mean reduction does the latter). The probability
  link for evaluation is ``softmax(z)``.
  Cui, Jia, Lin, Song & Belongie, "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019.
  """
  del axis_name
  fn = "class_balanced_ce"
  _check_beta(fn, "beta", beta)
  logits, labels, where, counts = _checked(logits, labels, where, class_counts, fn)
  weights = _const(_effective_number_weights(counts, float(beta)), logits.dtype)
  loss = -_of_label(weights, labels) * log_prob_of_label(logits, labels)
  return finalize(loss, labels, logits.shape[-1], where)


def _ldam_core(logits, labels, where, margins, weights, s):
  """weights_y * CE(s (z - margins_y e_y), y) on checked inputs."""
  k = logits.shape[-1]
  margins = jnp.asarray(margins, logits.dtype)
  is_label = labels[..., None] == jnp.arange(k)
  shifted = s * jnp.where(is_label, logits - _of_label(margins, labels)[..., None], logits)
  loss = -log_prob_of_label(shifted, labels)
  if weights is not None:
    loss = _of_label(jnp.asarray(weights, logits.dtype), labels) * loss
  return finalize(loss, labels, k, where)


def ldam(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  class_counts: jax.typing.ArrayLike | Sequence[int],
  max_margin: float = 0.5,
  s: float = 30.0,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Label-distribution-aware margin (LDAM) loss (Cao et al. 2019).

  .. math:: \ell(z, y) = \mathrm{CE}\bigl(s\,(z - \Delta_y e_y),\ y\bigr)
            = -\log \frac{e^{s(z_y - \Delta_y)}}{e^{s(z_y - \Delta_y)} + \sum_{c \ne y} e^{s z_c}},
            \qquad \Delta_c = \frac{C}{n_c^{1/4}}

  with C such that the largest margin is ``max_margin`` (default 0.5; `ldam_margins`). The scale ``s`` follows the
  authors' released code, which subtracts the margin from the logits and multiplies the result by ``s = 30``; there
  the logits are those of a normalised (cosine) classifier, in [-1, 1]. With an ordinary linear head, ``s = 1`` is
  the paper's equation as printed and ``s`` only rescales the logits (the margin is in units of the unscaled
  logits). ``max_margin >= 0`` (0 gives CE of ``s z``), ``s > 0``. The probability link for evaluation is
  ``softmax(z)`` of the raw logits (no margin, no scale).
  Cao, Wei, Gaidon, Arechiga & Ma, "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss",
  NeurIPS 2019.
  """
  del axis_name
  fn = "ldam"
  check_hparam(fn, "max_margin", max_margin, low=0.0)
  check_hparam(fn, "s", s, low=0.0, low_inclusive=False)
  logits, labels, where, counts = _checked(logits, labels, where, class_counts, fn)
  return _ldam_core(logits, labels, where, _ldam_margins(counts, float(max_margin)), None, s)


# ---------------------------------------------------------------------------------------------- LDAM-DRW
class LDAMDRWState(NamedTuple):
  """State of `ldam_drw` (a pytree, checkpointed with the train state).

  Attributes:
    margins: ``[K]`` LDAM margins (fixed by the class counts).
    class_weights: ``[K]`` per-class weights: ones until epoch ``drw_epoch`` has ended, then the class-balanced
      weights (`effective_number_weights` with ``drw_beta``).
  """

  margins: jax.Array
  class_weights: jax.Array


def _check_drw(fn, max_margin, drw_epoch, drw_beta):
  check_hparam(fn, "max_margin", max_margin, low=0.0)
  if isinstance(drw_epoch, bool) or not isinstance(drw_epoch, numbers.Integral):
    raise TypeError(f"{fn}: `drw_epoch` must be an integer epoch number, got {drw_epoch!r}.")
  if drw_epoch < 0:
    raise ValueError(f"{fn}: `drw_epoch` must be >= 0, got {drw_epoch}.")
  _check_beta(fn, "drw_beta", drw_beta)


def _drw_weights(counts, drw_beta, active) -> jax.Array:
  balanced = jnp.asarray(_effective_number_weights(counts, float(drw_beta)), jnp.float32)
  return jnp.where(active, balanced, jnp.ones_like(balanced))


def ldam_drw_init(
  *,
  class_counts: jax.typing.ArrayLike | Sequence[int],
  max_margin: float = 0.5,
  drw_epoch: int = DRW_EPOCH,
  drw_beta: float = CB_BETA,
) -> LDAMDRWState:
  """The state before the first epoch: the margins, and weights that are the class-balanced ones only if
  ``drw_epoch == 0`` (re-weighting from the start), else ones. float32."""
  _check_drw("ldam_drw", max_margin, drw_epoch, drw_beta)
  counts = check_class_counts(class_counts, "ldam_drw")
  margins = jnp.asarray(_ldam_margins(counts, float(max_margin)), jnp.float32)
  return LDAMDRWState(margins=margins, class_weights=_drw_weights(counts, drw_beta, drw_epoch == 0))


def ldam_drw_update(
  state: LDAMDRWState,
  *,
  epoch: int,
  val_probs: jax.typing.ArrayLike | None = None,
  val_labels: jax.typing.ArrayLike | None = None,
  class_counts: jax.typing.ArrayLike | Sequence[int],
  max_margin: float = 0.5,
  drw_epoch: int = DRW_EPOCH,
  drw_beta: float = CB_BETA,
) -> LDAMDRWState:
  """The state after 1-based `epoch` has ended: class-balanced weights once ``epoch >= drw_epoch`` (so epochs
  ``drw_epoch + 1, ...`` are re-weighted), ones before. Validation predictions are not read. `epoch` may be traced."""
  del val_probs, val_labels, max_margin
  counts = check_class_counts(class_counts, "ldam_drw")
  return LDAMDRWState(state.margins, _drw_weights(counts, drw_beta, jnp.asarray(epoch) >= drw_epoch))


def ldam_drw(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  state: LDAMDRWState,
  s: float = 30.0,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""LDAM with deferred re-weighting (LDAM-DRW; Cao et al. 2019).

  .. math:: \ell_t(z, y) = w_y^{(t)} \, \mathrm{CE}\bigl(s\,(z - \Delta_y e_y),\ y\bigr), \qquad
            w^{(t)} = \begin{cases} \mathbf 1 & t \le T_0 \\ w^{\mathrm{CB}}(\beta) & t > T_0 \end{cases}

  `ldam` weighted per class; in epoch t (1-based) the weights are ones up to ``T_0 = drw_epoch`` and the
  class-balanced weights of `effective_number_weights` (``drw_beta``, default 0.9999, summing to K) afterwards.
  Default ``drw_epoch = 160``: the paper's schedule of 200 epochs with re-weighting from epoch 161 on; set it for
  other budgets (the training program does not pass the number of epochs). The per-example value is ``w_y * LDAM``
  (the released code's PyTorch ``cross_entropy(weight=...)`` mean divides by the batch's sum of weights instead of
  the number of examples; the per-example convention leaves the reduction to the training program).

  The margins and weights live in ``state`` (`LDAMDRWState`: `ldam_drw_init`, then `ldam_drw_update` after every
  epoch); ``class_counts``, ``max_margin``, ``drw_epoch`` and ``drw_beta`` are the state's settings, registered as
  such (``get_loss("ldam_drw", data={"class_counts": counts}, drw_epoch=...)``). The probability link for evaluation
  is ``softmax(z)`` of the raw logits.
  Cao, Wei, Gaidon, Arechiga & Ma, "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss",
  NeurIPS 2019.
  """
  del axis_name
  fn = "ldam_drw"
  check_hparam(fn, "s", s, low=0.0, low_inclusive=False)
  logits, labels, where = check_logits_labels(logits, labels, where, fn=fn)
  k = logits.shape[-1]
  if state.margins.shape != (k,) or state.class_weights.shape != (k,):
    raise ValueError(
      f"{fn}: `state` holds {state.margins.shape[-1]} classes but `logits` has {k} (its class_counts do not match)."
    )
  return _ldam_core(logits, labels, where, state.margins, state.class_weights, s)


#: The settings of `ldam_drw` that belong to its state (`ldam_drw_init`, `ldam_drw_update`), not to the loss function.
LDAM_DRW_STATE_HPARAMS = ("class_counts", "max_margin", "drw_epoch", "drw_beta")
