"""What a run writes: ``metrics.jsonl`` events as they happen, and at the end ``results.json``, ``predictions.npz``,
``ood_scores.npz`` (with OOD sets) and ``reliability.png``. Only process 0 writes."""

from __future__ import annotations

import json
import os

import jax
import numpy as np


def jsonable(x):
  """Plain JSON values; NaN/Inf become null so every line stays strict JSON."""
  if isinstance(x, dict):
    return {k: jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, (np.generic, np.ndarray, jax.Array)):
    x = np.asarray(x)
    return jsonable(x.item() if x.ndim == 0 else x.tolist())
  if isinstance(x, float) and not np.isfinite(x):
    return None
  return x


def write_json(path: str, obj) -> None:
  """Writes `obj` as strict JSON atomically (a temporary file renamed over `path`)."""
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(jsonable(obj), f, indent=2, allow_nan=False)
  os.replace(tmp, path)


class MetricsWriter:
  """Appends one JSON object per line to ``metrics.jsonl`` (process 0 only)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.enabled = jax.process_index() == 0

  def write(self, record: dict) -> None:
    if self.enabled:
      with open(self.path, "a") as f:
        f.write(json.dumps(jsonable(record), allow_nan=False) + "\n")


def write_run_outputs(
  workdir: str, results: dict, *, loss, val, test, title: str, num_bins: int, ood_arrays=None, plot: bool = True
):
  """``results.json``, ``predictions.npz`` (validation and test logits, test probabilities through the loss's link),
  ``ood_scores.npz`` (with OOD sets) and (``plot``) the test ``reliability.png``, in `workdir` (process 0 only)."""
  if jax.process_index() != 0:
    return
  if ood_arrays is not None:
    np.savez_compressed(os.path.join(workdir, "ood_scores.npz"), **ood_arrays)
  test_probs = np.asarray(loss.probs(test[0]))
  np.savez_compressed(
    os.path.join(workdir, "predictions.npz"),
    test_logits=test[0],
    test_probs=test_probs,
    test_labels=test[1],
    val_logits=val[0],
    val_labels=val[1],
  )
  if plot:
    from gence_jax import plots

    plots.reliability_diagram(
      {loss.name: (test_probs, test[1])}, num_bins=num_bins, path=os.path.join(workdir, "reliability.png"), title=title
    )
  write_json(os.path.join(workdir, "results.json"), results)  # last: its presence marks a finished run
