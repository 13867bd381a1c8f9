"""A checked mode: raise on the values that cannot raise under `jax.jit`.

Inside a jitted loss, out-of-range integer labels give NaN for that example and NaN/Inf logits propagate as NaN
(the MGCE root finder stops at once on them, it never hangs). Wrap a loss with `checked` while debugging to get an
error instead; it uses `jax.experimental.checkify`, so the checks themselves run on device.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.experimental import checkify


def check_inputs(
  logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, where: jax.typing.ArrayLike | None = None
) -> None:
  """`checkify.check`s that labels are in [0, K) and logits are finite on every row that counts (`where`)."""
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  num_classes = logits.shape[-1]
  rows = jnp.ones(labels.shape, jnp.bool_) if where is None else jnp.asarray(where)
  bad_label = rows & ((labels < 0) | (labels >= num_classes))
  checkify.check(
    ~jnp.any(bad_label),
    f"labels must be in [0, {num_classes}); got {{n}} out-of-range label(s), e.g. {{value}}.",
    n=jnp.sum(bad_label),
    value=jnp.max(jnp.where(bad_label, jnp.abs(labels), -1)),
  )
  bad_logit = rows & ~jnp.all(jnp.isfinite(logits), axis=-1)
  checkify.check(
    ~jnp.any(bad_logit),
    "logits contain NaN or Inf in {n} example(s), the first at flat index {i}.",
    n=jnp.sum(bad_logit),
    i=jnp.argmax(bad_logit.reshape(-1)),
  )


class LossInputError(ValueError):
  """Raised by a `checked` loss on out-of-range labels or non-finite logits."""


def checked(loss_fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
  """Returns `loss_fn` that raises `LossInputError` (a ValueError) on out-of-range labels or NaN/Inf logits.

  The returned function jits and checkifies internally, so call it from Python (not inside another `jit`).

  >>> import jax.numpy as jnp
  >>> from gence_jax.losses import checked, gence
  >>> logits, labels = jnp.zeros((2, 3)), jnp.array([0, 3])
  >>> checked(gence)(logits, labels)
  Traceback (most recent call last):
  ...
  gence_jax.losses.checked.LossInputError: ...
  """

  @functools.wraps(loss_fn)
  def wrapped(logits, labels, *, where=None, **kwargs):
    def inner(logits, labels, where):
      check_inputs(logits, labels, where)
      return loss_fn(logits, labels, where=where, **kwargs)

    err, out = jax.jit(checkify.checkify(inner))(logits, labels, where)
    msg = err.get()
    if msg is not None:
      raise LossInputError(f"{getattr(loss_fn, '__name__', 'loss')}: {msg}")
    return out

  return wrapped
