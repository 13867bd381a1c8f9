"""Loss registry: a loss by name, with its hyper-parameters bound and its probability link named.

Training and evaluation code never guesses how to turn logits into probabilities: they ask the loss.

>>> loss = get_loss("mgce", beta=2.0)
>>> per_example = loss.per_example(logits, labels)   # [batch]
>>> probs = loss.probs(logits)                        # the MGCE link, not softmax
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping

import jax

from gence_jax.losses import baselines, generative_ce as gence_lib, minimax_gce as mgce_lib


def softmax_probs(logits):
  """The softmax link, p = softmax(z), used by every loss except MGCE."""
  return jax.nn.softmax(logits, axis=-1)


@dataclasses.dataclass(frozen=True)
class Loss:
  """A loss with its hyper-parameters bound.

  Attributes:
    name: registry name.
    hparams: the bound keyword hyper-parameters.
    fn: the underlying per-example function ``fn(logits, labels, *, where, axis_name, **hparams)``.
    link: ``link(logits, **link_hparams) -> probs``, the probability link predictions are read through.
    couples_batch: True when an example's loss depends on the other examples of the (global) batch (GenCE).
  """

  name: str
  hparams: Mapping[str, Any]
  fn: Callable[..., jax.Array]
  link: Callable[..., jax.Array]
  link_hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  couples_batch: bool = False

  def per_example(self, logits, labels, *, where=None, axis_name=None):
    """One loss value per example (no reduction)."""
    return self.fn(logits, labels, where=where, axis_name=axis_name, **self.hparams)

  def probs(self, logits):
    """Class probabilities under this loss's link."""
    return self.link(logits, **self.link_hparams)

  def __call__(self, logits, labels, *, where=None, axis_name=None):
    return self.per_example(logits, labels, where=where, axis_name=axis_name)


@dataclasses.dataclass(frozen=True)
class _Entry:
  fn: Callable[..., jax.Array]
  link: Callable[..., jax.Array] = softmax_probs
  link_hparams: tuple[str, ...] = ()  # hyper-parameters shared with the link
  couples_batch: bool = False


_REGISTRY: dict[str, _Entry] = {
  "cross_entropy": _Entry(baselines.cross_entropy),
  "generalized_ce": _Entry(baselines.generalized_ce),
  "mae": _Entry(baselines.mae),
  "focal": _Entry(baselines.focal),
  "flsd53": _Entry(baselines.flsd53),
  "dual_focal": _Entry(baselines.dual_focal),
  "brier": _Entry(baselines.brier),
  "nce_rce": _Entry(baselines.nce_rce),
  "gence": _Entry(gence_lib.gence, couples_batch=True),
  "mgce": _Entry(mgce_lib.mgce, link=mgce_lib.mgce_probs, link_hparams=("beta", "tol", "max_iter")),
}
_ALIASES = {"ce": "cross_entropy", "lq": "generalized_ce", "gce": "generalized_ce"}


def available_losses() -> list[str]:
  """Registered loss names (aliases: ce, lq, gce -> generalized_ce)."""
  return sorted(_REGISTRY)


def _hparam_names(fn) -> set[str]:
  params = inspect.signature(fn).parameters
  return {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n not in ("where", "axis_name")}


def get_loss(name: str, **hparams) -> Loss:
  """Returns the registered loss `name` with `hparams` bound.

  Raises ValueError for an unknown name, a hyper-parameter the loss does not take, or an invalid value
  (e.g. ``beta < 1``, ``q`` outside (0, 1], ``gamma < 0``).
  """
  key = _ALIASES.get(name, name)
  if key not in _REGISTRY:
    raise ValueError(
      f"get_loss: unknown loss name {name!r}; expected one of {available_losses()} (aliases {sorted(_ALIASES)})."
    )
  entry = _REGISTRY[key]
  allowed = _hparam_names(entry.fn)
  unknown = set(hparams) - allowed
  if unknown:
    raise ValueError(f"get_loss: loss {key!r} takes hyper-parameters {sorted(allowed)}, got unknown {sorted(unknown)}.")
  # Trace once on a tiny input: hyper-parameter checks run at trace time, so bad values raise here, not mid-run.
  jax.eval_shape(
    lambda z, y: entry.fn(z, y, **hparams), jax.ShapeDtypeStruct((2, 2), "float32"), jax.ShapeDtypeStruct((2,), "int32")
  )
  link_hparams = {k: v for k, v in hparams.items() if k in entry.link_hparams}
  return Loss(
    name=key,
    hparams=dict(hparams),
    fn=entry.fn,
    link=entry.link,
    link_hparams=link_hparams,
    couples_batch=entry.couples_batch,
  )
