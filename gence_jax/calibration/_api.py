"""One entry point for every calibrator: ``fit(method, logits, labels, *, link, **options) -> Calibrator``."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from gence_jax.calibration import _binning, _common, _scaling, _temperature

Link = Callable[[jax.Array], jax.Array]

_LOGIT_PARAMS = (_temperature.TemperatureParams, _temperature.ATSParams)


def apply_calibrator(
  params: _temperature.TemperatureParams | _temperature.ATSParams, logits: jax.typing.ArrayLike
) -> jax.Array:
  """Calibrated LOGITS of temperature scaling or ATS (:func:`apply_temperature` / :func:`apply_ats`)."""
  if isinstance(params, _temperature.TemperatureParams):
    return _temperature.apply_temperature(params, logits)
  if isinstance(params, _temperature.ATSParams):
    return _temperature.apply_ats(params, logits)
  raise TypeError(f"apply_calibrator: params must be TemperatureParams or ATSParams, got {type(params).__name__}.")


_APPLY = {
  _scaling.VectorScalingParams: _scaling.apply_vector_scaling,
  _scaling.MatrixScalingParams: _scaling.apply_matrix_scaling,
  _binning.HistogramBinningParams: _binning.apply_histogram_binning,
  _binning.IsotonicParams: _binning.apply_isotonic,
  _binning.ScalingBinningParams: _binning.apply_scaling_binning,
}


def is_top_label(params: Any) -> bool:
  """True for a top-label calibrator's params (histogram binning and isotonic regression with
  ``variant="top_label"``, scaling-binning): its output is the pair (prediction, confidence), not a vector."""
  return bool(getattr(params, "top_label", False))


def calibrated_top_label(params: Any, logits: jax.typing.ArrayLike) -> _common.TopLabel:
  """The (prediction, confidence) pair of any fitted calibrator's params ([..., K] -> :class:`TopLabel`); jit-able.

  A top-label calibrator keeps the uncalibrated model's argmax and gives it the calibrated confidence; a full
  multiclass map (temperature, ATS, vector, matrix, Dirichlet, one-vs-rest binning) gives the argmax and the
  maximum of its calibrated vector (vector, matrix, Dirichlet and one-vs-rest maps may change the argmax).
  """
  if is_top_label(params):
    return _APPLY[type(params)](params, logits)
  probs = calibrated_probs(params, logits)
  return _common.TopLabel(jnp.argmax(probs, axis=-1).astype(jnp.int32), jnp.max(probs, axis=-1))


def calibrated_probs(params: Any, logits: jax.typing.ArrayLike, link: Optional[Link] = None) -> jax.Array:
  """Calibrated probabilities [..., K] of a fitted multiclass calibrator's params; jit-able.

  For temperature scaling and ATS this is ``link(apply_calibrator(params, logits))`` and ``link`` defaults to the
  link the params were fitted with (another link may be given); for the other calibrators ``link`` must be None
  (their output map is part of the fit). A top-label calibrator has no probability vector: a ValueError says to use
  :func:`calibrated_top_label`.
  """
  if is_top_label(params):
    raise ValueError(
      f"calibrated_probs: {type(params).__name__} is a top-label calibrator: it outputs the pair (the model's "
      "prediction, its calibrated confidence), not a probability vector; use calibrated_top_label"
    )
  if isinstance(params, _LOGIT_PARAMS):
    link = params.link if link is None else link
    return link(apply_calibrator(params, logits))
  apply = _APPLY.get(type(params))
  if apply is None:
    names = ", ".join(t.__name__ for t in _APPLY)
    raise TypeError(
      f"calibrated_probs: params must be a calibrator's params (TemperatureParams or ATSParams, or {names}); "
      f"got {type(params).__name__}"
    )
  if link is not None:
    raise ValueError(f"calibrated_probs: link can only be overridden for TemperatureParams or ATSParams, got {link!r}.")
  return apply(params, logits)


_calibrated_probs_jit = jax.jit(calibrated_probs)
_calibrated_top_label_jit = jax.jit(calibrated_top_label)


@dataclasses.dataclass(frozen=True)
class _Method:
  fit: Callable[..., Any]
  fixed: dict  # options set by the method name (not accepted from the caller)
  description: str


_METHODS = {
  "ts": _Method(_temperature.fit_temperature, {}, "temperature scaling, NLL"),
  "ts_ece": _Method(_temperature.fit_temperature_ece, {}, "temperature scaling, ECE over a grid"),
  "ats": _Method(_temperature.fit_ats, {}, "adaptive temperature scaling (monotone by default)"),
  "vector": _Method(_scaling.fit_vector_scaling, {}, "vector scaling"),
  "matrix": _Method(_scaling.fit_matrix_scaling, {}, "matrix scaling, ODIR"),
  "dirichlet": _Method(_scaling.fit_dirichlet, {}, "Dirichlet calibration, ODIR"),
  "histogram": _Method(_binning.fit_histogram_binning, {"variant": "top_label"}, "histogram binning, top-label"),
  "histogram_ovr": _Method(
    _binning.fit_histogram_binning, {"variant": "one_vs_rest"}, "histogram binning, one-vs-rest"
  ),
  "isotonic": _Method(_binning.fit_isotonic, {"variant": "top_label"}, "isotonic regression, top-label"),
  "isotonic_ovr": _Method(_binning.fit_isotonic, {"variant": "one_vs_rest"}, "isotonic regression, one-vs-rest"),
  "scaling_binning": _Method(_binning.fit_scaling_binning, {}, "scaling-binning, top-label"),
}


def available_methods() -> tuple:
  """The method names :func:`fit` accepts."""
  return tuple(_METHODS)


@dataclasses.dataclass(frozen=True)
class Calibrator:
  """A fitted calibrator: ``probs(logits)`` gives calibrated probabilities, ``summary()`` its parameters.

  Attributes:
    method: the method name given to :func:`fit`.
    params: the fitted params pytree (``TemperatureParams``, ``ATSParams``, ...), usable with
      :func:`calibrated_probs` inside a jitted function.
    options: the options it was fitted with (JSON-able ones only).
  """

  method: str
  params: Any
  options: dict = dataclasses.field(default_factory=dict)

  @property
  def link(self) -> Link:
    return self.params.link

  @property
  def top_label(self) -> bool:
    """True when the output is the (prediction, confidence) pair only (:func:`is_top_label`)."""
    return is_top_label(self.params)

  def probs(self, logits: jax.typing.ArrayLike) -> jax.Array:
    """Calibrated probabilities [..., K] (jitted); a ValueError for a top-label calibrator (use :meth:`predict`)."""
    if self.top_label:
      raise ValueError(
        f"Calibrator {self.method!r} is top-label: it outputs (prediction, calibrated confidence), not a probability "
        "vector; use .predict(logits)"
      )
    return _calibrated_probs_jit(self.params, jnp.asarray(logits))

  def predict(self, logits: jax.typing.ArrayLike) -> _common.TopLabel:
    """The (prediction [...], confidence [...]) pair (:func:`calibrated_top_label`, jitted)."""
    return _calibrated_top_label_jit(self.params, jnp.asarray(logits))

  def summary(self) -> dict:
    """JSON-able description: method, link, options and a few fitted numbers (temperatures, not matrices)."""
    return {
      "method": self.method,
      "link": _common.link_name(self.link),
      "output": "top_label" if self.top_label else "probabilities",
      "options": dict(self.options),
      **self.params.summary(),
    }

  def degenerate(self) -> str | None:
    """Why the fit degenerated (e.g. ATS with empty pieces), or None."""
    check = getattr(self.params, "degenerate", None)
    return check() if check is not None else None


def _json_able(value) -> bool:
  return value is None or isinstance(value, (bool, int, float, str)) or (
    isinstance(value, (tuple, list)) and all(isinstance(v, (bool, int, float, str)) for v in value)
  )


def fit(
  method: str,
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  link: Link = jax.nn.softmax,
  **options: Any,
) -> Calibrator:
  """Fits calibrator ``method`` (one of :func:`available_methods`) on held-out logits and labels.

  ``link`` is the model's probability link (``loss.probs``; softmax by default); ``options`` are the keyword
  arguments of the method's ``fit_*`` function (e.g. ``where=``, ``num_pieces=`` for "ats", ``num_bins=``).
  Returns a :class:`Calibrator`. See ``docs/calibration.md`` (Calibrators) for what each method fits.
  """
  spec = _METHODS.get(method) if isinstance(method, str) else None
  if spec is None:
    raise ValueError(f"fit: unknown method {method!r}; available: {', '.join(_METHODS)}")
  accepted = [
    name
    for name, p in inspect.signature(spec.fit).parameters.items()
    if p.kind == p.KEYWORD_ONLY and name not in spec.fixed and name != "link"
  ]
  unknown = sorted(set(options) - set(accepted))
  if unknown:
    raise TypeError(
      f"fit: method {method!r} takes no option(s) {', '.join(unknown)}; its options: {', '.join(accepted)}"
    )
  params = spec.fit(logits, labels, link=link, **spec.fixed, **options)
  recorded = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items() if k != "where" and _json_able(v)}
  return Calibrator(method=method, params=params, options=recorded)
