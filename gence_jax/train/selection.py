"""Which checkpoint a run reports: the best state by a validation criterion, kept on disk across resumes.

A `BestKeeper` holds the best state so far in host memory and writes it (an orbax checkpoint under
``<workdir>/<folder>``, with its step and scores in ``<folder>.json``) before every regular checkpoint and at the
end (`flush`), so a run resumed from any checkpoint keeps the best of the interrupted one, and a run that improves
at every evaluation does not pay a checkpoint write for each. A run keeps:

* ``val``: the best validation accuracy (ties: lower validation NLL) on the validation labels as trained with
  (noisy under a label-noise regime): what a user without clean labels can do, and the reported model;
* ``clean_val`` (only when a regime changed validation labels): the same criterion on the validation labels
  before the noise, an oracle that noisy-label papers sometimes report.

The last checkpoint is the third choice (``results.json["checkpoints"]["last"]``).
"""

from __future__ import annotations

import json
import os
from typing import Callable

import jax
import numpy as np

from gence_jax.train.checkpoint import Checkpointer
from gence_jax.train.evaluate import improves


class BestKeeper:
  """The best state so far by validation accuracy (ties: lower NLL), in ``<workdir>/<folder>`` and its json."""

  def __init__(self, workdir: str, folder: str):
    self.ckpt = Checkpointer(os.path.join(workdir, folder), max_to_keep=1)
    self.path = os.path.join(workdir, f"{folder}.json")
    self.best = None
    self.pending = None  # the best state, on the host, not yet written
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.best = json.load(f)

  def offer(self, scores: dict, step: int, epoch: int, host_state: Callable) -> bool:
    """Keeps the state (``host_state()``, called only when needed) if `scores` improve on the best so far."""
    if not improves(scores, self.best):
      return False
    self.best = {"step": step, "epoch": epoch, "accuracy": scores["accuracy"], "nll": scores["nll"]}
    self.pending = host_state()
    return True

  def flush(self) -> None:
    """Writes a best state kept in memory (the checkpoint first, then its record)."""
    if self.pending is None:
      return
    self.ckpt.save(self.best["step"], self.pending, force=True)
    self.ckpt.wait()
    if jax.process_index() == 0:
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        json.dump(self.best, f)
      os.replace(tmp, self.path)
    self._kept, self.pending = self.pending, None

  def restore(self, template):
    """The best state: from memory when this process found it, else from its checkpoint."""
    if self.pending is not None:
      return self.pending
    if getattr(self, "_kept", None) is not None:
      return self._kept
    state, _ = self.ckpt.restore_latest(template)
    return state

  def close(self) -> None:
    self.ckpt.close()


def selection_keepers(workdir: str, data) -> dict[str, BestKeeper]:
  """``{"val": ...}``, plus ``"clean_val"`` when a label-noise regime changed validation labels."""
  keepers = {"val": BestKeeper(workdir, "best")}
  clean = getattr(data, "y_val_clean", None)
  if clean is not None and not np.array_equal(clean, data.y_val):
    keepers["clean_val"] = BestKeeper(workdir, "best_clean_val")
  return keepers
