"""Input checks shared by the metrics and calibrators.

Shape and dtype problems are always reported. Value problems (rows of ``probs`` that do not sum to one, negative
probabilities, labels out of range, non-finite logits) are checked only when the arrays are concrete: under
``jax.jit``/``vmap``/``shard_map`` the values are tracers and the check is skipped (the computation then simply
propagates whatever it is given).
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

#: Absolute tolerance on |sum_k p_k - 1| for an (unmasked) row of ``probs`` (larger for low-precision dtypes).
PROBS_SUM_ATOL = 1e-3


def is_concrete(*xs) -> bool:
  """True when none of ``xs`` is a JAX tracer (so its values can be inspected)."""
  return not any(isinstance(x, jax.core.Tracer) for x in xs)


def check_num_bins(num_bins, name: str = "num_bins") -> int:
  if isinstance(num_bins, bool) or not isinstance(num_bins, numbers.Integral):
    raise ValueError(f"{name} must be an integer >= 1; got {num_bins!r}")
  if num_bins < 1:
    raise ValueError(f"{name} must be an integer >= 1; got {num_bins}")
  return int(num_bins)


def check_labels_where(labels, where, n: int, *, labels_name: str = "labels"):
  """Checks ``labels`` (integer, shape [n]) and ``where`` (bool, shape [n] or None); returns jnp arrays."""
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(
      f"{labels_name} must be integer class indices (shape [N]); got dtype {labels.dtype}. "
      "Convert with labels.astype(jnp.int32) (one-hot labels: use argmax)."
    )
  if labels.shape != (n,):
    raise ValueError(f"{labels_name} must have shape [N] = ({n},) to match the predictions; got shape {labels.shape}")
  if where is not None:
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
      raise TypeError(f"where must be a boolean mask of shape [N]; got dtype {where.dtype}")
    if where.shape != (n,):
      raise ValueError(f"where must have shape [N] = ({n},) to match the predictions; got shape {where.shape}")
  return labels, where


def sum_tolerance(dtype) -> float:
  """Tolerance on |sum_k p_k - 1|: PROBS_SUM_ATOL, or 4 eps of the dtype if larger (bfloat16: 0.031)."""
  return max(PROBS_SUM_ATOL, 4 * float(jnp.finfo(dtype).eps))


def _probs_summary(xp, probs, labels, valid):
  """A few scalars summarising the unmasked rows (xp = numpy or jax.numpy)."""
  p = xp.where(valid[:, None], probs, 0)
  sums = xp.sum(p.astype(xp.promote_types(p.dtype, xp.float32)), axis=1)
  bad = valid & ~(xp.abs(sums - 1) <= sum_tolerance(probs.dtype))
  first_bad = xp.argmax(bad)
  y = xp.where(valid, labels, 0)
  return (
    xp.any(valid),
    xp.all(xp.isfinite(p)),
    xp.min(p),
    xp.any(bad),
    first_bad,
    sums[first_bad],
    xp.min(y),
    xp.max(y),
  )


def _logits_summary(xp, logits, labels, valid):
  y = xp.where(valid, labels, 0)
  return xp.any(valid), xp.all(xp.isfinite(xp.where(valid[:, None], logits, 0))), xp.min(y), xp.max(y)


_JITTED = {
  "probs": jax.jit(functools.partial(_probs_summary, jnp)),
  "logits": jax.jit(functools.partial(_logits_summary, jnp)),
}
_NUMPY = {"probs": functools.partial(_probs_summary, np), "logits": functools.partial(_logits_summary, np)}


def _summary(kind, raw, converted):
  """Value summary of (x, labels, where). NumPy inputs are checked in NumPy (no compilation, no transfer); jax
  arrays on device, with only the scalars fetched."""
  x, labels, where = raw
  n = converted[0].shape[0]
  if not any(isinstance(a, jax.Array) for a in raw):
    valid = np.ones((n,), bool) if where is None else np.asarray(where)
    return _NUMPY[kind](np.asarray(x), np.asarray(labels), valid)
  x, labels, where = converted
  valid = jnp.ones((n,), bool) if where is None else where
  return jax.device_get(_JITTED[kind](x, labels, valid))


def _check_label_range(ymin, ymax, k):
  if ymin < 0 or ymax >= k:
    raise ValueError(f"labels must lie in [0, {k}) for {k} classes; got range [{ymin}, {ymax}]")


def check_probs(probs, labels, where, *, num_bins=None, check_values: bool = True):
  """Validates (probs [N, K], labels [N] int, where [N] bool | None); returns them as jnp arrays."""
  raw = (probs, labels, where)
  probs = jnp.asarray(probs)
  if probs.ndim != 2:
    raise ValueError(f"probs must have shape [N, K] (rank 2); got shape {probs.shape}")
  if not jnp.issubdtype(probs.dtype, jnp.floating):
    raise TypeError(f"probs must be a floating-point array; got dtype {probs.dtype}")
  n, k = probs.shape
  if k < 1:
    raise ValueError(f"probs must have at least one class column; got shape {probs.shape}")
  labels, where = check_labels_where(labels, where, n)
  if num_bins is not None:
    check_num_bins(num_bins)
  if check_values and is_concrete(probs, labels, where) and n > 0:
    summary = _summary("probs", raw, (probs, labels, where))
    any_valid, finite, pmin, any_bad, first_bad, bad_sum, ymin, ymax = summary
    if any_valid:
      if not finite:
        raise ValueError("probs contains NaN or inf in unmasked rows")
      if pmin < 0:
        raise ValueError(f"probs must be non-negative; found minimum {pmin:.3g} in an unmasked row")
      if any_bad:
        raise ValueError(
          f"rows of probs must sum to 1 (within {sum_tolerance(probs.dtype):.3g}); row {int(first_bad)} sums to {bad_sum:.6g}. "
          "Did you pass logits instead of probabilities?"
        )
      _check_label_range(int(ymin), int(ymax), k)
  return probs, labels, where


def check_logits(logits, labels, where, *, check_values: bool = True):
  """Validates (logits [N, K] float, labels [N] int, where [N] bool | None); returns them as jnp arrays."""
  raw = (logits, labels, where)
  logits = jnp.asarray(logits)
  if logits.ndim != 2:
    raise ValueError(f"logits must have shape [N, K] (rank 2); got shape {logits.shape}")
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise TypeError(f"logits must be a floating-point array; got dtype {logits.dtype}")
  n, k = logits.shape
  labels, where = check_labels_where(labels, where, n)
  if check_values and is_concrete(logits, labels, where) and n > 0:
    any_valid, finite, ymin, ymax = _summary("logits", raw, (logits, labels, where))
    if any_valid:
      if not finite:
        raise ValueError("logits contains NaN or inf in unmasked rows")
      _check_label_range(int(ymin), int(ymax), k)
  return logits, labels, where
