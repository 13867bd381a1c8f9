"""Run identity: a work directory is bound to what it computes, and written by one process at a time.

At the first start a run writes ``run.json``: the resolved config, a fingerprint of its data (dataset name or
file path with a content hash, TFDS name and version, regime spec, seed and validation fraction; see
`gence_jax.data.data_fingerprint`) and, for a user's model factory (``model.name=file.py:factory``), the reference
with the path and content hash of its file. Resuming in that directory, or `compare` reusing its ``results.json``, with
another identity is refused before anything loads or trains (`RunIdentityError`, listing the keys that differ);
``--overwrite`` moves the old run aside to ``<workdir>.replaced-<time>`` (nothing is deleted). Keys that cannot
change the results may differ: :data:`IGNORED_KEYS`.

A lock file ``.lock`` (process id and host) keeps a second process out while a run writes; a lock left by a process
that no longer exists on this host is taken over with a warning.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings

import jax

from gence_jax.train.errors import RunIdentityError, RunLockedError

IDENTITY_FILE = "run.json"
LOCK_FILE = ".lock"
#: Config keys that cannot change what a run computes (progress bar, log frequency, data threads, checkpoints
#: kept, the per-run plot, how processes find each other).
IGNORED_KEYS = (
  "train.progress",
  "train.log_every_steps",
  "train.data_workers",
  "train.keep_checkpoints",
  "outputs.reliability_plot",
  "distributed.",
)


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict) and v:
      out.update(_flatten(v, key + "."))
    else:
      out[key] = list(v) if isinstance(v, tuple) else v
  return out


def run_identity(config) -> dict:
  """``{"config": {...}, "data": fingerprint}``, plus ``"model": {...}`` (`model_fingerprint`) for a user's
  factory: what a run computes (JSON-able)."""
  from gence_jax import models
  from gence_jax.data import data_fingerprint

  d = config.dataset
  fingerprint = data_fingerprint(
    d.name,
    data_dir=d.data_dir or None,
    regimes=d.regimes,
    seed=config.seed,
    val_fraction=d.val_fraction,
    as_images=d.as_images,
  )
  ident = {"config": config.to_dict(), "data": fingerprint}
  if models.is_reference(config.model.name):  # a user's factory: which file, with which content
    ident["model"] = model_fingerprint(config.model.name)
  return json.loads(json.dumps(ident, default=str))


def model_fingerprint(reference: str) -> dict:
  """``{"reference", "file", "sha256"}`` of a user's model factory (`gence_jax.models.factory.reference_identity`);
  an edited model file is another run."""
  from gence_jax.models.factory import reference_identity

  return reference_identity(reference)


def differences(old: dict, new: dict) -> dict[str, tuple]:
  """``{key: (old value, new value)}`` over the flattened identities, ignoring :data:`IGNORED_KEYS`."""
  a, b = _flatten(old), _flatten(new)
  out = {}
  for key in sorted(set(a) | set(b)):
    if any(key == f"config.{k}" or key.startswith(f"config.{k}") for k in IGNORED_KEYS if k.endswith(".")):
      continue
    if key[len("config.") :] in IGNORED_KEYS:
      continue
    if a.get(key, "<absent>") != b.get(key, "<absent>"):
      out[key] = (a.get(key, "<absent>"), b.get(key, "<absent>"))
  return out


def _has_run(workdir: str) -> bool:
  return any(os.path.exists(os.path.join(workdir, p)) for p in ("checkpoints", "results.json", IDENTITY_FILE))


def move_aside(workdir: str) -> str:
  """Renames `workdir` to ``<workdir>.replaced-<YYYYmmdd-HHMMSS>`` (never deletes) and returns the new name."""
  target = f"{workdir.rstrip(os.sep)}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
  i = 1
  while os.path.exists(target):
    target = f"{target.split('~')[0]}~{i}"
    i += 1
  os.rename(workdir, target)
  return target


def check_workdir(config, workdir: str, *, overwrite: bool = False) -> dict:
  """Refuses (`RunIdentityError`) a `workdir` that holds a run of another identity, or a run without one; with
  `overwrite`, moves such a run aside first. Returns this config's identity."""
  ident = run_identity(config)
  if not _has_run(workdir):
    return ident
  path = os.path.join(workdir, IDENTITY_FILE)
  old = None
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
  diff = differences(old, ident) if old is not None else None
  if diff == {}:
    return ident
  if overwrite:
    if jax.process_index() != 0:
      return ident  # process 0 moves the old run aside
    moved = move_aside(workdir)
    warnings.warn(f"--overwrite: the previous run in {workdir} was moved to {moved}", stacklevel=2)
    return ident
  if diff is None:
    raise RunIdentityError(
      f"work directory {workdir!r} holds a run without {IDENTITY_FILE} (its config and data are unknown): "
      "use a new --workdir, or --overwrite to move that run aside"
    )
  shown = "; ".join(f"{k[len('config.'):] if k.startswith('config.') else k}: {o!r} -> {n!r}" for k, (o, n) in list(diff.items())[:8])
  more = f" (and {len(diff) - 8} more)" if len(diff) > 8 else ""
  raise RunIdentityError(
    f"work directory {workdir!r} holds a run with another config or data ({shown}{more}): use a new --workdir, "
    "or --overwrite to move that run aside"
  )


def write_identity(workdir: str, ident: dict) -> None:
  path = os.path.join(workdir, IDENTITY_FILE)
  if jax.process_index() == 0 and not os.path.exists(path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(ident, f, indent=2)
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class WorkdirLock:
  """An exclusive lock on a work directory (process 0 of a run takes it; other processes of the run do not)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.held = False

  def acquire(self) -> "WorkdirLock":
    if jax.process_index() != 0:
      return self
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        other = self._read()
        unreadable_and_old = not other and time.time() - os.path.getmtime(self.path) > 60
        dead = other.get("host") == me["host"] and isinstance(other.get("pid"), int) and not _alive(other["pid"])
        if dead or unreadable_and_old:
          warnings.warn(f"taking over the stale lock of process {other.get('pid')} (gone) in {self.path}", stacklevel=2)
          os.remove(self.path)
          continue
        raise RunLockedError(
          f"work directory {os.path.dirname(self.path)!r} is in use by process {other.get('pid')} on "
          f"{other.get('host')!r} (lock {self.path}); wait for it, or remove the lock if that process is gone"
        ) from None
      with os.fdopen(fd, "w") as f:
        json.dump(me, f)
      self.held = True
      return self
    raise RunLockedError(f"could not take the lock {self.path}")

  def _read(self) -> dict:
    try:
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return {}

  def release(self) -> None:
    if self.held:
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass
      self.held = False
