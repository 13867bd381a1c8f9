r"""Soft (probability) targets: each loss of `gence_jax.losses` that has a natural form for a target distribution.

Every function has the signature ``<name>_soft(logits, targets, *, where=None, axis_name=None, **hparams)`` with the
hyper-parameters of the integer-label loss ``<name>``, and returns one value per example (shape
``logits.shape[:-1]``), no reduction. ``targets`` are probability vectors ``[..., K]`` of the shape of ``logits``
(mixup / CutMix targets, label smoothing, a teacher's probabilities, annotator distributions). On one-hot targets
each equals its integer-label loss.

Notation: :math:`p = \mathrm{softmax}(z)`, :math:`t` the target row, :math:`e_y` a one-hot vector.

Checks. At trace time (free under ``jax.jit``): ``logits`` floating with at least 2 classes, ``targets`` floating
(an integer array raises a TypeError naming the integer-label loss) of exactly ``logits.shape``, ``where`` bool of
shape ``logits.shape[:-1]``. Values are checked only when ``targets`` and ``where`` are concrete (not tracers: not
arguments of a ``jit``-ed, ``vmap``-ed or ``shard_map``-ed function, nor differentiated): on every unmasked row the
entries must be finite and non-negative and sum to 1 within ``max(sqrt(eps), K * eps)`` of the targets' dtype
(float32: 3.5e-4, float64: 1.5e-8, bfloat16: 0.088); otherwise a one-line ValueError. On tracers nothing is checked
and the formula is applied to the targets as given: they are not renormalised, a row summing to ``s`` scales the
``log``-normaliser terms by ``s``, and negative entries make most losses unbounded below. Validate targets
eagerly once (or build them from valid pieces, as mixing one-hot rows does) before jitting a training step.

Masks. ``where=False`` rows give exactly 0 and a zero gradient whatever their logits and targets hold (padding rows
may carry zero or NaN targets): both are replaced by harmless values in those rows before the loss is computed.
Low-precision logits are computed in float32, and the targets are cast to the computation's dtype.

Dual focal has no soft form here: Tao, Dong & Xu (ICML 2023) define it for a single ground-truth class (its factor
:math:`p_j` is the probability ranked just below :math:`p_y`), and we know of no published form for a target
distribution.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from gence_jax import checks
from gence_jax.losses import baselines
from gence_jax.losses._common import check_hparam, compute_dtype
from gence_jax.losses.minimax_gce import DEFAULT_BETA, DEFAULT_MAX_ITER, mgce_nu


def target_tolerance(dtype, num_classes: int) -> float:
  """Tolerance on ``|sum_k t_k - 1|`` for a target row of `dtype`: ``max(sqrt(eps), K * eps)``."""
  eps = float(jnp.finfo(dtype).eps)
  return max(math.sqrt(eps), num_classes * eps)


def _is_tracer(x) -> bool:
  return isinstance(x, jax.core.Tracer)


def _check_target_values(targets, where, fn):
  """The value checks on concrete targets, in float64 NumPy over the unmasked rows."""
  num_classes = targets.shape[-1]
  rows = np.asarray(targets).astype(np.float64).reshape(-1, num_classes)
  index = np.arange(rows.shape[0]) if where is None else np.flatnonzero(np.asarray(where).reshape(-1))
  rows = rows[index]
  if not rows.size:
    return
  finite = np.isfinite(rows).all(axis=-1)
  if not finite.all():
    raise ValueError(f"{fn}: `targets` must be finite, got NaN or Inf in row {int(index[np.argmin(finite)])}.")
  low = rows.min()
  if low < 0:
    raise ValueError(f"{fn}: `targets` must be non-negative probabilities, got an entry {low:.3g}.")
  tol = target_tolerance(targets.dtype, num_classes)
  sums = rows.sum(axis=-1)
  bad = ~(np.abs(sums - 1.0) <= tol)
  if bad.any():
    first = int(np.argmax(bad))
    raise ValueError(
      f"{fn}: rows of `targets` must sum to 1 (within {tol:.2g} for {targets.dtype}), row {int(index[first])} sums "
      f"to {sums[first]:.8g}."
    )


def check_logits_targets(logits, targets, where=None, *, fn: str):
  """Validates `logits` [..., K], probability `targets` [..., K] and the optional bool mask `where` [...].

  Shapes and dtypes always (trace time); target values only when `targets` and `where` are concrete. Returns
  `(logits, targets, valid)` in the computation's dtype (at least float32), with rows of ``where=False`` replaced
  by zero logits and uniform targets, and `valid` the mask (None if `where` is None).
  """
  logits = checks.check_class_logits(fn, logits)
  hint = f"(for integer class ids use {fn.removesuffix('_soft')})"
  targets = checks.check_float_array(fn, "targets", targets, what="floating-point probability vectors [..., K]", hint=hint)
  if targets.shape != logits.shape:
    raise ValueError(f"{fn}: `targets` must have the shape of `logits` {logits.shape}, got {targets.shape}.")
  where = checks.check_mask(fn, where, logits.shape[:-1])
  if not (_is_tracer(targets) or _is_tracer(where)):
    _check_target_values(targets, where, fn)
  dtype = compute_dtype(logits.dtype)
  logits, targets = logits.astype(dtype), targets.astype(dtype)
  if where is not None:
    logits = jnp.where(where[..., None], logits, 0.0)
    targets = jnp.where(where[..., None], targets, 1.0 / logits.shape[-1])
  return logits, targets, where


def _finalize(loss, where):
  return loss if where is None else jnp.where(where, loss, 0.0)


def _expect(targets, values):
  """sum_k t_k v_k with 0 wherever t_k = 0 (so that v_k = +-inf, e.g. log 0, does not give NaN)."""
  return jnp.sum(jnp.where(targets > 0, targets * values, 0.0), axis=-1)


def cross_entropy_soft(
  logits: jax.typing.ArrayLike,
  targets: jax.typing.ArrayLike,
  *,
  label_smoothing: float = 0.0,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Cross-entropy against a target distribution, with optional label smoothing applied to the target.

  .. math:: \ell(z, t) = -\sum_k t'_k \log p_k, \qquad t' = (1 - \varepsilon)\, t + \varepsilon / K

  Its gradient is :math:`p \sum_k t'_k - t' = p - t'`. Label smoothing: Szegedy et al. 2016, "Rethinking the
  Inception Architecture for Computer Vision". ``label_smoothing`` must be in [0, 1).
  """
  del axis_name
  check_hparam("cross_entropy_soft", "label_smoothing", label_smoothing, low=0.0, high=1.0, high_inclusive=False)
  logits, targets, where = check_logits_targets(logits, targets, where, fn="cross_entropy_soft")
  if not (isinstance(label_smoothing, (int, float)) and label_smoothing == 0):  # may be traced (vmap over it)
    targets = (1.0 - label_smoothing) * targets + label_smoothing / logits.shape[-1]
  return _finalize(-_expect(targets, jax.nn.log_softmax(logits, axis=-1)), where)


def generalized_ce_soft(
  logits: jax.typing.ArrayLike,
  targets: jax.typing.ArrayLike,
  *,
  q: float = 0.7,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Generalized cross-entropy (:math:`L_q`) as the expectation of the integer-label loss over the target.

  .. math:: \ell(z, t) = \sum_k t_k \frac{1 - p_k^{\,q}}{q} = \frac{1 - \sum_k t_k p_k^{\,q}}{q}, \qquad q \in (0, 1]

  (the two forms agree when :math:`\sum_k t_k = 1`; the first is computed). Linear in :math:`t`, so a mixed target
  :math:`\lambda e_a + (1-\lambda) e_b` gives the mixup criterion :math:`\lambda \ell(z, a) + (1-\lambda) \ell(z, b)`.
  Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels", NeurIPS 2018.
  """
  del axis_name
  check_hparam("generalized_ce_soft", "q", q, low=0.0, high=1.0, low_inclusive=False)
  logits, targets, where = check_logits_targets(logits, targets, where, fn="generalized_ce_soft")
  per_class = -jnp.expm1(q * jax.nn.log_softmax(logits, axis=-1)) / q
  return _finalize(_expect(targets, per_class), where)


def mae_soft(
  logits: jax.typing.ArrayLike,
  targets: jax.typing.ArrayLike,
  *,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Mean absolute error between the target distribution and the softmax output.

  .. math:: \ell(z, t) = \lVert t - p \rVert_1 = \sum_k |t_k - p_k|

  (not the expectation of the integer loss :math:`2(1 - p_y)`, which would be :math:`2(1 - \langle t, p\rangle)`;
  the two agree on one-hot targets). Ghosh, Kumar & Sastry, "Robust Loss Functions under Label Noise for Deep
  Neural Networks", AAAI 2017. The subgradient at :math:`t_k = p_k` is 0 in that coordinate.
  """
  del axis_name
  logits, targets, where = check_logits_targets(logits, targets, where, fn="mae_soft")
  return _finalize(jnp.sum(jnp.abs(targets - jax.nn.softmax(logits, axis=-1)), axis=-1), where)


def focal_soft(
  logits: jax.typing.ArrayLike,
  targets: jax.typing.ArrayLike,
  *,
  gamma: float = 2.0,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Focal loss as the expectation of the integer-label loss over the target.

  .. math:: \ell(z, t) = -\sum_k t_k (1 - p_k)^\gamma \log p_k, \qquad \gamma \ge 0

  Lin, Goyal, Girshick, He & Dollar, "Focal Loss for Dense Object Detection", ICCV 2017. ``gamma = 0`` is
  `cross_entropy_soft`.
  """
  del axis_name
  check_hparam("focal_soft", "gamma", gamma, low=0.0)
  logits, targets, where = check_logits_targets(logits, targets, where, fn="focal_soft")
  log_p = jax.nn.log_softmax(logits, axis=-1)
  per_class = -baselines.modulator(-jnp.expm1(log_p), gamma) * log_p  # 1 - p_k as -expm1(log p_k)
  return _finalize(_expect(targets, per_class), where)


def brier_soft(
  logits: jax.typing.ArrayLike,
  targets: jax.typing.ArrayLike,
  *,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Brier score of the softmax output against a target distribution.

  .. math:: \ell(z, t) = \lVert p - t \rVert_2^2 = \sum_k (p_k - t_k)^2

  Brier 1950, "Verification of forecasts expressed in terms of probability".
  """
  del axis_name
  logits, targets, where = check_logits_targets(logits, targets, where, fn="brier_soft")
  return _finalize(jnp.sum(jnp.square(jax.nn.softmax(logits, axis=-1) - targets), axis=-1), where)


def nce_rce_soft(
  logits: jax.typing.ArrayLike,
  targets: jax.typing.ArrayLike,
  *,
  alpha: float = 1.0,
  beta: float = 1.0,
  log_zero: float = baselines.RCE_LOG_ZERO_PAPER,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Active-passive loss NCE+RCE against a target distribution.

  .. math::
     \mathrm{NCE} = \frac{-\sum_k t_k \log p_k}{-\sum_k \log p_k}, \qquad
     \mathrm{RCE} = -\sum_k p_k \max(\log t_k, A), \qquad
     \ell = \alpha\,\mathrm{NCE} + \beta\,\mathrm{RCE}

  with :math:`A` = ``log_zero`` < 0 standing for :math:`\log 0`, as in `gence_jax.losses.nce_rce`. Clamping
  :math:`\log t_k` at :math:`A` (rather than replacing only exact zeros) keeps RCE continuous as a target entry goes
  to 0; for ``log_zero = log(1e-4)`` it is exactly the authors' code, which clamps the target to [1e-4, 1] before the
  log. On one-hot targets :math:`\mathrm{RCE} = -A(1 - p_y)`. Ma, Huang, Wang, Romano, Erfani & Bailey, "Normalized
  Loss Functions for Deep Learning with Noisy Labels", ICML 2020; RCE: Wang et al., "Symmetric Cross Entropy for
  Robust Learning with Noisy Labels", ICCV 2019.
  """
  del axis_name
  check_hparam("nce_rce_soft", "alpha", alpha, low=0.0)
  check_hparam("nce_rce_soft", "beta", beta, low=0.0)
  check_hparam("nce_rce_soft", "log_zero", log_zero, high=0.0, high_inclusive=False)
  logits, targets, where = check_logits_targets(logits, targets, where, fn="nce_rce_soft")
  log_p = jax.nn.log_softmax(logits, axis=-1)
  nce = _expect(targets, log_p) / jnp.sum(log_p, axis=-1)
  log_t = jnp.log(jnp.where(targets > 0, targets, 1.0))
  rce = -jnp.sum(jnp.exp(log_p) * jnp.where(targets > 0, jnp.maximum(log_t, log_zero), log_zero), axis=-1)
  return _finalize(alpha * nce + beta * rce, where)


def mgce_soft(
  logits: jax.typing.ArrayLike,
  targets: jax.typing.ArrayLike,
  *,
  beta: float = DEFAULT_BETA,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
  tol: float | None = None,
  max_iter: int = DEFAULT_MAX_ITER,
) -> jax.Array:
  r"""Minimax Generalized Cross-Entropy against a target distribution.

  .. math:: \ell(z, t) = -\langle t, z \rangle - \nu(z), \qquad \partial\ell/\partial z = w - t

  with :math:`\nu` and the worst-case distribution :math:`w` of `gence_jax.losses.mgce_nu` (the gradient by the same
  implicit-function argument as the integer loss, :math:`\partial\nu/\partial z = -w`, carried by `mgce_nu`'s
  custom VJP; the root finder is never differentiated). Linear in :math:`t`: the expectation of
  :math:`-z_y - \nu(z)` over :math:`y \sim t`, so it stays convex in the logits. Computed on the shifted logits
  :math:`x = z - \max z`, :math:`-\langle t, x\rangle - \nu(x)`, which equals the above when :math:`\sum_k t_k = 1`
  and keeps float32 accurate for large logits. Bondugula, Mazuelas, Perez & Liu, "Minimax Generalized
  Cross-Entropy", AISTATS 2026.
  """
  del axis_name
  if _is_tracer(beta):
    raise TypeError("mgce_soft: `beta` must be a Python float (it selects the algorithm), got a traced value.")
  check_hparam("mgce_soft", "beta", beta, low=1.0, high=float("inf"), high_inclusive=False)
  if tol is not None:
    check_hparam("mgce_soft", "tol", tol, low=0.0, low_inclusive=False)
  if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
    raise ValueError(f"mgce_soft: `max_iter` must be a positive int, got {max_iter!r}.")
  logits, targets, where = check_logits_targets(logits, targets, where, fn="mgce_soft")
  shift = jnp.max(logits, axis=-1, keepdims=True)
  x = logits - jax.lax.stop_gradient(jnp.where(jnp.isfinite(shift), shift, 0.0))
  loss = -_expect(targets, x) - mgce_nu(x, beta=beta, tol=tol, max_iter=max_iter)
  return _finalize(loss, where)


def _psum(x, axis_name):
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def _log1mexp(a):
  """log(1 - exp(a)) for a <= 0: log(-expm1(a)) near 0, log1p(-exp(a)) below -log 2 (Maechler 2012)."""
  near = a > -math.log(2.0)
  return jnp.where(near, jnp.log(-jnp.expm1(jnp.where(near, a, -1.0))), jnp.log1p(-jnp.exp(jnp.where(near, -1.0, a))))


def gence_soft(
  logits: jax.typing.ArrayLike,
  targets: jax.typing.ArrayLike,
  *,
  include_self: bool = True,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Generative Cross-Entropy against a target distribution: the expectation of the integer loss over the target.

  GenCE maximises :math:`\log q(x|y) = \log q(y|x) - \log q(y) + \log p(x)` with :math:`q(y) = \mathbb{E}_x q(y|x)`
  estimated by the batch mean. With the label drawn from the target, :math:`y \sim t_i`, the expected negative
  log-likelihood is

  .. math::
     \ell_i = \sum_y t_{iy} \Big[-\log q(y|x_i) + \log\Big(\frac{1}{B}\sum_{j=1}^{B} q(y|x_j)\Big)\Big],
     \qquad q(\cdot|x) = \mathrm{softmax}(f(x)),

  the class sums :math:`S_y = \sum_j q(y|x_j)` being those of the integer loss (all B valid examples, whatever their
  targets), so a one-hot :math:`t_i = e_{y_i}` gives `gence` exactly. Linear in :math:`t_i`. Zhan, Zhou & Shen
  2026, "Generative Cross-Entropy", arXiv:2604.06689.

  ``include_self=False`` normalises class :math:`y` of example :math:`i` by :math:`\frac{1}{B-1}(S_y - q(y|x_i))`.
  ``where=False`` rows count nowhere (neither in B nor in any class sum) and give 0. ``axis_name`` (a ``pmap`` /
  ``shard_map`` axis or a named ``vmap`` axis, or a tuple of them) splits the batch: the per-class maxima are
  ``pmax``-ed and the per-class sums and the example count ``psum``-ed, so value and gradient equal the computation on
  the concatenated global batch. Class sums are computed with a per-class shift :math:`m_y = \max_j \log q(y|x_j)`
  (no underflow for classes of tiny probability); the gradient is JAX's, through the batch term into every
  example's logits (no stop-gradient except on the shift, on which the value does not depend).
  """
  logits, targets, where = check_logits_targets(logits, targets, where, fn="gence_soft")
  batch_shape, num_classes = logits.shape[:-1], logits.shape[-1]
  z, t = logits.reshape(-1, num_classes), targets.reshape(-1, num_classes)
  valid = jnp.ones(z.shape[:1], jnp.bool_) if where is None else where.reshape(-1)
  log_q = jax.nn.log_softmax(z, axis=-1)
  shift = jnp.max(jnp.where(valid[:, None], jax.lax.stop_gradient(log_q), -jnp.inf), axis=0)
  if axis_name is not None:
    shift = jax.lax.pmax(shift, axis_name)
  shift = jnp.where(jnp.isfinite(shift), shift, 0.0)  # classes without a valid example anywhere
  shifted = jnp.exp(jnp.where(valid[:, None], log_q - shift, -jnp.inf))
  log_sums = shift + jnp.log(_psum(jnp.sum(shifted, axis=0), axis_name))  # log S_y, [K]
  count = _psum(jnp.sum(valid, dtype=z.dtype), axis_name)
  if include_self:
    log_norm = log_sums - jnp.log(count)
  else:  # log(S_y - q(y|x_i)) = log S_y + log(1 - q(y|x_i) / S_y)
    log_norm = log_sums + _log1mexp(jnp.minimum(log_q - log_sums, 0.0)) - jnp.log(count - 1.0)
  loss = _expect(t, log_norm - log_q)
  return _finalize(loss, None if where is None else valid).reshape(batch_shape)


#: The soft-target variant of each loss that has one, by the integer-label loss's name (`get_loss` names).
SOFT_VARIANTS = {
  "cross_entropy": cross_entropy_soft,
  "generalized_ce": generalized_ce_soft,
  "mae": mae_soft,
  "focal": focal_soft,
  "brier": brier_soft,
  "nce_rce": nce_rce_soft,
  "gence": gence_soft,
  "mgce": mgce_soft,
}
