"""orbax checkpoints of the train state, with a fallback when the newest one cannot be read.

Orbax writes each step into a temporary folder and renames it when complete, so a process killed mid-save leaves
no half-written step behind. A step folder that is on disk but unreadable (corrupted or truncated afterwards, or not
finalised) is skipped with a warning and the previous one is used; the skipped folders are moved aside to
``<directory>.unreadable/`` (kept for inspection, and so that the resumed run can save those steps again). If step
folders exist but none can be read, restoring stops with `CheckpointError` instead of silently restarting from
scratch.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """No readable checkpoint although the directory has some."""


class Checkpointer:
  def __init__(self, directory: str, *, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    # one unnamed item, fixed here: otherwise orbax infers the mode from the newest step folder, and one whose item
    # folder is missing would make every step unreadable
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
      item_handlers=ocp.StandardCheckpointHandler(),
    )

  def all_steps(self) -> list[int]:
    """Finalised steps, as orbax lists them."""
    return sorted(self._manager.all_steps())

  def _step_folders(self) -> list[int]:
    """Every integer-named folder in the directory (finalised or not)."""
    if not os.path.isdir(self.directory):
      return []
    return sorted(
      int(n) for n in os.listdir(self.directory) if n.isdigit() and os.path.isdir(os.path.join(self.directory, n))
    )

  def save(self, step: int, state, *, force: bool = False) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def _move_aside(self, steps) -> None:
    """Moves unreadable step folders to ``<directory>.unreadable/<step>-<time>`` (process 0; all processes wait)."""
    if not steps:
      return
    if jax.process_index() == 0:
      target = self.directory + ".unreadable"
      os.makedirs(target, exist_ok=True)
      stamp = time.strftime("%Y%m%d-%H%M%S")
      for step in steps:
        src = os.path.join(self.directory, str(step))
        if os.path.exists(src):
          shutil.move(src, os.path.join(target, f"{step}-{stamp}"))
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices(f"gence_jax_checkpoint_move_aside_{'_'.join(map(str, steps))}")
    self._manager.reload()

  def restore_latest(self, template):
    """(state, step) from the newest readable checkpoint, or (None, 0) when there is none.

    `template` is a state with the right structure, shapes and shardings (e.g. the freshly initialised one).
    Unreadable newer steps are skipped with a `RuntimeWarning` and moved aside; `CheckpointError` if there are
    step folders but none is readable.
    """
    finalised = set(self.all_steps())
    folders = set(self._step_folders())
    steps = sorted(finalised | folders)
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    errors, unreadable = [], []
    for step in reversed(steps):
      if step not in finalised:
        reason = "not finalised (incomplete save)"
      else:
        try:
          state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # noqa: BLE001 - any read failure means: try the previous step
          reason = f"{type(e).__name__}: {e}"
          reason = reason if len(reason) <= 400 else reason[:400] + " ..."
        else:
          self._move_aside(unreadable)
          return state, step
      errors.append(f"step {step}: {reason}")
      unreadable.append(step)
      warnings.warn(
        f"checkpoint at step {step} in {self.directory} could not be read ({reason}); falling back to the previous one",
        RuntimeWarning,
        stacklevel=2,
      )
    if steps:
      raise CheckpointError(
        f"none of the checkpoints {steps} in {self.directory} can be read:\n  "
        + "\n  ".join(errors)
        + "\nRefusing to restart from scratch: move the directory away to "
        "start a new run."
      )
    return None, 0

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
