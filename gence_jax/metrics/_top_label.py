"""Metrics of top-label predictions given as pairs (confidence c_i, correct z_i), without a probability vector.

A top-label calibrator (Gupta & Ramdas 2022, "Top-label calibration and multiclass-to-binary reductions", ICLR)
outputs, for each example, the model's prediction and a calibrated confidence that the prediction is right; it
defines no probability for the other classes. The metrics defined on such a pair are the top-label ones, computed
here with the same bins and estimators as their vector forms:

    accuracy = mean z_i;  ECE, MCE (equal-width bins, :func:`gence_jax.metrics.ece`);  adaptive ECE and RMSCE
    (equal-mass value-edge bins, :func:`gence_jax.metrics.adaptive_ece`);  L2 calibration error, plug-in and
    debiased (equal-width bins, :func:`gence_jax.metrics.l2_calibration_error`);  smooth ECE.

NLL, Brier, classwise ECE and SCE need the whole vector and are not defined on a pair (:data:`UNDEFINED`).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from gence_jax import checks
from gence_jax.metrics import _binned, _bootstrap, _estimators, _scalar

#: The metrics of a (confidence, correct) pair, in the order :func:`top_label_metrics` returns them.
TOP_LABEL_METRICS = ("accuracy", "ece", "mce", "adaptive_ece", "l2_ce", "l2_ce_debiased", "rmsce", "smooth_ece")
#: Metrics of the full probability vector, undefined for a top-label output.
UNDEFINED = ("nll", "brier", "classwise_ece", "sce")
#: The pair metrics with bootstrap intervals (:func:`bootstrap_top_label_intervals`).
TOP_LABEL_BOOTSTRAP = ("accuracy", "ece", "mce", "adaptive_ece")


def _check_pairs(fn, confidences, correct, where):
  conf, correct, where = checks.check_pairs(fn, confidences, correct, where)
  valid = _binned._valid(where, conf.shape[0])
  return jnp.where(valid, conf, 0), correct & valid, valid


def top_label_stats(
  confidences: jax.typing.ArrayLike,
  correct: jax.typing.ArrayLike,
  *,
  num_bins: int = 15,
  where: Optional[jax.typing.ArrayLike] = None,
) -> _binned.CalibrationStats:
  """Equal-width top-label :class:`CalibrationStats` of pairs (for ``ece_from_stats``, the reliability diagram)."""
  num_bins = checks.check_num_bins("top_label_stats", num_bins)
  conf, correct, valid = _check_pairs("top_label_stats", confidences, correct, where)
  return _width_jit(conf, correct, valid, num_bins)


_width_jit = jax.jit(_binned.top_label_width_stats, static_argnums=3)


@functools.partial(jax.jit, static_argnames=("num_bins",))
def _pair_core(conf, correct, valid, *, num_bins):
  dt = jnp.promote_types(conf.dtype, jnp.float32)
  width = _binned.top_label_width_stats(conf, correct, valid, num_bins)
  mass = _estimators._equal_mass_core(conf, correct, valid.astype(jnp.int32), num_bins=num_bins)
  smooth = _estimators._smooth_stats_core(conf, correct, valid, grid_size=2001)
  return {
    "accuracy": jnp.sum(correct).astype(dt) / jnp.sum(valid).astype(dt),
    "ece": _binned.ece_from_stats(width),
    "mce": _binned.mce_from_stats(width),
    "adaptive_ece": _binned.ece_from_stats(mass),
    "l2_ce": _estimators.l2_calibration_error_from_stats(width),
    "l2_ce_debiased": _estimators.l2_calibration_error_from_stats(width, debias=True),
    "rmsce": _estimators.l2_calibration_error_from_stats(mass),
  }, smooth


def top_label_metrics(
  confidences: jax.typing.ArrayLike,
  correct: jax.typing.ArrayLike,
  *,
  num_bins: int = 15,
  where: Optional[jax.typing.ArrayLike] = None,
) -> dict:
  """Every metric of :data:`TOP_LABEL_METRICS` of the pairs (``confidences`` [N] float, ``correct`` [N] bool).

  Each equals the metric of the same name computed on a probability vector whose top-class probability is the
  confidence and whose argmax is right exactly where ``correct`` is (tested), so a top-label calibrator and a full
  calibrator are scored by the same definitions. Returns ``{name: jnp scalar}`` (fractions).
  """
  fn = "top_label_metrics"
  num_bins = checks.check_num_bins(fn, num_bins)
  conf, correct, valid = _check_pairs(fn, confidences, correct, where)
  out, smooth = _pair_core(conf, correct, valid, num_bins=num_bins)
  out["smooth_ece"] = _estimators.smooth_ece_from_stats(smooth)
  return {name: out[name] for name in TOP_LABEL_METRICS}


@functools.partial(jax.jit, static_argnames=("num_bins",))
def _bootstrap_pair_core(conf, correct, weights, *, num_bins):
  def one(w):
    dt = jnp.promote_types(conf.dtype, jnp.float32)
    b = _binned.bin_index(conf, num_bins)
    seg = functools.partial(jax.ops.segment_sum, segment_ids=b, num_segments=num_bins)
    stats = _binned.CalibrationStats(count=seg(w), conf_sum=seg(w.astype(dt) * conf.astype(dt)),
                                     correct=seg(w * correct.astype(jnp.int32)))
    acc = jnp.sum(w * correct).astype(dt) / jnp.sum(w).astype(dt)
    return acc, _binned.ece_from_stats(stats), _binned.mce_from_stats(stats)

  acc, ece, mce = jax.vmap(one, in_axes=1)(weights)
  return {"accuracy": acc, "ece": ece, "mce": mce,
          "adaptive_ece": _bootstrap._bootstrap_adaptive_core(conf, correct, weights, num_bins=num_bins)}


def bootstrap_top_label_intervals(
  confidences: jax.typing.ArrayLike,
  correct: jax.typing.ArrayLike,
  *,
  num_bins: int = 15,
  num_resamples: int = 200,
  seed: int = 0,
  level: float = 0.95,
  where: Optional[jax.typing.ArrayLike] = None,
  indices: Optional[jax.typing.ArrayLike] = None,
  method: str = "percentile",
) -> dict:
  """Bootstrap intervals of :data:`TOP_LABEL_BOOTSTRAP` on pairs, with the resamples of
  :func:`gence_jax.metrics.bootstrap_intervals` (Poisson weights from ``seed`` and the global ``indices``), so a
  top-label calibrator and a full one scored with the same seed see the same resamples.
  Returns ``{metric: {"value", "low", "high", "std"}}``."""
  fn = "bootstrap_top_label_intervals"
  num_bins = checks.check_num_bins(fn, num_bins)
  num_resamples, seed = _bootstrap._check_resamples(fn, num_resamples, seed)
  level = _bootstrap._check_level_method(fn, level, method)
  conf, correct, valid = _check_pairs(fn, confidences, correct, where)
  n = conf.shape[0]
  weights = _bootstrap.bootstrap_weights(_bootstrap._indices(fn, indices, n), num_resamples=num_resamples, seed=seed)
  weights = jnp.where(valid[:, None], weights, 0)
  values = _bootstrap_pair_core(conf, correct, weights, num_bins=num_bins)
  point, _ = _pair_core(conf, correct, valid, num_bins=num_bins)
  return {m: _bootstrap._interval(values[m], point[m], level=level, method=method) for m in TOP_LABEL_BOOTSTRAP}
