r"""Generative Cross-Entropy (GenCE).

Zhan, Zhou & Shen 2026, "Generative Cross-Entropy", arXiv:2604.06689.

Cross-entropy maximises :math:`q(y|x)`; GenCE maximises the class-conditional likelihood
:math:`q(x|y) = q(y|x)\,p(x) / q(y)` with :math:`q(y) = \mathbb{E}_x\, q(y|x)`. Estimating :math:`q(y)` by the mean
over the (global) batch of B examples gives the per-example loss

.. math::
   \ell_i = -\log q(y_i|x_i) + \log\Big(\frac{1}{B} \sum_{j=1}^{B} q(y_i|x_j)\Big),
   \qquad q(\cdot|x) = \mathrm{softmax}(f(x)).

It is cross-entropy taken *down the batch axis* of the B x K probability matrix, in the label's column: each
example's probability for its class is normalised against every example's probability for that class. Gradients
flow through the batch term into every example's logits (no stop-gradient).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gence_jax.losses._common import check_logits_labels, finalize, take_label


def _log1mexp(a):
  """log(1 - exp(a)) for a <= 0, accurate on both sides of a = -log 2 (Maechler 2012)."""
  near_zero = a > -0.6931471805599453
  return jnp.where(near_zero, jnp.log(-jnp.expm1(jnp.where(near_zero, a, -1.0))),
                   jnp.log1p(-jnp.exp(jnp.where(near_zero, -1.0, a))))


def _class_log_sums(log_p, valid, axis_name):
  """log sum_j valid_j p_jc for every class c, over the global batch.

  Uses a per-class max shift (so classes whose probabilities are all below float range do not underflow) and,
  when `axis_name` is given, `pmax`/`psum` over it: the sums, never per-device means, are combined.
  """
  masked = jnp.where(valid[:, None], log_p, -jnp.inf)
  shift = jax.lax.stop_gradient(jnp.max(masked, axis=0))
  if axis_name is not None:
    shift = jax.lax.pmax(shift, axis_name)
  shift = jnp.where(jnp.isfinite(shift), shift, 0.0)  # classes with no valid example at all
  sums = jnp.sum(jnp.exp(masked - shift), axis=0)
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  return jnp.log(sums) + shift


def gence(logits, labels, *, include_self: bool = True, where=None, axis_name=None):
  r"""Generative Cross-Entropy, one value per example.

  .. math::
     \ell_i = -\log q(y_i|x_i) + \log\Big(\frac{1}{B}\sum_{j} q(y_i|x_j)\Big)
            = -\log q(y_i|x_i) + \operatorname{logsumexp}_j \log q(y_i|x_j) - \log B

  computed in log space (a logsumexp down the batch axis of ``log_softmax(logits)``).
  Zhan, Zhou & Shen 2026, "Generative Cross-Entropy", arXiv:2604.06689.

  Args:
    logits: ``[..., K]`` float logits; every leading axis belongs to the batch.
    labels: integer labels of shape ``logits.shape[:-1]``.
    include_self: if False the normaliser excludes the example itself:
      :math:`\log\big(\frac{1}{B-1}\sum_{j\ne i} q(y_i|x_j)\big)`. A batch with a single valid example then gives NaN.
    where: optional bool mask of shape ``labels.shape``; ``False`` rows count nowhere (neither in B nor in any
      class sum) and their loss is 0.
    axis_name: a named axis (``pmap``, ``shard_map``, or ``jax.vmap(..., axis_name=...)``) or a tuple of them
      across which the batch is split. The per-class sums and the example count are ``psum``-ed over it, so the
      value and gradient equal the single-device computation on the concatenated global batch. Under ``jax.jit``
      with a sharded batch no axis name is needed: the batch is already global.

  Returns:
    Per-example losses of shape ``labels.shape`` (float32 for bfloat16/float16/float32 inputs). Out-of-range
    labels give NaN for that example (its probabilities still count in the class sums of the others).
  """
  logits, labels, where = check_logits_labels(logits, labels, where, fn="gence")
  batch_shape, num_classes = labels.shape, logits.shape[-1]
  z = logits.reshape(-1, num_classes)
  y = labels.reshape(-1)
  valid = jnp.ones(y.shape, jnp.bool_) if where is None else where.reshape(-1)

  log_p = jax.nn.log_softmax(z, axis=-1)
  col = _class_log_sums(log_p, valid, axis_name)  # [K]
  count = jnp.sum(valid, dtype=log_p.dtype)
  if axis_name is not None:
    count = jax.lax.psum(count, axis_name)

  log_py = take_label(log_p, y)
  log_col = col[jnp.clip(y, 0, num_classes - 1)]
  if include_self:
    batch_term = log_col - jnp.log(count)
  else:
    # log(S_y - p_iy) = log S_y + log(1 - p_iy / S_y)
    gap = jnp.minimum(log_py - log_col, 0.0)
    batch_term = log_col + _log1mexp(gap) - jnp.log(count - 1.0)
  loss = -log_py + batch_term
  return finalize(loss, y, num_classes, None if where is None else valid).reshape(batch_shape)
