"""Loss registry: a loss by name, with its hyper-parameters bound, its probability link named, and the behaviour a
training program needs (state, a default parameter penalty, a post-training report; see `gence_jax.losses.hooks`).

Training and evaluation code never guesses how to turn logits into probabilities, nor tests a loss's name: they ask
the loss.

>>> import jax.numpy as jnp
>>> loss = get_loss("mgce", beta=2.0)
>>> logits, labels = jnp.array([[0.5, 0.0, -1.0]]), jnp.array([0])
>>> loss.per_example(logits, labels).shape
(1,)
>>> [round(float(p), 3) for p in loss.probs(logits)[0]]     # the MGCE link, not softmax
[0.671, 0.324, 0.005]
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from gence_jax.losses import baselines, generative_ce as gence_lib, hooks, longtail, minimax_gce as mgce_lib, soft


#: The softmax link, p = softmax(z) over the last axis, used by every loss except MGCE (the very function object
#: `jax.nn.softmax`, so calibrators recognise it and compiled functions keyed on the link are shared).
softmax_probs = jax.nn.softmax


@functools.lru_cache(maxsize=None)
def _jitted(fn: Callable) -> Callable:
  """`fn` jitted, the same object for the same `fn` (a jitted link is returned as it is)."""
  return fn if hasattr(fn, "lower") else jax.jit(fn)


@functools.lru_cache(maxsize=None)
def _bound_link(link: Callable, items: tuple) -> Callable:
  """`link` with hyper-parameters `items` bound and jitted (a link such as MGCE's runs a root finder, which called
  eagerly would compile its loops on every call): the same object for the same arguments. A link without
  hyper-parameters (the softmax) is returned as it is."""
  return jax.jit(functools.partial(link, **dict(items))) if items else link


@dataclasses.dataclass(frozen=True)
class Loss:
  """A loss with its hyper-parameters bound.

  Attributes:
    name: registry name.
    hparams: the bound keyword hyper-parameters (those of a stateful loss's state included).
    fn: the per-example function ``fn(logits, labels, *, where, axis_name, **hparams)`` (with ``state=`` for a
      stateful loss).
    link: ``link(logits, **link_hparams) -> probs``, the probability link predictions are read through.
    couples_batch: True when an example's loss depends on the other examples of the (global) batch (GenCE).
    state_spec: how a stateful loss creates and updates its state (`hooks.StateSpec`), or None.
    default_l1: lambda of the ``lambda * ||params||_1`` term a training program adds unless configured otherwise.
    report: ``report(loss, train_logits, train_labels, params, l1) -> dict`` after training, or None.
  """

  name: str
  hparams: Mapping[str, Any]
  fn: Callable[..., jax.Array]
  link: Callable[..., jax.Array]
  link_hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  couples_batch: bool = False
  state_spec: hooks.StateSpec | None = None
  default_l1: float = 0.0
  report: Callable[..., dict] | None = None

  @property
  def fn_hparams(self) -> dict:
    """The hyper-parameters passed to the per-example function (a stateful loss's state settings excluded)."""
    return {k: v for k, v in self.hparams.items() if k not in self.state_hparams}

  @property
  def state_hparams(self) -> dict:
    """The hyper-parameters of a stateful loss's state (passed to its ``init`` and ``update``)."""
    own = self.state_spec.hparams if self.state_spec is not None else ()
    return {k: v for k, v in self.hparams.items() if k in own}

  @property
  def stateful(self) -> bool:
    return self.state_spec is not None

  def per_example(
    self,
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    where: jax.typing.ArrayLike | None = None,
    axis_name: str | None = None,
    state: Any = None,
  ) -> jax.Array:
    """One loss value per example (no reduction); a stateful loss reads ``state`` (see `init_state`)."""
    kwargs = dict(where=where, axis_name=axis_name, **self.fn_hparams)
    if self.stateful:
      if state is None:
        raise ValueError(f"Loss {self.name!r} is stateful: pass `state=` (start from `loss.init_state()`).")
      kwargs["state"] = state
    return self.fn(logits, labels, **kwargs)

  def probs(self, logits: jax.typing.ArrayLike) -> jax.Array:
    """Class probabilities under this loss's link (jitted: one compiled program per input shape, where the
    softmax called eagerly would compile each of its operations)."""
    return _jitted(self.probs_fn)(logits)

  @property
  def probs_fn(self) -> Callable[[jax.Array], jax.Array]:
    """The link as a one-argument function, the same object for equal losses (``jax.nn.softmax`` itself for the
    softmax losses), so functions compiled for one run's link are reused by the next."""
    return _bound_link(self.link, tuple(sorted(self.link_hparams.items())))

  def init_state(self) -> Any:
    """The initial state of a stateful loss; an empty dict for the others."""
    if not self.stateful:
      return {}
    return self.state_spec.init(**self.state_hparams)

  def update_state(
    self,
    state: Any,
    *,
    epoch: int,
    val_probs: jax.typing.ArrayLike | None = None,
    val_labels: jax.typing.ArrayLike | None = None,
  ) -> Any:
    """The state after `epoch` (1-based) has ended; the state unchanged for a stateless loss."""
    if not self.stateful:
      return state
    return self.state_spec.update(
      state, epoch=epoch, val_probs=val_probs, val_labels=val_labels, **self.state_hparams
    )

  @property
  def needs_validation(self) -> bool:
    """Whether `update_state` reads validation predictions."""
    return self.stateful and self.state_spec.needs_validation

  __call__ = per_example


@dataclasses.dataclass(frozen=True)
class _Entry:
  fn: Callable[..., jax.Array]
  link: Callable[..., jax.Array] = softmax_probs
  link_hparams: tuple[str, ...] = ()  # hyper-parameters shared with the link
  couples_batch: bool = False
  state: hooks.StateSpec | None = None
  default_l1: float = 0.0
  report: Callable[..., dict] | None = None
  data_hparams: tuple[str, ...] = ()  # hyper-parameters a training program fills from the realised training split
  check: Callable[..., None] | None = None  # extra hyper-parameter check (traced once by get_loss)


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
  "mgce": _Entry(
    mgce_lib.mgce,
    link=mgce_lib.mgce_probs,
    link_hparams=("beta", "tol", "max_iter"),
    default_l1=1e-5,  # MRCpy's default uncertainty-set radius
    report=hooks.mgce_objective_report,
  ),
  "adafocal": _Entry(hooks.adafocal_with_state, state=hooks.ADAFOCAL_STATE, check=hooks.check_adafocal_hparams),
  # long tail: class_counts of the realised training split comes from the training program (`data=`)
  "logit_adjusted": _Entry(longtail.logit_adjusted, data_hparams=("class_counts",)),
  "balanced_softmax": _Entry(longtail.balanced_softmax, data_hparams=("class_counts",)),
  "class_balanced_ce": _Entry(longtail.class_balanced_ce, data_hparams=("class_counts",)),
  "ldam": _Entry(longtail.ldam, data_hparams=("class_counts",)),
  "ldam_drw": _Entry(
    longtail.ldam_drw,
    state=hooks.StateSpec(
      longtail.ldam_drw_init, longtail.ldam_drw_update, hparams=longtail.LDAM_DRW_STATE_HPARAMS, needs_validation=False
    ),
    data_hparams=("class_counts",),
  ),
}
_ALIASES = {"ce": "cross_entropy", "lq": "generalized_ce", "gce": "generalized_ce"}

#: Example values of the data hyper-parameters, used to check a loss's settings before any data is loaded.
_DATA_PLACEHOLDERS = {"class_counts": (1, 1)}


def register_loss(name: str, fn: Callable[..., jax.Array], **entry: Any) -> None:
  """Registers `fn` under `name` (``entry``: the `_Entry` fields link, link_hparams, couples_batch, state,
  default_l1, report, data_hparams, check). Raises ValueError if the name is taken."""
  if name in _REGISTRY or name in _ALIASES:
    raise ValueError(f"register_loss: a loss named {name!r} is already registered.")
  _REGISTRY[name] = _Entry(fn, **entry)


def available_losses() -> list[str]:
  """Registered loss names (aliases: ce -> cross_entropy; lq, gce -> generalized_ce)."""
  return sorted(_REGISTRY)


def soft_variant(name: str) -> Callable[..., jax.Array] | None:
  """The probability-target variant of loss `name` (`gence_jax.losses.soft`: ``fn(logits, targets, *, where,
  axis_name, **hparams)`` with the same hyper-parameters and ``targets`` [..., K]), or None if it has none."""
  return soft.SOFT_VARIANTS.get(_entry(name)[0])


def data_hparams(name: str) -> tuple[str, ...]:
  """The hyper-parameters of loss `name` that a training program fills from the realised training split
  (``"class_counts"``: the number of training examples per class)."""
  return _entry(name)[1].data_hparams


def _entry(name: str) -> tuple[str, _Entry]:
  key = _ALIASES.get(name, name)
  if key not in _REGISTRY:
    raise ValueError(
      f"get_loss: unknown loss name {name!r}; expected one of {available_losses()} (aliases {sorted(_ALIASES)})."
    )
  return key, _REGISTRY[key]


def _hparam_names(entry: _Entry) -> set[str]:
  params = inspect.signature(entry.fn).parameters
  names = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n not in ("where", "axis_name", "state")}
  return names | set(entry.state.hparams if entry.state else ())


def get_loss(name: str, *, data: Mapping[str, Any] | None = None, **hparams: Any) -> Loss:
  """Returns the registered loss `name` with `hparams` bound.

  ``data`` supplies the hyper-parameters a loss takes from the training split (see `data_hparams`), e.g.
  ``data={"class_counts": counts}``; without it they are checked with placeholder values (for validating a config
  before any data is loaded), and the returned loss must not be used for training.

  Raises ValueError for an unknown name, a hyper-parameter the loss does not take, or an invalid value
  (e.g. ``beta < 1``, ``q`` outside (0, 1], ``gamma < 0``).
  """
  key, entry = _entry(name)
  allowed = _hparam_names(entry)
  unknown = set(hparams) - allowed
  if unknown:
    raise ValueError(f"get_loss: loss {key!r} takes hyper-parameters {sorted(allowed)}, got unknown {sorted(unknown)}.")
  given = set(hparams) & set(entry.data_hparams)
  if given:
    raise ValueError(f"get_loss: loss {key!r} takes {sorted(given)} from the training data (`data=`), not as hparams.")
  source = _DATA_PLACEHOLDERS if data is None else data
  missing = [k for k in entry.data_hparams if k not in source]
  if missing:
    raise ValueError(f"get_loss: loss {key!r} needs {missing} from the training data; pass data={{...}}.")
  hparams = {**hparams, **{k: source[k] for k in entry.data_hparams}}
  fn_hparams = {k: v for k, v in hparams.items() if k not in (entry.state.hparams if entry.state else ())}
  if entry.check is not None:
    entry.check(**{k: v for k, v in hparams.items() if k not in fn_hparams})
  # Trace once on a tiny input: hyper-parameter checks run at trace time, so bad values raise here, not mid-run.
  num_classes = len(source["class_counts"]) if "class_counts" in entry.data_hparams else 2
  extra = {}
  if entry.state is not None:
    extra["state"] = entry.state.init(**{k: v for k, v in hparams.items() if k not in fn_hparams})
  jax.eval_shape(
    lambda z, y: entry.fn(z, y, **fn_hparams, **extra),
    jax.ShapeDtypeStruct((2, num_classes), jnp.float32),
    jax.ShapeDtypeStruct((2,), jnp.int32),
  )
  link_hparams = {k: v for k, v in hparams.items() if k in entry.link_hparams}
  return Loss(
    name=key,
    hparams=dict(hparams),
    fn=entry.fn,
    link=entry.link,
    link_hparams=link_hparams,
    couples_batch=entry.couples_batch,
    state_spec=entry.state,
    default_l1=entry.default_l1,
    report=entry.report,
  )
