"""A grid's cells as claims on one work directory: any number of processes train a grid together, each cell once.

A cell (one regime x loss spec x seed, one `train_and_evaluate` run in its own folder) is claimed through the lock of
its folder (`gence_jax.train.identity.WorkdirLock`, a lease with a heartbeat). A process working on a list of cells
(:func:`work`) trains every cell that is neither finished (its ``results.json``) nor failed since the process started,
skips the cells a live process holds and comes back to them until they are finished, or taken over once their owner
is dead. So local jobs, shards of a job array, submitit jobs, or the same command started twice can share one grid.

A cell that fails records why in ``failed.json`` in its folder (the one-line message, its kind and exit status as the
command line reports them; a programming error's traceback too) and the other cells go on; a process started later
retries it. ``grid.json`` in the grid's folder lists the cells, for ``gence-jax status`` (:func:`status_table`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import traceback
from typing import Any, NamedTuple, Sequence

from gence_jax.train import identity
from gence_jax.train.errors import RunIdentityError, classify
from gence_jax.train.outputs import write_json

FAILED_FILE = "failed.json"
LOG_FILE = "train.log"
MANIFEST = "grid.json"
#: Seconds between two looks at the cells other processes hold.
POLL_SECONDS = 1.0


class Cell(NamedTuple):
  """One run of a grid: its regime spec ("" = clean), loss spec, seed, validated config and folder."""

  regime: str
  spec: str
  seed: int
  config: Any
  run_dir: str

  @property
  def name(self) -> str:
    return f"regime={self.regime or 'clean'} loss={self.spec} seed={self.seed}"


def cell_key(cell: Cell) -> tuple:
  """The order shards are cut in: independent of the order of the command's flags."""
  return (cell.regime or "clean", cell.spec, cell.seed)


def parse_shard(text: str) -> tuple[int, int]:
  """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N``; ValueError otherwise."""
  k, sep, n = str(text).partition("/")
  try:
    k, n = int(k), int(n)
  except ValueError:
    k = n = -1
  if not sep or n < 1 or not 0 <= k < n:
    raise ValueError(f"--shard expects K/N with 0 <= K < N (e.g. 0/4), got {text!r}")
  return k, n


def shard(cells: Sequence[Cell], k: int, n: int) -> list[Cell]:
  """The K-th of N disjoint slices of the grid, stable for a given grid: every N-th cell in :func:`cell_key` order."""
  return sorted(cells, key=cell_key)[k::n]


# ------------------------------------------------------------------------------------------------- cell records
def read_failure(run_dir: str) -> dict | None:
  try:
    with open(os.path.join(run_dir, FAILED_FILE)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def failure_record(error: BaseException) -> dict:
  """``failed.json`` of an error: its one-line message, kind and exit status (and a programming error's traceback)."""
  kind = classify(error)
  message = " ".join(str(error).split()) or type(error).__name__
  record = {"message": message, "kind": kind[0] if kind else "error", "exit_status": kind[1] if kind else 1}
  if kind is None:
    record["message"] = f"{type(error).__name__}: {message}"
    record["traceback"] = traceback.format_exc()
  return {**record, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}


def _finished(run_dir: str) -> bool:
  return os.path.exists(os.path.join(run_dir, "results.json"))


def _to_do(cell: Cell, since: float) -> bool:
  """Whether `cell` is still to be trained in a session started at `since` (a failure before it is retried)."""
  if _finished(cell.run_dir):
    return False
  failure = read_failure(cell.run_dir)
  return failure is None or failure.get("time", 0) < since


@contextlib.contextmanager
def output_to(path: str):
  """Sends this process's stdout and stderr (file descriptors 1 and 2: Python, XLA and tqdm alike) to `path`."""
  sys.stdout.flush()
  sys.stderr.flush()
  saved = os.dup(1), os.dup(2)
  fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  os.dup2(fd, 1)
  os.dup2(fd, 2)
  os.close(fd)
  try:
    yield
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    os.close(saved[0])
    os.close(saved[1])


# ---------------------------------------------------------------------------------------------------------- work
def run_cell(cell: Cell, lock: identity.WorkdirLock, *, log_to_file: bool = False) -> bool:
  """Trains one claimed cell (`lock` held); on failure writes ``failed.json`` and returns False. A work directory of
  another identity (`RunIdentityError`) and Ctrl-C end the grid instead."""
  from gence_jax.train.loop import train_and_evaluate

  path = os.path.join(cell.run_dir, FAILED_FILE)
  log = output_to(os.path.join(cell.run_dir, LOG_FILE)) if log_to_file else contextlib.nullcontext()
  with log:
    if log_to_file:
      print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {socket.gethostname()} pid {os.getpid()}: {cell.name}", flush=True)
    try:
      train_and_evaluate(cell.config, cell.run_dir, lock=lock)
    except (KeyboardInterrupt, RunIdentityError):
      raise
    except Exception as e:  # noqa: BLE001 - any failure of one cell is recorded; the other cells go on
      record = failure_record(e)
      write_json(path, record)
      print(f"cell {cell.name} failed ({record['kind']}): {record['message']}", flush=True)
      return False
  if os.path.exists(path):
    os.remove(path)
  return True


def work(cells: Sequence[Cell], *, since: float, log_to_files: bool = False, poll: float = POLL_SECONDS) -> None:
  """Trains every cell of `cells` not finished and not failed since `since`, claiming each through its lock; comes
  back to the cells other live processes hold until they are finished or failed (or their owner died: then this
  process takes them over). Returns when no cell of `cells` is left to anyone."""
  while True:
    waiting = False
    for i, cell in enumerate(cells):
      if not _to_do(cell, since):
        continue
      os.makedirs(cell.run_dir, exist_ok=True)
      lock = identity.WorkdirLock(cell.run_dir)
      if not lock.try_acquire():
        waiting = True
        continue
      try:
        if _to_do(cell, since):  # another process may have finished it between the look and the claim
          print(f"[{i + 1}/{len(cells)}] {cell.name}", flush=True)
          run_cell(cell, lock, log_to_file=log_to_files)
      finally:
        lock.release()
    if not waiting:
      return
    time.sleep(poll)


# -------------------------------------------------------------------------------------------------------- status
def write_manifest(workdir: str, cells: Sequence[Cell]) -> None:
  """``grid.json``: the cells of the grid (regime, loss, seed, folder relative to `workdir`)."""
  entries = [
    {"regime": c.regime or "clean", "loss": c.spec, "seed": c.seed, "dir": os.path.relpath(c.run_dir, workdir)}
    for c in cells
  ]
  write_json(os.path.join(workdir, MANIFEST), {"cells": entries})


def read_manifest(workdir: str) -> list[dict]:
  path = os.path.join(workdir, MANIFEST)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no {MANIFEST} in {workdir!r}: not the work directory of a gence-jax compare grid")
  with open(path) as f:
    return json.load(f)["cells"]


def cell_status(run_dir: str, now: float | None = None) -> dict:
  """``{"state": "running" | "finished" | "failed" | "pending", ...}`` of a cell's folder, with what the status table
  shows: the owner and its step (running), test accuracy (finished), the message (failed), a checkpoint (pending)."""
  now = time.time() if now is None else now
  info = identity.read_lock(run_dir)
  lock_path = os.path.join(run_dir, identity.LOCK_FILE)
  if info is not None and (identity.owner_alive(info, lock_path) if info else identity.heartbeat_age({}, lock_path) < 60):
    return {"state": "running", **{k: info.get(k) for k in ("host", "pid", "step", "total_steps")},
            "heartbeat_age": identity.heartbeat_age(info, lock_path, now)}
  if _finished(run_dir):
    try:
      with open(os.path.join(run_dir, "results.json")) as f:
        accuracy = json.load(f)["test"]["raw"]["accuracy"]
    except (OSError, ValueError, KeyError, TypeError):
      accuracy = None
    return {"state": "finished", "test_accuracy": accuracy}
  failure = read_failure(run_dir)
  if failure is not None:
    return {"state": "failed", "kind": failure.get("kind"), "message": failure.get("message", "")}
  ckpt = os.path.join(run_dir, "checkpoints")
  steps = sorted(int(n) for n in os.listdir(ckpt) if n.isdigit()) if os.path.isdir(ckpt) else []
  return {"state": "pending", "checkpoint": steps[-1] if steps else None, "stale_lock": info is not None}


def _detail(st: dict) -> str:
  if st["state"] == "running":
    step = f"step {st['step']} of {st['total_steps']}" if st.get("step") is not None else "starting"
    return f"{st['host']} pid {st['pid']}, {step}, last heartbeat {st['heartbeat_age']:.0f} s ago"
  if st["state"] == "finished":
    return f"test accuracy {100 * st['test_accuracy']:.2f}%" if st.get("test_accuracy") is not None else ""
  if st["state"] == "failed":
    return f"{st['kind']}: {st['message']}"
  parts = [f"checkpoint at step {st['checkpoint']}"] if st.get("checkpoint") is not None else []
  return ", ".join(parts + (["stale lock (owner gone)"] if st.get("stale_lock") else []))


def status_table(workdir: str) -> str:
  """The grid in `workdir` as a Markdown table, one row per cell, and a line of totals."""
  rows, counts = [], {"finished": 0, "running": 0, "failed": 0, "pending": 0}
  now = time.time()
  for entry in read_manifest(workdir):
    st = cell_status(os.path.join(workdir, entry["dir"]), now)
    counts[st["state"]] += 1
    detail = _detail(st).replace("|", "\\|")
    rows.append(f"| {entry['regime']} | {entry['loss']} | {entry['seed']} | {st['state']} | {detail} |")
  header = ["| regime | loss | seed | state | detail |", "|---|---|---|---|---|"]
  totals = ", ".join(f"{v} {k}" for k, v in counts.items())
  return "\n".join([*header, *rows, "", f"{len(rows)} cells: {totals}"])


def counts(cells: Sequence[Cell]) -> dict[str, int]:
  """Cells per state (see :func:`cell_status`)."""
  out = {"finished": 0, "running": 0, "failed": 0, "pending": 0}
  now = time.time()
  for cell in cells:
    out[cell_status(cell.run_dir, now)["state"]] += 1
  return out
