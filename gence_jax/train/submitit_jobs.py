"""The task a submitit job runs for one grid cell (imported only where submitit is installed: the launcher and its
jobs)."""

from __future__ import annotations

import submitit

from gence_jax.train import grid, identity


class CellJob(submitit.helpers.Checkpointable):
  """Trains one cell (claimed through its lock, output to its ``train.log``) and returns its status. Preempted or
  out of time, the task releases the cell's lock and is requeued; the requeued task resumes from the checkpoint."""

  def __init__(self, since: float):
    self.since = since

  def __call__(self, cell: grid.Cell) -> dict:
    grid.work([cell], since=self.since, log_to_files=True)
    return grid.cell_status(cell.run_dir)

  def checkpoint(self, *args, **kwargs):
    identity.release_all()  # the requeued task, on any node, takes the cell at once
    return super().checkpoint(*args, **kwargs)
