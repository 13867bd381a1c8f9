"""Bootstrap confidence intervals within a test set, carried through the mergeable sufficient statistics.

Poisson bootstrap (Hanley & MacGibbon 2006; Chamandy et al. 2012, "Estimating Uncertainty for Massive Data
Streams"): instead of drawing N examples with replacement, resample r gives example i the integer weight

    w_ir ~ Poisson(1),  by inversion of  u_i = jax.random.uniform(jax.random.fold_in(jax.random.key(seed), i), (R,))

where i is the GLOBAL index of the example in the test set. The weights are a deterministic function of
(seed, i, R), independent of how the test set is split into batches, devices or hosts, so every resample's weighted
per-bin statistics (weighted counts and sums) add up exactly like the unweighted ones: statistics of shards merged
(or ``psum``-ed over ``axis_name``) equal the statistics of the concatenated test set. Two models scored on the same
test set with the same seed see the same resamples (a paired bootstrap: subtract their per-resample values).
Resample r is the multiset in which example i appears w_ir times; its size sum_i w_ir is itself random (mean N),
which is the Poisson bootstrap's approximation of the multinomial one (it matches it as N grows).

Metrics per resample: accuracy, NLL, Brier, ECE, MCE, classwise ECE, SCE (from the weighted :class:`EvalStats`,
mergeable), and adaptive ECE. Equal-mass bins are not a sufficient statistic of fixed bins: adaptive ECE is computed
per resample from the gathered [N] confidences and correctness (sorted once; the bins of each resample are those of
its multiset, see :func:`equal_mass_stats`), jit-able, not mergeable.

Intervals (:func:`resample_interval`): by default percentile intervals, ``low``/``high`` the (1 - level)/2 and
(1 + level)/2 quantiles of the R resampled values (linear interpolation between order statistics, NumPy's default
``method="linear"``); ``method="basic"`` reflects them around the point value. ``std`` is the standard deviation of
the resampled values (ddof = 1), ``value`` the metric of the test set itself (every weight 1). Resamples in which a
metric is undefined (total weight 0; MCE with every bin empty) are left out of its quantiles and std.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from gence_jax import checks
from gence_jax.metrics import _binned, _estimators, _scalar

#: The metrics :func:`bootstrap_intervals` reports.
BOOTSTRAP_METRICS = ("accuracy", "nll", "brier", "ece", "adaptive_ece", "classwise_ece", "sce", "mce")

_CALIBRATION_FIELDS = frozenset(f.name for f in dataclasses.fields(_binned.CalibrationStats))

# Elements (examples x classes x resamples) of the classwise scatter done at once; bounds its memory.
_CLASSWISE_CHUNK = 1 << 22


def _check_resamples(fn, num_resamples, seed):
  checks.check_hparam(fn, "num_resamples", num_resamples, low=2)
  if isinstance(num_resamples, bool) or int(num_resamples) != num_resamples:
    raise TypeError(f"{fn}: `num_resamples` must be an integer >= 2, got {num_resamples!r}.")
  if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
    raise TypeError(f"{fn}: `seed` must be an integer, got {seed!r}.")
  if not 0 <= seed < 2**31:
    raise ValueError(f"{fn}: `seed` must be in [0, 2**31), got {seed}.")
  return int(num_resamples), int(seed)


def _poisson1_thresholds() -> np.ndarray:
  """CDF of Poisson(1), F(k) = exp(-1) sum_{j <= k} 1/j!, for k = 0..15 (1 - F(15) < 1e-13), in float32."""
  pmf = np.exp(-1.0) / np.cumprod(np.r_[1.0, np.arange(1.0, 16.0)])
  return np.cumsum(pmf).astype(np.float32)


_POISSON1_CDF = _poisson1_thresholds()


@functools.partial(jax.jit, static_argnames=("num_resamples",))
def _weights_core(indices, seed, *, num_resamples):
  key = jax.random.key(seed)
  cdf = jnp.asarray(_POISSON1_CDF)
  u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), (num_resamples,), jnp.float32))(indices)
  return jnp.sum(u[..., None] >= cdf, axis=-1, dtype=jnp.int32)


def bootstrap_weights(indices: jax.typing.ArrayLike, *, num_resamples: int = 200, seed: int = 0) -> jax.Array:
  """Poisson(1) bootstrap weights [N, R] (int32) of the examples with global indices ``indices`` [N].

  Drawn by inversion of the Poisson(1) CDF F(k) = exp(-1) sum_{j <= k} 1/j! (tabulated in float32):

      u_i = jax.random.uniform(jax.random.fold_in(jax.random.key(seed), indices[i]), (R,), float32)
      w_ir = #{k >= 0 : F(k) <= u_ir}          (so P(w = k) = F(k) - F(k - 1))

  a deterministic function of (seed, global index, R) under JAX's default PRNG, so any split of the test set into
  batches, devices or hosts gives the same weights. (Inversion rather than ``jax.random.poisson``, whose rejection
  loop does not trace under ``shard_map``; uniforms have 2^-23 resolution, so weights above 10, probability 1e-8,
  are not drawn.) ``indices`` are integer ids in [0, 2^31); give each example of the test set its own.
  """
  num_resamples, seed = _check_resamples("bootstrap_weights", num_resamples, seed)
  indices = jnp.asarray(indices)
  if indices.ndim != 1 or not jnp.issubdtype(indices.dtype, jnp.integer):
    raise TypeError(f"bootstrap_weights: `indices` must be a 1-D integer array, got {indices.dtype}{indices.shape}.")
  return _weights_core(indices.astype(jnp.int32), jnp.asarray(seed, jnp.int32), num_resamples=num_resamples)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BootstrapStats:
  """Mergeable bootstrap statistics (a pytree: add with :func:`merge`, ``psum`` across devices).

  Attributes:
    point: :class:`EvalStats` of the examples themselves (every weight 1).
    resampled: :class:`EvalStats` whose every leaf has a leading axis of size R: the Poisson-weighted statistics of
      each resample (``num_examples``, counts and per-bin counts are sums of integer weights; sums are weighted).
  """

  point: _scalar.EvalStats
  resampled: _scalar.EvalStats

  @property
  def num_resamples(self) -> int:
    return self.resampled.num_examples.shape[0]


def _classwise_weighted(probs, labels, valid, weights, m):
  """[R, K, M] per-class bin statistics of every resample, a chunk of resamples at a time (bounded memory)."""
  n, k = probs.shape
  acc = jnp.promote_types(probs.dtype, jnp.float32)
  cb = _binned.bin_index(probs, m)
  ids = (jnp.arange(k, dtype=jnp.int32)[None, :] * m + cb).reshape(-1)
  hits = (labels[:, None] == jnp.arange(k)[None, :]) & valid[:, None]
  pk = jnp.where(valid[:, None], probs.astype(acc), 0)
  seg = functools.partial(jax.ops.segment_sum, segment_ids=ids, num_segments=k * m)

  def one(w):  # w: [N] int32 weights of one resample (0 on masked rows)
    wk = jnp.broadcast_to(w[:, None], (n, k))
    count = seg(wk.reshape(-1)).reshape(k, m)
    conf = seg((wk.astype(acc) * pk).reshape(-1)).reshape(k, m)
    hit = seg(jnp.where(hits, wk, 0).reshape(-1)).reshape(k, m)
    return count, conf, hit

  chunk = max(1, min(weights.shape[1], _CLASSWISE_CHUNK // max(n * k, 1)))
  return jax.lax.map(one, weights.T, batch_size=chunk)


@functools.partial(jax.jit, static_argnames=("num_bins", "eps"))
def _bootstrap_core(probs, labels, valid, weights, *, num_bins, eps):
  m = num_bins
  w = jnp.where(valid[:, None], weights, 0)  # [N, R]
  correct, nll_i, brier_i = _scalar._per_example(probs, labels, valid, eps)
  acc = nll_i.dtype
  wf = w.astype(acc)
  conf = jnp.where(valid, _binned.top_label(probs, labels, valid)[0], 0)
  b = _binned.bin_index(conf, m)  # binned in the probabilities' own dtype, as calibration_stats
  conf = conf.astype(acc)
  seg = functools.partial(jax.ops.segment_sum, segment_ids=b, num_segments=m)
  wc = jnp.where(correct[:, None], w, 0)
  hp = jax.lax.Precision.HIGHEST
  class_count, class_conf_sum, class_hits = _classwise_weighted(probs, labels, valid, w, m)
  extra = {}
  if "class_zero_count" in _CALIBRATION_FIELDS:  # weighted counts of exact zeros p_ik = 0 (for SCE without zeros)
    zero = (probs == 0) & valid[:, None]
    hit0 = zero & (labels[:, None] == jnp.arange(probs.shape[1])[None, :])
    extra = dict(
      class_zero_count=jnp.matmul(w.T, zero.astype(jnp.int32)),
      class_zero_hits=jnp.matmul(w.T, hit0.astype(jnp.int32)),
    )
  calib = _binned.CalibrationStats(
    count=seg(w).T,
    conf_sum=seg(wf * conf[:, None]).T,
    correct=seg(wc).T,
    class_count=class_count,
    class_conf_sum=class_conf_sum,
    class_hits=class_hits,
    **extra,
  )
  resampled = _scalar.EvalStats(
    num_examples=jnp.sum(w, axis=0),
    num_correct=jnp.sum(wc, axis=0),
    nll_sum=jnp.matmul(nll_i, wf, precision=hp),
    brier_sum=jnp.matmul(brier_i, wf, precision=hp),
    calibration=calib,
  )
  point = _scalar._eval_core(probs, labels, valid, num_bins=m, eps=eps)
  return BootstrapStats(point=point, resampled=resampled)


def _indices(fn, indices, n):
  if indices is None:
    return jnp.arange(n, dtype=jnp.int32)
  indices = jnp.asarray(indices)
  if indices.shape != (n,) or not jnp.issubdtype(indices.dtype, jnp.integer):
    raise ValueError(f"{fn}: `indices` must be integers of shape ({n},), got {indices.dtype}{indices.shape}.")
  return indices.astype(jnp.int32)


def bootstrap_stats(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_resamples: int = 200,
  seed: int = 0,
  num_bins: int = 15,
  indices: Optional[jax.typing.ArrayLike] = None,
  where: Optional[jax.typing.ArrayLike] = None,
  axis_name: str | None = None,
  nll_eps: Optional[float] = None,
) -> BootstrapStats:
  """:class:`BootstrapStats` of a batch: unweighted and Poisson-weighted :class:`EvalStats` (jit-able, mergeable).

  Args:
    probs, labels, where: as for :func:`eval_stats` (masked rows get weight 0 in every resample).
    num_resamples: R.
    seed: bootstrap seed (a Python int).
    num_bins: equal-width bins for the binned metrics.
    indices: [N] GLOBAL indices of these examples in the test set (default ``arange(N)``: the batch is the whole
      test set). In an evaluation loop pass ``offset + arange(batch)``; under ``shard_map``/``pmap`` the global
      index of each local row. The weights come from :func:`bootstrap_weights` of these indices.
    axis_name: if given, the statistics are ``psum``-ed over this named axis.
    nll_eps: see :func:`nll`.

  Cost: O(N R) for the top-label and scalar parts and O(N K R) for the classwise part (done a few resamples at a
  time); memory O(R K M) for the result.
  """
  num_resamples, seed = _check_resamples("bootstrap_stats", num_resamples, seed)
  num_bins = checks.check_num_bins("bootstrap_stats", num_bins)
  probs, labels, where = checks.check_probs("bootstrap_stats", probs, labels, where)
  n = probs.shape[0]
  weights = bootstrap_weights(_indices("bootstrap_stats", indices, n), num_resamples=num_resamples, seed=seed)
  stats = _bootstrap_core(probs, labels, _binned._valid(where, n), weights, num_bins=num_bins, eps=nll_eps)
  if axis_name is not None:
    stats = jax.lax.psum(stats, axis_name)
  return stats


@jax.jit
def bootstrap_metrics(stats: BootstrapStats) -> dict:
  """Per-resample metrics ``{name: [R] array}`` for accuracy, nll, brier, ece, mce, classwise_ece, sce."""
  values = jax.vmap(_scalar.compute_eval_stats)(stats.resampled)
  values.pop("num_examples")
  return values


@functools.partial(jax.jit, static_argnames=("num_bins",))
def _bootstrap_adaptive_core(conf, correct, weights, *, num_bins):
  order = jnp.argsort(conf)
  conf_s, corr_s, w_s = conf[order], correct[order], weights[order]
  per = jax.vmap(lambda w: _binned.equal_mass_stats_sorted(conf_s, corr_s, w, num_bins), in_axes=1)(w_s)
  dt = per.conf_sum.dtype
  return jnp.sum(jnp.abs(per.correct.astype(dt) - per.conf_sum), axis=-1) / jnp.sum(per.count, axis=-1).astype(dt)


def bootstrap_adaptive_ece(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_resamples: int = 200,
  seed: int = 0,
  num_bins: int = 15,
  indices: Optional[jax.typing.ArrayLike] = None,
  where: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  """Adaptive ECE of every resample, [R]: equal-mass bins of each resample's multiset (NOT mergeable).

  Needs the whole (gathered) test set. Resample r is the multiset in which example i appears w_ir times
  (:func:`bootstrap_weights`); its adaptive ECE is :func:`adaptive_ece` of that multiset (value edges at the
  confidences of ranks ceil(j n / M) - 1 of its n copies, ties in one bin), computed without materialising the
  copies (:func:`equal_mass_stats`). O(N log N + N R) time.
  """
  num_resamples, seed = _check_resamples("bootstrap_adaptive_ece", num_resamples, seed)
  conf, correct, valid, num_bins = _estimators._top_label_inputs("bootstrap_adaptive_ece", probs, labels, where, num_bins)
  n = conf.shape[0]
  weights = bootstrap_weights(_indices("bootstrap_adaptive_ece", indices, n), num_resamples=num_resamples, seed=seed)
  weights = jnp.where(valid[:, None], weights, 0)
  return _bootstrap_adaptive_core(conf, correct, weights, num_bins=num_bins)


INTERVAL_METHODS = ("percentile", "basic")


def _check_level_method(fn, level, method):
  checks.check_hparam(fn, "level", level, low=0, high=1, low_inclusive=False, high_inclusive=False)
  if method not in INTERVAL_METHODS:
    raise ValueError(f"{fn}: `method` must be one of {INTERVAL_METHODS}, got {method!r}.")
  return float(level)


@functools.partial(jax.jit, static_argnames=("level", "method"))
def _interval(values, point, *, level, method):
  q = jnp.asarray([(1 - level) / 2, (1 + level) / 2], values.dtype)
  q_lo, q_hi = jnp.nanquantile(values, q)
  point = jnp.asarray(point, values.dtype)
  low, high = (q_lo, q_hi) if method == "percentile" else (2 * point - q_hi, 2 * point - q_lo)
  return {"value": point, "low": low, "high": high, "std": jnp.nanstd(values, ddof=1)}


def resample_interval(
  values: jax.typing.ArrayLike, point: jax.typing.ArrayLike, *, level: float = 0.95, method: str = "percentile"
) -> dict:
  """``{"value": point, "low", "high", "std"}`` from the resampled values [R] of a statistic.

  With q_lo, q_hi the (1 - level)/2 and (1 + level)/2 quantiles of ``values`` (linear interpolation between order
  statistics; NaN resamples left out):

  * ``method="percentile"``: [q_lo, q_hi] (Efron's percentile interval);
  * ``method="basic"``: [2 v - q_hi, 2 v - q_lo] with v = ``point`` (the basic / reverse-percentile interval,
    Davison & Hinkley 1997, eq. 5.6), which moves the interval back by the bootstrap estimate of the bias.

  ``std`` is the standard deviation of the non-NaN values (ddof = 1), the bootstrap standard error.
  """
  level = _check_level_method("resample_interval", level, method)
  return _interval(jnp.asarray(values), point, level=level, method=method)


@functools.partial(jax.jit, static_argnames=("level", "method"))
def _intervals_from_stats(stats, *, level, method):
  point = _scalar.compute_eval_stats(stats.point)
  values = bootstrap_metrics(stats)
  return {name: _interval(values[name], point[name], level=level, method=method) for name in values}


def bootstrap_intervals_from_stats(stats: BootstrapStats, *, level: float = 0.95, method: str = "percentile") -> dict:
  """``{metric: {"value", "low", "high", "std"}}`` for the mergeable metrics (all of :data:`BOOTSTRAP_METRICS`
  except adaptive ECE) from (merged) :class:`BootstrapStats`; see :func:`resample_interval` for ``method``.
  jnp scalars; ``jax.tree.map(float, ...)`` to log them."""
  level = _check_level_method("bootstrap_intervals_from_stats", level, method)
  return _intervals_from_stats(stats, level=level, method=method)


def bootstrap_intervals(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_bins: int = 15,
  num_resamples: int = 200,
  seed: int = 0,
  level: float = 0.95,
  where: Optional[jax.typing.ArrayLike] = None,
  indices: Optional[jax.typing.ArrayLike] = None,
  method: str = "percentile",
  nll_eps: Optional[float] = None,
) -> dict:
  """Bootstrap intervals of every metric of :data:`BOOTSTRAP_METRICS` on one (gathered) test set.

  Returns ``{metric: {"value": v, "low": lo, "high": hi, "std": s}}`` (jnp scalars, fractions as the metrics):
  ``value`` is the metric of the test set, ``[low, high]`` the ``level`` interval (percentile by default, see
  :func:`resample_interval`) over ``num_resamples`` Poisson-bootstrap resamples with weights
  :func:`bootstrap_weights` (``seed``; ``indices`` default ``arange(N)``), ``std`` the bootstrap standard error.
  Same seed, same data -> same intervals. See the module docstring for the method; :func:`bootstrap_stats` is the
  mergeable lower-level form.

  Binned calibration errors are biased upwards in finite samples (noise in acc_b only adds to |acc_b - conf_b|), and
  a resample, which repeats examples, is biased further: the percentile interval of ECE-type metrics may then lie
  mostly above ``value``. It measures sampling variability, not that bias; ``method="basic"`` shifts it back by the
  bootstrap estimate of the bias, and :func:`l2_calibration_error` with ``debias=True`` estimates an error without it.
  """
  level = _check_level_method("bootstrap_intervals", level, method)
  stats = bootstrap_stats(
    probs, labels, num_resamples=num_resamples, seed=seed, num_bins=num_bins, indices=indices, where=where,
    nll_eps=nll_eps,
  )
  out = _intervals_from_stats(stats, level=level, method=method)
  ada = bootstrap_adaptive_ece(
    probs, labels, num_resamples=num_resamples, seed=seed, num_bins=num_bins, indices=indices, where=where
  )
  ada_point = _scalar.adaptive_ece(probs, labels, num_bins=num_bins, where=where)
  out["adaptive_ece"] = _interval(ada, ada_point, level=level, method=method)
  return {name: out[name] for name in BOOTSTRAP_METRICS}
