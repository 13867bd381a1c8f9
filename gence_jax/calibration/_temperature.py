"""Temperature scaling (TS, by NLL or by ECE) and adaptive temperature scaling (ATS). See ``docs/calibration.md``."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from gence_jax.calibration import _common, _search
from gence_jax.metrics import _binned

Link = Callable[[jax.Array], jax.Array]

DEFAULT_LOG_T_BOUNDS = (-4.0, 4.0)  # T in [exp(-4), exp(4)] = [0.018, 54.6]
DEFAULT_NUM_GRID = 33  # grid spacing 0.25 in log T on the default bounds
DEFAULT_NUM_GOLDEN = 48  # interval 0.5 * 0.618^48 ~ 5e-11 in log T
DEFAULT_NUM_SWEEPS = 4  # coordinate-descent sweeps of monotone ATS
#: The temperature grid of the focal-loss papers' code (Mukhoti et al. 2020): T = 0.1, 0.2, ..., 10.0.
DEFAULT_ECE_TEMPERATURES = tuple(float(t) for t in np.arange(1, 101) / 10.0)

# Reference logit gap a of monotone ATS: clipped below at _A_MIN (confidences at or below 1/K).
_A_MIN = 1e-6
# Sensitivity table of a non-softmax link on the reference ray (a, 0, ..., 0): a in [1e-4, 1e4], geometric.
_TABLE_SIZE = 4096
_TABLE_RANGE = (1e-4, 1e4)
_RATIO_SAFETY = 1.02  # slack on the tabulated sensitivity ratio (finite differences, maximum between table points)

_top_confidence = _common.top_confidence  # max_k link(z)_k, shared by fitting and prediction


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

  def summary(self) -> dict:
    return {"temperature": float(self.temperature)}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ATSParams:
  """Fitted adaptive temperature scaling.

  Attributes:
    boundaries: [P - 1] interior piece boundaries on the UNCALIBRATED top-class probability max_k link(z)_k;
      piece j holds confidences in (boundaries[j-1], boundaries[j]] (first piece unbounded below, last above).
    temperatures: [P] the temperature of each piece (piecewise-constant ATS) or at each piece centre (monotone
      ATS); the global one where the piece is not fitted.
    global_temperature: scalar, the plain temperature-scaling fit on all the data.
    counts: [P] int32, number of fitting examples in each piece.
    fitted: [P] bool, True where the piece's temperature differs from the global one (False: fewer than
      ``min_count`` examples, no improvement, or an optimum not identified by the data).
    centres: [P] piece centres on the uncalibrated confidence (monotone ATS), or None for piecewise-constant ATS.
      With centres, log T is interpolated between them (see :func:`fit_ats`); without, each piece uses its own T.
    link: the probability link (static metadata), also used at prediction time to read the confidence.
  """

  boundaries: jax.Array
  temperatures: jax.Array
  global_temperature: jax.Array
  counts: jax.Array
  fitted: jax.Array
  centres: Optional[jax.Array] = None
  link: Link = dataclasses.field(default=jax.nn.softmax, metadata=dict(static=True))

  @property
  def num_pieces(self) -> int:
    return self.temperatures.shape[-1]

  @property
  def monotone(self) -> bool:
    return self.centres is not None

  def summary(self) -> dict:
    out = {
      "monotone": self.monotone,
      "temperatures": np.asarray(self.temperatures, np.float64).tolist(),
      "global_temperature": float(self.global_temperature),
      "boundaries": np.asarray(self.boundaries, np.float64).tolist(),
      "counts": np.asarray(self.counts).astype(int).tolist(),
      "fitted": np.asarray(self.fitted).astype(bool).tolist(),
    }
    if self.centres is not None:
      out["centres"] = np.asarray(self.centres, np.float64).tolist()
    reason = self.degenerate()
    if reason:
      out["degenerate"] = reason
    return out

  def degenerate(self) -> str | None:
    """Why the fitted map is less than ``num_pieces`` temperatures, or None: empty pieces (tied confidences, e.g.
    many exactly 1.0 under a sparse link, put every tie in one piece) or no piece fitted (the map is TS)."""
    counts = np.asarray(self.counts).astype(int)
    fitted = np.asarray(self.fitted).astype(bool)
    if counts.size <= 1:
      return None
    empty = int(np.sum(counts == 0))
    if empty:
      return (
        f"ATS: {empty} of {counts.size} pieces are empty (counts {counts.tolist()}): tied confidences (e.g. many "
        "exactly 1.0) put whole groups in one piece"
      )
    if not fitted.any():
      return f"ATS: no piece was fitted (counts {counts.tolist()}): the map is temperature scaling"
    return None


# ----------------------------------------------------------------------------------------------- objective


def _neg_log_lik(logits, labels, temperature, link):
  """Per-example -log link(logits / T)_y with T per example ([N]); log-softmax when the link is jax.nn.softmax."""
  return _common.label_nll(_common.log_probs(logits / temperature[:, None], link), labels)


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


def _pieces(conf, valid, num_pieces):
  """Equal-mass boundaries [P-1], piece of each example [N], counts [P] and the sorted valid confidences."""
  n = jnp.sum(valid, dtype=jnp.int32)
  order = jnp.argsort(jnp.where(valid, conf, jnp.inf))
  srt = jnp.where(valid, conf, jnp.inf)[order]
  boundaries = _binned.equal_mass_edges(srt, valid[order], num_pieces)
  piece = jnp.searchsorted(boundaries, conf, side="left").astype(jnp.int32)
  counts = jax.ops.segment_sum(valid.astype(jnp.int32), piece, num_segments=num_pieces)
  return boundaries, piece, counts, srt, n


@functools.partial(jax.jit, static_argnames=_STATIC + ("num_pieces",))
def _fit_ats(logits, labels, valid, conf, g, min_count, *, link, lo, hi, num_grid, num_golden, num_pieces):
  """Piecewise-constant ATS: one independent temperature per piece."""
  p = num_pieces
  if p == 1:
    counts = jnp.sum(valid, dtype=jnp.int32)[None]
    return jnp.zeros((0,), conf.dtype), g[None], counts, jnp.zeros((1,), bool)
  boundaries, piece, counts, _, _ = _pieces(conf, valid, p)
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


# ----------------------------------------------------------------------------------------------- monotone ATS


def ref_log_gap(conf: jax.Array, num_classes: int) -> jax.Array:
  """x(c) = log a(c), a(c) = log((K - 1) c / (1 - c)): the logit gap at which the reference logit vector
  (a, 0, ..., 0) has softmax top confidence c, on a log scale.

  a is clipped to [1e-6, log(K - 1) + log(2 / eps)] (eps of the dtype of ``conf``): the upper end is the gap at which
  the confidence rounds to 1, so x is continuous in c up to and including c = 1.0.
  """
  dtype = conf.dtype
  log_km1 = math.log(max(num_classes - 1, 1))
  a_max = log_km1 + math.log(2.0 / float(jnp.finfo(dtype).eps))
  a = log_km1 + jnp.log(conf) - jnp.log1p(-conf)
  return jnp.log(jnp.clip(a, _A_MIN, a_max))


def example_log_gap(logits: jax.Array, link: Link) -> jax.Array:
  """x = log a of each example ([..., K] -> [...]), the position on which monotone ATS interpolates log T.

  For ``jax.nn.softmax`` a is read from the LOGITS: a = log(K - 1) - log sum_{k != top} exp(z_k - z_top), which
  equals log((K - 1) c / (1 - c)) at the softmax confidence c in exact arithmetic but keeps resolving the gap where
  the float32 confidence has rounded to 1 (from about c > 1 - 1e-4 on, many logit vectors share one stored c, and
  a temperature read from c would step, breaking monotonicity there). For another link, from its top confidence
  (:func:`ref_log_gap`). Clipped below at 1e-6 (confidences at or below 1/K).
  """
  logits = jnp.asarray(logits)
  if link is not jax.nn.softmax:
    return ref_log_gap(_top_confidence(logits, link=link), logits.shape[-1])
  k = logits.shape[-1]
  top = jax.nn.one_hot(jnp.argmax(logits, axis=-1), k, dtype=bool)
  shifted = logits - jnp.max(logits, axis=-1, keepdims=True)
  rest = jax.nn.logsumexp(jnp.where(top, -jnp.inf, shifted), axis=-1)
  a = math.log(max(k - 1, 1)) - rest
  return jnp.log(jnp.maximum(a, _A_MIN))


def _knot_weights(x, xk):
  """Segment j in [0, P-2] and the weight w in [0, 1] of knot j + 1 for linear interpolation in x between the
  knots xk (ascending, ties allowed); constant beyond the end knots."""
  p = xk.shape[0]
  j = jnp.clip(jnp.searchsorted(xk, x, side="right") - 1, 0, p - 2)
  left, right = xk[j], xk[j + 1]
  width = right - left
  w = jnp.where(width > 0, (x - left) / jnp.where(width > 0, width, 1), (x >= right).astype(x.dtype))
  return j, jnp.clip(w, 0, 1)


def _interp_temperature(j, w, temps):
  """T = T_j (T_{j+1} / T_j)^w: log T linear between knots; exactly T_j where T_{j+1} == T_j."""
  t0, t1 = temps[j], temps[j + 1]
  return t0 * jnp.exp(w * (jnp.log(t1) - jnp.log(t0)))


@functools.lru_cache(maxsize=32)
def _sensitivity_table(link, num_classes: int):
  """Top-confidence sensitivity of ``link`` relative to the softmax's, tabulated on the reference ray.

  On z = a e_1 (a on a geometric grid) returns c(a) = link(z)_1 and r = (dc/du) / B(c), u = log a, with
  B(c) = c (1 - c) log((K - 1) c / (1 - c)) the softmax's dc/du at confidence c. dc/du by central differences, in
  float64 where the link allows; +inf where the differences do not resolve c (saturation), which only makes the
  constraint of monotone ATS stricter. Computed once per (link, K), outside any trace.
  """
  a = np.geomspace(*_TABLE_RANGE, _TABLE_SIZE)
  z = np.zeros((_TABLE_SIZE, num_classes))
  z[:, 0] = a
  with jax.ensure_compile_time_eval():
    try:
      with jax.enable_x64(True):
        c = np.asarray(link(jnp.asarray(z, jnp.float64)), np.float64)[:, 0]
      eps = np.finfo(np.float64).eps
    except Exception:  # a link that does not run in float64
      c = np.asarray(link(jnp.asarray(z, jnp.float32)), np.float64)[:, 0]
      eps = float(np.finfo(np.float32).eps)
  c = np.maximum.accumulate(c)
  u = np.log(a)
  dc = np.empty_like(c)
  dc[1:-1] = c[2:] - c[:-2]
  dc[0], dc[-1] = c[1] - c[0], c[-1] - c[-2]
  du = np.empty_like(u)
  du[1:-1] = u[2:] - u[:-2]
  du[0], du[-1] = u[1] - u[0], u[-1] - u[-2]
  with np.errstate(divide="ignore", invalid="ignore"):
    b_soft = c * (1 - c) * np.log(max(num_classes - 1, 1) * c / (1 - c))
    ratio = (dc / du) / b_soft
  resolved = (dc > 1e4 * eps) & (c < 1) & (b_soft > 0) & np.isfinite(ratio)
  ratio = np.where(resolved, ratio, np.inf)
  return c, ratio


def _segment_ratios(link, num_classes, centres):
  """[P-1] bound on (dc/du) / B(c) over each segment [m_j, m_{j+1}] (1 for the softmax, where it is exact)."""
  p = centres.shape[0]
  if link is jax.nn.softmax:
    return jnp.ones((p - 1,), centres.dtype)
  c_tab, ratio_tab = _sensitivity_table(link, num_classes)
  # Confidences that round to 1 in the working dtype all have x(c) = x(1): no constraint is needed there.
  ratio_tab = np.where(c_tab > 1 - float(jnp.finfo(centres.dtype).eps) / 2, 0.0, ratio_tab)
  c_tab = jnp.asarray(c_tab, centres.dtype)
  ratio_tab = jnp.asarray(ratio_tab, centres.dtype)
  g = c_tab.shape[0]
  lo = jnp.clip(jnp.searchsorted(c_tab, centres[:-1], side="right") - 1, 0, g - 1)  # last table point <= m_j
  hi = jnp.clip(jnp.searchsorted(c_tab, centres[1:], side="left"), 0, g - 1)  # first table point >= m_{j+1}
  idx = jnp.arange(g)
  inside = (idx[None, :] >= lo[:, None]) & (idx[None, :] <= hi[:, None])
  return _RATIO_SAFETY * jnp.max(jnp.where(inside, ratio_tab[None, :], 0), axis=1)


@functools.partial(jax.jit, static_argnames=_STATIC + ("num_pieces", "num_sweeps"))
def _fit_ats_monotone(
  logits, labels, valid, conf, g, min_count, *, link, lo, hi, num_grid, num_golden, num_pieces, num_sweeps
):
  """Monotone ATS: log T piecewise linear in x(c) between piece centres, bounded rises, coordinate descent."""
  p = num_pieces
  k = logits.shape[-1]
  dtype = logits.dtype
  boundaries, piece, counts, srt, n = _pieces(conf, valid, p)
  jj = jnp.arange(p, dtype=jnp.int32)
  # A piece whose own examples do not identify a temperature (each piece at its own T, on the grid: the best value
  # is not below both ends of the search range by 1e-4 nats per example, e.g. a piece without errors) keeps T_g,
  # like a piece with fewer than min_count examples.
  own = _piece_objective(logits, labels, valid, piece, p, link)
  on_grid = jax.lax.map(own, jnp.broadcast_to(jnp.linspace(lo, hi, num_grid, dtype=dtype)[:, None], (num_grid, p)))
  on_grid = jnp.where(jnp.isnan(on_grid), jnp.inf, on_grid)
  best = jnp.min(on_grid, axis=0)
  slack_own = 1e-4 * counts.astype(dtype) + 1e-6 * jnp.abs(best)
  identified_own = (on_grid[0] > best + slack_own) & (on_grid[-1] > best + slack_own)
  kc = ((2 * jj + 1) * n + 2 * p - 1) // (2 * p)  # centre j: the ceil((2j + 1) n / (2P))-th smallest confidence
  centres = srt[jnp.clip(kc - 1, 0, max(srt.shape[0] - 1, 0))]
  ratios = _segment_ratios(link, k, centres)
  xk = ref_log_gap(centres, k)
  seg, w = _knot_weights(example_log_gap(logits, link), xk)
  # Knot j's objective: the examples whose temperature depends on knot j. Knots of equal parity share no examples.
  member = valid[:, None] & (
    ((seg[:, None] == jj[None, :]) & (w[:, None] < 1)) | ((seg[:, None] == jj[None, :] - 1) & (w[:, None] > 0))
  )
  support = jnp.sum(member, axis=0).astype(dtype)
  frozen = (counts < min_count) | ~identified_own
  # tau_{j+1} - tau_j <= dmax_j (decreases are free); the 1e-4 margin keeps float rounding of the stored
  # temperatures from breaking the bound.
  dmax = (1 - 1e-4) * (xk[1:] - xk[:-1]) / ratios

  def knot_objective(tau):
    t = _interp_temperature(seg, w, jnp.exp(tau))
    nll = _neg_log_lik(logits, labels, t, link)
    return jnp.sum(jnp.where(member, nll[:, None], 0), axis=0)

  d_prev = jnp.concatenate([jnp.zeros((1,), dtype), dmax])  # bound on tau_j - tau_{j-1} (j >= 1)
  d_next = jnp.concatenate([dmax, jnp.zeros((1,), dtype)])  # bound on tau_{j+1} - tau_j (j <= P - 2)

  def half_sweep(i, tau):
    active = (jj % 2 == i % 2) & ~frozen
    tau_prev = jnp.concatenate([tau[:1], tau[:-1]])
    tau_next = jnp.concatenate([tau[1:], tau[-1:]])
    # Feasible interval of knot j given its neighbours; the current value is feasible (guards float rounding).
    a = jnp.where(jj < p - 1, jnp.maximum(lo, tau_next - d_next), lo)
    b = jnp.where(jj > 0, jnp.minimum(hi, tau_prev + d_prev), hi)
    a, b = jnp.minimum(a, tau), jnp.maximum(b, tau)

    def f(t):
      return knot_objective(jnp.where(active, a + t * (b - a), tau))

    t_best, f_best = _search.minimize_log_t(f, p, 0.0, 1.0, num_grid, num_golden, dtype)
    x_best = a + t_best * (b - a)
    # The current value and both interval ends, in one pass over the three candidates.
    f_cur, f_a, f_b = jax.lax.map(lambda v: knot_objective(jnp.where(active, v, tau)), jnp.stack([tau, a, b]))
    # Identified: better than the global search bounds by more than float noise where the interval reaches them
    # (an interval end set by a neighbour's constraint is a legitimate optimum).
    slack = 1e-4 * support + 1e-6 * jnp.abs(f_best)
    ident = ((a > lo) | (f_a > f_best + slack)) & ((b < hi) | (f_b > f_best + slack))
    accept = active & (f_best < f_cur) & ident
    return jnp.where(accept, x_best, tau)

  tau = jax.lax.fori_loop(0, 2 * num_sweeps, half_sweep, jnp.full((p,), g, dtype))
  return boundaries, centres, tau, counts, tau != g


# ----------------------------------------------------------------------------------------------- checks


def _check_search_args(fn, log_t_bounds, num_grid, num_golden):
  try:
    lo, hi = (float(b) for b in log_t_bounds)
  except (TypeError, ValueError):
    raise ValueError(f"{fn}: log_t_bounds must be a pair (lo, hi) of floats, got {log_t_bounds!r}.") from None
  if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
    raise ValueError(f"{fn}: log_t_bounds must be finite with lo < hi, got {log_t_bounds!r}.")
  _common.check_int(fn, "num_grid", num_grid, 2)
  _common.check_int(fn, "num_golden", num_golden, 0)
  return lo, hi


def _check_fit_args(fn, logits, labels, where, link, log_t_bounds, num_grid, num_golden):
  logits, labels, valid = _common.check_inputs(fn, logits, labels, where, link)
  lo, hi = _check_search_args(fn, log_t_bounds, num_grid, num_golden)
  return logits, labels, valid, lo, hi


# ----------------------------------------------------------------------------------------------- public API


def fit_temperature(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  link: Link = jax.nn.softmax,
  where: jax.typing.ArrayLike | None = None,
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
  logits, labels, valid, lo, hi = _check_fit_args(
    "fit_temperature", logits, labels, where, link, log_t_bounds, num_grid, num_golden
  )
  log_t = _fit_global(
    logits, labels, valid, link=link, lo=lo, hi=hi, num_grid=int(num_grid), num_golden=int(num_golden)
  )
  return TemperatureParams(temperature=jnp.exp(log_t), link=link)


@functools.partial(jax.jit, static_argnames=("link", "num_bins"))
def _ece_over_grid(logits, labels, valid, temps, *, link, num_bins):
  def one(t):  # traced values: the metric's value checks are skipped, its definition is the same
    return _binned.ece(link(logits / t), labels, num_bins=num_bins, where=valid)

  return jax.lax.map(one, temps)


def fit_temperature_ece(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  link: Link = jax.nn.softmax,
  where: jax.typing.ArrayLike | None = None,
  temperatures: Optional[Sequence[float]] = None,
  num_bins: int = 15,
) -> TemperatureParams:
  """Temperature scaling by ECE over a temperature grid (the convention of Mukhoti et al. 2020's code).

      T* = the first T (in grid order) minimising ECE_M(link(z / T)) over the unmasked held-out examples

  with ECE the library's equal-width top-label ECE (``gence_jax.metrics.ece``, bins (lo, hi]) and M = ``num_bins``
  (15 in that code). The default grid is T = 0.1, 0.2, ..., 10.0 (100 values), the grid that code searches; ties
  go to the earlier grid value, as its strict-improvement loop does. Use it to compare "ECE after TS" with the
  focal-loss papers (Mukhoti et al. 2020, "Calibrating Deep Neural Networks using Focal Loss"); NLL-based TS
  (:func:`fit_temperature`) is the usual criterion (Guo et al. 2017). ECE is piecewise constant in T, so the grid is
  the whole search. jit-able.

  Returns:
    :class:`TemperatureParams`.
  """
  fn = "fit_temperature_ece"
  logits, labels, valid = _common.check_inputs(fn, logits, labels, where, link)
  temps = np.asarray(DEFAULT_ECE_TEMPERATURES if temperatures is None else temperatures, np.float64)
  if temps.ndim != 1 or temps.size == 0 or not np.all(np.isfinite(temps)) or np.any(temps <= 0):
    raise ValueError(f"{fn}: temperatures must be a non-empty 1-D sequence of finite values > 0, got {temperatures!r}.")
  _common.check_int(fn, "num_bins", num_bins, 1)
  temps = jnp.asarray(temps, logits.dtype)
  values = _ece_over_grid(logits, labels, valid, temps, link=link, num_bins=int(num_bins))
  return TemperatureParams(temperature=temps[jnp.argmin(values)], link=link)


def apply_temperature(params: TemperatureParams, logits: jax.typing.ArrayLike) -> jax.Array:
  """Calibrated logits = logits / T ([..., K] -> [..., K]); the argmax is unchanged."""
  return jnp.asarray(logits) / params.temperature


def fit_ats(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  link: Link = jax.nn.softmax,
  num_pieces: int = 4,
  min_count: int = 50,
  monotone: bool = True,
  where: jax.typing.ArrayLike | None = None,
  log_t_bounds: Tuple[float, float] = DEFAULT_LOG_T_BOUNDS,
  num_grid: int = DEFAULT_NUM_GRID,
  num_golden: int = DEFAULT_NUM_GOLDEN,
  num_sweeps: int = DEFAULT_NUM_SWEEPS,
) -> ATSParams:
  """ATS: adaptive temperature scaling over regions of confidence (our recipe; the GenCE paper's is unpublished).

  1. Global fit: T_g = :func:`fit_temperature` on all unmasked examples.
  2. Pieces: c_i = max_k link(z_i)_k, the confidence of the UNCALIBRATED model. With n unmasked examples and
     P = ``num_pieces``, boundary j (j = 1..P-1) is the ceil(j n / P)-th smallest c_i (equal-mass quantiles);
     piece j (0-based) holds c in (b_j, b_{j+1}] with b_0 = -inf, b_P = +inf (a confidence equal to a boundary is in
     the lower piece, as in the metric bins). Ties may make a piece larger or empty.

  Monotone ATS (``monotone=True``, the default):

  3. Temperature as a continuous function of confidence: knot j sits at the piece centre m_j (the
     ceil((2j+1) n / (2P))-th smallest c_i), and log T(c) is linear in x(c) = log a(c) between knots, constant
     beyond the end knots, where a(c) = log((K-1) c / (1-c)) is the logit gap at which the reference logits
     (a, 0, ..., 0) have softmax confidence c (:func:`ref_log_gap`). For the softmax link each example's x is read
     from its logits (:func:`example_log_gap`), so it keeps moving where the float32 confidence has rounded to 1.
  4. Monotonicity: log T may rise between knots by at most (x_{j+1} - x_j) / r_j (it may fall freely). Along any
     ray z = s v (s > 0) the calibrated logits are (s / T(c(s v))) v, and for the softmax dc/du (u = log s) at
     confidence c is at most c (1-c) a(c), attained on the reference ray; so d log T / du <= 1 and s / T is
     non-decreasing: the calibrated top confidence is a non-decreasing function of the raw one along every ray
     (for K = 2: of the raw confidence, full stop). r_j = 1 for ``jax.nn.softmax``; for another link r_j bounds the
     ratio of that link's dc/du on the reference ray to the softmax's over the segment (tabulated once, with 2%
     slack), which covers the reference ray; that it is the worst ray is proven for the softmax only.
  5. Fit, without gradients: minimise the summed NLL over (log T_0, ..., log T_{P-1}) subject to (4), starting from
     T_g everywhere, by red-black coordinate descent (``num_sweeps`` sweeps; knots of equal parity share no
     examples, so each half-sweep is one vectorised grid + golden-section search, each knot over its feasible
     interval; a knot's examples are those whose temperature depends on it). A knot moves only if that strictly
     lowers the NLL of its examples, and not if its optimum sits at a global search bound without beating it by
     1e-4 nats per example (not identified by the data). Knots stay at T_g for pieces with fewer than
     ``min_count`` examples and for pieces whose own examples do not identify a temperature (on the search grid,
     the piece's best NLL at its own T is not below both ends of ``log_t_bounds`` by 1e-4 nats per example: a
     piece without errors has an NLL that only falls as T -> 0). Hence NLL(ATS) <= NLL(TS) on the fitting data
     (up to float summation order).

  Piecewise-constant ATS (``monotone=False``): each piece gets its own NLL-optimal temperature, independently
  (same search), with the same fallbacks to T_g; its calibrated map jumps at the boundaries and can reorder
  examples by confidence there.

  With ``num_pieces=1`` both are exactly TS. A positive temperature never changes the argmax (for softmax and any
  order-preserving link). Fit on a held-out calibration split (never the test set); see ``docs/calibration.md``.
  jit-able.

  Returns:
    :class:`ATSParams` (``centres`` is None for the piecewise-constant variant).
  """
  fn = "fit_ats"
  logits, labels, valid, lo, hi = _check_fit_args(fn, logits, labels, where, link, log_t_bounds, num_grid, num_golden)
  _common.check_int(fn, "num_pieces", num_pieces, 1)
  _common.check_int(fn, "min_count", min_count, 0)
  _common.check_int(fn, "num_sweeps", num_sweeps, 0)
  if not isinstance(monotone, bool):
    raise TypeError(f"{fn}: monotone must be a bool, got {monotone!r}.")
  search = dict(link=link, lo=lo, hi=hi, num_grid=int(num_grid), num_golden=int(num_golden))
  g = _fit_global(logits, labels, valid, **search)  # exactly what fit_temperature computes
  conf = _top_confidence(logits, link=link)  # exactly what prediction computes (same jitted function)
  tg = jnp.exp(g)
  p = int(num_pieces)
  if not monotone or p == 1:
    b, log_t, counts, fitted = _fit_ats(logits, labels, valid, conf, g, jnp.int32(min_count), num_pieces=p, **search)
    temps = jnp.where(fitted, jnp.exp(log_t), tg)  # a fallback piece holds exactly the global temperature
    centres = None
    if monotone:  # one piece: the centre is irrelevant, T is constant
      centres = jnp.sort(jnp.where(valid, conf, jnp.inf))[jnp.maximum(jnp.sum(valid) - 1, 0) // 2][None]
  else:
    # The link's sensitivity table is built outside any trace, once per (link, K).
    k = logits.shape[-1]
    if link is not jax.nn.softmax:
      _sensitivity_table(link, k)
    b, centres, tau, counts, fitted = _fit_ats_monotone(
      logits, labels, valid, conf, g, jnp.int32(min_count), num_pieces=p, num_sweeps=int(num_sweeps), **search
    )
    temps = jnp.where(fitted, jnp.exp(tau), tg)
  return ATSParams(
    boundaries=b, temperatures=temps, global_temperature=tg, counts=counts, fitted=fitted, centres=centres, link=link
  )


def ats_pieces(params: ATSParams, logits: jax.typing.ArrayLike) -> jax.Array:
  """Piece index of each example ([..., K] -> [...] int32), from its uncalibrated confidence max_k link(z)_k."""
  logits = jnp.asarray(logits)
  conf = _top_confidence(logits, link=params.link)
  return jnp.searchsorted(params.boundaries, conf.reshape(-1), side="left").astype(jnp.int32).reshape(conf.shape)


def ats_temperatures(params: ATSParams, logits: jax.typing.ArrayLike) -> jax.Array:
  """The temperature ATS divides each example's logits by ([..., K] -> [...])."""
  logits = jnp.asarray(logits)
  if params.centres is None:
    return params.temperatures[ats_pieces(params, logits)]
  conf = _top_confidence(logits, link=params.link)
  if params.temperatures.shape[-1] == 1:
    return jnp.broadcast_to(params.temperatures[0], conf.shape)
  k = logits.shape[-1]
  xk = ref_log_gap(params.centres.astype(conf.dtype), k)
  j, w = _knot_weights(example_log_gap(logits, params.link).reshape(-1), xk)
  return _interp_temperature(j, w, params.temperatures).reshape(conf.shape)


def apply_ats(params: ATSParams, logits: jax.typing.ArrayLike) -> jax.Array:
  """Calibrated logits = logits / T(c), T from the uncalibrated confidence c ([..., K] -> [..., K])."""
  logits = jnp.asarray(logits)
  return logits / ats_temperatures(params, logits)[..., None]
