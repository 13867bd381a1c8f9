"""Out-of-distribution detection in the training program (the config's ``ood`` block).

After training, the selected (best-on-validation) model scores the in-distribution TEST split and the test split of
every dataset in ``ood.datasets`` with each score of :data:`gence_jax.metrics.OOD_SCORES`:

* ``max_prob``: max_k p_k and ``entropy``: -H(p), with p the loss's OWN probability link (``loss.probs``: softmax,
  or the MGCE link for MGCE models);
* ``energy``: T logsumexp(z / T) with T = 1, on the LOGITS (the softmax model's negative free energy; for MGCE it is
  still the logsumexp of the logits).

Every score is oriented so that higher = more in-distribution, and the detection metrics treat the in-distribution
test set as the positive class: ``auroc``, ``aupr_in`` (in-distribution positive), ``aupr_out`` (OOD positive, score
negated), ``fpr95`` (fraction of OOD examples accepted at the threshold that keeps 95% of the in-distribution test
set), all from :mod:`gence_jax.metrics` and as fractions.

OOD inputs go through exactly the preprocessing of the in-distribution test set: the same
:class:`~gence_jax.data.Normalizer` (the in-distribution TRAIN statistics), no augmentation, the same batching. Their
shape must equal the in-distribution input shape (checked, with both shapes in the error, before training starts).
What counts as a dataset's "test split": TFDS ``test``; digits' held-out test fraction (as for training);
Tiny-ImageNet's official val set; an ``.npz`` file's ``x_test``, or all of ``x`` when it has no ``x_test`` (OOD labels
are never used). ``ood.max_examples > 0`` keeps a random subset of that size drawn with a FIXED seed (0), so every
run of a grid is scored on the same OOD examples.
"""

from __future__ import annotations

import numpy as np

from gence_jax import metrics
from gence_jax.data.ood import load_ood_sets, parse_ood_datasets


def has_ood(config) -> bool:
  """Whether the config names OOD datasets (configs built by hand may have no ``ood`` block)."""
  return "ood" in config and bool(parse_ood_datasets(config.ood.datasets))


def prepare_ood_sets(config, input_shape, in_dtype, in_name: str) -> dict[str, tuple[np.ndarray, dict]]:
  """Every dataset of ``config.ood.datasets``, loaded and checked against the in-distribution input shape by
  `gence_jax.data.load_ood_sets` (``{name: (x, info)}`` in the listed order)."""
  return load_ood_sets(
    config.ood.datasets,
    input_shape=input_shape,
    in_dtype=in_dtype,
    in_name=in_name,
    data_dir=config.ood.data_dir or config.dataset.data_dir or None,
    as_images=config.dataset.as_images,
    max_examples=config.ood.max_examples,
  )


def ood_scores(loss, logits) -> dict[str, np.ndarray]:
  """Every score of :data:`gence_jax.metrics.OOD_SCORES` for float logits [N, K], as float64 NumPy [N].

  ``max_prob`` and ``entropy`` read the probabilities through ``loss.probs`` (the loss's own link); ``energy`` takes
  the logits."""
  logits = np.asarray(logits, np.float32)
  probs = loss.probs(logits)
  out = {}
  for name, fn in metrics.OOD_SCORES.items():
    out[name] = np.asarray(fn(logits if name == "energy" else probs), np.float64)
  return out


def detection_metrics(scores_in, scores_out) -> dict[str, float]:
  """AUROC, AUPR-In, AUPR-Out and FPR at 95% TPR (in-distribution positive) of one score, as fractions."""
  return {
    "auroc": metrics.auroc(scores_in, scores_out),
    "aupr_in": metrics.aupr(scores_in, scores_out, positive="in"),
    "aupr_out": metrics.aupr(scores_in, scores_out, positive="out"),
    "fpr95": metrics.fpr_at_95_tpr(scores_in, scores_out),
  }


def evaluate_ood(loss, in_logits, ood_logits: dict, ood_info: dict | None = None) -> tuple[dict, dict]:
  """Detection metrics of every score for every OOD set against the in-distribution test logits.

  Returns ``(report, arrays)``: ``report = {"in_distribution": {...}, "datasets": {name: {"num_examples", "source",
  <score>: {"auroc", "aupr_in", "aupr_out", "fpr95"}}}}`` and ``arrays`` for ``ood_scores.npz``: ``in_<score>``,
  ``ood<i>_<score>`` and ``ood<i>_logits`` (i = position in the ``names`` array).
  """
  ood_info = ood_info or {}
  s_in = ood_scores(loss, in_logits)
  arrays = {f"in_{k}": v for k, v in s_in.items()}
  arrays["names"] = np.asarray(list(ood_logits), dtype=str)
  report = {
    "in_distribution": {"split": "test", "num_examples": int(len(in_logits))},
    "positive": "in-distribution",
    "scores": list(metrics.OOD_SCORES),
    "datasets": {},
  }
  for i, (name, logits) in enumerate(ood_logits.items()):
    s_out = ood_scores(loss, logits)
    entry = {"num_examples": int(len(logits)), "source": ood_info.get(name, {})}
    for score_name in metrics.OOD_SCORES:
      entry[score_name] = detection_metrics(s_in[score_name], s_out[score_name])
      arrays[f"ood{i}_{score_name}"] = s_out[score_name]
    arrays[f"ood{i}_logits"] = np.asarray(logits, np.float32)
    report["datasets"][name] = entry
  return report, arrays
