"""Binned calibration metrics built from mergeable sufficient statistics.

Bin convention (used by every binned metric, by the reliability diagram and by ATS pieces):
``num_bins = M`` equal-width bins with edges ``e_b = b / M`` (b = 0..M), computed in float64 and rounded once to the
dtype of the probabilities. Bins are half-open on the left, ``(e_b, e_{b+1}]``, except that a confidence of exactly 0
falls in the first bin and 1.0 falls in the last bin (there is no extra bin). In real arithmetic the bin of ``c`` is
``clip(ceil(c * M) - 1, 0, M - 1)``; in floating point we compare against the rounded edges, so a confidence equal to
an edge (as stored in the dtype) falls in the lower bin and the rule is exactly consistent with the edges. Values
outside [0, 1] (rounding) are clipped into the first/last bin.

Sufficient statistics (:class:`CalibrationStats`) are per-bin sums accumulated with ``jax.ops.segment_sum``; they
add: the statistics of several batches (or of several devices, via ``jax.lax.psum``) merged with :func:`merge`
give exactly (up to float summation order) the metric of the concatenated predictions. Counts are integers and
exact; float sums are accumulated in at least float32 (on GPU the scatter-add order, hence the last bits of the
float sums, may vary between runs).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gence_jax import checks


def bin_edges(num_bins: int, dtype: jax.typing.DTypeLike = jnp.float32) -> np.ndarray:
  """The ``num_bins + 1`` bin edges ``b / num_bins`` (computed in float64, rounded once to ``dtype``)."""
  num_bins = checks.check_num_bins("bin_edges", num_bins)
  return (np.arange(num_bins + 1, dtype=np.float64) / num_bins).astype(dtype)


def bin_index(values: jax.typing.ArrayLike, num_bins: int) -> jax.Array:
  """Bin of each value in [0, 1]: ``b`` such that ``e_b < v <= e_{b+1}`` (0 -> first bin, 1.0 -> last bin).

  Equals ``clip(ceil(v * num_bins) - 1, 0, num_bins - 1)`` in exact arithmetic; computed as the number of interior
  edges (rounded to the dtype of ``values``) strictly below ``v``, so it is consistent with :func:`bin_edges`.
  Returns int32 with the shape of ``values``.
  """
  values = jnp.asarray(values)
  if not jnp.issubdtype(values.dtype, jnp.floating):
    values = values.astype(jnp.float32)
  inner = jnp.asarray(bin_edges(num_bins, values.dtype)[1:-1])
  if inner.size == 0:
    return jnp.zeros(values.shape, jnp.int32)
  idx = jnp.searchsorted(inner, values.reshape(-1), side="left")
  return idx.astype(jnp.int32).reshape(values.shape)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CalibrationStats:
  """Per-bin sufficient statistics (a pytree; add two with :func:`merge`, ``psum`` across devices).

  Attributes:
    count: [M] int32, number of (unmasked) examples whose top-label confidence falls in bin b.
    conf_sum: [M] float, sum of top-label confidences in bin b.
    correct: [M] int32, number of those examples whose argmax prediction equals the label.
    class_count: [K, M] int32, number of examples whose p_k falls in bin b (None if not collected).
    class_conf_sum: [K, M] float, sum of p_k over those examples (None if not collected).
    class_hits: [K, M] int32, number of those examples with label k (None if not collected).
    class_zero_count: [K] int32, number of examples with p_k exactly 0 (all in bin 0; None if not collected).
    class_zero_hits: [K] int32, number of those examples with label k (None if not collected). These two let
      :func:`sce_from_stats` drop exact zeros (``skip_zeros=True``) without a second pass over the predictions.
  """

  count: jax.Array
  conf_sum: jax.Array
  correct: jax.Array
  class_count: Optional[jax.Array] = None
  class_conf_sum: Optional[jax.Array] = None
  class_hits: Optional[jax.Array] = None
  class_zero_count: Optional[jax.Array] = None
  class_zero_hits: Optional[jax.Array] = None

  @property
  def num_bins(self) -> int:
    return self.count.shape[-1]

  @property
  def num_examples(self) -> jax.Array:
    return jnp.sum(self.count)

  @classmethod
  def zeros(
    cls, num_classes: Optional[int], num_bins: int = 15, dtype: jax.typing.DTypeLike = jnp.float32
  ) -> "CalibrationStats":
    """Empty statistics (the identity of :func:`merge`); ``num_classes=None`` omits the classwise part."""
    m = checks.check_num_bins("CalibrationStats.zeros", num_bins)
    cls_part = {}
    if num_classes is not None:
      cls_part = dict(
        class_count=jnp.zeros((num_classes, m), jnp.int32),
        class_conf_sum=jnp.zeros((num_classes, m), dtype),
        class_hits=jnp.zeros((num_classes, m), jnp.int32),
        class_zero_count=jnp.zeros((num_classes,), jnp.int32),
        class_zero_hits=jnp.zeros((num_classes,), jnp.int32),
      )
    return cls(
      count=jnp.zeros((m,), jnp.int32), conf_sum=jnp.zeros((m,), dtype), correct=jnp.zeros((m,), jnp.int32), **cls_part
    )


def merge(a: Any, b: Any) -> Any:
  """Adds two statistics pytrees (:class:`CalibrationStats`, ``EvalStats``) leaf by leaf."""
  return jax.tree.map(jnp.add, a, b)


@jax.jit
def top_label(probs, labels, valid):
  """Top-label confidence max_k p_k, and 1[argmax_k p_k == y] (first maximum on ties), both [N]."""
  conf = jnp.max(probs, axis=-1)
  correct = (jnp.argmax(probs, axis=-1) == labels) & valid
  return conf, correct


def top_label_width_stats(conf, correct, valid, num_bins: int) -> CalibrationStats:
  """Equal-width top-label :class:`CalibrationStats` (no classwise part) of confidences ``conf`` [N] and
  correctness ``correct`` [N] (bool), ``valid`` [N] bool; binned in the confidences' own dtype."""
  acc = jnp.promote_types(conf.dtype, jnp.float32)
  b = bin_index(conf, num_bins)
  seg = functools.partial(jax.ops.segment_sum, segment_ids=b, num_segments=num_bins)
  return CalibrationStats(
    count=seg(valid.astype(jnp.int32)),
    conf_sum=seg(jnp.where(valid, conf.astype(acc), 0)),
    correct=seg((correct & valid).astype(jnp.int32)),
  )


@functools.partial(jax.jit, static_argnames=("num_bins", "classwise"))
def _stats_core(probs, labels, valid, *, num_bins: int, classwise: bool) -> CalibrationStats:
  n, k = probs.shape
  m = num_bins
  acc = jnp.promote_types(probs.dtype, jnp.float32)  # sums in >= float32 even for bfloat16 probabilities
  conf, correct = top_label(probs, labels, valid)
  top = top_label_width_stats(conf, correct, valid, m)
  if not classwise:
    return top
  count, conf_sum, n_correct = top.count, top.conf_sum, top.correct
  # Classwise part, vectorised over classes: segment id k * M + bin(p_ik).
  cb = bin_index(probs, m)  # [N, K]
  ids = (jnp.arange(k, dtype=jnp.int32)[None, :] * m + cb).reshape(-1)
  v2 = jnp.broadcast_to(valid[:, None], (n, k))
  hits = (labels[:, None] == jnp.arange(k)[None, :]) & v2
  cseg = functools.partial(jax.ops.segment_sum, segment_ids=ids, num_segments=k * m)
  class_count = cseg(v2.astype(jnp.int32).reshape(-1)).reshape(k, m)
  class_conf_sum = cseg(jnp.where(v2, probs.astype(acc), 0).reshape(-1)).reshape(k, m)
  class_hits = cseg(hits.astype(jnp.int32).reshape(-1)).reshape(k, m)
  zero = (probs == 0) & v2
  class_zero_count = jnp.sum(zero, axis=0, dtype=jnp.int32)
  class_zero_hits = jnp.sum(zero & hits, axis=0, dtype=jnp.int32)
  return CalibrationStats(
    count, conf_sum, n_correct, class_count, class_conf_sum, class_hits, class_zero_count, class_zero_hits
  )


def _valid(where, n):
  return jnp.ones((n,), jnp.bool_) if where is None else where


def calibration_stats(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_bins: int = 15,
  where: jax.typing.ArrayLike | None = None,
  classwise: bool = True,
  axis_name: str | None = None,
) -> CalibrationStats:
  """Per-bin sufficient statistics of a batch of predictions.

  Args:
    probs: [N, K] class probabilities (rows sum to 1; checked when concrete).
    labels: [N] integer labels.
    num_bins: number of equal-width bins M (see the module docstring for the bin convention).
    where: optional [N] bool mask; masked rows count nowhere (their values, even NaN, are ignored).
    classwise: also collect the [K, M] per-class statistics needed by :func:`classwise_ece` / :func:`sce`.
    axis_name: if given, the statistics are ``psum``-ed over this named axis (pmap/shard_map/named vmap), giving
      the statistics of the global batch.

  Returns:
    :class:`CalibrationStats`; combine batches with :func:`merge`.
  """
  num_bins = checks.check_num_bins("calibration_stats", num_bins)
  probs, labels, where = checks.check_probs("calibration_stats", probs, labels, where)
  stats = _stats_core(probs, labels, _valid(where, probs.shape[0]), num_bins=num_bins, classwise=classwise)
  if axis_name is not None:
    stats = jax.lax.psum(stats, axis_name)
  return stats


# ----------------------------------------------------------------------------------------------- equal-mass bins


def equal_mass_edges(sorted_values: jax.Array, weights: jax.Array, num_bins: int) -> jax.Array:
  """Interior edges [M - 1] of M equal-mass bins; the edges are values of the data, so ties never straddle an edge.

  ``sorted_values`` [N] ascending, ``weights`` [N] integer multiplicities (1 per example, 0 for masked rows, or
  bootstrap counts): the multiset holds n = sum_i w_i copies with ranks 0..n-1 in sorted order. With the rank
  boundaries s_j = ceil(j n / M) (bin j would hold ranks s_j .. s_{j+1} - 1 if ranks decided), edge j (j = 1..M-1)
  is the value of the copy of rank s_j - 1, the largest value the rank rule puts in bin j - 1. A value v falls in
  bin searchsorted(edges, v, side="left"): bins are (e_{j-1}, e_j], a value equal to an edge is in the lower bin.

  On distinct values this is exactly the rank rule (bin j holds ranks s_j .. s_{j+1} - 1: floor(n/M) or ceil(n/M)
  examples each). On tied values a group of equal confidences stays in one bin (the lower one, as Kumar et al.'s
  ``get_equal_bins`` in verified_calibration, whose edges are midpoints between the sorted values at the split and
  whose bins are (e_{j-1}, e_j]); the bins then hold unequal counts and some may be empty. The calibrators' pieces
  and equal-mass bins and every equal-mass metric use this one rule.
  """
  m = num_bins
  if m == 1:
    return jnp.zeros((0,), sorted_values.dtype)
  cum = jnp.cumsum(weights.astype(jnp.int32))
  n = cum[-1] if cum.shape[0] else jnp.zeros((), jnp.int32)
  j = jnp.arange(1, m, dtype=jnp.int32)
  s = (j * n + m - 1) // m
  idx = jnp.searchsorted(cum, s - 1, side="right")  # the example holding the copy of rank s_j - 1
  return sorted_values[jnp.clip(idx, 0, max(sorted_values.shape[0] - 1, 0))]


def equal_mass_stats_sorted(conf_s, correct_s, w_s, num_bins: int) -> CalibrationStats:
  """Top-label :class:`CalibrationStats` over the equal-mass bins of :func:`equal_mass_edges`, from confidences
  sorted ascending ``conf_s`` [N] (finite), correctness ``correct_s`` [N] and integer weights ``w_s`` [N]."""
  acc = jnp.promote_types(conf_s.dtype, jnp.float32)
  w = w_s.astype(jnp.int32)
  edges = equal_mass_edges(conf_s, w, num_bins)
  b = jnp.searchsorted(edges, conf_s, side="left")
  seg = functools.partial(jax.ops.segment_sum, segment_ids=b, num_segments=num_bins)
  return CalibrationStats(
    count=seg(w),
    conf_sum=seg(w.astype(acc) * conf_s.astype(acc)),
    correct=seg(w * correct_s.astype(jnp.int32)),
  )


def distinct_value_stats(conf, correct, valid) -> CalibrationStats:
  """Top-label :class:`CalibrationStats` with one bin per distinct confidence value, in ascending order (N bins,
  the unused ones empty): Kumar et al.'s ``get_discrete_bins`` (verified_calibration), the bins of a model whose
  outputs take finitely many values (histogram binning, isotonic, scaling-binning)."""
  acc = jnp.promote_types(conf.dtype, jnp.float32)
  key = jnp.where(valid, conf, jnp.inf)
  order = jnp.argsort(key)
  ks = key[order]
  new = jnp.concatenate([jnp.ones((1,), bool), ks[1:] != ks[:-1]]) if ks.shape[0] else jnp.zeros((0,), bool)
  gid = jnp.cumsum(new) - 1
  v = valid[order]
  seg = functools.partial(jax.ops.segment_sum, segment_ids=gid, num_segments=max(conf.shape[0], 1))
  return CalibrationStats(
    count=seg(v.astype(jnp.int32)),
    conf_sum=seg(jnp.where(v, conf[order].astype(acc), 0)),
    correct=seg((correct[order] & v).astype(jnp.int32)),
  )


# ----------------------------------------------------------------------------------------------- from statistics


def _float_dtype(stats):
  return stats.conf_sum.dtype


def ece_from_stats(stats: CalibrationStats) -> jax.Array:
  """ECE = sum_b (n_b / N) |acc_b - conf_b| = (1/N) sum_b |correct_b - conf_sum_b| (NaN when N = 0)."""
  dt = _float_dtype(stats)
  n = jnp.sum(stats.count).astype(dt)
  return jnp.sum(jnp.abs(stats.correct.astype(dt) - stats.conf_sum)) / n


def mce_from_stats(stats: CalibrationStats) -> jax.Array:
  """MCE = max over non-empty bins b of |acc_b - conf_b| (NaN when every bin is empty)."""
  dt = _float_dtype(stats)
  nonempty = stats.count > 0
  cnt = jnp.maximum(stats.count, 1).astype(dt)
  gap = jnp.abs(stats.correct.astype(dt) / cnt - stats.conf_sum / cnt)
  gap = jnp.where(nonempty, gap, -jnp.inf)
  return jnp.where(jnp.any(nonempty), jnp.max(gap), jnp.nan).astype(dt)


def classwise_ece_from_stats(stats: CalibrationStats) -> jax.Array:
  """Classwise ECE = (1/K) sum_k sum_b (n_bk / N) |acc_bk - conf_bk| = (1/(K N)) sum_{k,b} |hits_kb - conf_sum_kb|."""
  if stats.class_count is None:
    raise ValueError("stats has no classwise part: compute it with calibration_stats(..., classwise=True)")
  dt = _float_dtype(stats)
  k = stats.class_count.shape[0]
  n = jnp.sum(stats.count).astype(dt)
  per_class = jnp.sum(jnp.abs(stats.class_hits.astype(dt) - stats.class_conf_sum), axis=-1) / n
  return jnp.sum(per_class) / k


def sce_from_stats(stats: CalibrationStats, *, skip_zeros: bool = False) -> jax.Array:
  """SCE (Nixon et al. 2019) from statistics; see :func:`sce` for both conventions.

  ``skip_zeros=False``: (1/K) sum_k sum_b (n_bk / N) |acc_bk - conf_bk|, the same number as classwise ECE.
  ``skip_zeros=True``: exact zeros removed from bin 0 and class k normalised by N_k = #{i : p_ik > 0}.
  """
  if not isinstance(skip_zeros, bool):
    raise TypeError(f"sce_from_stats: `skip_zeros` must be a bool, got {skip_zeros!r}.")
  if not skip_zeros:
    return classwise_ece_from_stats(stats)
  if stats.class_count is None or stats.class_zero_count is None:
    raise ValueError(
      "sce_from_stats: `stats` has no classwise part (with zero counts): compute it with "
      "calibration_stats(..., classwise=True)."
    )
  dt = _float_dtype(stats)
  k = stats.class_count.shape[0]
  n = jnp.sum(stats.count)
  # Exact zeros all sit in bin 0 and add nothing to conf_sum: take their count and hits out of bin 0.
  hits = stats.class_hits.at[:, 0].add(-stats.class_zero_hits).astype(dt)
  n_k = (n - stats.class_zero_count).astype(dt)
  gap = jnp.sum(jnp.abs(hits - stats.class_conf_sum), axis=-1)
  per_class = jnp.where(n_k > 0, gap / jnp.maximum(n_k, 1), 0.0)  # a class with no nonzero probability adds 0
  return jnp.sum(per_class) / k


# ----------------------------------------------------------------------------------------------- metric wrappers


def ece(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_bins: int = 15,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """Expected calibration error with equal-width bins on the top-label confidence (Guo et al. 2017; Naeini et al. 2015).

      ECE = sum_{b=1}^{M} (n_b / N) |acc_b - conf_b|

  where c_i = max_k p_ik, yhat_i = argmax_k p_ik (first maximum on ties), bin B_b = {i : c_i in (e_{b-1}, e_b]}
  with e_b = b / M (c = 0 in the first bin, c = 1.0 in the last), n_b = |B_b|, acc_b = mean_{B_b} 1[yhat_i = y_i],
  conf_b = mean_{B_b} c_i, N = number of unmasked examples. Empty bins contribute 0. A fraction in [0, 1] (not %).
  """
  return ece_from_stats(calibration_stats(probs, labels, num_bins=num_bins, where=where, classwise=False))


def mce(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_bins: int = 15,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """Maximum calibration error (Naeini et al. 2015; Guo et al. 2017): max over NON-EMPTY bins of |acc_b - conf_b|.

  Same top-label equal-width bins as :func:`ece` (edges b / M, bins (lo, hi], 0 -> first bin, 1.0 -> last bin).
  """
  return mce_from_stats(calibration_stats(probs, labels, num_bins=num_bins, where=where, classwise=False))


def classwise_ece(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_bins: int = 15,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """Classwise ECE (Kull et al. 2019), the MEAN over classes (not the sum) of per-class equal-width-bin ECE.

      cwECE = (1/K) sum_{k=1}^{K} sum_{b=1}^{M} (n_bk / N) |acc_bk - conf_bk|

  with B_bk = {i : p_ik in (e_{b-1}, e_b]} (p_ik = 0 in the first bin, 1.0 in the last), n_bk = |B_bk|,
  acc_bk = mean_{B_bk} 1[y_i = k], conf_bk = mean_{B_bk} p_ik, N = number of unmasked examples. Every example is
  binned once for every class, including probabilities near 0. Identical, by definition, to :func:`sce`.
  """
  return classwise_ece_from_stats(calibration_stats(probs, labels, num_bins=num_bins, where=where))


def sce(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_bins: int = 15,
  where: jax.typing.ArrayLike | None = None,
  skip_zeros: bool = False,
) -> jax.Array:
  """Static calibration error (Nixon et al. 2019, "Measuring Calibration in Deep Learning").

      SCE = (1/K) sum_{k=1}^{K} sum_{b=1}^{M} (n_bk / N) |acc_bk - conf_bk|

  with the same per-class equal-width bins as :func:`classwise_ece`. By default (``skip_zeros=False``) SCE and
  classwise ECE are the SAME number (same bins, same weights n_bk / N, mean over classes, every (example, class)
  pair counted, including probabilities that are exactly 0); both names are provided because both appear in the
  literature.

  ``skip_zeros=True`` follows Nixon et al.'s implementation (``robustness_metrics``' ``sce``, ``threshold=0``): a
  probability exactly 0 is dropped, and class k is normalised by the number of its remaining entries,

      SCE_skip = (1/K) sum_k [N_k > 0] sum_b (n'_bk / N_k) |acc'_bk - conf'_bk|,   N_k = #{i : p_ik > 0}

  (primes: bin statistics without the zeros). On softmax outputs (no exact zeros) the two agree; on sparse outputs
  (MGCE with beta = 1, entmax-type links) they can differ several-fold. Other differences from that implementation
  that this option does NOT reproduce: its bins are [lo, hi) with a probability of exactly 1.0 in a bin of its
  own (ours (lo, hi], 1.0 in the last bin), and its default is 30 bins (ours 15).
  """
  if not isinstance(skip_zeros, bool):
    raise TypeError(f"sce: `skip_zeros` must be a bool, got {skip_zeros!r}.")
  return sce_from_stats(calibration_stats(probs, labels, num_bins=num_bins, where=where), skip_zeros=skip_zeros)
