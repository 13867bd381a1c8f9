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
loss is :math:`-x_y - t`, which keeps float32 accurate for logits up to :math:`\pm 10^4`. The root is found by
Newton's method on :math:`N(t) = \lVert\psi(t)\rVert_\beta - 1`, which is convex and increasing in :math:`t`, started
at the upper end of the bracket: the iterates decrease monotonically to the root (no overshoot), it is exact in one
step whenever one class carries all the mass and nearly exact in the cross-entropy limit. Iterates are clipped to the
bracket, the loop is a ``lax.while_loop`` with a tolerance and an iteration cap (no host sync), and rows with NaN/Inf
logits stop at once and give NaN. The gradient never differentiates through the loop: :math:`\nu` carries a
``jax.custom_vjp`` whose backward pass is :math:`\partial \nu / \partial z = -w`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from gence_jax.losses._common import check_hparam, check_logits_labels, finalize, take_label

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


def _psi_powers(x, t, beta):
  """psi^beta and psi^(beta-1) for psi = relu(1 + (x + t)/beta), via log1p for accuracy at large beta."""
  v = (x + t[..., None]) / beta
  pos = v > -1.0
  v = jnp.where(pos, v, 0.0)
  psi_beta = jnp.where(pos, jnp.exp(beta * jnp.log1p(v)), 0.0)
  psi_beta_m1 = jnp.where(pos, psi_beta / (1.0 + v), 0.0)
  return psi_beta, psi_beta_m1


def _solve_newton(x, beta, tol, max_iter):
  """Shifted root t in [b, 0] for each row of x ([N, K], max of each row 0), by monotone Newton on ||psi||_beta - 1."""
  low = _bracket_low(beta, x.shape[-1], x.dtype)
  finite = jnp.all(jnp.isfinite(x), axis=-1)

  def body(state):
    it, t, done = state
    psi_beta, psi_beta_m1 = _psi_powers(x, t, beta)
    total = jnp.sum(psi_beta, axis=-1)  # T(t) >= 1 on the right of the root
    slope = jnp.sum(psi_beta_m1, axis=-1)  # dT/dt
    # Newton on N = T^(1/beta) - 1:  step = N / N' = beta * T * (1 - T^(-1/beta)) / T'
    step = beta * total * (-jnp.expm1(-jnp.log(total) / beta)) / slope
    t_new = jnp.clip(t - step, low, 0.0)
    t_new = jnp.where(done, t, t_new)
    done = done | ~(jnp.abs(step) > tol)
    return it + 1, t_new, done

  def cond(state):
    it, _, done = state
    return (it < max_iter) & ~jnp.all(done)

  t0 = jnp.zeros(x.shape[:-1], x.dtype)
  _, t, _ = jax.lax.while_loop(cond, body, (jnp.asarray(0), t0, ~finite))
  return jnp.where(finite, t, jnp.nan)


def _sparsemax_root_from_support(x, support):
  """t with sum_{c in S} (1 + x_c + t) = 1 for the support S: t = (1 - sum_S x) / |S| - 1 (exact given S)."""
  size = jnp.sum(support, axis=-1)
  return (1.0 - jnp.sum(jnp.where(support, x, 0.0), axis=-1)) / size.astype(x.dtype) - 1.0


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


def _solve_sparsemax(x, max_iter):
  """Exact shifted root for beta = 1: sum_c relu(1 + x_c + t) = 1 (the sparsemax threshold).

  Newton's method on the piecewise-linear convex T(t) = sum_c relu(1 + x_c + t) from t = 0 (where T >= 1) moves
  monotonically left and its support S(t) = {c : 1 + x_c + t > 0} shrinks until it equals the optimal support
  (Michelot 1986's simplex-projection iteration); each step costs O(K), with no sort. Once the support stops
  changing, the root follows exactly from it. Rows that have not settled after `max_iter` steps (rare: it takes at
  most K steps) are solved by the exact sort-based rule instead.
  """

  def body(state):
    it, t, _ = state
    t_new = _sparsemax_root_from_support(x, 1.0 + x + t[..., None] > 0)
    # the same support gives exactly the same t: settled (rows with NaN/Inf logits count as settled at once)
    return it + 1, t_new, (t_new != t) & jnp.isfinite(t_new)

  def cond(state):
    it, _, changed = state
    return (it < max_iter) & jnp.any(changed)

  rows = x.shape[:-1]
  # t = 0: the support S(0) = {c : x_c > -1} contains the optimal one (T(0) >= 1 since max x = 0).
  _, t, changed = jax.lax.while_loop(cond, body, (jnp.asarray(0), jnp.zeros(rows, x.dtype), jnp.ones(rows, jnp.bool_)))
  t = jax.lax.cond(jnp.any(changed), lambda: jnp.where(changed, _solve_sparsemax_sort(x), t), lambda: t)
  return jnp.where(jnp.all(jnp.isfinite(x), axis=-1), t, jnp.nan)


def _solve(x, beta, tol, max_iter):
  if beta == 1.0:
    return _solve_sparsemax(x, max_iter)
  return _solve_newton(x, beta, tol, max_iter)


def _worst_case(x, t, beta):
  """w = psi^(beta-1) / sum psi^(beta-1): uniform on the support when beta = 1."""
  if beta == 1.0:
    psi_beta_m1 = (x + t[..., None] + 1.0 > 0).astype(x.dtype)
  else:
    _, psi_beta_m1 = _psi_powers(x, t, beta)
  return psi_beta_m1 / jnp.sum(psi_beta_m1, axis=-1, keepdims=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _shifted_root(x, beta, tol, max_iter):
  return _solve(x, beta, tol, max_iter)


def _shifted_root_fwd(x, beta, tol, max_iter):
  t = _solve(x, beta, tol, max_iter)
  return t, _worst_case(x, t, beta)


def _shifted_root_bwd(beta, tol, max_iter, w, g):
  del beta, tol, max_iter
  return (-g[..., None] * w,)  # implicit function theorem: d nu / d z = -w (Theorem 3)


_shifted_root.defvjp(_shifted_root_fwd, _shifted_root_bwd)


def _prepare(logits, beta, tol, max_iter, fn):
  """Shifted logits x = z - max z and the shifted root t = nu + max z, each of shape [..., K] and [...]."""
  beta = _check_beta(beta, fn)
  if tol is None:
    tol = _default_tol(logits.dtype)
  check_hparam(fn, "tol", tol, low=0.0, low_inclusive=False)
  if not isinstance(max_iter, int) or max_iter < 1:
    raise ValueError(f"{fn}: `max_iter` must be a positive int, got {max_iter!r}.")
  shift = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
  x = logits - shift
  batch_shape = x.shape[:-1]
  t = _shifted_root(x.reshape(-1, x.shape[-1]), beta, float(tol), max_iter).reshape(batch_shape)
  return beta, x, t, shift[..., 0]


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
  ``tol`` is the Newton step size at which the root finder stops (default 1e-5 in float32, 1e-12 in float64; the
  error after the last step is of the order of its square), ``max_iter`` caps the ``lax.while_loop``.
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
  if beta == 1.0:
    h = jax.nn.relu(x + t[..., None] + 1.0)
  else:
    h, _ = _psi_powers(x, t, beta)
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
