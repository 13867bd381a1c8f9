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

import functools

import jax
import jax.numpy as jnp

from gence_jax.losses._common import check_logits_labels, finalize


def _log1mexp(a):
  """log(1 - exp(a)) for a <= 0, accurate on both sides of a = -log 2 (Maechler 2012)."""
  near_zero = a > -0.6931471805599453
  return jnp.where(
    near_zero, jnp.log(-jnp.expm1(jnp.where(near_zero, a, -1.0))), jnp.log1p(-jnp.exp(jnp.where(near_zero, -1.0, a)))
  )


def _explicit(x):
  """Whether x lives on a mesh with explicit sharding axes (where gathers and contractions need out_sharding)."""
  return bool(getattr(getattr(jax.typeof(x).sharding, "mesh", None), "explicit_axes", ()))


def _lookup(table, idx):
  """table[idx] for a replicated per-class table and per-example indices, also under explicit-sharding meshes."""
  sharding = jax.typeof(idx).sharding
  if _explicit(idx):
    return table.at[idx].get(out_sharding=sharding)
  return table[idx]


def _class_sums(values, idx, num_classes):
  """sum_{i: idx_i = c} values_i per class c (a scatter-add; a one-hot product under explicit-sharding meshes)."""
  if _explicit(idx):
    return jnp.sum(jax.nn.one_hot(idx, num_classes, dtype=values.dtype) * values[:, None], axis=0)
  return jax.ops.segment_sum(values, idx, num_classes)


def _psum(x, axis_name):
  return x if axis_name is None else jax.lax.psum(x, axis_name)


_TINY = 1e-30  # a labelled class whose softmax sum over the batch falls below this is summed in shifted form


def _row_stats(z, valid):
  """e = exp(z - max z) and 1 / sum e per row, lse = logsumexp(z), and the per-class sums of softmax(z) over valid
  rows, sum_j valid_j q(c|x_j) = sum_j valid_j e_jc / sum_k e_jk."""
  row_max = jnp.max(z, axis=-1)
  row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
  e = jnp.exp(z - row_max[:, None])
  norm = jnp.sum(e, axis=-1)
  inv_norm = 1.0 / norm
  weight = jnp.where(valid, inv_norm, 0.0)
  if _explicit(weight):  # a contraction over a sharded axis needs an output sharding: sum instead
    sums = jnp.sum(weight[:, None] * e, axis=0)
  else:
    sums = jnp.dot(weight, e, precision=jax.lax.Precision.HIGHEST)
  return e, inv_norm, row_max + jnp.log(norm), sums


def _shifted_column_sums(z, lse, valid, axis_name):
  """Per-class shift m_c = max_j log q(c|x_j) over valid rows (pmax over `axis_name`) and S_c = sum_j exp(log
  q(c|x_j) - m_c): the class sums without underflow even when a class has tiny probability everywhere."""
  log_p = z - lse[:, None]
  m = jnp.max(jnp.where(valid[:, None], log_p, -jnp.inf), axis=0)
  if axis_name is not None:
    m = jax.lax.pmax(m, axis_name)
  m = jnp.where(jnp.isfinite(m), m, 0.0)  # classes with no valid example anywhere
  return m, _psum(jnp.sum(jnp.where(valid[:, None], jnp.exp(log_p - m), 0.0), axis=0), axis_name)


def _gence_forward(z, y, valid, include_self, axis_name):
  r"""Loss and residuals. The class sums S_c = sum_j q(c|x_j) are taken from the softmax itself (one exp per
  logit, as for cross-entropy); only if a labelled class's sum underflows (extreme logits) are
  they recomputed with a per-class shift m_c, S_c = sum_j exp(log q(c|x_j) - m_c). Either way the loss is
  -log q(y_i|x_i) + m_{y_i} + log S_{y_i} - log B. The exponentials e are kept for the backward pass."""
  num_classes = z.shape[-1]
  yc = jnp.clip(y, 0, num_classes - 1)
  e, inv_norm, lse, sums = _row_stats(z, valid)
  sums = _psum(sums, axis_name)
  fine = _psum(jnp.sum(valid & ~(_lookup(sums, yc) > _TINY), dtype=z.dtype), axis_name) == 0
  m, s = jax.lax.cond(
    fine, lambda: (jnp.zeros_like(sums), sums), lambda: _shifted_column_sums(z, lse, valid, axis_name)
  )
  count = _psum(jnp.sum(valid, dtype=z.dtype), axis_name)
  log_py = jnp.take_along_axis(z, yc[:, None], axis=-1)[:, 0] - lse
  s_y, m_y = _lookup(s, yc), _lookup(m, yc)
  log_s = jnp.log(s_y)
  if include_self:
    log_norm = log_s - jnp.log(count)
    denom = s_y  # D'_i: the shifted class sum the example is normalised by
  else:
    # log(S_y - E_iy) = log S_y + log(1 - E_iy / S_y), with E_iy / S_y = exp(log p_iy - m_y - log S_y)
    log1m = _log1mexp(jnp.minimum(log_py - m_y - log_s, 0.0))
    log_norm = log_s + log1m - jnp.log(count - 1.0)
    denom = s_y * jnp.exp(log1m)
  loss = -log_py + m_y + log_norm
  return loss, (z, e, inv_norm, lse, fine, m, denom, yc, valid)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _gence_core(z, y, valid, include_self, axis_name):
  return _gence_forward(z, y, valid, include_self, axis_name)[0]


def _gence_core_bwd(include_self, axis_name, res, g):
  r"""Analytic gradient. With E_jc = exp(L_jc - m_c) (L = log_softmax(z)), D'_i the (shifted) sum example i is
  normalised by, gv = g * valid, Q_c = psum(sum_{i: y_i = c} gv_i / D'_i), self_j = gv_j / D'_j if the sample is
  excluded else 0, rho_j = sum_c Q_c E_jc and r_j = -gv_j + valid_j (rho_j - E_{j y_j} self_j):

  dl/dz_jk = -gv_j [k = y_j] + valid_j E_jk (Q_k - [k = y_j] self_j) - p_jk r_j,   p_jk = E_jk exp(m_k).

  When the softmax sums were used (m = 0) E_jk = e_jk / sum_k e_jk comes from the forward pass's exponentials
  without another exp; otherwise E is recomputed from z with the per-class shift.
  """
  z, e, inv_norm, lse, fine, m, denom, yc, valid = res
  num_classes = z.shape[-1]
  gv = jnp.where(valid, g, 0.0)
  q = _psum(_class_sums(gv / denom, yc, num_classes), axis_name)  # per-class sums (also when sharded)
  own = jnp.zeros_like(gv) if include_self else gv / denom

  def grad(e, row_scale, class_scale):  # E_jk = e_jk * row_scale_j, p_jk = E_jk * class_scale_k
    onehot = yc[:, None] == jnp.arange(num_classes)
    rho = row_scale * jnp.dot(e, q, precision=jax.lax.Precision.HIGHEST)
    e_own = row_scale * jnp.take_along_axis(e, yc[:, None], axis=-1)[:, 0]
    r = -gv + jnp.where(valid, rho - e_own * own, 0.0)
    inner = jnp.where(valid[:, None], q - jnp.where(onehot, own[:, None], 0.0), 0.0) - class_scale * r[:, None]
    out = e * (row_scale[:, None] * inner) - jnp.where(onehot, gv[:, None], 0.0)
    return jnp.where(valid[:, None], out, 0.0)

  out = jax.lax.cond(
    fine,
    lambda: grad(e, inv_norm, jnp.ones_like(m)),
    lambda: grad(jnp.exp(z - lse[:, None] - m), jnp.ones_like(inv_norm), jnp.exp(m)),
  )
  return out.astype(z.dtype), None, None


_gence_core.defvjp(
  lambda z, y, valid, include_self, axis_name: _gence_forward(z, y, valid, include_self, axis_name), _gence_core_bwd
)


def gence(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  include_self: bool = True,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
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
      Measured in ``experiments/properness``: more biased than the default, and training diverged when batches held
      about one example per class or fewer (e.g. 10 classes at batch 16).
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
  if y.shape[0] == 0:  # an empty batch (on every device: mapped shapes are equal) has an empty result
    return jnp.zeros(batch_shape, logits.dtype)

  loss = _gence_core(z, y, valid, bool(include_self), axis_name)
  return finalize(loss, y, num_classes, None if where is None else valid).reshape(batch_shape)
