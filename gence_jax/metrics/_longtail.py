r"""Long-tail metrics: per-class accuracy and calibration, balanced accuracy, many/medium/few-shot accuracy.

Conventions (shared with the other metrics): ``probs`` [N, K] class probabilities under the model's link, ``labels``
[N] integers, ``where`` an optional [N] bool mask (masked rows count nowhere); predictions are ``argmax_k p_k`` (the
first maximum on ties); results are fractions in [0, 1]. ``class_counts`` is the number of TRAINING examples of each
class (the training split the data regime realised), static Python data of length K.

Per-class quantities are NaN for a class with no (unmasked) test example, and such classes are EXCLUDED from every
mean here (balanced accuracy, the shot groups, `longtail_metrics`'s mean per-class ECE): a mean over the classes
that have test examples; NaN if none has. All functions are jit-able (value checks are skipped on traced inputs).
"""

from __future__ import annotations

import functools
import numbers
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gence_jax import checks
from gence_jax.metrics import _binned

#: Liu et al. 2019's split: many-shot > 100 training examples, medium-shot 20..100, few-shot < 20.
MANY_SHOT_THRESHOLD = 100
FEW_SHOT_THRESHOLD = 20
_GROUPS = ("many", "medium", "few")


def _ratio(num, den, dtype):
  return jnp.where(den > 0, num.astype(dtype) / jnp.maximum(den, 1).astype(dtype), jnp.nan)


def _mean_present(values, keep):
  """Mean of `values` over the classes where `keep` (NaN if none)."""
  n = jnp.sum(keep)
  return jnp.where(n > 0, jnp.sum(jnp.where(keep, values, 0)) / jnp.maximum(n, 1), jnp.nan)


@functools.partial(jax.jit, static_argnames=("num_bins",))
def _core(probs, labels, valid, groups, *, num_bins: int) -> dict:
  """Everything at once from per-class sums (one compilation per shape and number of bins): per-class accuracy and
  top-label ECE, their means over the classes with test examples, and the accuracy of each row of `groups` [G, K]."""
  k = probs.shape[-1]
  dt = jnp.promote_types(probs.dtype, jnp.float32)
  conf, correct = _binned.top_label(probs, labels, valid)
  y = jnp.where(valid, labels, 0).astype(jnp.int32)  # masked rows may hold any label: they add zeros anywhere
  count = jax.ops.segment_sum(valid.astype(jnp.int32), y, num_segments=k)
  hits = jax.ops.segment_sum(correct.astype(jnp.int32), y, num_segments=k)
  ids = y * num_bins + _binned.bin_index(conf, num_bins)
  seg = functools.partial(jax.ops.segment_sum, segment_ids=ids, num_segments=k * num_bins)
  conf_sum = seg(jnp.where(valid, conf.astype(dt), 0)).reshape(k, num_bins)
  bin_hits = seg(correct.astype(dt)).reshape(k, num_bins)
  present = count > 0
  acc = _ratio(hits, count, dt)
  cls_ece = _ratio(jnp.sum(jnp.abs(bin_hits - conf_sum), axis=-1), count, dt)
  return {
    "per_class_accuracy": acc,
    "per_class_ece": cls_ece,
    "balanced_accuracy": _mean_present(acc, present),
    "mean_per_class_ece": _mean_present(cls_ece, present),
    "group_accuracy": jax.vmap(lambda g: _mean_present(acc, present & g))(groups),
  }


def _compute(probs, labels, where, *, num_bins=15, class_counts=None, thresholds=None, fn: str) -> dict:
  num_bins = checks.check_num_bins(fn, num_bins)
  probs, labels, where = checks.check_probs(fn, probs, labels, where)
  k = probs.shape[-1]
  groups = np.zeros((3, k), bool)
  if class_counts is not None:
    groups = np.stack(list(_groups(class_counts, *thresholds, fn, k).values()))
  valid = jnp.ones(labels.shape, jnp.bool_) if where is None else where
  return _core(probs, labels, valid, jnp.asarray(groups), num_bins=num_bins)


def per_class_accuracy(
  probs: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, *, where: jax.typing.ArrayLike | None = None
) -> jax.Array:
  r"""Accuracy (recall) of each class over its test examples.

  .. math:: \mathrm{acc}_c = \frac{\#\{i : y_i = c,\ \hat y_i = c\}}{\#\{i : y_i = c\}}

  Returns ``[K]``; NaN for a class without (unmasked) test examples.
  """
  return _compute(probs, labels, where, fn="per_class_accuracy")["per_class_accuracy"]


def balanced_accuracy(
  probs: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, *, where: jax.typing.ArrayLike | None = None
) -> jax.Array:
  r"""Balanced accuracy: the mean per-class recall over the classes present in the test labels.

  .. math:: \mathrm{bAcc} = \frac{1}{|C|} \sum_{c \in C} \mathrm{acc}_c, \qquad C = \{c : \#\{i : y_i = c\} > 0\}

  (scikit-learn's ``balanced_accuracy_score`` with its default ``adjusted=False``, which also drops classes absent
  from the true labels). On a class-balanced test set it is the ordinary accuracy. Brodersen et al., "The balanced
  accuracy and its posterior distribution", ICPR 2010; the long-tail benchmarks' "top-1 accuracy on a balanced test
  set". NaN when no row is unmasked.
  """
  return _compute(probs, labels, where, fn="balanced_accuracy")["balanced_accuracy"]


def per_class_ece(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_bins: int = 15,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Top-label ECE restricted to the test examples of each true class.

  .. math:: \mathrm{ECE}_c = \sum_{b=1}^{M} \frac{|B_{cb}|}{n_c}\,|\mathrm{acc}(B_{cb}) - \mathrm{conf}(B_{cb})|,
            \qquad B_{cb} = \{i : y_i = c,\ \max_k p_{ik} \in (e_{b-1}, e_b]\}

  with :math:`n_c` the number of test examples of class c, the confidence the TOP-LABEL probability
  :math:`\max_k p_{ik}` (not :math:`p_{ic}`), :math:`\mathrm{acc}(B) = \mathrm{mean}_B 1[\hat y_i = y_i]` and the
  equal-width bins of `gence_jax.metrics.ece` (edges b / M, bins (lo, hi], 0 in the first, 1.0 in the last). This is
  `ece` computed on the subset ``labels == c``; it shows whether the tail classes' predictions are over-confident
  (on a rare class the accuracy is low). Not classwise ECE (`classwise_ece` bins :math:`p_{ic}` over all
  examples). Returns ``[K]``; NaN for a class without (unmasked) test examples.
  """
  return _compute(probs, labels, where, num_bins=num_bins, fn="per_class_ece")["per_class_ece"]


def _check_counts(class_counts, fn, num_classes=None) -> np.ndarray:
  if isinstance(class_counts, jax.core.Tracer):
    raise TypeError(f"{fn}: `class_counts` must be static training counts per class (a tuple of ints), got a tracer.")
  counts = np.asarray(class_counts)
  if counts.dtype == np.bool_ or not np.issubdtype(counts.dtype, np.integer):
    raise TypeError(f"{fn}: `class_counts` must be integer training counts per class, got dtype {counts.dtype}.")
  if counts.ndim != 1:
    raise ValueError(f"{fn}: `class_counts` must be 1-D (one count per class), got shape {counts.shape}.")
  if num_classes is not None and counts.shape[0] != num_classes:
    raise ValueError(f"{fn}: `class_counts` has {counts.shape[0]} entries but `probs` has {num_classes} classes.")
  if np.any(counts < 0):
    raise ValueError(f"{fn}: `class_counts` must be non-negative, got minimum {counts.min()}.")
  return counts


def _groups(class_counts, many_threshold, few_threshold, fn, num_classes=None) -> dict[str, np.ndarray]:
  for name, value in (("many_threshold", many_threshold), ("few_threshold", few_threshold)):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
      raise TypeError(f"{fn}: `{name}` must be a real number of training examples, got {value!r}.")
  if few_threshold > many_threshold:
    raise ValueError(f"{fn}: `few_threshold` ({few_threshold}) must not exceed `many_threshold` ({many_threshold}).")
  counts = _check_counts(class_counts, fn, num_classes)
  many = counts > many_threshold
  few = counts < few_threshold
  return dict(zip(_GROUPS, (many, ~many & ~few, few)))


def shot_groups(
  class_counts: Sequence[int], *, many_threshold: float = MANY_SHOT_THRESHOLD, few_threshold: float = FEW_SHOT_THRESHOLD
) -> dict[str, np.ndarray]:
  """Static bool [K] masks ``{"many", "medium", "few"}``: many ``n_c > many_threshold``, few ``n_c < few_threshold``,
  medium the rest (``few_threshold <= n_c <= many_threshold``); ``n_c`` the training counts. Defaults 100 and 20 as
  in Liu et al. 2019 (a class with 0 training examples is few-shot)."""
  return _groups(class_counts, many_threshold, few_threshold, "shot_groups")


def shot_accuracy(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  class_counts: Sequence[int],
  *,
  many_threshold: float = MANY_SHOT_THRESHOLD,
  few_threshold: float = FEW_SHOT_THRESHOLD,
  where: jax.typing.ArrayLike | None = None,
) -> dict[str, jax.Array]:
  r"""Many-, medium- and few-shot accuracy (Liu et al. 2019).

  .. math:: \mathrm{acc}_G = \frac{1}{|G \cap C|} \sum_{c \in G \cap C} \mathrm{acc}_c

  for each group G of `shot_groups` (split by TRAINING counts ``class_counts``; defaults many > 100, medium 20..100,
  few < 20), C the classes with test examples: the mean per-class accuracy within the group, as in the authors'
  ``shot_acc``. NaN for a group without such classes. Returns ``{"many": ..., "medium": ..., "few": ...}``.
  Liu, Miao, Zhan, Wang, Gong & Yu, "Large-Scale Long-Tailed Recognition in an Open World", CVPR 2019.
  """
  out = _compute(
    probs, labels, where, class_counts=class_counts, thresholds=(many_threshold, few_threshold), fn="shot_accuracy"
  )
  return dict(zip(_GROUPS, out["group_accuracy"]))


def longtail_metrics(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  class_counts: Sequence[int],
  *,
  num_bins: int = 15,
  many_threshold: float = MANY_SHOT_THRESHOLD,
  few_threshold: float = FEW_SHOT_THRESHOLD,
  where: jax.typing.ArrayLike | None = None,
) -> dict[str, jax.Array]:
  """The long-tail summary in one pass: ``balanced_accuracy``, ``many_shot_accuracy``, ``medium_shot_accuracy``,
  ``few_shot_accuracy``, ``mean_per_class_ece`` (the mean of `per_class_ece` over the classes with test examples),
  ``per_class_accuracy`` [K] and ``per_class_ece`` [K]; definitions as in the functions of the same names."""
  out = _compute(
    probs,
    labels,
    where,
    num_bins=num_bins,
    class_counts=class_counts,
    thresholds=(many_threshold, few_threshold),
    fn="longtail_metrics",
  )
  shots = out.pop("group_accuracy")
  out.update({f"{name}_shot_accuracy": acc for name, acc in zip(_GROUPS, shots)})
  return out
