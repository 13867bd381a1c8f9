r"""AdaFocal: calibration-aware adaptive focal loss (Ghosh, Schaaf & Gormley, NeurIPS 2022, arXiv 2211.11838).

AdaFocal keeps one focusing parameter :math:`\gamma_b` per confidence bin :math:`b` and adapts it once per epoch from
the model's calibration on a held-out validation set:

* **Validation statistics.** The validation set is split into ``B`` bins (15 equal-mass bins in the paper's setting)
  by its top-1 confidence :math:`c_i = \max_k p_{ik}`. For each bin, the calibration gap is
  :math:`g_b = C_{val,b} - A_{val,b}`, the mean top-1 confidence minus the accuracy of the bin's samples
  (:math:`g_b > 0`: over-confident, :math:`g_b < 0`: under-confident). The validation bin edges become the
  training bins of the next epoch.
* **Update** (one step per epoch, every bin at once), with :math:`\lambda > 0`:

  .. math::
     \gamma_b \leftarrow \begin{cases}
       \gamma_b \, e^{\lambda g_b}  & \gamma_b > 0 \ \text{(focal: over-confidence raises } \gamma) \\
       \gamma_b \, e^{-\lambda g_b} & \gamma_b \le 0 \ \text{(inverse focal: over-confidence shrinks } |\gamma|)
     \end{cases}

  then the **switch**: a :math:`\gamma_b` whose magnitude fell below :math:`S_{th}` changes family,
  :math:`\gamma_b \leftarrow -S_{th}` if it was positive and :math:`+S_{th}` otherwise; finally the clip
  :math:`\gamma_b \leftarrow \min(\max(\gamma_b, \gamma_{min}), \gamma_{max})`. Bins without validation samples
  have :math:`g_b = 0`.
* **Loss.** A training example goes to the bin containing :math:`p_y`, the probability of its *label* (not the
  top-1 confidence); the first and last bins are open-ended, so every :math:`p_y` has a bin. With
  :math:`\gamma = \gamma_{b(p_y)}`:

  .. math::
     \ell(z, y) = \begin{cases}
       -(1 - p_y)^{\gamma} \log p_y & \gamma \ge 0 \quad \text{(focal loss; } \gamma = 0 \text{ is cross-entropy)} \\
       -(1 + p_y)^{|\gamma|} \log p_y & \gamma < 0 \quad \text{(inverse-focal loss)}
     \end{cases}

  The bin lookup (and therefore :math:`\gamma`) is not differentiated. The inverse-focal factor grows with
  :math:`p_y`: it pushes confident predictions further, which raises the confidence of under-confident bins.

Defaults, as in the authors' released code (https://github.com/3mcloud/adafocal, ``main.py``): 15 bins,
:math:`\gamma_0 = 1`, :math:`\lambda = 1`, :math:`\gamma_{max} = 20`, :math:`\gamma_{min} = -2`,
:math:`S_{th} = 0.2`, one update after each epoch; before the first update the bins are 15 equal-width bins of
[0, 1].

Conventions of this implementation (details the paper leaves to its code):

* Equal-mass edges (``binning="equal_mass"``, the default) are the linear-interpolation quantiles of the
  (unmasked) validation top-1 confidences at levels :math:`k/B`, :math:`k = 0..B` (``numpy.quantile``'s default):
  with :math:`s_0 \le \dots \le s_{N-1}` the sorted confidences, :math:`e_k` interpolates :math:`s` at position
  :math:`k(N-1)/B`, so the outer edges are the smallest and the largest confidence. ``binning="equal_mass_authors"``
  uses the authors' code's rule (``np.interp(linspace(0, N, B+1), arange(N), s)``): position :math:`kN/B`, clamped
  to :math:`s_{N-1}` past the last confidence; its interior edges sit up to one rank higher than the quantiles'.
  ``binning="equal_width"`` uses :math:`k/B`.
* A validation sample is in bin :math:`b` when :math:`e_b < c \le e_{b+1}` (the first bin also takes
  :math:`c \le e_1`, the last also :math:`c > e_B`), as in the adaptive-ECE metric the paper uses; a training
  example is in bin :math:`b` when :math:`e_b \le p_y < e_{b+1}` with the outer bins open-ended, as in the
  authors' code. (The authors' validation bins are :math:`(e_b, e_{b+1}]` for every bin, so confidences equal to
  the smallest, :math:`e_0`, fall in no bin there; here they are in the first bin, whichever ``binning``.)

Typical use::

  state = adafocal_init(num_bins=15, gamma_init=1.0)
  for epoch in range(num_epochs):
    for batch in train:              # inside the jitted train step:
      per_example = adafocal(logits, labels, gammas=state.gammas, bin_edges=state.bin_edges)
    val_probs, val_labels = predict(validation_set)   # softmax probabilities [N, K], labels [N]
    state = adafocal_update(state, val_probs, val_labels)
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gence_jax import checks
from gence_jax.losses._common import check_hparam, check_logits_labels, compute_dtype, finalize, take_label
from gence_jax.losses.baselines import modulator

__all__ = ["AdaFocalState", "adafocal", "adafocal_init", "adafocal_update", "adafocal_validation_stats"]

_BINNINGS = ("equal_mass", "equal_mass_authors", "equal_width")


class AdaFocalState(NamedTuple):
  """Per-bin state of AdaFocal, a pytree (jit-able, checkpointable).

  Attributes:
    gammas: ``[num_bins]`` focusing parameters; negative values select the inverse-focal loss.
    bin_edges: ``[num_bins + 1]`` non-decreasing bin edges over the probability of the label.
    calibration_gaps: ``[num_bins]`` the last validation gaps ``C_val,b - A_val,b`` (zeros before any update).
    bin_counts: ``[num_bins]`` the number of validation samples per bin at the last update (zeros before any).
  """

  gammas: jax.Array
  bin_edges: jax.Array
  calibration_gaps: jax.Array
  bin_counts: jax.Array


def _check_gammas_edges(fn, gammas, bin_edges):
  gammas = jnp.asarray(gammas)
  bin_edges = jnp.asarray(bin_edges)
  if gammas.ndim != 1 or gammas.shape[0] < 1:
    raise ValueError(f"{fn}: `gammas` must have shape [num_bins] with num_bins >= 1, got {gammas.shape}.")
  if bin_edges.shape != (gammas.shape[0] + 1,):
    raise ValueError(
      f"{fn}: `bin_edges` must have shape [num_bins + 1] = ({gammas.shape[0] + 1},) to match `gammas` "
      f"{gammas.shape}, got {bin_edges.shape}."
    )
  for name, value in (("gammas", gammas), ("bin_edges", bin_edges)):
    if not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)):
      raise TypeError(f"{fn}: `{name}` must be a real array, got dtype {value.dtype}.")
  return gammas, bin_edges


def _bin_of_label_prob(p_y, bin_edges):
  """Training bin of each p_y: e_b <= p_y < e_{b+1}, first and last bins open-ended."""
  interior = bin_edges[1:-1]
  return jnp.searchsorted(interior, p_y, side="right")


def _modulated_log_loss(log_py, gamma):
  """-(1 - p)^g log p for g >= 0, -(1 + p)^|g| log p for g < 0, finite with finite gradients as p -> 1."""
  g_abs = jnp.abs(gamma)
  focal_factor = modulator(-jnp.expm1(log_py), g_abs)  # (1 - p)^g without cancellation, finite as p -> 1
  inverse_factor = (1.0 + jnp.exp(log_py)) ** g_abs
  factor = jnp.where(gamma >= 0, focal_factor, inverse_factor)
  return -factor * log_py


def adafocal(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  gammas: jax.typing.ArrayLike,
  bin_edges: jax.typing.ArrayLike,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Per-example AdaFocal loss for the current per-bin ``gammas`` and ``bin_edges``.

  .. math::
     \gamma = \gamma_{b(p_y)}, \qquad
     \ell(z, y) = \begin{cases} -(1 - p_y)^{\gamma} \log p_y & \gamma \ge 0 \\
                                -(1 + p_y)^{|\gamma|} \log p_y & \gamma < 0 \end{cases}

  with :math:`p = \mathrm{softmax}(z)` and :math:`b(p_y)` the bin with :math:`e_b \le p_y < e_{b+1}` (the first
  and last bins open-ended). The bin lookup and ``gammas`` are not differentiated. All gammas 0 is cross-entropy.
  Ghosh, Schaaf & Gormley, "AdaFocal: Calibration-aware Adaptive Focal Loss", NeurIPS 2022 (arXiv 2211.11838).
  See the module docstring for the per-epoch update (`adafocal_update`).

  Args:
    logits: ``[..., K]`` floating logits.
    labels: ``[...]`` integer labels.
    gammas: ``[num_bins]`` per-bin gammas (``AdaFocalState.gammas``).
    bin_edges: ``[num_bins + 1]`` bin edges (``AdaFocalState.bin_edges``).
    where: optional ``[...]`` bool mask; masked rows give 0.
    axis_name: accepted for the uniform signature; AdaFocal does not couple examples.

  Returns:
    ``[...]`` per-example losses (NaN for out-of-range labels).
  """
  del axis_name
  logits, labels, where = check_logits_labels(logits, labels, where, fn="adafocal")
  gammas, bin_edges = _check_gammas_edges("adafocal", gammas, bin_edges)
  dtype = logits.dtype
  gammas = jax.lax.stop_gradient(gammas.astype(dtype))
  bin_edges = jax.lax.stop_gradient(bin_edges.astype(dtype))
  log_py = take_label(jax.nn.log_softmax(logits, axis=-1), labels)
  p_y = jnp.exp(jax.lax.stop_gradient(log_py))
  gamma = gammas[_bin_of_label_prob(p_y, bin_edges)]
  loss = _modulated_log_loss(log_py, gamma)
  return finalize(loss, labels, logits.shape[-1], where)


def adafocal_init(
  num_bins: int = 15, gamma_init: float = 1.0, *, dtype: jax.typing.DTypeLike = jnp.float32
) -> AdaFocalState:
  """Initial AdaFocal state: ``num_bins`` equal-width bins of [0, 1], every gamma ``gamma_init`` (paper: 1).

  ``gamma_init`` may be negative (start with the inverse-focal loss) or 0 (cross-entropy until the first update,
  which then switches the bin to ``+switch_threshold``, as the update rule prescribes for ``|gamma| < S_th``).
  """
  num_bins = checks.check_num_bins("adafocal_init", num_bins)
  check_hparam("adafocal_init", "gamma_init", gamma_init)
  dtype = compute_dtype(jnp.dtype(dtype))
  return AdaFocalState(
    gammas=jnp.full((num_bins,), gamma_init, dtype),
    bin_edges=jnp.linspace(0.0, 1.0, num_bins + 1, dtype=dtype),
    calibration_gaps=jnp.zeros((num_bins,), dtype),
    bin_counts=jnp.zeros((num_bins,), jnp.int32),
  )


def _equal_mass_edges(conf, valid, num_bins, rule="quantile"):
  """Equal-mass edges of the valid confidences: the sorted values s interpolated linearly at position k(n-1)/B
  (``rule="quantile"``, numpy.quantile's default) or kn/B clamped to s[n-1] (``rule="authors"``, np.interp as in
  the AdaFocal authors' code), k = 0..B."""
  n = jnp.sum(valid)
  s = jnp.sort(jnp.where(valid, conf, jnp.inf))  # valid values first, ascending
  span = jnp.maximum(n, 1) - (1 if rule == "quantile" else 0)
  pos = jnp.arange(num_bins + 1, dtype=conf.dtype) * span.astype(conf.dtype) / num_bins
  lo = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, jnp.maximum(n - 1, 0))
  hi = jnp.minimum(lo + 1, jnp.maximum(n - 1, 0))
  frac = pos - lo.astype(conf.dtype)
  return s[lo] + frac * (s[hi] - s[lo])  # lo, hi index valid values only (when n >= 1)


def adafocal_validation_stats(
  val_probs: jax.typing.ArrayLike,
  val_labels: jax.typing.ArrayLike,
  num_bins: int,
  *,
  binning: str = "equal_mass",
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""Validation bins of AdaFocal: edges, calibration gaps :math:`C_{val,b} - A_{val,b}` and counts.

  The confidence of a validation sample is its top-1 probability :math:`c = \max_k p_k` and it is correct when
  :math:`\arg\max_k p_k = y` (ties go to the lowest class index). Bin :math:`b` holds :math:`e_b < c \le e_{b+1}`
  (first and last bins open-ended); an empty bin has gap 0.

  Args:
    val_probs: ``[..., K]`` predicted probabilities on the validation set (the loss's probability link).
    val_labels: ``[...]`` integer labels.
    num_bins: number of bins.
    binning: ``"equal_mass"`` (default; the paper's setting, edges the quantiles of ``c`` at levels k / num_bins),
      ``"equal_mass_authors"`` (the authors' code's edges: sorted ``c`` interpolated at positions k N / num_bins) or
      ``"equal_width"`` (``k / num_bins``). See the module docstring.
    where: optional ``[...]`` bool mask of the samples to use (padding excluded).
    axis_name: when the validation set is sharded over a named axis (pmap / shard_map / named vmap), the
      statistics are computed on the samples of all shards (gathered along ``axis_name``).

  Returns:
    ``(bin_edges [num_bins + 1], gaps [num_bins], counts [num_bins] int32)``. With no valid sample, the edges are
    those of ``equal_width`` and every gap is 0.
  """
  fn = "adafocal_validation_stats"
  num_bins = checks.check_num_bins(fn, num_bins)
  checks.check_choice(fn, "binning", binning, _BINNINGS)
  probs = checks.check_float_array(fn, "val_probs", val_probs)
  checks.check_class_axis(fn, "val_probs", probs)
  shape_text = "val_probs.shape[:-1]"
  labels = checks.check_labels(fn, val_labels, probs.shape[:-1], name="val_labels", shape_text=shape_text)
  where = checks.check_mask(fn, where, labels.shape, shape_text=shape_text)
  dtype = compute_dtype(probs.dtype)
  probs = probs.astype(dtype).reshape(-1, probs.shape[-1])
  labels = labels.reshape(-1)
  valid = jnp.ones(labels.shape, bool) if where is None else where.reshape(-1)
  conf = jnp.max(probs, axis=-1)
  correct = (jnp.argmax(probs, axis=-1) == labels).astype(dtype)
  if axis_name is not None:
    conf, correct, valid = (jax.lax.all_gather(v, axis_name, tiled=True) for v in (conf, correct, valid))

  width_edges = jnp.linspace(0.0, 1.0, num_bins + 1, dtype=dtype)
  if binning == "equal_width":
    edges = width_edges
  else:
    rule = "authors" if binning == "equal_mass_authors" else "quantile"
    edges = jnp.where(jnp.any(valid), _equal_mass_edges(conf, valid, num_bins, rule), width_edges)
  idx = jnp.searchsorted(edges[1:-1], conf, side="left")  # e_b < c <= e_{b+1}
  w = valid.astype(dtype)
  counts = jax.ops.segment_sum(w, idx, num_segments=num_bins)
  conf_sum = jax.ops.segment_sum(w * conf, idx, num_segments=num_bins)
  acc_sum = jax.ops.segment_sum(w * correct, idx, num_segments=num_bins)
  safe = jnp.maximum(counts, 1.0)
  gaps = jnp.where(counts > 0, conf_sum / safe - acc_sum / safe, 0.0)
  return edges, gaps, counts.astype(jnp.int32)


def adafocal_update(
  state: AdaFocalState,
  val_probs: jax.typing.ArrayLike,
  val_labels: jax.typing.ArrayLike,
  *,
  lam: float = 1.0,
  gamma_max: float = 20.0,
  switch_threshold: float = 0.2,
  gamma_min: float = -2.0,
  binning: str = "equal_mass",
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> AdaFocalState:
  r"""One AdaFocal epoch update of every bin's gamma from validation calibration (pure; jit with ``binning`` static).

  With :math:`g_b = C_{val,b} - A_{val,b}` from `adafocal_validation_stats`:

  .. math::
     \tilde\gamma_b = \begin{cases} \gamma_b\, e^{\lambda g_b} & \gamma_b > 0 \\
                                    \gamma_b\, e^{-\lambda g_b} & \gamma_b \le 0 \end{cases}, \qquad
     \hat\gamma_b = \begin{cases} -S_{th} & |\tilde\gamma_b| < S_{th},\ \tilde\gamma_b > 0 \\
                                  +S_{th} & |\tilde\gamma_b| < S_{th},\ \tilde\gamma_b \le 0 \\
                                  \tilde\gamma_b & \text{otherwise} \end{cases}, \qquad
     \gamma_b' = \min(\max(\hat\gamma_b, \gamma_{min}), \gamma_{max})

  and the new bin edges are the validation edges. Ghosh, Schaaf & Gormley, NeurIPS 2022; defaults
  :math:`\lambda = 1, \gamma_{max} = 20, S_{th} = 0.2, \gamma_{min} = -2` as in the authors' code.

  Args:
    state: the current `AdaFocalState`.
    val_probs: ``[..., K]`` validation probabilities (for softmax models, ``softmax(logits)``).
    val_labels: ``[...]`` integer validation labels.
    lam: step size :math:`\lambda > 0`.
    gamma_max: upper clip :math:`\gamma_{max} > S_{th}`.
    switch_threshold: :math:`S_{th} \ge 0`, the magnitude below which a bin switches between focal and inverse-focal.
    gamma_min: lower clip :math:`\gamma_{min} \le 0` (bounds the inverse-focal strength :math:`|\gamma|`).
    binning: ``"equal_mass"`` (default, quantile edges), ``"equal_mass_authors"`` (the authors' code's edges) or
      ``"equal_width"`` validation bins; see `adafocal_validation_stats`.
    where: optional bool mask of valid validation samples.
    axis_name: gather the validation statistics over this named axis (sharded validation).

  Returns:
    The new `AdaFocalState` (gammas, bin edges, and the gaps and counts it was computed from).
  """
  fn = "adafocal_update"
  if not isinstance(state, AdaFocalState):
    raise TypeError(f"{fn}: `state` must be an AdaFocalState (see adafocal_init), got {type(state).__name__}.")
  gammas, _ = _check_gammas_edges(fn, state.gammas, state.bin_edges)
  check_hparam(fn, "lam", lam, low=0.0, low_inclusive=False)
  check_hparam(fn, "gamma_max", gamma_max, low=0.0, low_inclusive=False)
  check_hparam(fn, "switch_threshold", switch_threshold, low=0.0)
  check_hparam(fn, "gamma_min", gamma_min, high=0.0)
  if all(isinstance(v, numbers.Real) for v in (gamma_max, switch_threshold)) and switch_threshold >= gamma_max:
    raise ValueError(f"{fn}: `switch_threshold` ({switch_threshold}) must be smaller than `gamma_max` ({gamma_max}).")
  num_bins = gammas.shape[0]
  edges, gaps, counts = adafocal_validation_stats(
    val_probs, val_labels, num_bins, binning=binning, where=where, axis_name=axis_name
  )
  dtype = jnp.promote_types(gammas.dtype, edges.dtype)
  gammas = gammas.astype(dtype)
  step = jnp.exp(lam * gaps.astype(dtype))
  new = jnp.where(gammas > 0, gammas * step, gammas / step)
  new = jnp.where(jnp.abs(new) < switch_threshold, jnp.where(new > 0, -switch_threshold, switch_threshold), new)
  new = jnp.clip(new, gamma_min, gamma_max).astype(dtype)
  return AdaFocalState(
    gammas=new, bin_edges=edges.astype(dtype), calibration_gaps=gaps.astype(dtype), bin_counts=counts
  )
