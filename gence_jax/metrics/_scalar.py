"""Accuracy, NLL, Brier, adaptive ECE, and the mergeable evaluation accumulator :class:`EvalStats`."""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp

from gence_jax import checks
from gence_jax.metrics import _binned


def _eps(dtype, eps):
  return jnp.finfo(dtype).tiny if eps is None else eps


def _per_example(probs, labels, valid, eps):
  """(correct, -log max(p_y, eps), sum_k (p_k - 1[y=k])^2), each [N] and zero on masked rows."""
  k = probs.shape[-1]
  probs = probs.astype(jnp.promote_types(probs.dtype, jnp.float32))
  p_y = jnp.take_along_axis(probs, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
  nll = -jnp.log(jnp.maximum(p_y, jnp.asarray(_eps(probs.dtype, eps), probs.dtype)))
  onehot = jax.nn.one_hot(labels, k, dtype=probs.dtype)
  brier = jnp.sum(jnp.square(probs - onehot), axis=-1)
  correct = (jnp.argmax(probs, axis=-1) == labels) & valid
  zero = jnp.zeros((), probs.dtype)
  return correct, jnp.where(valid, nll, zero), jnp.where(valid, brier, zero)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EvalStats:
  """Mergeable evaluation accumulator (a pytree): sums and counts for accuracy / NLL / Brier, plus binned stats.

  Start from :meth:`zeros` (or from :func:`eval_stats` of the first batch), fold batches in with :meth:`update`
  (or :func:`merge` of per-batch stats; ``jax.lax.psum`` across devices), read the metrics with :meth:`compute`.
  All of it is jit-able. Adaptive ECE is not included (equal-mass bins need all confidences): see
  :func:`adaptive_ece_from_confidences`.
  """

  num_examples: jax.Array  # int32 scalar
  num_correct: jax.Array  # int32 scalar
  nll_sum: jax.Array  # float scalar
  brier_sum: jax.Array  # float scalar
  calibration: _binned.CalibrationStats

  @property
  def num_bins(self) -> int:
    return self.calibration.num_bins

  @classmethod
  def zeros(cls, num_classes: int, num_bins: int = 15, dtype: jax.typing.DTypeLike = jnp.float32) -> "EvalStats":
    z = jnp.zeros((), dtype)
    zi = jnp.zeros((), jnp.int32)
    return cls(zi, zi, z, z, _binned.CalibrationStats.zeros(num_classes, num_bins, dtype))

  def update(
    self,
    probs: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    where: jax.typing.ArrayLike | None = None,
    axis_name: str | None = None,
    nll_eps: float | None = None,
  ) -> "EvalStats":
    """``self`` merged with the statistics of one more batch (same number of bins as ``self``)."""
    return update_eval_stats(self, probs, labels, where=where, axis_name=axis_name, nll_eps=nll_eps)

  def compute(self) -> dict:
    return compute_eval_stats(self)


@functools.partial(jax.jit, static_argnames=("num_bins", "eps"))
def _eval_core(probs, labels, valid, *, num_bins, eps):
  correct, nll_i, brier_i = _per_example(probs, labels, valid, eps)
  calib = _binned._stats_core(probs, labels, valid, num_bins=num_bins, classwise=True)
  return EvalStats(
    num_examples=jnp.sum(valid, dtype=jnp.int32),
    num_correct=jnp.sum(correct, dtype=jnp.int32),
    nll_sum=jnp.sum(nll_i),
    brier_sum=jnp.sum(brier_i),
    calibration=calib,
  )


def eval_stats(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_bins: int = 15,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
  nll_eps: float | None = None,
) -> EvalStats:
  """:class:`EvalStats` of one batch (``psum``-ed over ``axis_name`` if given). See :func:`nll` for ``nll_eps``."""
  num_bins = checks.check_num_bins("eval_stats", num_bins)
  probs, labels, where = checks.check_probs("eval_stats", probs, labels, where)
  valid = _binned._valid(where, probs.shape[0])
  stats = _eval_core(probs, labels, valid, num_bins=num_bins, eps=nll_eps)
  if axis_name is not None:
    stats = jax.lax.psum(stats, axis_name)
  return stats


def update_eval_stats(
  stats: EvalStats,
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
  nll_eps: float | None = None,
) -> EvalStats:
  """``merge(stats, eval_stats(probs, labels, num_bins=stats.num_bins, ...))``."""
  new = eval_stats(probs, labels, num_bins=stats.num_bins, where=where, axis_name=axis_name, nll_eps=nll_eps)
  return _binned.merge(stats, new)


@jax.jit
def compute_eval_stats(stats: EvalStats) -> dict:
  """Metrics of the accumulated predictions, as jnp scalars (``{k: float(v)}`` for logging).

  Keys: ``num_examples, accuracy, nll, brier, ece, mce, classwise_ece, sce`` (same definitions as the functions).
  """
  dt = stats.nll_sum.dtype
  n = stats.num_examples.astype(dt)
  c = stats.calibration
  return {
    "num_examples": stats.num_examples,
    # NaN (not a plausible number) when the probabilities were refused under jit (`checks.check_probs`).
    "accuracy": jnp.where(jnp.isnan(stats.nll_sum), jnp.nan, stats.num_correct.astype(dt) / n),
    "nll": stats.nll_sum / n,
    "brier": stats.brier_sum / n,
    "ece": _binned.ece_from_stats(c),
    "mce": _binned.mce_from_stats(c),
    "classwise_ece": _binned.classwise_ece_from_stats(c),
    "sce": _binned.sce_from_stats(c),
  }


# ----------------------------------------------------------------------------------------------- scalar metrics


@functools.partial(jax.jit, static_argnames=("eps",))
def _means(probs, labels, valid, eps):
  correct, nll_i, brier_i = _per_example(probs, labels, valid, eps)
  dt = nll_i.dtype
  n = jnp.sum(valid).astype(dt)
  nll = jnp.sum(nll_i) / n
  return jnp.where(jnp.isnan(nll), jnp.nan, jnp.sum(correct).astype(dt) / n), nll, jnp.sum(brier_i) / n


def _prep(fn, probs, labels, where):
  probs, labels, where = checks.check_probs(fn, probs, labels, where)
  return probs, labels, _binned._valid(where, probs.shape[0])


def accuracy(
  probs: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, *, where: jax.typing.ArrayLike | None = None
) -> jax.Array:
  """Top-1 accuracy (1/N) sum_i 1[argmax_k p_ik = y_i] (first maximum on ties); N = unmasked examples."""
  return _means(*_prep("accuracy", probs, labels, where), None)[0]


def nll(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  where: jax.typing.ArrayLike | None = None,
  eps: Optional[float] = None,
) -> jax.Array:
  """Negative log-likelihood (1/N) sum_i -log max(p_{i,y_i}, eps).

  ``eps`` defaults to the smallest positive normal number of the dtype (``jnp.finfo(dtype).tiny``, so an exact zero
  costs about 87.3 nats in float32 instead of inf: sparse links such as MGCE with beta = 1 can give exact zeros).
  Pass ``eps=0.0`` for the raw value (possibly inf).
  """
  return _means(*_prep("nll", probs, labels, where), eps)[1]


def brier(
  probs: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, *, where: jax.typing.ArrayLike | None = None
) -> jax.Array:
  """Multi-class Brier score (Brier 1950), SUMMED over classes: (1/N) sum_i sum_k (p_ik - 1[y_i = k])^2, in [0, 2]."""
  return _means(*_prep("brier", probs, labels, where), None)[2]


# ----------------------------------------------------------------------------------------------- adaptive ECE


@functools.partial(jax.jit, static_argnames=("num_bins",))
def _adaptive_core(conf, correct, valid, *, num_bins):
  conf = jnp.where(valid, conf, 0)  # masked rows (possibly NaN) get weight 0 and a finite value
  order = jnp.argsort(conf)
  stats = _binned.equal_mass_stats_sorted(conf[order], (correct & valid)[order], valid[order], num_bins)
  return _binned.ece_from_stats(stats)


def adaptive_ece_from_confidences(
  confidences: jax.typing.ArrayLike,
  correct: jax.typing.ArrayLike,
  *,
  num_bins: int = 15,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """Adaptive (equal-mass) ECE from top-label confidences [N] (float) and correctness [N] (bool).

  Use this in an evaluation loop: keep the two [N] vectors (cheap) and call it once at the end, because
  equal-mass bins are NOT mergeable from fixed-bin statistics. See :func:`adaptive_ece` for the definition.
  """
  num_bins = checks.check_num_bins("adaptive_ece_from_confidences", num_bins)
  conf, correct, where = checks.check_pairs("adaptive_ece_from_confidences", confidences, correct, where)
  return _adaptive_core(conf, correct, _binned._valid(where, conf.shape[0]), num_bins=num_bins)


def adaptive_ece(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_bins: int = 15,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """Adaptive ECE: the TOP-LABEL ECE with equal-mass bins, AdaECE of Mukhoti et al. 2020 ("Calibrating Deep
  Neural Networks using Focal Loss", NeurIPS 2020).

      AdaECE = sum_{b=1}^{M} (n_b / N) |acc_b - conf_b|

  This is NOT the ACE of Nixon et al. 2019 ("Measuring Calibration in Deep Learning"; ``robustness_metrics``'
  ``ace``), which is class-wise: every class's probabilities p_ik get their own equal-mass bins and the per-class
  errors are averaged over classes. The two give different numbers; only the top-label one is offered here.

  Equal-mass bins with VALUE edges (:func:`equal_mass_edges`): sort the N unmasked confidences c_i = max_k p_ik
  ascending; edge b (b = 1..M-1) is the confidence of 0-based rank ceil(bN/M) - 1, and bin b is (e_{b-1}, e_b].
  On distinct confidences the example of rank r is in bin floor(r M / N) (each bin holds floor(N/M) or ceil(N/M)
  examples). A group of equal confidences is never split: it lies wholly in the bin of its largest rank's lower
  neighbour edge (the lower bin), so discrete outputs (histogram binning, isotonic regression, scaling-binning,
  float32 confidences saturated at 1.0) get bins of unequal size, never all-wrong and all-right halves of one value.
  This is the tie convention of Kumar et al.'s ``get_equal_bins`` (verified_calibration; values equal to an edge
  go to the lower bin); its rank boundaries are ceil(N/M)-sized chunks, ours ceil(bN/M) (the same when M divides N).
  Not mergeable from fixed bins (it needs every confidence): a plain function, not a ``*_from_stats``.

  Mukhoti et al.'s code (``AdaptiveECELoss``) also bins by value: edges interpolated at positions kN/M of the
  sorted confidences (``np.interp``), bins (e_b, e_{b+1}], so tied confidences share a bin too, and the example(s)
  with the smallest confidence (equal to e_0) fall in no bin while still counting in N. On distinct confidences
  each of its bin boundaries sits within about one rank of ours.
  """
  num_bins = checks.check_num_bins("adaptive_ece", num_bins)
  probs, labels, valid = _prep("adaptive_ece", probs, labels, where)
  conf, correct = _binned.top_label(probs, labels, valid)
  return _adaptive_core(conf, correct, valid, num_bins=num_bins)
