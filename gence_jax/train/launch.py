"""Where a grid's cells run: local jobs (``--jobs N``), or a scheduler through submitit (``--launcher``).

Local jobs are N worker processes (`subprocess`), each started as ``python -m gence_jax.train.launch <plan>`` with its
own share of the machine: ``CUDA_VISIBLE_DEVICES`` naming its GPUs, or on a CPU its share of the cores (the process's
CPU affinity, which XLA sizes its thread pools by). Each worker claims cells one at a time through their locks
(`gence_jax.train.grid.work`) and writes each cell's output to ``train.log`` in the cell's folder; the parent prints
one progress line for the grid. There is no queue besides the cells' locks, so a second command on the same grid
(or a killed worker's cell, taken over by another) needs nothing more.

``--launcher slurm`` submits one job array through submitit (``AutoExecutor``), one task per cell, with
``slurm_array_parallelism`` tasks at a time; ``--launcher submitit-local`` runs the same tasks as local processes
(submitit's local executor: every cell at once). A task preempted or timed out is requeued (submitit's
`Checkpointable`) and resumes its cell from its checkpoint. submitit is imported only here, when used.
"""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from typing import Sequence

from gence_jax.train import grid
from gence_jax.train.errors import INTERRUPTED, ConfigError

GRID_DIR = ".grid"  # the plans and the workers' own logs, in the grid's folder


def visible_gpus() -> list[str]:
  """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else those ``nvidia-smi`` lists (none: [])."""
  env = os.environ.get("CUDA_VISIBLE_DEVICES")
  if env is not None:
    return [d for d in env.split(",") if d.strip() and d.strip() != "-1"]
  if shutil.which("nvidia-smi") is None:
    return []
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  return [line.strip() for line in out.splitlines() if line.strip()]


def job_environments(jobs: int, devices_per_job: int | None = None, *, gpus: Sequence[str] | None = None,
                     cpus: Sequence[int] | None = None) -> list[dict[str, str]]:
  """The environment variables of each of `jobs` local jobs: disjoint GPUs (``CUDA_VISIBLE_DEVICES``; default: an
  equal share of the visible ones), or without GPUs disjoint CPU cores (``GENCE_JAX_CPUS``, applied as the worker's
  affinity; default: an equal share, at least one). ConfigError when the jobs need more GPUs than there are."""
  gpus = visible_gpus() if gpus is None else list(gpus)
  if gpus:
    per = devices_per_job or max(1, len(gpus) // jobs)
    if jobs * per > len(gpus):
      raise ConfigError(f"--jobs {jobs} x --devices-per-job {per} needs {jobs * per} GPUs; {len(gpus)} are visible")
    return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[i * per:(i + 1) * per])} for i in range(jobs)]
  cpus = sorted(os.sched_getaffinity(0)) if cpus is None else list(cpus)
  per = devices_per_job or max(1, len(cpus) // jobs)
  return [{"GENCE_JAX_CPUS": ",".join(str(cpus[(i * per + j) % len(cpus)]) for j in range(per))} for i in range(jobs)]


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class GridProgress:
  """One line for the grid: finished / running / failed / pending and an estimate of the time left (from the time
  the cells finished so far took, `jobs` at a time). Redrawn in place on a terminal; a new line on each change in a
  log file."""

  def __init__(self, cells: Sequence[grid.Cell], jobs: int):
    self.cells, self.jobs, self.t0, self.last, self.finished0 = list(cells), max(1, jobs), time.time(), None, None
    self.tty = sys.stdout.isatty()

  def line(self) -> str:
    c = grid.counts(self.cells)
    if self.finished0 is None:
      self.finished0 = c["finished"]
    done_here = c["finished"] - self.finished0
    left = c["running"] + c["pending"]
    eta = ""
    if done_here and left:
      per_cell = (time.time() - self.t0) / done_here
      eta = f"; about {_duration(per_cell * left)} left"
    return (f"grid: {c['finished']}/{len(self.cells)} finished, {c['running']} running, {c['failed']} failed, "
            f"{c['pending']} pending{eta}")

  def show(self, final: bool = False) -> None:
    text = self.line()
    if self.tty:
      print("\r" + text.ljust(100), end="\n" if final else "", flush=True)
    elif text.split(";")[0] != (self.last or "").split(";")[0]:
      print(text, flush=True)
    self.last = text


# --------------------------------------------------------------------------------------------------- local jobs
def write_plan(workdir: str, cells: Sequence[grid.Cell], since: float) -> str:
  folder = os.path.join(workdir, GRID_DIR)
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, f"plan-{socket.gethostname()}-{os.getpid()}.pkl")
  with open(path + ".tmp", "wb") as f:
    pickle.dump({"cells": list(cells), "since": since}, f)
  os.replace(path + ".tmp", path)
  return path


def run_local_jobs(cells: Sequence[grid.Cell], workdir: str, *, jobs: int, devices_per_job: int | None,
                   since: float, poll: float = 1.0) -> list[str]:
  """Runs `cells` in `jobs` worker processes; returns a line for each worker that ended abnormally (killed, ...).

  Ctrl-C reaches the workers too (one process group): each stops its cell (resumable from its checkpoint)."""
  envs = job_environments(jobs, devices_per_job)
  plan = write_plan(workdir, cells, since)
  procs, logs = [], []
  for i, extra in enumerate(envs):
    log = os.path.join(workdir, GRID_DIR, f"worker-{socket.gethostname()}-{os.getpid()}-{i}.log")
    with open(log, "a") as f:
      procs.append(subprocess.Popen([sys.executable, "-m", "gence_jax.train.launch", plan],
                                    env={**os.environ, **extra}, stdout=f, stderr=subprocess.STDOUT))
    logs.append(log)
  progress = GridProgress(cells, jobs)
  try:
    while any(p.poll() is None for p in procs):
      progress.show()
      time.sleep(poll)
  except KeyboardInterrupt:
    for p in procs:
      try:
        p.wait(timeout=60)
      except subprocess.TimeoutExpired:
        p.kill()
    raise
  finally:
    os.remove(plan) if os.path.exists(plan) else None
  progress.show(final=True)
  return [f"job {i} ended with status {p.returncode} (its log: {log})" for i, (p, log) in enumerate(zip(procs, logs))
          if p.returncode != 0]


def worker_main(plan_path: str) -> int:
  """A local job: its share of the cores (``GENCE_JAX_CPUS``), then the plan's cells, each logged to its folder."""
  cpus = os.environ.get("GENCE_JAX_CPUS")
  if cpus and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, [int(c) for c in cpus.split(",")])  # before jax starts its thread pools
  with open(plan_path, "rb") as f:
    plan = pickle.load(f)
  try:
    grid.work(plan["cells"], since=plan["since"], log_to_files=True)
  except KeyboardInterrupt:
    print("interrupted", flush=True)
    return INTERRUPTED
  return 0


# ---------------------------------------------------------------------------------------------------- submitit
SLURM_OPTIONS = ("partition", "account", "gpus_per_job", "cpus_per_job", "mem_gb", "time", "array_parallelism",
                 "folder", "setup", "extra")


def _executor(folder: str, cluster: str, options: dict):
  try:
    import submitit
  except ImportError:
    raise ConfigError("--launcher needs submitit: pip install -e \".[cluster]\"") from None
  executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
  params = {"name": "gence-jax", "timeout_min": int(options.get("time") or 60)}
  if options.get("gpus_per_job"):
    params.update(gpus_per_node=int(options["gpus_per_job"]), tasks_per_node=1)
  if options.get("cpus_per_job"):
    params["cpus_per_task"] = int(options["cpus_per_job"])
  if options.get("mem_gb"):
    params["mem_gb"] = float(options["mem_gb"])
  for key in ("partition", "account", "array_parallelism"):
    if options.get(key) is not None:
      params[f"slurm_{key}"] = options[key]
  if options.get("setup"):
    params["slurm_setup"] = list(options["setup"])
  if options.get("extra"):
    params["slurm_additional_parameters"] = dict(options["extra"])
  executor.update_parameters(**params)
  return executor


def run_submitit(cells: Sequence[grid.Cell], workdir: str, *, cluster: str, options: dict, since: float,
                 poll: float = 2.0) -> list[str]:
  """Submits one task per cell (a job array on SLURM) and waits for them; returns a line per task that failed as a
  job (killed, out of memory, out of time after its requeues). The cells' own failures are in their ``failed.json``."""
  folder = options.get("folder") or os.path.join(workdir, GRID_DIR, "submitit")
  executor = _executor(folder, cluster, options)  # first: a missing submitit is the one-line config error
  from gence_jax.train import submitit_jobs

  try:
    jobs = executor.map_array(submitit_jobs.CellJob(since), list(cells))
  except Exception as e:  # noqa: BLE001 - sbatch missing or refusing the array: one line, with its reason
    raise ConfigError(f"--launcher {cluster}: submitting the grid failed: {type(e).__name__}: {e}") from e
  print(f"submitted {len(jobs)} cells as {cluster} jobs {jobs[0].job_id}..{jobs[-1].job_id} (logs: {folder})",
        flush=True)
  progress = GridProgress(cells, int(options.get("array_parallelism") or len(cells)))
  while not all(job.done() for job in jobs):
    progress.show()
    time.sleep(poll)
  progress.show(final=True)
  problems = []
  for cell, job in zip(cells, jobs):
    try:
      job.result()
    except Exception as e:  # noqa: BLE001 - FailedJobError, UncompletedJobError: the job, not the cell, failed
      first = " ".join(str(e).split())[:300]
      problems.append(f"job {job.job_id} ({cell.name}): {type(e).__name__}: {first}")
  return problems


def main(argv: Sequence[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  return worker_main(argv[0])


if __name__ == "__main__":
  raise SystemExit(main())
