"""orbax checkpoints of the train state, with a fallback when the newest one cannot be read.

Orbax writes each step into a temporary folder and renames it when complete, so a process killed mid-save leaves
no half-written step behind. A step that is complete on disk but unreadable (corrupted afterwards) is skipped with
a warning and the previous one is used; if checkpoints exist but none can be read, restoring stops with an error
instead of silently restarting from scratch.
"""

from __future__ import annotations

import os
import warnings

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """No readable checkpoint although the directory has some."""


class Checkpointer:

  def __init__(self, directory: str, *, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state, *, force: bool = False) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def restore_latest(self, template):
    """(state, step) from the newest readable checkpoint, or (None, 0) when there is none.

    `template` is a state with the right structure, shapes and shardings (e.g. the freshly initialised one).
    """
    steps = self.all_steps()
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    errors = []
    for step in reversed(steps):
      try:
        state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception as e:  # noqa: BLE001 - any read failure means: try the previous step
        errors.append(f"step {step}: {type(e).__name__}: {e}")
        warnings.warn(f"checkpoint at step {step} in {self.directory} could not be read ({type(e).__name__}: {e});"
                      " falling back to the previous one", RuntimeWarning, stacklevel=2)
        continue
      return state, step
    if steps:
      raise CheckpointError(f"none of the checkpoints {steps} in {self.directory} can be read:\n  " +
                            "\n  ".join(errors) + "\nRefusing to restart from scratch: move the directory away to "
                            "start a new run.")
    return None, 0

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
