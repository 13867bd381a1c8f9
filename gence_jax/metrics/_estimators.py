"""Calibration-error estimators next to the binned ECE: L2 calibration error (plug-in and debiased), RMSCE, smooth ECE.

Every estimator here works on the top-label pair (c_i, z_i) with c_i = max_k p_ik and z_i = 1[argmax_k p_ik = y_i]
(first maximum on ties), as the binned ECE does.

* :func:`l2_calibration_error`: the binned L2 calibration error and the debiased estimator of its square
  (Kumar, Liang & Ma 2019, "Verified Uncertainty Calibration", NeurIPS). With equal-width bins it is computed from
  :class:`~gence_jax.metrics.CalibrationStats`, so it merges across batches and devices like the ECE.
* :func:`rmsce`: root-mean-square calibration error with equal-mass bins (Hendrycks, Mazeika & Dietterich 2019,
  "Deep Anomaly Detection with Outlier Exposure", ICLR; Nixon et al. 2019 for equal-mass bins).
* :func:`smooth_ece`: smooth ECE with a reflected Gaussian kernel and the fixed-point bandwidth (Blasiok & Nakkiran
  2023, "Smooth ECE: Principled Reliability Diagrams via Kernel Smoothing"), from mergeable grid statistics
  (:class:`SmoothECEStats`).

Equal-mass bins have edges that are quantiles of the data (confidence values, so tied confidences share a bin:
:func:`gence_jax.metrics.equal_mass_edges`), so they are not a sufficient statistic of fixed bins:
:func:`equal_mass_stats` needs every confidence (it sorts them; it is jit-able) and also accepts integer
multiplicities per example, which is how the bootstrap uses it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp

from gence_jax import checks
from gence_jax.metrics import _binned

# ----------------------------------------------------------------------------------------------- equal-mass bins


@functools.partial(jax.jit, static_argnames=("num_bins",))
def _equal_mass_core(conf, correct, weights, *, num_bins):
  order = jnp.argsort(conf)
  return _binned.equal_mass_stats_sorted(conf[order], correct[order], weights[order], num_bins)


def _top_label_inputs(fn, probs, labels, where, num_bins):
  num_bins = checks.check_num_bins(fn, num_bins)
  probs, labels, where = checks.check_probs(fn, probs, labels, where)
  valid = _binned._valid(where, probs.shape[0])
  conf, correct = _binned.top_label(probs, labels, valid)
  conf = jnp.where(valid, conf, 0)  # masked rows (possibly NaN) get weight 0 and a finite value
  return conf, correct, valid, num_bins


def equal_mass_stats(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_bins: int = 15,
  where: jax.typing.ArrayLike | None = None,
  weights: jax.typing.ArrayLike | None = None,
) -> _binned.CalibrationStats:
  """Top-label statistics over equal-mass (adaptive) bins; NOT mergeable (the bins depend on every confidence).

  Bins by value with equal-mass edges (:func:`gence_jax.metrics.equal_mass_edges`, the rule of
  :func:`adaptive_ece`): sort the n unmasked confidences c_i = max_k p_ik; edge j is the confidence of rank
  ceil(j n / M) - 1, and bin j is (e_{j-1}, e_j]. On distinct confidences the example of rank r is in bin
  floor(r M / n); equal confidences always share a bin. With integer ``weights`` w_i >= 0 (e.g. bootstrap
  multiplicities) the bins are those of the multiset in which example i appears w_i times (all copies of an example
  in one bin).

  Returns:
    :class:`CalibrationStats` with ``count`` [M] int32, ``conf_sum`` [M] float and ``correct`` [M] int32 (no
    classwise part), so ``ece_from_stats`` of it is the adaptive ECE and :func:`l2_calibration_error_from_stats`
    of it is the equal-mass L2 calibration error.
  """
  conf, correct, valid, num_bins = _top_label_inputs("equal_mass_stats", probs, labels, where, num_bins)
  if weights is None:
    w = valid.astype(jnp.int32)
  else:
    w = jnp.asarray(weights)
    if w.shape != conf.shape or not jnp.issubdtype(w.dtype, jnp.integer):
      raise ValueError(f"equal_mass_stats: `weights` must be integers of shape {conf.shape}, got {w.dtype}{w.shape}.")
    w = jnp.where(valid, w, 0)
  return _equal_mass_core(conf, correct, w, num_bins=num_bins)


# ----------------------------------------------------------------------------------------------- L2 / RMSCE


@functools.partial(jax.jit, static_argnames=("debias", "squared"))
def l2_calibration_error_from_stats(
  stats: _binned.CalibrationStats, *, debias: bool = False, squared: bool = False
) -> jax.Array:
  """Binned L2 calibration error from top-label bin statistics (Kumar, Liang & Ma 2019, Section 5).

  Plug-in estimator of the squared error, over the bins b with n_b examples, acc_b and conf_b as in the ECE:

      E2_plugin = sum_b (n_b / N) (conf_b - acc_b)^2

  Debiased estimator (Kumar et al.'s estimator, from the meteorological literature: Broecker 2012, Ferro &
  Fricker 2012): each bin's squared gap is corrected by the variance of its accuracy estimate,

      E2_debiased = sum_{b : n_b >= 2} (n_b / N) [ (conf_b - acc_b)^2 - acc_b (1 - acc_b) / (n_b - 1) ]

  (bins with fewer than 2 examples contribute 0: the variance term is undefined there). For a perfectly calibrated
  model E[(conf_b - acc_b)^2] = Var(acc_b) > 0, which biases the plug-in upwards by about sum_b conf_b(1 - conf_b)/N;
  the correction removes that term (the debiased square can be negative).

  Args:
    stats: top-label :class:`CalibrationStats` (equal-width from :func:`calibration_stats`, or equal-mass from
      :func:`equal_mass_stats`); leading batch axes are allowed (sums run over the last axis).
    debias: use the debiased estimator.
    squared: return the estimate of the SQUARED error (unclipped; may be < 0 when debiased). Otherwise return
      sqrt(max(E2, 0)), the L2 calibration error on the probability scale.
  """
  dt = stats.conf_sum.dtype
  cnt = stats.count.astype(dt)
  n = jnp.sum(cnt, axis=-1)
  safe = jnp.maximum(cnt, 1)
  conf_b = stats.conf_sum / safe
  acc_b = stats.correct.astype(dt) / safe
  term = jnp.square(conf_b - acc_b)
  if debias:
    term = jnp.where(cnt >= 2, term - acc_b * (1 - acc_b) / jnp.maximum(cnt - 1, 1), 0)
  e2 = jnp.sum(cnt * term, axis=-1) / n
  return e2 if squared else jnp.sqrt(jnp.maximum(e2, 0))


def l2_calibration_error(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_bins: int = 15,
  debias: bool = False,
  squared: bool = False,
  binning: str = "width",
  where: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  """Top-label binned L2 calibration error, plug-in or debiased (Kumar, Liang & Ma 2019).

      E2_plugin   = sum_b (n_b / N) (conf_b - acc_b)^2
      E2_debiased = sum_{b : n_b >= 2} (n_b / N) [ (conf_b - acc_b)^2 - acc_b (1 - acc_b) / (n_b - 1) ]

  See :func:`l2_calibration_error_from_stats`. Bins:

  * ``binning="width"``: the equal-width bins of :func:`ece` (mergeable: :func:`calibration_stats`);
  * ``binning="mass"``: the equal-mass bins of :func:`adaptive_ece` (value edges, ties never split; Kumar et al.'s
    ``lower_bound_scaling_ce`` with ``get_equal_bins``, their choice for models with continuous outputs; not
    mergeable);
  * ``binning="values"``: one bin per distinct confidence (Kumar et al.'s ``get_binning_ce`` with
    ``get_discrete_bins``, their estimator for binned models: histogram binning, isotonic, scaling-binning, whose
    outputs take few values; ``num_bins`` is then unused).

  Returns sqrt(max(E2, 0)), or E2 itself with ``squared=True``.
  """
  if binning == "width":
    stats = _binned.calibration_stats(probs, labels, num_bins=num_bins, where=where, classwise=False)
  elif binning == "mass":
    stats = equal_mass_stats(probs, labels, num_bins=num_bins, where=where)
  elif binning == "values":
    conf, correct, valid, _ = _top_label_inputs("l2_calibration_error", probs, labels, where, num_bins)
    stats = _distinct_core(conf, correct, valid)
  else:
    raise ValueError(f"l2_calibration_error: `binning` must be 'width', 'mass' or 'values', got {binning!r}.")
  return l2_calibration_error_from_stats(stats, debias=debias, squared=squared)


_distinct_core = jax.jit(_binned.distinct_value_stats)


def rmsce(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_bins: int = 15,
  bin_size: Optional[int] = None,
  where: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  """Root-mean-square calibration error (Hendrycks, Mazeika & Dietterich 2019, "Deep Anomaly Detection with Outlier
  Exposure", ICLR), in one of two conventions:

      RMSCE = sqrt( sum_b (n_b / N) (acc_b - conf_b)^2 )

  * ``bin_size=None`` (default): ``num_bins`` equal-mass top-label bins with value edges, the bins of
    :func:`adaptive_ece` (ties never split); it equals ``l2_calibration_error(..., binning="mass")``.
  * ``bin_size=B``: Hendrycks et al.'s ``calib_err`` (outlier-exposure code, ``utils/calibration_tools.py``, their
    default B = 100): the confidences sorted ascending and cut by RANK into floor(N / B) bins of B examples, the
    remainder appended to the last bin, and that last bin then left out of the sum while N still counts every
    example. Ties are cut by rank as in their code (here in input order: a stable sort). Needs N >= B.
    ``num_bins`` is unused.

  The plug-in (not debiased) estimator. jit-able.
  """
  if bin_size is None:
    return l2_calibration_error_from_stats(equal_mass_stats(probs, labels, num_bins=num_bins, where=where))
  bin_size = checks.check_num_bins("rmsce", bin_size, "bin_size")
  conf, correct, valid, _ = _top_label_inputs("rmsce", probs, labels, where, num_bins)
  if checks.is_concrete(valid):
    n = int(jnp.sum(valid))
    if n < bin_size:
      raise ValueError(f"rmsce: `bin_size`={bin_size} needs at least that many unmasked examples, got {n}.")
  return _hendrycks_core(conf, correct, valid, bin_size=bin_size)


@functools.partial(jax.jit, static_argnames=("bin_size",))
def _hendrycks_core(conf, correct, valid, *, bin_size):
  acc = jnp.promote_types(conf.dtype, jnp.float32)
  order = jnp.argsort(jnp.where(valid, conf, jnp.inf), stable=True)  # masked rows last
  n = jnp.sum(valid, dtype=jnp.int32)
  num = jnp.maximum(n // bin_size, 1)
  rank = jnp.arange(conf.shape[0], dtype=jnp.int32)
  b = jnp.minimum(rank // bin_size, num - 1)
  kept = (rank < n) & (b < num - 1)  # the last bin (with the remainder) is left out, as calib_err's loop does
  segs = conf.shape[0] // bin_size + 1
  seg = functools.partial(jax.ops.segment_sum, segment_ids=jnp.where(kept, b, segs - 1), num_segments=segs)
  w = kept.astype(acc)
  cnt = seg(w)
  gap = (seg(w * conf[order].astype(acc)) - seg(w * correct[order].astype(acc))) / jnp.maximum(cnt, 1)
  return jnp.sqrt(jnp.sum(cnt * gap * gap) / n.astype(acc))


# ----------------------------------------------------------------------------------------------- smooth ECE

#: Reflections of the Gaussian kept in the kernel sum (|k| <= this); exact to float precision for sigma <= 1.
_REFLECTIONS = 4
_BISECTION_STEPS = 32


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SmoothECEStats:
  """Mergeable grid statistics for :func:`smooth_ece` (a pytree: add with :func:`merge`, ``psum`` across devices).

  Grid nodes x_j = j / (G - 1), j = 0..G-1. Each unmasked example's top-label confidence c_i is split between its two
  neighbouring nodes by linear interpolation (weights 1 - theta and theta, c_i = x_j + theta / (G - 1)).

  Attributes:
    residual: [G] float, sum over examples of the interpolation weight times the residual z_i - c_i.
    mass: [G] float, sum of the interpolation weights (the discretised distribution of the confidences).
    count: int32 scalar, number of unmasked examples.
  """

  residual: jax.Array
  mass: jax.Array
  count: jax.Array

  @property
  def grid_size(self) -> int:
    return self.residual.shape[-1]


@functools.partial(jax.jit, static_argnames=("grid_size",))
def _smooth_stats_core(conf, correct, valid, *, grid_size):
  g = grid_size
  acc = jnp.promote_types(conf.dtype, jnp.float32)
  c = jnp.clip(conf.astype(acc), 0, 1)
  pos = c * (g - 1)
  j = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, g - 2)
  theta = pos - j.astype(acc)
  r = jnp.where(valid, correct.astype(acc) - c, 0)
  one = valid.astype(acc)
  ids = jnp.concatenate([j, j + 1])
  seg = functools.partial(jax.ops.segment_sum, segment_ids=ids, num_segments=g)
  residual = seg(jnp.concatenate([(1 - theta) * r, theta * r]))
  mass = seg(jnp.concatenate([(1 - theta) * one, theta * one]))
  return SmoothECEStats(residual=residual, mass=mass, count=jnp.sum(valid, dtype=jnp.int32))


def smooth_ece_stats(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  grid_size: int = 2001,
  where: Optional[jax.typing.ArrayLike] = None,
  axis_name: str | None = None,
) -> SmoothECEStats:
  """:class:`SmoothECEStats` of a batch (``psum``-ed over ``axis_name`` if given); see :func:`smooth_ece`."""
  grid_size = checks.check_num_bins("smooth_ece_stats", grid_size, "grid_size")
  if grid_size < 3:
    raise ValueError(f"smooth_ece_stats: `grid_size` must be >= 3, got {grid_size}.")
  probs, labels, where = checks.check_probs("smooth_ece_stats", probs, labels, where)
  valid = _binned._valid(where, probs.shape[0])
  conf, correct = _binned.top_label(probs, labels, valid)
  stats = _smooth_stats_core(jnp.where(valid, conf, 0), correct, valid, grid_size=grid_size)
  if axis_name is not None:
    stats = jax.lax.psum(stats, axis_name)
  return stats


def _wrapped_gaussian(u, sigma):
  """A(u) = sum_{|k| <= 4} phi_sigma(u - 2k): the Gaussian wrapped with period 2."""
  k = 2.0 * jnp.arange(-_REFLECTIONS, _REFLECTIONS + 1, dtype=u.dtype)
  d = (u[..., None] - k) / sigma
  return jnp.sum(jnp.exp(-0.5 * d * d), axis=-1) / (sigma * jnp.sqrt(2 * jnp.pi).astype(u.dtype))


def _smooth_ece_at(residual, n, sigma):
  """smECE_sigma on the grid: trapezoid rule over the nodes of |(1/n) sum_j K_sigma(x_a, x_j) residual_j|."""
  g = residual.shape[-1]
  dt = residual.dtype
  h = 1.0 / (g - 1)
  offsets = jnp.arange(-(g - 1), 2 * (g - 1) + 1, dtype=dt) * h  # u = (a - j) h and (a + j) h, from -1 to 2
  a = _wrapped_gaussian(offsets, sigma.astype(dt))
  hp = jax.lax.Precision.HIGHEST
  # K(x_a, x_j) = A((a - j) h) + A((a + j) h): a convolution and a correlation with the residual grid.
  direct = jnp.convolve(a[: 2 * g - 1], residual, mode="valid", precision=hp)
  mirror = jnp.convolve(a[g - 1 :], residual[::-1], mode="valid", precision=hp)
  smoothed = jnp.abs(direct + mirror) / n
  trap = jnp.full((g,), h, dt).at[0].set(h / 2).at[-1].set(h / 2)
  return jnp.sum(trap * smoothed)


@jax.jit
def _smooth_ece_fixed_point(stats: SmoothECEStats):
  dt = stats.residual.dtype
  n = stats.count.astype(dt)
  lo = jnp.asarray(4.0 / (stats.grid_size - 1), dt)

  def step(_, bounds):
    low, high = bounds
    mid = 0.5 * (low + high)
    above = _smooth_ece_at(stats.residual, n, mid) > mid
    return jnp.where(above, mid, low), jnp.where(above, high, mid)

  _, sigma = jax.lax.fori_loop(0, _BISECTION_STEPS, step, (lo, jnp.asarray(1.0, dt)))
  return _smooth_ece_at(stats.residual, n, sigma), sigma


@jax.jit
def _smooth_ece_fixed_sigma(stats: SmoothECEStats, sigma):
  dt = stats.residual.dtype
  return _smooth_ece_at(stats.residual, stats.count.astype(dt), jnp.asarray(sigma, dt))


def smooth_ece_from_stats(
  stats: SmoothECEStats, *, sigma: float | None = None, return_sigma: bool = False
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Smooth ECE from :class:`SmoothECEStats`; see :func:`smooth_ece` for the definition.

  ``sigma=None``: the fixed-point bandwidth sigma* (found by bisection); otherwise smECE at that bandwidth.
  With ``return_sigma=True`` returns ``(smece, sigma)``.
  """
  if sigma is None:
    value, s = _smooth_ece_fixed_point(stats)
  else:
    if not isinstance(sigma, jax.Array):
      checks.check_hparam("smooth_ece", "sigma", sigma, low=0, low_inclusive=False, high=1)
    s = jnp.asarray(sigma, stats.residual.dtype)
    value = _smooth_ece_fixed_sigma(stats, s)
  return (value, s) if return_sigma else value


def smooth_ece(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  sigma: Optional[float] = None,
  grid_size: int = 2001,
  where: Optional[jax.typing.ArrayLike] = None,
  return_sigma: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Smooth ECE (Blasiok & Nakkiran 2023, "Smooth ECE: Principled Reliability Diagrams via Kernel Smoothing").

  On the top-label pairs (c_i, z_i) with residuals r_i = z_i - c_i, the kernel-smoothed residual and density are
  r_sigma(t) = sum_i K(t, c_i) r_i / sum_i K(t, c_i) and delta_sigma(t) = (1/N) sum_i K(t, c_i), and

      smECE_sigma = int_0^1 |r_sigma(t)| delta_sigma(t) dt = int_0^1 | (1/N) sum_i K_sigma(t, c_i) r_i | dt

  with the reflected Gaussian kernel on [0, 1] (the Gaussian folded back at 0 and 1, so int_0^1 K(t, c) dt = 1):

      K_sigma(t, c) = sum_{k in Z} [ phi_sigma(t - c - 2k) + phi_sigma(t + c - 2k) ]

  The paper's smooth ECE is smECE_{sigma*} at the fixed point sigma* with smECE_{sigma*} = sigma* (unique, because
  smECE_sigma does not increase with sigma); at that point the returned value equals sigma*.

  What is computed exactly:

  * confidences are discretised to the G = ``grid_size`` nodes x_j = j/(G-1) by linear interpolation (each residual
    split between the two neighbouring nodes; :class:`SmoothECEStats`, mergeable);
  * the kernel is evaluated exactly at the nodes (reflection terms |k| <= 4: exact in float32 for sigma <= 1) and
    the integral over t by the trapezoid rule on the same nodes;
  * sigma* by 32 bisection steps on [4/(G-1), 1] (``sigma=None``); a fixed point below 4/(G-1) (0.002 with the
    default grid) is not resolved and the value at sigma = 4/(G-1) is returned (it is then <= 0.002).

  The discretisation changes smECE_sigma by a relative O((1/(G sigma))^2) (below 1e-3 for sigma >= 0.01 with
  G = 2001). A fraction in [0, 1]. jit-able (``grid_size`` static).

  Args:
    probs, labels, where: as for :func:`ece`.
    sigma: a fixed bandwidth in (0, 1] instead of the fixed point.
    grid_size: number of grid nodes G.
    return_sigma: also return the bandwidth used, ``(smece, sigma)``.
  """
  stats = smooth_ece_stats(probs, labels, grid_size=grid_size, where=where)
  return smooth_ece_from_stats(stats, sigma=sigma, return_sigma=return_sigma)
