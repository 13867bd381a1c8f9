"""Helpers shared by the calibrators: input checks, the link-generic NLL, the top-label output pair."""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gence_jax import checks

Link = Callable[[jax.Array], jax.Array]


# The calibrators' messages name arguments without backticks ("fit_isotonic: variant must be one of ..."), a wording
# their callers match on; the checks themselves are `gence_jax.checks`'.
check_link = checks.check_link
check_int = functools.partial(checks.check_int, quote=False)
check_real = functools.partial(checks.check_real, quote=False)
check_choice = functools.partial(checks.check_choice, quote=False)


def check_inputs(
  fn: str, logits: ArrayLike, labels: ArrayLike, where: ArrayLike | None, link: Link
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Checks the link and (logits [N, K] float, labels [N] int, where [N] bool | None) with `gence_jax.checks`.

  Returns (logits, labels, valid) as jnp arrays, ``valid`` an [N] bool mask (all True when ``where`` is None).
  """
  check_link(fn, link)
  logits, labels, where = checks.check_logits(fn, logits, labels, where)
  valid = jnp.ones(labels.shape, bool) if where is None else where
  return logits, labels, valid


def log_probs(z: jax.Array, link: Link) -> jax.Array:
  """log link(z): ``log_softmax`` when the link is ``jax.nn.softmax``, else ``log(max(link(z), tiny))`` (so sparse
  links with exact zeros stay finite: about -87.3 in float32)."""
  if link is jax.nn.softmax:
    return jax.nn.log_softmax(z, axis=-1)
  p = link(z)
  return jnp.log(jnp.maximum(p, jnp.finfo(p.dtype).tiny))


def label_nll(logp: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example -log p_y from log-probabilities [N, K]."""
  return -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def masked_mean(values: jax.Array, valid: jax.Array) -> jax.Array:
  n = jnp.maximum(jnp.sum(valid), 1).astype(values.dtype)
  return jnp.sum(jnp.where(valid, values, 0), axis=0) / n


@functools.partial(jax.jit, static_argnames=("link",))
def top_confidence(logits: jax.Array, link: Link) -> jax.Array:
  """max_k link(z)_k; one jitted function for fitting and prediction so both see the same rounding."""
  return jnp.max(link(logits), axis=-1)


class TopLabel(NamedTuple):
  """What a top-label calibrator outputs (Gupta & Ramdas 2022, "Top-label calibration and multiclass-to-binary
  reductions", ICLR): the uncalibrated model's prediction and the calibrated confidence that it is right.

  Attributes:
    prediction: [...] int32, argmax_k link(z)_k of the uncalibrated model (first maximum on ties): never changed.
    confidence: [...] float in [0, 1], the calibrated probability that ``prediction`` is the label.
  """

  prediction: jax.Array
  confidence: jax.Array


def top_label(probs: jax.Array, confidence: jax.Array) -> TopLabel:
  """:class:`TopLabel` with the first argmax of the uncalibrated ``probs`` and the calibrated ``confidence``."""
  return TopLabel(prediction=jnp.argmax(probs, axis=-1).astype(jnp.int32), confidence=confidence)


def renormalise(scores: jax.Array) -> jax.Array:
  """Rows divided by their sum (one-vs-rest outputs); a row summing to 0 becomes uniform."""
  s = jnp.sum(scores, axis=-1, keepdims=True)
  k = scores.shape[-1]
  return jnp.where(s > 0, scores / jnp.where(s > 0, s, 1), 1.0 / k)


def link_name(link) -> str:
  """A short JSON-able name for a link (for summaries)."""
  if isinstance(link, functools.partial):
    inner = link_name(link.func)
    kw = ", ".join(f"{k}={v!r}" for k, v in sorted(link.keywords.items()))
    return f"{inner}({kw})" if kw else inner
  owner = getattr(getattr(link, "__self__", None), "name", None)
  if isinstance(owner, str):  # a bound method of a named object, e.g. a registered loss's ``probs``
    return f"{owner}.{link.__name__}"
  name = getattr(link, "__qualname__", None) or getattr(link, "__name__", None)
  if name is None:
    return type(link).__name__
  module = getattr(link, "__module__", "") or ""
  if link is jax.nn.softmax:
    return "softmax"
  return f"{module}.{name}" if module and not module.startswith("jax") else name
