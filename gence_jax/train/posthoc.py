"""Post-hoc calibration of predictions made elsewhere: ``gence-jax calibrate --predictions FILE.npz --workdir DIR``.

The file holds a model's outputs on a held-out split and on a test split, from any framework:

* ``val_logits`` [N, K] or ``val_probs`` [N, K], and ``val_labels`` [N] (integers in [0, K));
* ``test_logits`` [M, K] or ``test_probs`` [M, K], and ``test_labels`` [M];
* optionally ``link``: a string, ``"softmax"`` (the default) or a registered loss spec whose probability link turns
  the logits into probabilities (e.g. ``"mgce:beta=2.0"``). Only with logits.

Probabilities are read as the logits log p (an exact zero as the log of the smallest normal float32), whose
softmax is p again (to float rounding), so every calibrator fits them as it fits a softmax model's logits.

Every calibrator of ``gence_jax.calibration`` (or those of ``methods``) is fitted on the held-out split and scored on
the test split with :func:`gence_jax.train.evaluate.score_calibrator` (bootstrap intervals over the test examples;
top-label calibrators on their (prediction, confidence) pair), next to the uncalibrated outputs. Bad input (a
missing key, shapes that disagree, labels out of range, NaN, rows that do not sum to 1) is a one-line
:class:`gence_jax.data.DataError` (exit 3); an unknown method or link is a ``ConfigError`` (exit 2).
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gence_jax import calibration, checks, losses, metrics, plots
from gence_jax.data import DataError
from gence_jax.data.validate import read_npz
from gence_jax.train import evaluate, outputs, specs
from gence_jax.train.errors import ConfigError

#: The columns of the printed table and of ``calibration.md`` (fractions shown in %; NLL in nats).
TABLE_METRICS = ("accuracy", "nll", "ece", "adaptive_ece", "l2_ce_debiased", "sce")


def _one_of(arrays: dict, split: str, path: str) -> tuple[str, np.ndarray]:
  keys = [f"{split}_logits", f"{split}_probs"]
  found = [k for k in keys if k in arrays]
  if len(found) != 1:
    what = "both" if found else "neither"
    raise DataError(f"predictions {path!r}: need exactly one of {keys[0]!r} or {keys[1]!r}, found {what}")
  return found[0], arrays[found[0]]


def _check_split(arrays: dict, split: str, path: str) -> tuple[str, np.ndarray, np.ndarray]:
  key, out = _one_of(arrays, split, path)
  lab_key = f"{split}_labels"
  if lab_key not in arrays:
    raise DataError(f"predictions {path!r}: missing {lab_key!r} (keys: {sorted(arrays)})")
  out, labels = np.asarray(out), np.asarray(arrays[lab_key])
  if out.ndim != 2 or out.shape[1] < 2 or not np.issubdtype(out.dtype, np.floating):
    raise DataError(f"predictions {path!r}: {key!r} must be a float array [N, K] with K >= 2, got {out.dtype}{out.shape}")
  if labels.ndim == 2 and labels.shape[1] == 1:
    labels = labels[:, 0]
  if labels.shape != (out.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(
      f"predictions {path!r}: {lab_key!r} must be integers of shape ({out.shape[0]},) to match {key!r}, "
      f"got {labels.dtype}{labels.shape}"
    )
  if not np.all(np.isfinite(out)):
    row = int(np.flatnonzero(~np.all(np.isfinite(out), axis=1))[0])
    raise DataError(f"predictions {path!r}: {key!r} has NaN or Inf (first in row {row})")
  k = out.shape[1]
  bad = (labels < 0) | (labels >= k)
  if bad.any():
    i = int(np.flatnonzero(bad)[0])
    raise DataError(f"predictions {path!r}: {lab_key!r}[{i}] = {int(labels[i])} is out of range for K = {k} classes")
  if key.endswith("_probs"):
    tol = checks.sum_tolerance(out.dtype)
    off = np.abs(out.sum(1) - 1) > tol
    if (out < 0).any() or off.any():
      i = int(np.flatnonzero(off | (out < 0).any(1))[0])
      raise DataError(
        f"predictions {path!r}: {key!r} row {i} is not a probability vector (sum {out[i].sum():.6g}, min "
        f"{out[i].min():.3g}); save logits as '{split}_logits' instead"
      )
  return key, out.astype(np.float32), labels.astype(np.int32)


def _link(arrays: dict, has_probs: bool, path: str):
  if "link" not in arrays:
    return "softmax", jax.nn.softmax
  text = str(np.asarray(arrays["link"]).reshape(()))
  if text == "softmax":
    return text, jax.nn.softmax
  if has_probs:
    raise ConfigError(f"predictions {path!r}: link {text!r} applies to logits; probabilities need no link")
  try:
    name, hparams = specs.parse_loss_spec(text)
    return text, losses.get_loss(name, **hparams).probs_fn
  except (ValueError, TypeError, KeyError) as e:
    raise ConfigError(f"predictions {path!r}: link {text!r} is not 'softmax' or a loss spec ({e})") from None


def load_predictions(path: str) -> dict:
  """The checked arrays of a predictions file: ``{"val": (logits, labels), "test": (logits, labels), "link_name",
  "link", "inputs"}`` (probabilities already turned into the logits log p)."""
  if not os.path.isfile(path):
    raise DataError(f"predictions file not found: {path!r}")
  arrays = read_npz(path)
  out = {}
  kinds = []
  for split in ("val", "test"):
    key, values, labels = _check_split(arrays, split, path)
    kinds.append(key.split("_")[1])
    if key.endswith("_probs"):
      values = np.log(np.maximum(values, np.finfo(np.float32).tiny))
    out[split] = (values, labels)
  if out["val"][0].shape[1] != out["test"][0].shape[1]:
    raise DataError(
      f"predictions {path!r}: validation has {out['val'][0].shape[1]} classes and test {out['test'][0].shape[1]}"
    )
  if len(set(kinds)) != 1:
    raise DataError(f"predictions {path!r}: give logits for both splits or probabilities for both, got {kinds}")
  out["link_name"], out["link"] = _link(arrays, kinds[0] == "probs", path)
  out["inputs"] = kinds[0]
  return out


def _fmt(value, metric: str, interval: dict | None) -> str:
  if value is None:
    return "n/a (top-label)"
  scale = 1.0 if metric == "nll" else 100.0
  text = f"{scale * value:.2f}"
  if interval is not None:
    text += f" [{scale * interval['low']:.2f}, {scale * interval['high']:.2f}]"
  return text


def markdown(results: dict) -> str:
  """The test-metric table: one row per stage (raw, then each calibrator), 95% bootstrap intervals in brackets."""
  head = "| calibrator | " + " | ".join(TABLE_METRICS) + " |"
  lines = [head, "|" + "---|" * (len(TABLE_METRICS) + 1)]
  for stage, m in results["test"].items():
    boot = m.get("bootstrap", {})
    cells = [_fmt(m.get(k), k, boot.get(k)) for k in TABLE_METRICS]
    lines.append(f"| {stage} | " + " | ".join(cells) + " |")
  n = results["test"]["raw"].get("bootstrap", {}).get("resamples")
  note = (
    f"Test split, fitted on the held-out split. Accuracy, ECE, adaptive ECE, debiased L2 and SCE in %, NLL in nats; "
    f"{results['num_bins']} bins"
  )
  if n:
    note += f"; [95% percentile bootstrap interval over {n} resamples of the test examples]"
  note += (
    ". Top-label calibrators keep the model's prediction and give it a calibrated confidence: metrics of the full "
    "probability vector are not defined for them (n/a)."
  )
  return "\n".join(lines) + "\n\n" + note + "\n"


def _diagram(results_stage_pairs: dict, num_bins: int, path: str, title: str) -> None:
  curves = {}
  for stage, (conf, correct) in results_stage_pairs.items():
    curves[stage] = metrics.top_label_stats(conf, correct, num_bins=num_bins)
  plots.reliability_diagram(curves, num_bins=num_bins, path=path, title=title)


def calibrate_predictions(
  path: str,
  workdir: str,
  *,
  methods: Sequence[str] | None = None,
  num_bins: int = 15,
  bootstrap: int = 200,
  seed: int = 0,
) -> dict:
  """Fits every calibrator (or ``methods``) on the file's held-out split and scores it on its test split; writes
  ``calibration.json``, ``calibration.md`` and reliability diagrams (``reliability_<stage>.png``) to ``workdir``.
  Returns the results dict."""
  available = calibration.available_methods()
  methods = list(available if not methods else methods)
  unknown = [m for m in methods if m not in available]
  if unknown:
    raise ConfigError(f"--methods: unknown calibrator(s) {unknown}; available: {', '.join(available)}")
  if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
    raise ConfigError(f"--num-bins must be an integer >= 1, got {num_bins!r}")
  if bootstrap < 0 or bootstrap == 1:
    raise ConfigError(f"--bootstrap must be 0 (none) or >= 2 resamples, got {bootstrap}")
  data = load_predictions(path)
  (val_z, val_y), (test_z, test_y) = data["val"], data["test"]
  link = data["link"]
  boot = dict(bootstrap=bootstrap, seed=seed)
  raw_probs = np.asarray(link(jnp.asarray(test_z)))
  test = {"raw": evaluate.score(raw_probs, test_y, num_bins, **boot)}
  pairs = {"raw": (raw_probs.max(1), raw_probs.argmax(1) == test_y)}
  summaries = {}
  for method in methods:
    cal = calibration.fit(method, val_z, val_y, link=link)
    test[method] = evaluate.score_calibrator(cal, test_z, test_y, num_bins, **boot)
    pred = cal.predict(test_z)
    pairs[method] = (np.asarray(pred.confidence), np.asarray(pred.prediction) == test_y)
    summaries[method] = cal.summary()
  results = {
    "predictions": os.path.abspath(path),
    "inputs": data["inputs"],
    "link": data["link_name"],
    "num_bins": num_bins,
    "num_classes": int(test_z.shape[1]),
    "num_val": int(val_y.shape[0]),
    "num_test": int(test_y.shape[0]),
    "test": test,
    "calibrators": summaries,
  }
  os.makedirs(workdir, exist_ok=True)
  outputs.write_json(os.path.join(workdir, "calibration.json"), results)
  with open(os.path.join(workdir, "calibration.md"), "w") as f:
    f.write(markdown(results))
  for stage, pair in pairs.items():
    _diagram({stage: pair} if stage == "raw" else {"raw": pairs["raw"], stage: pair}, num_bins,
             os.path.join(workdir, f"reliability_{stage}.png"), f"{stage}: test split")
  return results
