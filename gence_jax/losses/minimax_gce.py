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
:math:`N(t) = \lVert\psi(t)\rVert_\beta - 1`, convex and increasing in :math:`t`, is approached from the upper end
of the bracket by one Newton step and then secant steps, which for a convex function stay right of the root (the
iterates decrease monotonically, no overshoot) and need one row sum each. :math:`\beta = 1` (piecewise-linear
:math:`N`) uses the same iteration, with the exact sort-based rule for any row not settled within ``max_iter``.
Iterates are clipped to the bracket, the loop is a ``lax.while_loop`` with a tolerance and an iteration cap (no host
sync), and rows with NaN/Inf logits stop at once and give NaN. Powers :math:`\psi^p` are multiplications for
(half-)integer :math:`p`, ``exp(p log psi)`` otherwise. On a CPU the rows are solved in cache-sized blocks
(`gence_jax.losses._common.map_row_blocks`). The gradient never differentiates through the loop: :math:`\nu`
carries a ``jax.custom_vjp`` whose backward pass is :math:`\partial \nu / \partial z = -w`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from gence_jax.losses._common import check_hparam, check_logits_labels, finalize, map_row_blocks, take_label

DEFAULT_BETA = 2.0
DEFAULT_MAX_ITER = 50


def _check_beta(beta, fn):
  if isinstance(beta, jax.core.Tracer):
    raise TypeError(f"{fn}: `beta` must be a Python float (it selects the algorithm), got a traced value.")
  check_hparam(fn, "beta", beta, low=1.0)
  return float(beta)


def _default_tol(dtype):
  return 1e-12 if dtype == jnp.float64 else 1e-5


def _bracket_low(beta, num_classes, dtype):
  """b = beta ((1/K)^(1/beta) - 1), the lower end of the shifted bracket [b, 0]."""
  return jnp.asarray(beta * jnp.expm1(-jnp.log(float(num_classes)) / beta), dtype)


_FAST_POW_MAX = 32  # exponents that are (half-)integers up to this are computed by multiplications
_LOG1P_BETA = 64.0  # above this beta, psi^p is computed as exp(p log1p(v)) for accuracy near cross-entropy


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


def _psi_pow(x, t, beta, p):
  """psi^p for psi = relu(1 + (x + t)/beta) and a static exponent p in {beta, beta - 1} (p = 0: the indicator).

  The cheapest exact form is chosen from p: integers and half-integers up to 32 by multiplications (and one sqrt),
  very large beta as exp(p log1p(v)) (accurate in the cross-entropy limit), anything else as exp(p log psi).
  Zeros of psi give 0 with a zero (not NaN) derivative.
  """
  if beta > _LOG1P_BETA:
    v = (x + t[..., None]) / beta
    pos = v > -1.0
    if p == 0.0:
      return pos.astype(x.dtype)
    return jnp.where(pos, jnp.exp(p * jnp.log1p(jnp.where(pos, v, 0.0))), 0.0)
  inv_beta = 1.0 / beta
  lin = x * inv_beta + (1.0 + t * inv_beta)[..., None]  # one multiply-add per logit: no division
  if p == 0.0:
    return (lin > 0.0).astype(x.dtype)
  psi = jnp.maximum(lin, 0.0)
  whole, half = divmod(2.0 * p, 2.0)
  if half in (0.0, 1.0) and whole + half / 2 <= _FAST_POW_MAX:
    out = _int_pow(psi, int(whole)) if whole >= 1 else None
    if half:
      pos = lin > 0.0
      root = jnp.where(pos, jnp.sqrt(jnp.where(pos, psi, 1.0)), 0.0)
      out = root if out is None else out * root
    return out
  pos = lin > 0.0
  return jnp.where(pos, jnp.exp(p * jnp.log(jnp.where(pos, psi, 1.0))), 0.0)


def _norm_minus_one(total, beta):
  """N = T^(1/beta) - 1 for T = sum psi^beta (computed with expm1: accurate near the root, where T ~ 1)."""
  return jnp.expm1(jnp.log(total) / beta)


def _solve_secant(x, beta, tol, max_iter):
  """Shifted root t in [b, 0] for each row of x ([N, K], max of each row 0).

  The root of N(t) = ||psi(t)||_beta - 1, convex and increasing in t, approached from the right, where N >= 0:
  one Newton step from t = 0, then secant steps through the last two iterates. For a convex function a secant
  through two points right of the root meets zero right of the root again, so the iterates decrease monotonically
  (no overshoot, no bracketing needed) with order ~1.6; each secant step needs one row sum, T = sum psi^beta,
  where a Newton step needs two. Stops when the step falls to `tol` (the error after it is far smaller) or after
  `max_iter` steps; rows with NaN/Inf logits stop at once and give NaN.
  """
  low = _bracket_low(beta, x.shape[-1], x.dtype)
  finite = jnp.all(jnp.isfinite(x), axis=-1)

  t0 = jnp.zeros(x.shape[:-1], x.dtype)
  psi_m1 = _psi_pow(x, t0, beta, beta - 1.0)
  total = jnp.sum(psi_m1 * _psi_pow(x, t0, beta, 1.0), axis=-1)  # T(0) >= 1: the largest class has psi = 1
  slope = jnp.sum(psi_m1, axis=-1)  # dT/dt
  n0 = _norm_minus_one(total, beta)
  step = beta * total * (-jnp.expm1(-jnp.log(total) / beta)) / slope  # Newton on N: N / N'
  t1 = jnp.clip(t0 - step, low, 0.0)

  def body(state):
    it, t_a, n_a, t_b, done = state
    n_b = _norm_minus_one(jnp.sum(_psi_pow(x, t_b, beta, beta), axis=-1), beta)
    drop = n_a - n_b  # > 0 while the iterates decrease towards the root
    step = jnp.where(drop > 0, n_b * (t_a - t_b) / jnp.where(drop > 0, drop, 1.0), 0.0)
    t_new = jnp.clip(t_b - step, low, 0.0)
    keep = done
    done = done | ~(jnp.abs(step) > tol)
    return it + 1, jnp.where(keep, t_a, t_b), jnp.where(keep, n_a, n_b), jnp.where(keep, t_b, t_new), done

  def cond(state):
    return (state[0] < max_iter) & ~jnp.all(state[-1])

  done = ~finite | ~(jnp.abs(step) > tol)
  _, _, _, t, done = jax.lax.while_loop(cond, body, (jnp.asarray(1), t0, n0, t1, done))
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


def _solve(x, beta, tol, max_iter):
  t, done = _solve_secant(x, beta, tol, max_iter)
  if beta == 1.0:  # rows not settled within max_iter (rare): the exact sort-based rule
    t = jax.lax.cond(jnp.all(done), lambda: t, lambda: jnp.where(done, t, _solve_sparsemax_sort(x)))
  return t


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
  """Per row of z [n, K]: the shift m = max z, the shifted root t = nu + m, and sum_c psi_c^(beta-1) at the root."""
  shift = _shift(z)
  x = z - shift[:, None]
  t = _solve(x, beta, tol, max_iter)
  return shift, t, jnp.sum(_psi_pow(x, t, beta, beta - 1.0), axis=-1)


def _root_fwd(z, beta, tol, max_iter):
  (shift, t, total), _ = map_row_blocks(lambda zb: (_solve_rows(zb, beta, tol, max_iter), ()), z)
  return (t, shift), (z, shift, t, total)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _root(z, beta, tol, max_iter):
  """(t, m) for logits z [N, K]: nu(z) = t - m with m = max z. The derivative is carried by t alone:
  dt/dz = -w (the implicit function theorem, the paper's Theorem 3); m is treated as a constant, so that
  nu = t - m and the loss -(z_y - m) - t get their exact gradients -w and w - e_y."""
  return _root_fwd(z, beta, tol, max_iter)[0]


def _root_bwd(beta, tol, max_iter, res, g):
  del tol, max_iter
  z, shift, t, total = res  # w is recomputed from z rather than stored: one [N, K] array less to write and read
  return (-g[0][:, None] * _worst_case(z - shift[:, None], t, beta, total),)


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
  logits = jnp.asarray(logits)
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise TypeError(f"{fn}: `logits` must be a floating-point array, got dtype {logits.dtype}.")
  if logits.ndim < 1 or logits.shape[-1] < 2:
    raise ValueError(f"{fn}: `logits` must have shape [..., num_classes] with num_classes >= 2, got {logits.shape}.")
  return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


def mgce_nu(logits, *, beta: float = DEFAULT_BETA, tol: float | None = None, max_iter: int = DEFAULT_MAX_ITER):
  r"""The MGCE normaliser :math:`\nu(z)`: the root of :math:`\sum_c [(z_c+\nu)/\beta + 1]_+^\beta = 1`.

  Differentiable by implicit differentiation: :math:`\partial\nu/\partial z = -w`. Shape ``logits.shape[:-1]``.
  ``tol`` is the step size at which the root finder stops (default 1e-5 in float32, 1e-12 in float64; the error
  after the last step is far smaller), ``max_iter`` caps the ``lax.while_loop``.
  """
  logits = _check_logits(logits, "mgce_nu")
  _, _, t, shift = _prepare(logits, beta, tol, max_iter, "mgce_nu")
  return t - shift


def mgce(
  logits,
  labels,
  *,
  beta: float = DEFAULT_BETA,
  where=None,
  axis_name=None,
  tol: float | None = None,
  max_iter: int = DEFAULT_MAX_ITER,
):
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


def mgce_probs(logits, *, beta: float = DEFAULT_BETA, tol: float | None = None, max_iter: int = DEFAULT_MAX_ITER):
  r"""The MGCE probability link :math:`h_c = \psi_c^\beta / \sum_k \psi_k^\beta`, :math:`\psi = [(z+\nu)/\beta+1]_+`.

  At the exact root the sum is 1; dividing by it removes the root finder's residual. Sparse for small beta
  (``beta = 1`` is sparsemax), softmax in the limit ``beta -> inf``. Differentiable (through the implicit
  gradient of :math:`\nu`).
  """
  logits = _check_logits(logits, "mgce_probs")
  beta, x, t, _ = _prepare(logits, beta, tol, max_iter, "mgce_probs")
  h = _psi_pow(x, t, beta, beta)
  return h / jnp.sum(h, axis=-1, keepdims=True)


def mgce_worst_case(logits, *, beta: float = DEFAULT_BETA, tol: float | None = None, max_iter: int = DEFAULT_MAX_ITER):
  r"""The worst-case distribution :math:`w_c = \psi_c^{\beta-1}/\sum_k\psi_k^{\beta-1}` (so that
  :math:`\nabla_z \ell = w - e_y`). Not differentiable (it is a gradient already)."""
  logits = jax.lax.stop_gradient(_check_logits(logits, "mgce_worst_case"))
  beta, x, t, _ = _prepare(logits, beta, tol, max_iter, "mgce_worst_case")
  return _worst_case(x, t, beta)


def mgce_l1_penalty(params, lam: float = 1e-5):
  r"""The uncertainty-set term of the MGCE training objective: :math:`\lambda \lVert\theta\rVert_1` over every leaf.

  Its gradient is the subgradient :math:`\lambda\,\mathrm{sign}(\theta)` (0 at 0).

  ``lam`` is the uncertainty-set radius (MRCpy's default 1e-5). Bondugula et al., AISTATS 2026.
  """
  check_hparam("mgce_l1_penalty", "lam", lam, low=0.0)
  # |theta| written as theta * sign(theta) with the sign held constant: the subgradient is sign(theta), 0 at 0.
  leaves = jax.tree_util.tree_leaves(params)
  return lam * sum(jnp.sum(leaf * jax.lax.stop_gradient(jnp.sign(leaf))) for leaf in leaves)
