r"""Minimax Generalized Cross-Entropy (MGCE).

Bondugula, Mazuelas, Perez & Liu, "Minimax Generalized Cross-Entropy", AISTATS 2026.

For logits :math:`z \in \mathbb{R}^K` and :math:`\beta \ge 1`, :math:`\nu(z)` is the unique root of

.. math::
   F(\nu) = \sum_c \big[(z_c + \nu)/\beta + 1\big]_+^{\beta} - 1 = 0,
   \qquad b - \max_c z_c \le \nu \le b - \min_c z_c, \quad b = \beta\big((1/K)^{1/\beta} - 1\big)

and, with :math:`\psi = [(z + \nu)/\beta + 1]_+`,

* loss :math:`\ell(z, y) = -z_y - \nu(z)` (convex in :math:`z`);
* gradient (implicit differentiation, the paper's Theorem 3) :math:`\partial\ell/\partial z = w - e_y`,
  :math:`w_c = \psi_c^{\beta-1} / \sum_k \psi_k^{\beta-1}`, the worst-case distribution;
* probabilities (the link that replaces softmax) :math:`h_c = \psi_c^{\beta}` (they sum to 1 at the root).

:math:`\beta = 1` is a 0-1-like loss with a sparse link (sparsemax), solved exactly through its support;
:math:`\beta \to \infty` tends to cross-entropy (:math:`\psi^\beta \to e^{z+\nu}`, :math:`\nu \to -\log\sum e^{z}`).
The link is the alpha-entmax family with :math:`\alpha = 1 + 1/\beta` (Peters, Niculae & Martins 2019, "Sparse
Sequence-to-Sequence Models"; sparsemax: Martins & Astudillo 2016).

Numerics. Everything is computed on shifted logits :math:`x = z - \max_c z_c` (so :math:`\max x = 0`) for the
shifted root :math:`t = \nu + \max z \in [b, 0]`, a bracket whose width does not depend on the logits' scale; the
loss is :math:`-x_y - t`, which keeps float32 accurate for logits up to :math:`\pm 10^4`. The root of
:math:`N(t) = \lVert\psi(t)\rVert_\beta - 1`, convex and increasing in :math:`t`, is approached from :math:`t = 0`,
the upper end of the bracket, by one of two iterations, each pass over a row giving its row sums:

* cheap powers (:math:`\beta \in \{1, 1.5, 2, 2.5, 3\}`, where :math:`\psi^\beta` is a few multiplications and the
  row sums are what costs): one Newton step, then secant steps, one row sum each, which for a convex function stay
  right of the root (no overshoot); then one pass for :math:`S_1 = \sum_c \psi_c^{\beta-1}` at the root.
  :math:`\beta = 1` (piecewise-linear :math:`N`) takes the exact sort-based rule for any row not settled within
  ``max_iter``;
* any other :math:`\beta` (where the power is the cost): Newton steps, or Halley's for :math:`2 \le \beta \le 16`
  (with :math:`S_2 = \sum_c \psi_c^{\beta-2}`; cubic convergence, the step at most 4/3 of Newton's), all sums from one
  power per logit; the pass whose step falls to ``tol`` also gives :math:`S_1` there, so there is no extra pass, and the
  returned root is that point moved by that last step.

Iterates are clipped to the bracket, the loops are ``lax.while_loop`` with a tolerance and an iteration cap (no host
sync), and rows with NaN/Inf logits stop at once and give NaN. Powers :math:`\psi^p` are multiplications for
(half-)integer :math:`p \le 64`, otherwise (float32) ``exp2(p log2 psi)`` from the float's exponent bits and
polynomials, as accurate as XLA's ``exp``/``log`` and cheaper, or (float64) ``exp(p log psi)``. Row sums are
matrix-vector products with ones. On a CPU the rows are solved in cache-sized blocks
(`gence_jax.losses._common.map_row_blocks`). The gradient never differentiates through the loops: :math:`\nu`
carries a ``jax.custom_vjp`` whose backward pass is :math:`\partial \nu / \partial z = -w`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from gence_jax.checks import check_class_logits, check_hparam
from gence_jax.losses._common import check_logits_labels, finalize, map_row_blocks, take_label

DEFAULT_BETA = 2.0
DEFAULT_MAX_ITER = 50


def _check_beta(beta, fn):
  if isinstance(beta, jax.core.Tracer):
    raise TypeError(f"{fn}: `beta` must be a Python float (it selects the algorithm), got a traced value.")
  check_hparam(fn, "beta", beta, low=1.0)
  if not math.isfinite(beta):
    raise ValueError(f"{fn}: `beta` must be finite; its limit beta -> inf is cross-entropy (use cross_entropy), got {beta!r}.")
  return float(beta)


def _default_tol(dtype):
  return 1e-12 if dtype == jnp.float64 else 1e-5


def _bracket_low(beta, num_classes, dtype):
  """b = beta ((1/K)^(1/beta) - 1), the lower end of the shifted bracket [b, 0]."""
  return jnp.asarray(beta * jnp.expm1(-jnp.log(float(num_classes)) / beta), dtype)


_FAST_POW_MAX = 64  # exponents that are (half-)integers up to this are computed by multiplications
_LOG1P_BETA = 64.0  # above this beta, psi^p is computed as exp(p log1p(v)) for accuracy near cross-entropy
_HALLEY_MAX_BETA = 16.0  # Halley steps for 2 <= beta <= 16; above, Newton's take as many passes with one row sum less
_SECANT_MAX_BETA = 3.0  # up to here psi^beta costs at most a few multiplications: secant steps, one row sum each


def _int_pow(v, n):
  """v**n for a Python int n >= 1 by repeated squaring (a handful of multiplications, no transcendentals)."""
  result, base = None, v
  while True:
    if n & 1:
      result = base if result is None else result * base
    n >>= 1
    if not n:
      return result
    base = base * base


# Polynomial fits (Chebyshev least squares, float64, computed for this module): log2(1+r)/r on
# r in [sqrt(1/2) - 1, sqrt(2) - 1] (error of r * P(r): 3.5e-8 at degree 8, 1.3e-6 at degree 6) and 2^f on
# f in [-1/2, 1/2] (relative error 6.2e-9 at degree 6, 2.3e-7 at degree 5). Exponents p <= 2 take the lower degrees:
# psi^p is then within p ln2 1.3e-6 + 2.3e-7 (<= 2.1e-6) relative, far inside what the root and w need, for ~10% less
# time per pass.
_LOG2_COEFFS_LOW = (
  1.442696047065108, -0.7213581312525552, 0.48067618030930387, -0.3596567208034481, 0.2951093326699293,
  -0.2662614156752378, 0.17001335412442725,
)
_EXP2_COEFFS_LOW = (
  1.0000000522792039, 0.6931472000632655, 0.24022211728269743, 0.05550340679340673, 0.009670763656200636,
  0.0013395280418240572,
)
_LOG2_COEFFS = (
  1.442695014839767, -0.7213474398355932, 0.4809079378410614, -0.3606933098140575, 0.28800520316296874,
  -0.23924569898552628, 0.21508739257172832, -0.20480544930058361, 0.12453901962210984,
)
_EXP2_COEFFS = (
  0.9999999999718393, 0.6931472000632645, 0.24022651101334147, 0.0555034067934088, 0.009618039943140989,
  0.0013395280418424318, 0.00015465313166251388,
)


def _horner(coeffs, x):
  out = coeffs[-1]
  for c in coeffs[-2::-1]:
    out = out * x + c
  return out


def _log2_f32(p, coeffs=_LOG2_COEFFS):
  """log2(p) for normal float32 p > 0: the exponent from the bits, plus log2 of the mantissa m reduced to
  [sqrt(1/2), sqrt(2)) by a polynomial in r = m - 1 (no division, no transcendental)."""
  bits = jax.lax.bitcast_convert_type(p, jnp.int32)
  mant = jax.lax.bitcast_convert_type((bits & 0x007FFFFF) | 0x3F800000, jnp.float32)  # in [1, 2)
  big = mant > 1.4142135
  mant = jnp.where(big, 0.5 * mant, mant)
  expo = ((bits >> 23) - 127 + big.astype(jnp.int32)).astype(jnp.float32)
  r = mant - 1.0
  return expo + r * _horner(coeffs, r)


def _exp2_f32(y, coeffs=_EXP2_COEFFS):
  """2^y for float32 y <= 0 (0 below -126): 2^round(y) from the exponent bits times a polynomial in the rest."""
  yc = jnp.maximum(y, -126.0)
  n = jnp.round(yc)
  scale = jax.lax.bitcast_convert_type((n.astype(jnp.int32) + 127) << 23, jnp.float32)
  return jnp.where(y < -126.0, 0.0, _horner(coeffs, yc - n) * scale)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _pow_f32(psi, p):
  """psi^p = exp2(p log2 psi) for float32 psi > 0 by `_log2_f32` and `_exp2_f32`; its derivative p psi^p / psi is
  given explicitly (the bit manipulations have none)."""
  if p <= 2.0:
    return _exp2_f32(p * _log2_f32(psi, _LOG2_COEFFS_LOW), _EXP2_COEFFS_LOW)
  return _exp2_f32(p * _log2_f32(psi))


@_pow_f32.defjvp
def _pow_f32_jvp(p, primals, tangents):
  (psi,), (dpsi,) = primals, tangents
  out = _pow_f32(psi, p)
  return out, p * out / psi * dpsi


def _cheap_pow(p):
  """Whether psi^p is multiplications (and one sqrt): p an integer or half-integer in [0, `_FAST_POW_MAX`]."""
  whole, half = divmod(2.0 * p, 2.0)
  return p >= 0.0 and half in (0.0, 1.0) and whole + half / 2 <= _FAST_POW_MAX


def _pow_support(lin, p):
  """psi^p for psi = max(lin, 0), a static p >= 0, and 0 where lin <= 0 (a zero, not NaN, derivative there).

  The cheapest exact form is chosen from p: 0 is the support indicator; integers and half-integers up to 64 are
  multiplications (and one sqrt); any other p is exp2(p log2 psi) with the float32 bit-level `_log2_f32` and
  `_exp2_f32` (float32 inputs; about three times cheaper than XLA's exp and log, as accurate in float32), or
  ``exp(p log psi)`` in float64.
  """
  pos = lin > 0.0
  if p == 0.0:
    return pos.astype(lin.dtype)
  psi = jnp.maximum(lin, 0.0)
  if _cheap_pow(p):
    whole, half = divmod(2.0 * p, 2.0)
    out = _int_pow(psi, int(whole)) if whole >= 1 else None
    if half:
      root = jnp.where(pos, jnp.sqrt(jnp.where(pos, psi, 1.0)), 0.0)  # no infinite derivative at psi = 0
      out = root if out is None else out * root
    return out
  safe = jnp.where(pos, lin, 1.0)
  if lin.dtype == jnp.float32:
    return jnp.where(pos, _pow_f32(safe, p), 0.0)
  return jnp.where(pos, jnp.exp(p * jnp.log(safe)), 0.0)


def _psi_pow(x, t, beta, p):
  """psi^p for psi = relu(1 + (x + t)/beta) and a static exponent p >= 0 (p = 0: the support indicator).

  Very large beta (above 64) as exp(p log1p(v)), v = (x + t)/beta (accurate in the cross-entropy limit); otherwise
  from psi = x/beta + (1 + t/beta), one multiply-add per logit, by `_pow_support`.
  """
  if beta > _LOG1P_BETA:
    v = (x + t[..., None]) / beta
    pos = v > -1.0
    if p == 0.0:
      return pos.astype(x.dtype)
    return jnp.where(pos, jnp.exp(p * jnp.log1p(jnp.where(pos, v, 0.0))), 0.0)
  inv_beta = 1.0 / beta
  return _pow_support(x * inv_beta + (1.0 + t * inv_beta)[..., None], p)


def _row_sum(a):
  """sum over the last axis as a matrix-vector product with ones: on a CPU the operand of a reduction is written out
  and reduced by a separate kernel anyway, and the product reads it faster (measured: one pass of the root finder
  ~25% faster than with jnp.sum). Full float32 (float64) precision on every backend."""
  return jnp.dot(a, jnp.ones(a.shape[-1], a.dtype), precision=jax.lax.Precision.HIGHEST)


def _moments(x, t, beta, curvature):
  """Row sums at t: S0 = sum psi^beta, S1 = sum psi^(beta-1) = dS0/dt and, if `curvature`, S2 = sum psi^(beta-2)
  (dS1/dt = (beta-1)/beta S2). One power per logit: psi^(beta-2) (or psi^(beta-1)), the others by multiplying."""
  if beta == 1.0:
    lin = x + (1.0 + t)[..., None]
    return _row_sum(jnp.maximum(lin, 0.0)), _row_sum((lin > 0.0).astype(x.dtype)), None
  if beta > _LOG1P_BETA:
    p1 = _psi_pow(x, t, beta, beta - 1.0)
    p0 = _psi_pow(x, t, beta, beta)
    return _row_sum(p0), _row_sum(p1), None
  inv_beta = 1.0 / beta
  lin = x * inv_beta + (1.0 + t * inv_beta)[..., None]
  psi = jnp.maximum(lin, 0.0)
  if curvature:
    p2 = _pow_support(lin, beta - 2.0)
    p1 = p2 * psi
    return _row_sum(p1 * psi), _row_sum(p1), _row_sum(p2)
  p1 = _pow_support(lin, beta - 1.0)
  return _row_sum(p1 * psi), _row_sum(p1), None


def _step(s0, s1, s2, beta):
  """The step t -> t - step towards the root of N(t) = S0(t)^(1/beta) - 1 (convex and increasing in t).

  beta = 1: Newton on S0 - 1, exact once the support is right. Otherwise Newton, N/N' = beta S0 (1 - S0^(-1/beta))
  / S1, and with the curvature S2 (beta >= 2) Halley's correction 1/(1 - L/2), L = N N''/N'^2 with
  N''/N' = (beta-1)/beta (S2/S1 - S1/S0) >= 0 (Cauchy-Schwarz), capped at L = 1/2 (a step at most 4/3 of Newton's).
  """
  if beta == 1.0:
    return (s0 - 1.0) / s1
  newton = beta * s0 * (-jnp.expm1(-jnp.log(s0) / beta)) / s1
  if s2 is None:
    return newton
  lam = newton * ((beta - 1.0) / beta) * (s2 / s1 - s1 / s0)
  return newton / (1.0 - 0.5 * jnp.clip(lam, 0.0, 0.5))


def _solve_newton(x, beta, tol, max_iter, t0, finite=None):
  """Shifted root t in [b, 0] for each row of x ([N, K], max of each row 0), from the start t0.

  Each evaluation is one pass over the row (`_moments`: one power per logit) that gives the step of `_step`;
  a row is done when its step falls to `tol`. Returns the last evaluation point t_e (where S1 was computed, and
  with it the worst-case distribution), that point moved by its last step (the root: its error is far below `tol`
  after a Newton or Halley step of that size), S1 at t_e, the done mask and the number of evaluations made (the
  slowest row's). At most `max_iter` evaluations (`lax.while_loop`, no host sync); rows whose `finite` is False stop
  at once and give NaN.
  """
  low = _bracket_low(beta, x.shape[-1], x.dtype)
  if finite is None:
    finite = jnp.all(jnp.isfinite(x), axis=-1)
  curvature = 2.0 <= beta <= _HALLEY_MAX_BETA

  def evaluate(t):
    s0, s1, s2 = _moments(x, t, beta, curvature)
    return _step(s0, s1, s2, beta), s1

  step, s1 = evaluate(t0)
  done = ~finite | ~(jnp.abs(step) > tol)

  def body(state):
    it, t, step, s1, done = state
    t_new = jnp.where(done, t, jnp.clip(t - step, low, 0.0))
    step_new, s1_new = evaluate(t_new)
    step, s1 = jnp.where(done, step, step_new), jnp.where(done, s1, s1_new)
    return it + 1, t_new, step, s1, done | ~(jnp.abs(step) > tol)

  def cond(state):
    return (state[0] < max_iter) & ~jnp.all(state[-1])

  evaluations, t, step, s1, done = jax.lax.while_loop(cond, body, (jnp.asarray(1), t0, step, s1, done))
  root = jnp.where(finite, jnp.clip(t - step, low, 0.0), jnp.nan)
  return t, root, s1, done, evaluations


def _norm_minus_one(total, beta):
  """N = T^(1/beta) - 1 for T = sum psi^beta (computed with expm1: accurate near the root, where T ~ 1)."""
  return jnp.expm1(jnp.log(total) / beta)


def _solve_secant(x, beta, tol, max_iter):
  """Shifted root for cheap powers (beta in {1, 1.5, 2, 2.5, 3}): a Newton step from t = 0, then secant steps.

  For a convex N a secant through two points right of the root meets zero right of the root again, so the iterates
  decrease monotonically (no overshoot) with order ~1.6; each step needs one row sum, T = sum psi^beta, where a
  Newton step needs two: when psi^beta is a few multiplications, the row sums are what costs, and secant steps
  cost least per digit. Stops when the step falls to `tol` or after `max_iter` steps; rows with NaN/Inf logits stop
  at once and give NaN. Returns the root and the done mask.
  """
  low = _bracket_low(beta, x.shape[-1], x.dtype)
  finite = jnp.all(jnp.isfinite(x), axis=-1)
  t0 = jnp.zeros(x.shape[:-1], x.dtype)
  s0, s1, _ = _moments(x, t0, beta, False)  # S0(0) >= 1: the largest class has psi = 1
  step = _step(s0, s1, None, beta)
  t1 = jnp.clip(t0 - step, low, 0.0)

  def body(state):
    it, t_a, n_a, t_b, done = state
    n_b = _norm_minus_one(_row_sum(_psi_pow(x, t_b, beta, beta)), beta)
    drop = n_a - n_b  # > 0 while the iterates decrease towards the root
    step = jnp.where(drop > 0, n_b * (t_a - t_b) / jnp.where(drop > 0, drop, 1.0), 0.0)
    t_new = jnp.clip(t_b - step, low, 0.0)
    keep = done
    done = done | ~(jnp.abs(step) > tol)
    return it + 1, jnp.where(keep, t_a, t_b), jnp.where(keep, n_a, n_b), jnp.where(keep, t_b, t_new), done

  def cond(state):
    return (state[0] < max_iter) & ~jnp.all(state[-1])

  done = ~finite | ~(jnp.abs(step) > tol)
  state = (jnp.asarray(1), t0, _norm_minus_one(s0, beta), t1, done)
  _, _, _, t, done = jax.lax.while_loop(cond, body, state)
  return jnp.where(finite, t, jnp.nan), done


def _solve_sparsemax_sort(x):
  """Exact shifted root for beta = 1 by sorting (Martins & Astudillo 2016): the support is the k* largest logits,
  k* = max{k : 1 + k x_(k) > sum_{j<=k} x_(j)}."""
  k = x.shape[-1]
  xs = -jnp.sort(-x, axis=-1)
  cums = jnp.cumsum(xs, axis=-1)
  ranks = jnp.arange(1, k + 1, dtype=x.dtype)
  k_star = jnp.sum(1.0 + ranks * xs > cums, axis=-1)
  sum_support = jnp.take_along_axis(cums, (k_star - 1)[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return (1.0 - sum_support) / k_star.astype(x.dtype) - 1.0


def _worst_case(x, t, beta, total=None):
  """w = psi^(beta-1) / sum psi^(beta-1) (uniform on the support when beta = 1); `total` is that sum if known."""
  psi_beta_m1 = _psi_pow(x, t, beta, beta - 1.0)
  if total is None:
    total = jnp.sum(psi_beta_m1, axis=-1)
  return psi_beta_m1 / total[..., None]


def _shift(z):
  """max_c z_c per row (0 for rows without a finite max, which then stay NaN/Inf): the logits are solved shifted."""
  shift = jnp.max(z, axis=-1)
  return jnp.where(jnp.isfinite(shift), shift, 0.0)


def _solve_rows(z, beta, tol, max_iter):
  """Per row of z [n, K]: the shift m = max z, the root t = nu + m of the shifted logits, the point t_e where
  S1 = sum_c psi_c^(beta-1) (the worst-case distribution's normaliser) was computed, and S1.

  Cheap powers (beta <= 3 with psi^beta a few multiplications) take secant steps and one more pass for S1 at the
  root; other beta take Newton/Halley passes, the last of which gives S1 (`_solve_newton`). beta = 1 rows not
  settled within ``max_iter`` take the exact sort-based rule (rare).
  """
  shift = _shift(z)
  x = z - shift[:, None]
  if beta <= _SECANT_MAX_BETA and _cheap_pow(beta):
    t, done = _solve_secant(x, beta, tol, max_iter)
    if beta == 1.0:
      t = jax.lax.cond(jnp.all(done), lambda: t, lambda: jnp.where(done, t, _solve_sparsemax_sort(x)))
    return shift, t, t, _row_sum(_psi_pow(x, t, beta, beta - 1.0))
  t_e, t, s1, _, _ = _solve_newton(x, beta, tol, max_iter, jnp.zeros(z.shape[:-1], z.dtype))
  return shift, t, t_e, s1


def _root_fwd(z, beta, tol, max_iter):
  (shift, t, t_e, s1), _ = map_row_blocks(lambda zb: (_solve_rows(zb, beta, tol, max_iter), ()), z)
  return (t, shift), (z, shift, t_e, s1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _root(z, beta, tol, max_iter):
  """(t, m) for logits z [N, K]: nu(z) = t - m with m = max z. The derivative is carried by t alone:
  dt/dz = -w (the implicit function theorem, the paper's Theorem 3); m is treated as a constant, so that
  nu = t - m and the loss -(z_y - m) - t get their exact gradients -w and w - e_y."""
  return _root_fwd(z, beta, tol, max_iter)[0]


def _root_bwd(beta, tol, max_iter, res, g):
  del tol, max_iter
  z, shift, t_e, total = res  # w is recomputed from z rather than stored: one [N, K] array less to write and read
  return (-g[0][:, None] * _worst_case(z - shift[:, None], t_e, beta, total),)


_root.defvjp(_root_fwd, _root_bwd)


def _prepare(logits, beta, tol, max_iter, fn):
  """Shifted logits x = z - max z and the shifted root t = nu + max z, of shapes [..., K] and [...]."""
  beta = _check_beta(beta, fn)
  if tol is None:
    tol = _default_tol(logits.dtype)
  check_hparam(fn, "tol", tol, low=0.0, low_inclusive=False)
  if not isinstance(max_iter, int) or max_iter < 1:
    raise ValueError(f"{fn}: `max_iter` must be a positive int, got {max_iter!r}.")
  batch_shape, num_classes = logits.shape[:-1], logits.shape[-1]
  t, shift = _root(logits.reshape(-1, num_classes), beta, float(tol), max_iter)
  t, shift = t.reshape(batch_shape), jax.lax.stop_gradient(shift.reshape(batch_shape))
  return beta, logits - shift[..., None], t, shift


def _check_logits(logits, fn):
  logits = check_class_logits(fn, logits)
  return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


def mgce_nu(
  logits: jax.typing.ArrayLike,
  *,
  beta: float = DEFAULT_BETA,
  tol: float | None = None,
  max_iter: int = DEFAULT_MAX_ITER,
) -> jax.Array:
  r"""The MGCE normaliser :math:`\nu(z)`: the root of :math:`\sum_c [(z_c+\nu)/\beta + 1]_+^\beta = 1`.

  Differentiable by implicit differentiation: :math:`\partial\nu/\partial z = -w`. Shape ``logits.shape[:-1]``.
  ``tol`` is the step size at which the root finder stops (default 1e-5 in float32, 1e-12 in float64; the error
  after the last step is far smaller), ``max_iter`` caps the ``lax.while_loop``.
  """
  logits = _check_logits(logits, "mgce_nu")
  _, _, t, shift = _prepare(logits, beta, tol, max_iter, "mgce_nu")
  return t - shift


def mgce(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  beta: float = DEFAULT_BETA,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
  tol: float | None = None,
  max_iter: int = DEFAULT_MAX_ITER,
) -> jax.Array:
  r"""Minimax Generalized Cross-Entropy, one value per example.

  .. math:: \ell(z, y) = -z_y - \nu(z), \qquad \partial \ell / \partial z = w - e_y

  Bondugula, Mazuelas, Perez & Liu, "Minimax Generalized Cross-Entropy", AISTATS 2026. Convex in the logits for
  every ``beta >= 1``; ``beta = 1`` is the (sparse) 0-1-like case, ``beta -> inf`` tends to cross-entropy; the
  generalized-CE parameter q corresponds to ``beta = 1/q``. Training adds ``lambda * ||params||_1``
  (`mgce_l1_penalty`). Probabilities for metrics come from `mgce_probs`, never from softmax.

  ``axis_name`` is accepted for a uniform signature; MGCE does not couple examples. Out-of-range labels give NaN,
  rows with NaN/Inf logits give NaN (the root finder stops at once on them), ``where=False`` rows give 0.
  """
  logits, labels, where = check_logits_labels(logits, labels, where, fn="mgce")
  del axis_name
  _, x, t, _ = _prepare(logits, beta, tol, max_iter, "mgce")
  loss = -take_label(x, labels) - t
  return finalize(loss, labels, logits.shape[-1], where)


def mgce_probs(
  logits: jax.typing.ArrayLike,
  *,
  beta: float = DEFAULT_BETA,
  tol: float | None = None,
  max_iter: int = DEFAULT_MAX_ITER,
) -> jax.Array:
  r"""The MGCE probability link :math:`h_c = \psi_c^\beta / \sum_k \psi_k^\beta`, :math:`\psi = [(z+\nu)/\beta+1]_+`.

  At the exact root the sum is 1; dividing by it removes the root finder's residual. Sparse for small beta
  (``beta = 1`` is sparsemax), softmax in the limit ``beta -> inf``. Differentiable (through the implicit
  gradient of :math:`\nu`).
  """
  logits = _check_logits(logits, "mgce_probs")
  beta, x, t, _ = _prepare(logits, beta, tol, max_iter, "mgce_probs")
  h = _psi_pow(x, t, beta, beta)
  return h / jnp.sum(h, axis=-1, keepdims=True)


def mgce_worst_case(
  logits: jax.typing.ArrayLike,
  *,
  beta: float = DEFAULT_BETA,
  tol: float | None = None,
  max_iter: int = DEFAULT_MAX_ITER,
) -> jax.Array:
  r"""The worst-case distribution :math:`w_c = \psi_c^{\beta-1}/\sum_k\psi_k^{\beta-1}` (so that
  :math:`\nabla_z \ell = w - e_y`). Not differentiable (it is a gradient already)."""
  logits = jax.lax.stop_gradient(_check_logits(logits, "mgce_worst_case"))
  beta, x, t, _ = _prepare(logits, beta, tol, max_iter, "mgce_worst_case")
  return _worst_case(x, t, beta)


def mgce_l1_penalty(params: Any, lam: float = 1e-5) -> jax.Array:
  r"""The uncertainty-set term of the MGCE training objective: :math:`\lambda \lVert\theta\rVert_1` over every leaf.

  Its gradient is the subgradient :math:`\lambda\,\mathrm{sign}(\theta)` (0 at 0).

  ``lam`` is the uncertainty-set radius (MRCpy's default 1e-5). Bondugula et al., AISTATS 2026.
  """
  check_hparam("mgce_l1_penalty", "lam", lam, low=0.0)
  # |theta| written as theta * sign(theta) with the sign held constant: the subgradient is sign(theta), 0 at 0.
  leaves = jax.tree_util.tree_leaves(params)
  return lam * sum(jnp.sum(leaf * jax.lax.stop_gradient(jnp.sign(leaf))) for leaf in leaves)
