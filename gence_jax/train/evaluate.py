"""Evaluation of a train state: logits of a split, metrics through the loss's link, post-hoc calibration, and the
choice of the reported checkpoint.

Every metric reads probabilities through ``loss.probs`` (softmax for most losses, the MGCE link for MGCE).
"""

from __future__ import annotations

import warnings

import jax
import jax.experimental.multihost_utils as mhu
import numpy as np

from gence_jax import calibration, metrics
from gence_jax.data import eval_batches

REPORTED = ("accuracy", "nll", "brier", "ece", "classwise_ece", "sce", "mce")
#: Estimators reported next to the binned ones (`gence_jax.metrics`): Kumar et al.'s debiased L2 calibration error,
#: RMSCE on equal-mass bins, the smooth ECE of Blasiok & Nakkiran.
ESTIMATORS = ("adaptive_ece", "l2_ce", "l2_ce_debiased", "rmsce", "smooth_ece")
#: Long-tail summaries (`gence_jax.metrics.longtail_metrics`, shot groups from the training split's class counts).
LONGTAIL = (
  "balanced_accuracy",
  "many_shot_accuracy",
  "medium_shot_accuracy",
  "few_shot_accuracy",
  "mean_per_class_ece",
)

#: The checkpoint choices a run records (``results.json["checkpoints"]``; ``compare --selection`` picks one).
SELECTIONS = {
  "val": "best validation accuracy (ties: lower validation NLL), on the validation labels as trained with",
  "last": "the last checkpoint",
  "clean_val": "best clean-validation accuracy (ties: NLL): an oracle that reads the labels before the noise",
}


def _gather(x):
  return np.asarray(mhu.process_allgather(x, tiled=True) if jax.process_count() > 1 else x)


def predict_arrays(executor, state, x, y, normalizer, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """float32 logits and labels of every row of `x` (normalised with `normalizer`, no augmentation), in order.

  Every process holds all of `x` and predicts its rows of each global batch; the logits are gathered from all
  processes."""
  pi, pc = jax.process_index(), jax.process_count()
  batches = eval_batches(x, y, batch_size=batch_size, normalizer=normalizer, process_index=pi, process_count=pc)
  return predict_batches(executor, state, batches)


def predict_batches(executor, state, batches) -> tuple[np.ndarray, np.ndarray]:
  """float32 logits and labels of the real rows (``mask``) of evaluation `batches`, gathered from all processes."""
  logits, labels = [], []
  for batch in batches:
    out = _gather(executor.predict(state, batch["x"]))
    mask, lab = _gather(batch["mask"]), _gather(batch["label"])
    logits.append(out[mask])
    labels.append(lab[mask])
  return np.concatenate(logits), np.concatenate(labels)


def predict_split(executor, state, data, split: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """float32 logits and labels of every example of `split` (``"train"``, ``"val"``, ``"test"``; a streamed dataset's
  extra test splits by name), through the dataset's own evaluation iterator (normalised, no augmentation)."""
  pi, pc = jax.process_index(), jax.process_count()
  return predict_batches(executor, state, data.eval_batches(split, batch_size, process_index=pi, process_count=pc))


def _bootstrap_record(intervals: dict, resamples: int, seed: int) -> dict:
  """The JSON record of bootstrap intervals: resamples, seed, level and each metric's low / high / std."""
  return {
    "resamples": resamples,
    "seed": seed,
    "level": 0.95,
    **{m: {k: float(v[k]) for k in ("low", "high", "std")} for m, v in intervals.items()},
  }


def score(probs, labels, num_bins: int, *, bootstrap: int = 0, seed: int = 0, estimators: bool = True) -> dict:
  """The reported metrics (:data:`REPORTED` and :data:`ESTIMATORS`) of probabilities `probs` [N, K]; with
  ``bootstrap > 0`` also ``out["bootstrap"][metric] = {"low", "high", "std"}``: 95% percentile intervals over that
  many Poisson-bootstrap resamples of the examples (seeded: the same resamples for every model of a seed).
  ``estimators=False`` leaves out the estimators after the adaptive ECE (periodic evaluations)."""
  stats = metrics.compute_eval_stats(metrics.eval_stats(probs, labels, num_bins=num_bins))
  out = {k: float(stats[k]) for k in REPORTED}
  out["adaptive_ece"] = float(metrics.adaptive_ece(probs, labels, num_bins=num_bins))
  if not estimators:  # the periodic evaluations: what selection and the curves need
    return out
  out["l2_ce"] = float(metrics.l2_calibration_error(probs, labels, num_bins=num_bins))
  out["l2_ce_debiased"] = float(metrics.l2_calibration_error(probs, labels, num_bins=num_bins, debias=True))
  out["rmsce"] = float(metrics.rmsce(probs, labels, num_bins=num_bins))
  out["smooth_ece"] = float(metrics.smooth_ece(probs, labels))
  if bootstrap > 0:
    intervals = metrics.bootstrap_intervals(probs, labels, num_bins=num_bins, num_resamples=bootstrap, seed=seed)
    out["bootstrap"] = _bootstrap_record(intervals, bootstrap, seed)
  return out


def score_top_label(pair, labels, num_bins: int, *, bootstrap: int = 0, seed: int = 0) -> dict:
  """The metrics defined on a top-label output (`gence_jax.metrics.top_label_metrics`) of ``pair`` (a
  ``calibration.TopLabel``: the model's prediction and its calibrated confidence), with the same bins, estimators
  and bootstrap resamples as :func:`score`. The full-vector metrics (``metrics.UNDEFINED``: NLL, Brier, classwise
  ECE, SCE) are None, listed under ``"undefined"``."""
  conf = np.asarray(pair.confidence)
  correct = np.asarray(pair.prediction) == np.asarray(labels)
  values = metrics.top_label_metrics(conf, correct, num_bins=num_bins)
  out = {k: float(v) for k, v in values.items()}
  out.update({k: None for k in metrics.UNDEFINED})
  out["undefined"] = list(metrics.UNDEFINED)
  if bootstrap > 0:
    intervals = metrics.bootstrap_top_label_intervals(conf, correct, num_bins=num_bins, num_resamples=bootstrap, seed=seed)
    out["bootstrap"] = _bootstrap_record(intervals, bootstrap, seed)
  return out


def score_calibrator(cal, logits, labels, num_bins: int, **boot) -> dict:
  """Test metrics of a fitted calibrator: on its probability vector (:func:`score`), or on its (prediction,
  confidence) pair for a top-label one (:func:`score_top_label`: the prediction is the model's own)."""
  if cal.top_label:
    return score_top_label(cal.predict(logits), labels, num_bins, **boot)
  return score(cal.probs(logits), labels, num_bins, **boot)


def _method_options(method: str, cfg) -> dict:
  """The config's settings for a calibrator (ATS: pieces and minimum count; binned ones: the metric bins)."""
  if method == "ats":
    return {"num_pieces": cfg.ats_pieces, "min_count": cfg.ats_min_count}
  return {}


def longtail_scores(probs, labels, class_counts, cfg) -> dict:
  """:data:`LONGTAIL` summaries and the per-class accuracy and top-label ECE ([K] lists, NaN for classes without
  test examples), with the shot thresholds of ``cfg`` (``longtail`` config block)."""
  out = metrics.longtail_metrics(
    probs, labels, class_counts, many_threshold=cfg.many_threshold, few_threshold=cfg.few_threshold
  )
  return {k: (float(v) if np.ndim(v) == 0 else np.asarray(v).tolist()) for k, v in out.items()}


def calibrate_and_score(loss, val, test, cfg, *, bootstrap: bool = True) -> dict:
  """Test metrics through the loss's link, raw and after each calibrator of ``cfg.methods`` fitted on validation
  (`gence_jax.calibration.fit`), plus the validation metrics (``val_raw``) and each calibrator's fitted summary
  (with ``"degenerate"``, and a warning, when its fit collapsed). Top-label calibrators are scored on their
  (prediction, confidence) pair; full multiclass maps on their vector, whose accuracy may differ from the raw one.
  ``bootstrap``: intervals for the test metrics (``cfg.bootstrap_resamples`` resamples)."""
  (val_logits, val_labels), (test_logits, test_labels) = val, test
  boot = dict(bootstrap=cfg.bootstrap_resamples if bootstrap else 0, seed=cfg.bootstrap_seed)
  out = {"raw": score(loss.probs(test_logits), test_labels, cfg.num_bins, **boot), "calibrators": {}}
  for method in cfg.methods:
    cal = calibration.fit(method, val_logits, val_labels, link=loss.probs_fn, **_method_options(method, cfg))
    out[method] = score_calibrator(cal, test_logits, test_labels, cfg.num_bins, **boot)
    out["calibrators"][method] = cal.summary()
    reason = cal.degenerate()
    if reason:
      warnings.warn(f"calibrator {method!r} degenerated: {reason}", stacklevel=2)
  if "ts" in out["calibrators"]:
    out["temperature"] = out["calibrators"]["ts"]["temperature"]
  if "ats" in out["calibrators"]:
    out["ats_temperatures"] = out["calibrators"]["ats"]["temperatures"]
  out["val_raw"] = score(loss.probs(val_logits), val_labels, cfg.num_bins, estimators=False)
  return out


def improves(scores: dict, best: dict | None) -> bool:
  """Higher validation accuracy, ties broken by lower validation NLL."""
  if best is None:
    return True
  return (scores["accuracy"], -scores["nll"]) > (best["accuracy"], -best["nll"])
