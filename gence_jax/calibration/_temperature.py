"""Temperature scaling (TS) and adaptive piecewise temperature scaling (ATS). See ``docs/calibration.md``."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp

from gence_jax.calibration import _search
from gence_jax.metrics import _validate

Link = Callable[[jax.Array], jax.Array]

DEFAULT_LOG_T_BOUNDS = (-4.0, 4.0)  # T in [exp(-4), exp(4)] = [0.018, 54.6]
DEFAULT_NUM_GRID = 33  # grid spacing 0.25 in log T on the default bounds
DEFAULT_NUM_GOLDEN = 48  # interval 0.5 * 0.618^48 ~ 5e-11 in log T


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TemperatureParams:
  """Fitted temperature scaling: calibrated logits = logits / temperature.

  Attributes:
    temperature: scalar T > 0.
    link: the probability link the temperature was fitted for (static pytree metadata, not an array).
  """

  temperature: jax.Array
  link: Link = dataclasses.field(default=jax.nn.softmax, metadata=dict(static=True))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ATSParams:
  """Fitted adaptive piecewise temperature scaling.

  Attributes:
    boundaries: [P - 1] interior piece boundaries on the UNCALIBRATED top-class probability max_k link(z)_k;
      piece j holds confidences in (boundaries[j-1], boundaries[j]] (first piece unbounded below, last above).
    temperatures: [P] the temperature used in each piece (the piece's own fit, or the global one on fallback).
    global_temperature: scalar, the plain temperature-scaling fit on all the data.
    counts: [P] int32, number of fitting examples in each piece.
    fitted: [P] bool, True where the piece uses its own temperature (False: fallback to the global one because the
      piece had fewer than ``min_count`` examples or its own fit was not better than the global temperature).
    link: the probability link (static metadata), also used at prediction time to pick the piece.
  """

  boundaries: jax.Array
  temperatures: jax.Array
  global_temperature: jax.Array
  counts: jax.Array
  fitted: jax.Array
  link: Link = dataclasses.field(default=jax.nn.softmax, metadata=dict(static=True))

  @property
  def num_pieces(self) -> int:
    return self.temperatures.shape[-1]


# ----------------------------------------------------------------------------------------------- objective


def _neg_log_lik(logits, labels, temperature, link):
  """Per-example -log link(logits / T)_y with T per example ([N]); log-softmax when the link is jax.nn.softmax."""
  z = logits / temperature[:, None]
  if link is jax.nn.softmax:
    logp = jax.nn.log_softmax(z, axis=-1)
  else:
    p = link(z)
    logp = jnp.log(jnp.maximum(p, jnp.finfo(p.dtype).tiny))
  return -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def _piece_objective(logits, labels, valid, piece, num_pieces, link):
  """f(log_t [P]) -> [P] summed NLL of the examples of each piece, each piece at its own temperature."""

  member = valid[:, None] & (piece[:, None] == jnp.arange(num_pieces)[None, :])  # [N, P]

  def f(log_t):
    nll = _neg_log_lik(logits, labels, jnp.exp(log_t)[piece], link)
    # A masked reduction, not a scatter-add: deterministic on GPU, so repeated fits give identical temperatures.
    return jnp.sum(jnp.where(member, nll[:, None], 0), axis=0)

  return f


_STATIC = ("link", "lo", "hi", "num_grid", "num_golden")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _fit_global(logits, labels, valid, *, link, lo, hi, num_grid, num_golden):
  piece = jnp.zeros(labels.shape, jnp.int32)
  f = _piece_objective(logits, labels, valid, piece, 1, link)
  x, _ = _search.minimize_log_t(f, 1, lo, hi, num_grid, num_golden, logits.dtype)
  return x[0]


@functools.partial(jax.jit, static_argnames=("link",))
def _top_confidence(logits, link):
  """max_k link(z)_k; one jitted function for fitting and prediction so both see the same rounding."""
  return jnp.max(link(logits), axis=-1)


@functools.partial(jax.jit, static_argnames=_STATIC + ("num_pieces",))
def _fit_ats(logits, labels, valid, conf, g, min_count, *, link, lo, hi, num_grid, num_golden, num_pieces):
  n_all = labels.shape[0]
  p = num_pieces
  if p == 1:
    counts = jnp.sum(valid, dtype=jnp.int32)[None]
    return jnp.zeros((0,), conf.dtype), g[None], counts, jnp.zeros((1,), bool)
  # Equal-mass boundaries: boundary j (j = 1..P-1) is the ceil(j n / P)-th smallest unmasked confidence.
  n = jnp.sum(valid, dtype=jnp.int32)
  srt = jnp.sort(jnp.where(valid, conf, jnp.inf))
  j = jnp.arange(1, p, dtype=jnp.int32)
  k = (j * n + p - 1) // p
  boundaries = srt[jnp.clip(k - 1, 0, max(n_all - 1, 0))]
  piece = jnp.searchsorted(boundaries, conf, side="left").astype(jnp.int32)
  counts = jax.ops.segment_sum(valid.astype(jnp.int32), piece, num_segments=p)
  f = _piece_objective(logits, labels, valid, piece, p, link)
  x, fx = _search.minimize_log_t(f, p, lo, hi, num_grid, num_golden, logits.dtype)
  f_global = f(jnp.full((p,), g, logits.dtype))
  # The optimum must be identified by the data: better than both ends of the search range by more than float noise
  # (1e-4 nats per example). A piece with no errors has an NLL that only falls (to 0 in float) as T -> 0, and a test
  # error there would cost ~-log(tiny); such a piece keeps T_g.
  f_lo = f(jnp.full((p,), lo, logits.dtype))
  f_hi = f(jnp.full((p,), hi, logits.dtype))
  slack = 1e-4 * counts.astype(fx.dtype) + 1e-6 * jnp.abs(fx)
  identified = (f_lo > fx + slack) & (f_hi > fx + slack)
  fitted = (fx < f_global) & (counts >= min_count) & identified
  return boundaries, x, counts, fitted


# ----------------------------------------------------------------------------------------------- checks


def _check_fit_args(logits, labels, where, link, log_t_bounds, num_grid, num_golden):
  if not callable(link):
    raise TypeError(f"link must be a callable mapping logits [N, K] to probabilities; got {link!r}")
  try:
    hash(link)
  except TypeError:
    raise TypeError(
      "link must be hashable: it is a static jit argument and static metadata of the params "
      "(use a module-level function, functools.partial, or a bound method of a hashable object)"
    ) from None
  logits, labels, where = _validate.check_logits(logits, labels, where)
  try:
    lo, hi = (float(b) for b in log_t_bounds)
  except (TypeError, ValueError):
    raise ValueError(f"log_t_bounds must be a pair (lo, hi) of floats; got {log_t_bounds!r}") from None
  if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
    raise ValueError(f"log_t_bounds must be finite with lo < hi; got {log_t_bounds!r}")
  _validate.check_num_bins(num_grid, "num_grid")
  if num_grid < 2:
    raise ValueError(f"num_grid must be >= 2; got {num_grid}")
  if isinstance(num_golden, bool) or not isinstance(num_golden, numbers.Integral) or num_golden < 0:
    raise ValueError(f"num_golden must be an integer >= 0; got {num_golden!r}")
  valid = jnp.ones(labels.shape, bool) if where is None else where
  return logits, labels, valid, lo, hi


# ----------------------------------------------------------------------------------------------- public API


def fit_temperature(
  logits,
  labels,
  *,
  link: Link = jax.nn.softmax,
  where=None,
  log_t_bounds: Tuple[float, float] = DEFAULT_LOG_T_BOUNDS,
  num_grid: int = DEFAULT_NUM_GRID,
  num_golden: int = DEFAULT_NUM_GOLDEN,
) -> TemperatureParams:
  """Temperature scaling (Guo et al. 2017): the NLL-optimal temperature on held-out data.

      T* = argmin_{log T in [lo, hi]}  sum_{i unmasked} -log link(z_i / T)_{y_i}

  Gradient-free: a grid of ``num_grid`` points on log T in ``log_t_bounds`` followed by ``num_golden`` golden-section
  iterations around the best grid point (see ``_search``). For the softmax link the NLL is convex in 1/T, so this
  finds the global optimum within the bounds; with the defaults log T is resolved to ~1e-10 (in practice to the
  float precision of the NLL). When ``link is jax.nn.softmax`` the log-probabilities come from ``log_softmax``;
  otherwise from ``log(max(link(z / T), tiny))`` (so sparse links with exact zeros stay finite). jit-able.

  Args:
    logits: [N, K] held-out logits (never the test set).
    labels: [N] integer labels.
    link: maps scaled logits [N, K] to probabilities (default softmax; e.g. ``loss.probs`` for an MGCE model).
    where: optional [N] bool mask (masked rows count nowhere).
    log_t_bounds: search range of log T.
    num_grid, num_golden: grid size and number of golden-section iterations.

  Returns:
    :class:`TemperatureParams` (temperature and link).
  """
  logits, labels, valid, lo, hi = _check_fit_args(logits, labels, where, link, log_t_bounds, num_grid, num_golden)
  log_t = _fit_global(
    logits, labels, valid, link=link, lo=lo, hi=hi, num_grid=int(num_grid), num_golden=int(num_golden)
  )
  return TemperatureParams(temperature=jnp.exp(log_t), link=link)


def apply_temperature(params: TemperatureParams, logits) -> jax.Array:
  """Calibrated logits = logits / T ([..., K] -> [..., K]); the argmax is unchanged."""
  return jnp.asarray(logits) / params.temperature


def fit_ats(
  logits,
  labels,
  *,
  link: Link = jax.nn.softmax,
  num_pieces: int = 4,
  min_count: int = 50,
  where=None,
  log_t_bounds: Tuple[float, float] = DEFAULT_LOG_T_BOUNDS,
  num_grid: int = DEFAULT_NUM_GRID,
  num_golden: int = DEFAULT_NUM_GOLDEN,
) -> ATSParams:
  """ATS: adaptive piecewise temperature scaling (our recipe; the GenCE paper's exact one is unpublished).

  1. Global fit: T_g = :func:`fit_temperature` on all unmasked examples.
  2. Pieces: c_i = max_k link(z_i)_k, the confidence of the UNCALIBRATED model. With n unmasked examples and
     P = ``num_pieces``, boundary j (j = 1..P-1) is the ceil(j n / P)-th smallest c_i (equal-mass quantiles);
     piece j (0-based) holds c in (b_j, b_{j+1}] with b_0 = -inf, b_P = +inf: the same (lo, hi] convention as the
     metric bins, so a confidence equal to a boundary belongs to the lower piece. Tied confidences may make a
     piece larger or empty.
  3. Per piece p, without gradients: T_p = argmin over log T in ``log_t_bounds`` of the summed NLL of the piece's
     examples, -sum_{i in p} log link(z_i / T)_{y_i} (grid + golden section, all pieces in one vectorised search).
  4. Fallback: piece p uses T_g instead of T_p if it has fewer than ``min_count`` fitting examples, if T_p's NLL
     on the piece is not strictly below T_g's (T_g is always a candidate), or if it is not below the NLL at both ends
     of ``log_t_bounds`` by more than 1e-4 nats per example: such an optimum is not identified by the data (a piece with no errors has an NLL
     that only falls, to 0 in float, as T -> 0, and a single test error in it would then cost ~87 nats). Hence, on its own fitting data,
     NLL(ATS) = sum_p min(NLL_p(T_p), NLL_p(T_g)) <= sum_p NLL_p(T_g) = NLL(TS) (up to float summation order), and
     with ``num_pieces=1`` ATS is exactly TS.
  5. Prediction (:func:`apply_ats`): the piece of a new example is chosen by its uncalibrated confidence
     max_k link(z)_k with the same boundaries (values beyond the fitted range go to the first/last piece), and its
     logits are divided by that piece's temperature. A positive temperature never changes the argmax of the
     logits (nor of any order-preserving link). The calibrated map is discontinuous at the boundaries, and a
     confidence within an ulp of a boundary may fall on either side when the link is compiled differently
     (another batch shape, another device); fitting and prediction share one jitted confidence function.

  Fit on a held-out calibration split (never the test set); see ``docs/calibration.md``. jit-able.

  Returns:
    :class:`ATSParams`.
  """
  logits, labels, valid, lo, hi = _check_fit_args(logits, labels, where, link, log_t_bounds, num_grid, num_golden)
  _validate.check_num_bins(num_pieces, "num_pieces")
  if isinstance(min_count, bool) or not isinstance(min_count, numbers.Integral) or min_count < 0:
    raise ValueError(f"min_count must be an integer >= 0; got {min_count!r}")
  search = dict(link=link, lo=lo, hi=hi, num_grid=int(num_grid), num_golden=int(num_golden))
  g = _fit_global(logits, labels, valid, **search)  # exactly what fit_temperature computes
  conf = _top_confidence(logits, link=link)  # exactly what apply_ats computes (same jitted function)
  b, log_t, counts, fitted = _fit_ats(
    logits, labels, valid, conf, g, jnp.int32(min_count), num_pieces=int(num_pieces), **search
  )
  tg = jnp.exp(g)
  temps = jnp.where(fitted, jnp.exp(log_t), tg)  # a fallback piece holds exactly the global temperature
  return ATSParams(boundaries=b, temperatures=temps, global_temperature=tg, counts=counts, fitted=fitted, link=link)


def ats_pieces(params: ATSParams, logits) -> jax.Array:
  """Piece index of each example ([..., K] -> [...] int32), from its uncalibrated confidence max_k link(z)_k."""
  logits = jnp.asarray(logits)
  conf = _top_confidence(logits, link=params.link)
  return jnp.searchsorted(params.boundaries, conf.reshape(-1), side="left").astype(jnp.int32).reshape(conf.shape)


def apply_ats(params: ATSParams, logits) -> jax.Array:
  """Calibrated logits = logits / T_piece, with the piece chosen by the uncalibrated confidence ([..., K])."""
  logits = jnp.asarray(logits)
  t = params.temperatures[ats_pieces(params, logits)]
  return logits / t[..., None]


def apply_calibrator(params, logits) -> jax.Array:
  """Dispatches to :func:`apply_temperature` or :func:`apply_ats` by the type of ``params``."""
  if isinstance(params, TemperatureParams):
    return apply_temperature(params, logits)
  if isinstance(params, ATSParams):
    return apply_ats(params, logits)
  raise TypeError(f"params must be TemperatureParams or ATSParams; got {type(params).__name__}")


def calibrated_probs(params, logits, link: Optional[Link] = None) -> jax.Array:
  """``link(apply_calibrator(params, logits))``; ``link`` defaults to the link the params were fitted with."""
  link = params.link if link is None else link
  return link(apply_calibrator(params, logits))
