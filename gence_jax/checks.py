"""Input checks shared by the losses, metrics and calibrators, with one message style.

Every failed check raises a ValueError or TypeError with one line::

    <function>: `<argument>` must <requirement>, got <what was passed>.

Shape, dtype, rank and hyper-parameter checks run on the Python side (at trace time under ``jax.jit``), so they cost
nothing in a compiled step. Value checks (probability rows that sum to one, labels in range, finite entries) run
only when the arrays are concrete: under ``jax.jit``/``vmap``/``shard_map`` the values are tracers and those checks
are skipped (the computation then propagates whatever it is given; see `gence_jax.losses.checked` for losses).

A few messages of the metrics and calibrators name the argument without backticks (``labels must be integer ...``,
``logits contains NaN ...``): ``quote=False`` keeps that wording, which tests and callers match on.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

#: Absolute tolerance on |sum_k p_k - 1| for an (unmasked) row of ``probs`` (larger for low-precision dtypes).
PROBS_SUM_ATOL = 1e-3


def message(fn: str, name: str, requirement: str, got: str, *, quote: bool = True) -> str:
  """``"<fn>: `<name>` must <requirement>, got <got>."`` (the argument without backticks when ``quote`` is False)."""
  arg = f"`{name}`" if quote else name
  return f"{fn}: {arg} must {requirement}, got {got}."


def is_concrete(*xs: Any) -> bool:
  """True when none of ``xs`` is a JAX tracer (so its values can be inspected)."""
  return not any(isinstance(x, jax.core.Tracer) for x in xs)


# ----------------------------------------------------------------------------------------------------------------
# Scalars: hyper-parameters, counts, choices.


def check_hparam(
  fn: str,
  name: str,
  value: Any,
  *,
  low: float | None = None,
  high: float | None = None,
  low_inclusive: bool = True,
  high_inclusive: bool = True,
) -> Any:
  """Raises unless ``value`` is a real number in the given interval; returns it unchanged.

  A TypeError for a non-number, a ValueError for a number outside the interval. A traced scalar (a hyper-parameter
  under ``vmap``) passes unchecked.
  """
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    if isinstance(value, jax.Array) and value.ndim == 0:
      return value  # traced hyper-parameters (e.g. under a vmap over beta) are not range-checked
    raise TypeError(message(fn, name, "be a real number", repr(value)))
  lo_ok = low is None or (value >= low if low_inclusive else value > low)
  hi_ok = high is None or (value <= high if high_inclusive else value < high)
  if not (lo_ok and hi_ok):
    lo = "-inf" if low is None else low
    hi = "inf" if high is None else high
    interval = f"{'[' if low_inclusive else '('}{lo}, {hi}{']' if high_inclusive else ')'}"
    raise ValueError(message(fn, name, f"be in {interval}", repr(value)))
  return value


def check_int(fn: str, name: str, value: Any, low: int, *, quote: bool = True) -> int:
  """``int(value)`` when it is an integer (not a bool) >= ``low``; a ValueError otherwise."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
    raise ValueError(message(fn, name, f"be an integer >= {low}", repr(value), quote=quote))
  return int(value)


def check_num_bins(fn: str, num_bins: Any, name: str = "num_bins") -> int:
  """A number of bins: an integer >= 1."""
  return check_int(fn, name, num_bins, 1)


def check_real(fn: str, name: str, value: Any, low: float = 0.0, *, quote: bool = True) -> float:
  """``float(value)`` when it is a finite real number >= ``low``; a ValueError otherwise."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (np.isfinite(value) and value >= low):
    raise ValueError(message(fn, name, f"be a finite real number >= {low}", repr(value), quote=quote))
  return float(value)


def check_choice(fn: str, name: str, value: Any, choices: Sequence[Any], *, quote: bool = True) -> Any:
  """``value`` when it is one of ``choices``; a ValueError otherwise."""
  if value not in choices:
    raise ValueError(message(fn, name, f"be one of {', '.join(map(repr, choices))}", repr(value), quote=quote))
  return value


def check_link(fn: str, link: Any) -> None:
  """A link (logits -> probabilities) must be a hashable callable: it is a static jit argument."""
  if not callable(link):
    raise TypeError(message(fn, "link", "be a callable mapping logits [N, K] to probabilities", repr(link), quote=False))
  try:
    hash(link)
  except TypeError:
    raise TypeError(
      message(
        fn,
        "link",
        "be hashable: it is a static jit argument and static metadata of the params (use a module-level function, "
        "functools.partial, or a bound method of a hashable object)",
        f"an unhashable {type(link).__name__}",
        quote=False,
      )
    ) from None


# ----------------------------------------------------------------------------------------------------------------
# Arrays: dtype, rank and shape.


def _dtype_got(x: jax.Array, hint: str) -> str:
  return f"dtype {x.dtype}" + (f" {hint}" if hint else "")


def check_float_array(
  fn: str, name: str, x: ArrayLike, *, what: str = "a floating-point array", hint: str = "", quote: bool = True
) -> jax.Array:
  """``jnp.asarray(x)``; a TypeError unless its dtype is floating (``hint``, after the dtype, says what to do)."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(message(fn, name, f"be {what}", _dtype_got(x, hint), quote=quote))
  return x


def check_class_axis(fn: str, name: str, x: jax.Array, *, min_classes: int = 2) -> None:
  """A ValueError unless ``x`` has shape [..., K] with K >= ``min_classes``."""
  if x.ndim < 1 or x.shape[-1] < min_classes:
    got = "a scalar" if x.ndim < 1 else f"shape {x.shape}"
    raise ValueError(message(fn, name, f"have shape [..., num_classes] with num_classes >= {min_classes}", got))


def check_class_logits(fn: str, logits: ArrayLike, name: str = "logits") -> jax.Array:
  """Floating-point ``logits`` of shape [..., K], K >= 2, as a jnp array."""
  logits = check_float_array(fn, name, logits)
  check_class_axis(fn, name, logits)
  return logits


def check_labels(
  fn: str,
  labels: ArrayLike,
  shape: tuple[int, ...],
  *,
  name: str = "labels",
  shape_text: str = "logits.shape[:-1]",
  hint: str = "",
  quote: bool = True,
) -> jax.Array:
  """Integer class ids of the given ``shape`` as a jnp array (``shape_text`` says where the shape comes from).

  ``hint``, after the dtype (with its own leading punctuation), says what to do with probability or one-hot labels.
  """
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(message(fn, name, f"be integer class ids of shape {shape_text}", _dtype_got(labels, hint), quote=quote))
  if labels.shape != tuple(shape):
    raise ValueError(message(fn, name, f"have shape {shape_text} = {tuple(shape)}", f"{labels.shape}", quote=quote))
  return labels


def check_mask(
  fn: str,
  where: ArrayLike | None,
  shape: tuple[int, ...],
  *,
  shape_text: str = "logits.shape[:-1]",
  quote: bool = True,
) -> jax.Array | None:
  """``None``, or a boolean mask of the given ``shape`` as a jnp array (``shape_text`` says where it comes from)."""
  if where is None:
    return None
  where = jnp.asarray(where)
  if where.dtype != jnp.bool_:
    raise TypeError(message(fn, "where", "be a boolean mask", f"dtype {where.dtype}", quote=quote))
  if where.shape != tuple(shape):
    raise ValueError(message(fn, "where", f"have shape {shape_text} = {tuple(shape)}", f"{where.shape}", quote=quote))
  return where


# ----------------------------------------------------------------------------------------------------------------
# Predictions [N, K] with labels [N] and a mask [N] (metrics and calibrators), with value checks when concrete.


def check_labels_where(
  fn: str, labels: ArrayLike, where: ArrayLike | None, n: int, *, name: str = "labels"
) -> tuple[jax.Array, jax.Array | None]:
  """Integer ``labels`` [n] and ``where`` [n] bool (or None) matching n predictions, as jnp arrays."""
  hint = "; convert with labels.astype(jnp.int32) (one-hot labels: use argmax)"
  labels = check_labels(fn, labels, (n,), name=name, shape_text="[N]", hint=hint, quote=False)
  where = check_mask(fn, where, (n,), shape_text="[N]", quote=False)
  return labels, where


def sum_tolerance(dtype: Any) -> float:
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


def _check_label_range(fn, ymin, ymax, k):
  if ymin < 0 or ymax >= k:
    raise ValueError(message(fn, "labels", f"lie in [0, {k}) for {k} classes", f"range [{ymin}, {ymax}]", quote=False))


def _not_finite(fn, name):
  return f"{fn}: {name} contains NaN or inf in unmasked rows; it must be finite there."


def _check_predictions(fn, name, x, labels, where):
  """``x`` [N, K] floating, ``labels`` [N] int, ``where`` [N] bool | None, as jnp arrays."""
  x = jnp.asarray(x)
  if x.ndim != 2:
    raise ValueError(message(fn, name, "have shape [N, K] (rank 2)", f"shape {x.shape}", quote=False))
  x = check_float_array(fn, name, x, quote=False)
  labels, where = check_labels_where(fn, labels, where, x.shape[0])
  return x, labels, where


def check_probs(
  fn: str,
  probs: ArrayLike,
  labels: ArrayLike,
  where: ArrayLike | None,
  *,
  num_bins: int | None = None,
  check_values: bool = True,
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """Validates (probs [N, K], labels [N] int, where [N] bool | None); returns them as jnp arrays.

  When concrete and ``check_values``: unmasked rows must be finite, non-negative and sum to 1 (within
  `sum_tolerance`), and their labels must lie in [0, K).
  """
  raw = (probs, labels, where)
  probs, labels, where = _check_predictions(fn, "probs", probs, labels, where)
  n, k = probs.shape
  if k < 1:
    raise ValueError(message(fn, "probs", "have at least one class column", f"shape {probs.shape}"))
  if num_bins is not None:
    check_num_bins(fn, num_bins)
  if check_values and not is_concrete(probs, labels, where):
    return _poison_invalid(probs, labels, where), labels, where
  if check_values and is_concrete(probs, labels, where) and n > 0:
    any_valid, finite, pmin, any_bad, first_bad, bad_sum, ymin, ymax = _summary("probs", raw, (probs, labels, where))
    if any_valid:
      if not finite:
        raise ValueError(_not_finite(fn, "probs"))
      if pmin < 0:
        raise ValueError(message(fn, "probs", "be non-negative", f"a minimum of {pmin:.3g} in an unmasked row"))
      if any_bad:
        raise ValueError(
          f"{fn}: rows of `probs` must sum to 1 (within {sum_tolerance(probs.dtype):.3g}), got row {int(first_bad)} "
          f"summing to {bad_sum:.6g}; did you pass logits instead of probabilities?"
        )
      _check_label_range(fn, int(ymin), int(ymax), k)
  return probs, labels, where


def check_pairs(
  fn: str, confidences: ArrayLike, correct: ArrayLike, where: ArrayLike | None
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """Validates top-label pairs (confidences [N] float, correct [N] bool, where [N] bool | None); when concrete, the
  unmasked confidences must be finite and in [0, 1]. Returns them as jnp arrays."""
  conf = jnp.asarray(confidences)
  if conf.ndim != 1 or not jnp.issubdtype(conf.dtype, jnp.floating):
    raise ValueError(f"{fn}: `confidences` must be a float array of shape [N], got {conf.dtype}{conf.shape}.")
  correct = jnp.asarray(correct)
  if correct.dtype != jnp.bool_ or correct.shape != conf.shape:
    raise ValueError(f"{fn}: `correct` must be a bool array of shape {conf.shape}, got {correct.dtype}{correct.shape}.")
  where = check_mask(fn, where, conf.shape, shape_text="[N]")
  if is_concrete(conf, where):
    c = conf if where is None else jnp.where(where, conf, 0.5)
    if not bool(jnp.all(jnp.isfinite(c))):
      raise ValueError(f"{fn}: `confidences` must be finite in unmasked rows (found NaN or Inf).")
    if bool(jnp.any((c < 0) | (c > 1))):
      raise ValueError(f"{fn}: `confidences` must lie in [0, 1], got values in [{float(c.min()):.4g}, {float(c.max()):.4g}].")
  return conf, correct, where


def _poison_invalid(probs: jax.Array, labels: jax.Array, where: jax.Array | None) -> jax.Array:
  """Under a trace the values cannot be checked: ``probs`` set to NaN when any unmasked row is not a probability
  vector (non-finite, negative, not summing to 1 within `sum_tolerance`) or has a label outside [0, K), so every
  metric of it is NaN instead of a plausible number."""
  k = probs.shape[-1]
  p = probs.astype(jnp.promote_types(probs.dtype, jnp.float32))
  row_bad = (
    ~jnp.all(jnp.isfinite(p), axis=-1)
    | jnp.any(p < 0, axis=-1)
    | (jnp.abs(jnp.sum(p, axis=-1) - 1) > sum_tolerance(probs.dtype))
    | (labels < 0)
    | (labels >= k)
  )
  if where is not None:
    row_bad = row_bad & where
  return jnp.where(jnp.any(row_bad), jnp.asarray(jnp.nan, probs.dtype), probs)


def check_logits(
  fn: str, logits: ArrayLike, labels: ArrayLike, where: ArrayLike | None, *, check_values: bool = True
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """Validates (logits [N, K] float, labels [N] int, where [N] bool | None); returns them as jnp arrays.

  When concrete and ``check_values``: unmasked rows must be finite and their labels must lie in [0, K).
  """
  raw = (logits, labels, where)
  logits, labels, where = _check_predictions(fn, "logits", logits, labels, where)
  n, k = logits.shape
  if check_values and is_concrete(logits, labels, where) and n > 0:
    any_valid, finite, ymin, ymax = _summary("logits", raw, (logits, labels, where))
    if any_valid:
      if not finite:
        raise ValueError(_not_finite(fn, "logits"))
      _check_label_range(fn, int(ymin), int(ymax), k)
  return logits, labels, where
