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


#: ``metrics.jsonl`` events shown in TensorBoard, and the tag prefix of their numbers.
TENSORBOARD_EVENTS = {"train": "train", "eval_clean": "val_clean", "end": "final"}


def scalars(record: dict) -> dict[str, float]:
  """The TensorBoard scalars of a ``metrics.jsonl`` event: ``train/loss``, ``train/learning_rate``, ...; ``val/accuracy``
  and ``test/ece`` (an ``eval`` event, by split); ``final/test/<raw|ts|ats>/<metric>`` (the ``end`` event)."""
  event = record.get("event")
  prefix = record.get("split") if event == "eval" else TENSORBOARD_EVENTS.get(event)
  if prefix is None:
    return {}
  out = {}

  def walk(tag, value):
    if isinstance(value, dict):
      for k, v in value.items():
        walk(f"{tag}/{k}", v)
    elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and np.isfinite(value):
      out[tag] = float(value)

  for key, value in record.items():
    if key not in ("event", "step", "epoch", "split", "total_steps"):
      walk(f"{prefix}/{key}", value)
  return out


def _tensorboard_writer(workdir: str, resume_step: int):
  """A tensorboardX writer in `workdir`, or None when tensorboardX is not installed. A resumed run purges the events
  at and after its start step that an earlier attempt wrote, so a curve never shows a step twice."""
  try:
    from tensorboardX import SummaryWriter
  except ImportError:
    return None
  return SummaryWriter(logdir=workdir, purge_step=resume_step or None, flush_secs=30)


class MetricsWriter:
  """Appends one JSON object per line to ``metrics.jsonl`` and, with ``tensorboard``, its numbers to TensorBoard
  event files in the same folder (process 0 only).

  A run resumed at step N first drops the records of the interrupted attempt that its checkpoint does not cover
  (those after step N, and the start/end records at N), so the file holds each record once."""

  def __init__(self, workdir: str, *, tensorboard: bool = False, resume_step: int | None = None):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.enabled = jax.process_index() == 0
    self.tensorboard = None
    if self.enabled and resume_step is not None and os.path.exists(self.path):
      _truncate(self.path, resume_step)
    if self.enabled and tensorboard:
      self.tensorboard = _tensorboard_writer(workdir, resume_step or 0)

  def write(self, record: dict) -> None:
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(jsonable(record), allow_nan=False) + "\n")
    if self.tensorboard is not None:
      step = int(record.get("step", 0))
      for tag, value in scalars(jsonable(record)).items():
        self.tensorboard.add_scalar(tag, value, step)

  def close(self) -> None:
    if self.tensorboard is not None:
      self.tensorboard.close()
      self.tensorboard = None


def _truncate(path: str, step: int) -> None:
  """Keeps the records a run resumed at `step` does not write again (atomically)."""
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  kept = []
  for line in lines:
    try:
      record = json.loads(line)
    except ValueError:
      continue  # a line cut by a kill
    at = record.get("step", 0)
    if at < step or (at == step and record.get("event") not in ("start", "end", "ood")):
      kept.append(line if line.endswith("\n") else line + "\n")
  if len(kept) != len(lines):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, path)


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
