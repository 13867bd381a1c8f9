"""Non-parametric calibrators: histogram binning, isotonic regression, scaling-binning.

Each maps a score in [0, 1] to a calibrated probability:

* top-label variant (Gupta & Ramdas 2022's top-label calibration): the score is the top-class probability
  c = max_k p_k of the model (p = link(z)), and the output is the PAIR (prediction, c'): the model's own argmax,
  never changed, and the calibrated probability c' that it is right (:class:`TopLabel`). No probability vector is
  defined (the calibrated value says nothing about the other classes, and c' < 1/K has no vector with that argmax),
  so metrics of the full vector (NLL, Brier, classwise ECE, SCE) are not defined for these calibrators; the
  top-label ones (accuracy, ECE, adaptive ECE, L2, smooth ECE) are scored on the pair
  (``gence_jax.metrics.top_label_metrics``).
* one-vs-rest variant: one map per class k on p_k against 1[y = k]; the K calibrated values are divided by their
  sum (a row whose values are all 0 becomes uniform). The argmax is not kept in general.

Bins follow the metrics' convention: bin b is (e_b, e_{b+1}], a score equal to an edge falls in the lower bin.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gence_jax.calibration import _common, _temperature
from gence_jax.metrics import _binned

Link = Callable[[jax.Array], jax.Array]

VARIANTS = ("top_label", "one_vs_rest")
BINNINGS = ("equal_mass", "equal_width")


# ----------------------------------------------------------------------------------------------- histogram binning


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class HistogramBinningParams:
  """Histogram binning: calibrated score = the fitted value of the score's bin.

  Attributes:
    boundaries: [M - 1] interior bin edges (top-label) or [K, M - 1] (one-vs-rest, per class); bin b is
      (boundaries[b-1], boundaries[b]], the first unbounded below, the last above.
    values: [M] or [K, M] the value of each bin.
    variant: "top_label" or "one_vs_rest" (static metadata).
    binning: "equal_mass" or "equal_width" (static metadata).
    link: the probability link (static metadata).
  """

  boundaries: jax.Array
  values: jax.Array
  variant: str = dataclasses.field(default="top_label", metadata=dict(static=True))
  binning: str = dataclasses.field(default="equal_mass", metadata=dict(static=True))
  link: Link = dataclasses.field(default=jax.nn.softmax, metadata=dict(static=True))

  @property
  def top_label(self) -> bool:
    return self.variant == "top_label"

  def summary(self) -> dict:
    return {"variant": self.variant, "binning": self.binning, "num_bins": int(self.values.shape[-1])}


def _bin_edges_full(boundaries):
  """[..., M + 1] edges 0, boundaries..., 1 (for the midpoints of empty bins)."""
  shape = boundaries.shape[:-1] + (1,)
  return jnp.concatenate([jnp.zeros(shape, boundaries.dtype), boundaries, jnp.ones(shape, boundaries.dtype)], -1)


def _histogram_1d(scores, targets, valid, num_bins, binning):
  """Boundaries [M-1] and values [M] = mean target per bin (an empty bin: the midpoint of its edges)."""
  if binning == "equal_mass":
    order = jnp.argsort(jnp.where(valid, scores, jnp.inf))
    boundaries = _binned.equal_mass_edges(scores[order], valid[order], num_bins)
  else:
    boundaries = jnp.asarray(_binned.bin_edges(num_bins, scores.dtype)[1:-1])
  idx = jnp.searchsorted(boundaries, scores, side="left")
  count = jax.ops.segment_sum(valid.astype(scores.dtype), idx, num_segments=num_bins)
  total = jax.ops.segment_sum(jnp.where(valid, targets, 0).astype(scores.dtype), idx, num_segments=num_bins)
  edges = _bin_edges_full(boundaries)
  mid = 0.5 * (edges[:-1] + edges[1:])
  return boundaries, jnp.where(count > 0, total / jnp.maximum(count, 1), mid)


@functools.partial(jax.jit, static_argnames=("link", "num_bins", "binning", "variant"))
def _fit_histogram(logits, labels, valid, *, link, num_bins, binning, variant):
  probs = link(logits)
  if variant == "top_label":
    correct = (jnp.argmax(probs, -1) == labels).astype(probs.dtype)
    return _histogram_1d(jnp.max(probs, -1), correct, valid, num_bins, binning)
  onehot = jax.nn.one_hot(labels, probs.shape[-1], dtype=probs.dtype)
  fit = jax.vmap(lambda s, t: _histogram_1d(s, t, valid, num_bins, binning), in_axes=(1, 1))
  return fit(probs, onehot)


def fit_histogram_binning(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  link: Link = jax.nn.softmax,
  where: jax.typing.ArrayLike | None = None,
  num_bins: int = 15,
  binning: str = "equal_mass",
  variant: str = "top_label",
) -> HistogramBinningParams:
  """Histogram binning (Zadrozny & Elkan 2001, "Obtaining calibrated probability estimates from decision trees and
  naive Bayesian classifiers"): the calibrated score of bin b is the fraction of positives among the fitting
  examples in that bin,

      theta_b = sum_{i in B_b} t_i / |B_b|,   B_b = {i unmasked : s_i in bin b}

  with (s_i, t_i) = (max_k p_ik, 1[argmax_k p_ik = y_i]) for ``variant="top_label"`` and (p_ik, 1[y_i = k]) per
  class k for ``variant="one_vs_rest"`` (p = link(z); outputs renormalised, see the module docstring). Bins:
  ``binning="equal_mass"`` (Zadrozny & Elkan's equal-frequency bins: interior edge j is the ceil(j n / M)-th
  smallest score, :func:`gence_jax.metrics.equal_mass_edges`, as the ATS pieces and the equal-mass metrics) or ``"equal_width"`` (the metrics' edges b / M). An empty bin gets the midpoint
  of its edges. jit-able.
  """
  fn = "fit_histogram_binning"
  logits, labels, valid = _common.check_inputs(fn, logits, labels, where, link)
  num_bins = _common.check_int(fn, "num_bins", num_bins, 1)
  _common.check_choice(fn, "binning", binning, BINNINGS)
  _common.check_choice(fn, "variant", variant, VARIANTS)
  b, v = _fit_histogram(logits, labels, valid, link=link, num_bins=num_bins, binning=binning, variant=variant)
  return HistogramBinningParams(boundaries=b, values=v, variant=variant, binning=binning, link=link)


def apply_histogram_binning(
  params: HistogramBinningParams, logits: jax.typing.ArrayLike
) -> jax.Array | _common.TopLabel:
  """Top-label: the pair :class:`TopLabel` ([..., K] -> [...], [...]); one-vs-rest: calibrated probabilities
  ([..., K] -> [..., K])."""
  probs = params.link(jnp.asarray(logits))
  if params.variant == "top_label":
    c = jnp.max(probs, axis=-1)
    idx = jnp.searchsorted(params.boundaries, c.reshape(-1), side="left").reshape(c.shape)
    return _common.top_label(probs, params.values[idx])
  flat = probs.reshape(-1, probs.shape[-1])
  idx = jax.vmap(lambda b, s: jnp.searchsorted(b, s, side="left"), in_axes=(0, 1), out_axes=1)(params.boundaries, flat)
  values = jnp.take_along_axis(params.values.T, idx, axis=0)  # values[k, idx[i, k]]
  return _common.renormalise(values).reshape(probs.shape)


# ----------------------------------------------------------------------------------------------- isotonic regression


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class IsotonicParams:
  """Isotonic regression: calibrated score = linear interpolation of the knots (clipped to the end values).

  Attributes:
    knots_x, knots_y: [L] (top-label) or [K, L] (one-vs-rest) knots: the first and last score of each constant
      block of the fitted isotonic step function and the block's value (padded with the last knot).
    variant: "top_label" or "one_vs_rest" (static metadata).
    link: the probability link (static metadata).
  """

  knots_x: jax.Array
  knots_y: jax.Array
  variant: str = dataclasses.field(default="top_label", metadata=dict(static=True))
  link: Link = dataclasses.field(default=jax.nn.softmax, metadata=dict(static=True))

  @property
  def top_label(self) -> bool:
    return self.variant == "top_label"

  def summary(self) -> dict:
    return {"variant": self.variant, "num_knots": int(self.knots_x.shape[-1])}


def _pava_knots(x: np.ndarray, y: np.ndarray):
  """Knots of the least-squares non-decreasing fit of y on x (pool adjacent violators over the distinct x values,
  each weighted by its multiplicity and holding its mean y)."""
  order = np.argsort(x, kind="stable")
  x, y = x[order], y[order]
  ux, start = np.unique(x, return_index=True)
  weight = np.diff(np.append(start, len(x))).astype(np.float64)
  mean = np.add.reduceat(y, start) / weight
  vals, wts, first = [], [], []
  for i in range(len(ux)):
    v, w, f = mean[i], weight[i], i
    while vals and vals[-1] >= v:  # pool with the previous block
      pv, pw = vals.pop(), wts.pop()
      f = first.pop()
      v = (pv * pw + v * w) / (pw + w)
      w = pw + w
    vals.append(v)
    wts.append(w)
    first.append(f)
  last = np.append(np.asarray(first[1:]) - 1, len(ux) - 1)
  kx, ky = [], []
  for f, l, v in zip(first, last, vals):
    kx.append(ux[f])
    ky.append(v)
    if l != f:
      kx.append(ux[l])
      ky.append(v)
  if len(kx) == 1:
    kx, ky = kx * 2, ky * 2
  return np.asarray(kx), np.asarray(ky)


def _pad(rows):
  n = max(len(r) for r in rows)
  return np.stack([np.concatenate([r, np.full(n - len(r), r[-1])]) for r in rows])


def fit_isotonic(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  link: Link = jax.nn.softmax,
  where: jax.typing.ArrayLike | None = None,
  variant: str = "top_label",
) -> IsotonicParams:
  """Isotonic regression (Zadrozny & Elkan 2002, "Transforming classifier scores into accurate multiclass
  probability estimates"): the non-decreasing map m minimising

      sum_{i unmasked} (t_i - m(s_i))^2

  by pool-adjacent-violators over the distinct scores (tied scores pooled first), with (s_i, t_i) as in
  :func:`fit_histogram_binning` (``variant="top_label"``: top-class probability and correctness;
  ``"one_vs_rest"``: p_ik and 1[y_i = k] per class, outputs renormalised). Prediction interpolates linearly between
  the first and last score of consecutive constant blocks and clips beyond the fitted range (scikit-learn's
  ``IsotonicRegression(out_of_bounds="clip")`` convention). Fitted with NumPy on the host (a sequential O(n)
  algorithm); prediction is jit-able.
  """
  fn = "fit_isotonic"
  logits, labels, valid = _common.check_inputs(fn, logits, labels, where, link)
  _common.check_choice(fn, "variant", variant, VARIANTS)
  keep = np.asarray(valid)
  if not keep.any():
    raise ValueError(f"{fn}: where must select at least one example")
  probs = np.asarray(link(logits), np.float64)[keep]
  y = np.asarray(labels)[keep]
  dtype = logits.dtype
  if variant == "top_label":
    kx, ky = _pava_knots(probs.max(1), (probs.argmax(1) == y).astype(np.float64))
  else:
    knots = [_pava_knots(probs[:, k], (y == k).astype(np.float64)) for k in range(probs.shape[1])]
    kx, ky = _pad([k[0] for k in knots]), _pad([k[1] for k in knots])
  return IsotonicParams(knots_x=jnp.asarray(kx, dtype), knots_y=jnp.asarray(ky, dtype), variant=variant, link=link)


def apply_isotonic(params: IsotonicParams, logits: jax.typing.ArrayLike) -> jax.Array | _common.TopLabel:
  """Top-label: the pair :class:`TopLabel` ([..., K] -> [...], [...]); one-vs-rest: calibrated probabilities
  ([..., K] -> [..., K])."""
  probs = params.link(jnp.asarray(logits))
  if params.variant == "top_label":
    c = jnp.max(probs, axis=-1)
    # The clip removes interpolation rounding (the knot values themselves lie in [0, 1]).
    return _common.top_label(probs, jnp.clip(jnp.interp(c, params.knots_x, params.knots_y), 0, 1))
  flat = probs.reshape(-1, probs.shape[-1])
  values = jax.vmap(jnp.interp, in_axes=(1, 0, 0), out_axes=1)(flat, params.knots_x, params.knots_y)
  return _common.renormalise(jnp.clip(values, 0, 1)).reshape(probs.shape)


# ----------------------------------------------------------------------------------------------- scaling-binning


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ScalingBinningParams:
  """Scaling-binning: temperature scaling, then the scaled top-class probability replaced by its bin's mean.

  Attributes:
    temperature: scalar T of the scaling step.
    boundaries: [B - 1] interior equal-mass edges on the scaled top-class probability.
    values: [B] mean scaled top-class probability of each bin (on the binning split).
    link: the probability link (static metadata).
  """

  temperature: jax.Array
  boundaries: jax.Array
  values: jax.Array
  link: Link = dataclasses.field(default=jax.nn.softmax, metadata=dict(static=True))

  top_label = True  # its output is always the (prediction, confidence) pair

  def summary(self) -> dict:
    return {"temperature": float(self.temperature), "num_bins": int(self.values.shape[-1])}


@functools.partial(jax.jit, static_argnames=("link", "num_bins"))
def _fit_bins_of_scaled(logits, temperature, valid, *, link, num_bins):
  s = _common.top_confidence(logits / temperature, link=link)
  return _histogram_1d(s, s, valid, num_bins, "equal_mass")


def fit_scaling_binning(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  link: Link = jax.nn.softmax,
  where: jax.typing.ArrayLike | None = None,
  num_bins: int = 10,
  fit_fraction: float = 0.5,
  seed: int = 0,
) -> ScalingBinningParams:
  """The scaling-binning calibrator (Kumar, Liang & Ma 2019, "Verified Uncertainty Calibration"), top-label.

  1. Split the unmasked examples at random (``seed``) into a scaling part (a fraction ``fit_fraction``) and a
     binning part.
  2. Scaling: g(z) = max_k link(z / T)_k with T fitted by NLL on the scaling part (:func:`fit_temperature`; Kumar
     et al. fit Platt scaling, its binary analogue).
  3. Binning: ``num_bins`` equal-mass bins of g on the binning part (edge j = the ceil(j n_2 / B)-th smallest g);
     each bin's value is the mean of g over the binning part's examples in it (no labels: this is what makes the
     output's calibration error measurable, their Section 4).
  4. Prediction: the pair (argmax_k link(z)_k, the bin value of max_k link(z / T)_k) (:class:`TopLabel`, see the
     module docstring; a positive T keeps the argmax of an order-preserving link).

  The split is drawn on the host with NumPy; the fits are the jitted JAX ones; prediction is jit-able.
  """
  fn = "fit_scaling_binning"
  logits, labels, valid = _common.check_inputs(fn, logits, labels, where, link)
  num_bins = _common.check_int(fn, "num_bins", num_bins, 1)
  if not (isinstance(fit_fraction, float) and 0.0 < fit_fraction < 1.0):
    raise ValueError(f"{fn}: fit_fraction must be a float in (0, 1), got {fit_fraction!r}.")
  seed = _common.check_int(fn, "seed", seed, 0)
  idx = np.flatnonzero(np.asarray(valid))
  n1 = int(round(fit_fraction * idx.size))
  if n1 < 1 or n1 >= idx.size:
    raise ValueError(f"{fn}: fit_fraction={fit_fraction} leaves an empty split of the {idx.size} unmasked examples")
  perm = np.random.default_rng(seed).permutation(idx)
  scale_mask = np.zeros(labels.shape, bool)
  scale_mask[perm[:n1]] = True
  bin_mask = np.zeros(labels.shape, bool)
  bin_mask[perm[n1:]] = True
  ts = _temperature.fit_temperature(logits, labels, link=link, where=jnp.asarray(scale_mask))
  b, v = _fit_bins_of_scaled(logits, ts.temperature, jnp.asarray(bin_mask), link=link, num_bins=num_bins)
  return ScalingBinningParams(temperature=ts.temperature, boundaries=b, values=v, link=link)


def apply_scaling_binning(params: ScalingBinningParams, logits: jax.typing.ArrayLike) -> _common.TopLabel:
  """The pair :class:`TopLabel` ([..., K] -> [...], [...]): the uncalibrated argmax and its bin's value."""
  logits = jnp.asarray(logits)
  c = jnp.max(params.link(logits / params.temperature), axis=-1)
  idx = jnp.searchsorted(params.boundaries, c.reshape(-1), side="left").reshape(c.shape)
  return _common.top_label(params.link(logits), params.values[idx])
