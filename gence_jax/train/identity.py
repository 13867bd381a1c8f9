"""Run identity: a work directory is bound to what it computes, and written by one process at a time.

At the first start a run writes ``run.json``: the resolved config, a fingerprint of its data (dataset name or
file path with a content hash, TFDS name and version, regime spec, seed and validation fraction; see
`gence_jax.data.data_fingerprint`) and, for a user's model factory (``model.name=file.py:factory``), the reference
with the path and content hash of its file. Resuming in that directory, or `compare` reusing its ``results.json``, with
another identity is refused before anything loads or trains (`RunIdentityError`, listing the keys that differ);
``--overwrite`` moves the old run aside to ``<workdir>.replaced-<time>`` (nothing is deleted). Keys that cannot
change the results may differ: :data:`IGNORED_KEYS`.

A lock file ``.lock`` keeps a second process out while a run writes. It is a lease: the owner writes its host, process
id, a random token and a heartbeat (its clock, refreshed every :data:`HEARTBEAT_SECONDS` by a background thread, with
the run's step) into it. A lock of a process on this host is taken over when that process no longer exists; a lock of
another host (where a process id means nothing) when its heartbeat is older than :data:`LEASE_SECONDS` (a dead node,
a preempted job). Creating a lock (``O_CREAT | O_EXCL``) and taking one over (a rename to a name unique to the taker,
which only one process can win) are atomic on local and NFS file systems. The hosts' clocks must agree to well within
the lease.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
import warnings

import jax

from gence_jax.train.errors import RunIdentityError, RunLockedError

IDENTITY_FILE = "run.json"
LOCK_FILE = ".lock"
#: Seconds between two heartbeats of a lock's owner.
HEARTBEAT_SECONDS = 15.0
#: A lock of another host whose heartbeat is older than this is taken over (its owner is presumed dead).
LEASE_SECONDS = 120.0
#: Config keys that cannot change what a run computes (progress bar, log frequency, data threads, checkpoints
#: kept, the per-run plot, TensorBoard events, how processes find each other).
IGNORED_KEYS = (
  "train.progress",
  "train.log_every_steps",
  "train.data_workers",
  "train.keep_checkpoints",
  "outputs.reliability_plot",
  "outputs.tensorboard",
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


_HELD: dict[str, "WorkdirLock"] = {}  # lock path -> the lock this process holds


def read_lock(workdir: str) -> dict | None:
  """The content of `workdir`'s lock (``{}`` if unreadable), or None without a lock."""
  path = os.path.join(workdir, LOCK_FILE)
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}


def heartbeat_age(info: dict, path: str, now: float | None = None) -> float:
  """Seconds since the owner's last heartbeat (the lock file's modification time for a lock without one)."""
  now = time.time() if now is None else now
  beat = info.get("heartbeat")
  if not isinstance(beat, (int, float)):
    try:
      beat = os.path.getmtime(path)
    except OSError:
      return float("inf")
  return max(0.0, now - float(beat))


def owner_alive(info: dict, path: str) -> bool:
  """Whether the owner of a lock (its parsed content) may still be writing: on this host, its process exists (and is
  not this process without holding it); on another host, its heartbeat is younger than :data:`LEASE_SECONDS`."""
  host, pid = info.get("host"), info.get("pid")
  if host == socket.gethostname() and isinstance(pid, int):
    if pid == os.getpid():
      held = _HELD.get(os.path.abspath(path))
      return held is not None and held.token == info.get("token")
    return _alive(pid)
  return heartbeat_age(info, path) < LEASE_SECONDS


class WorkdirLock:
  """An exclusive lease on a work directory (process 0 of a run takes it; other processes of the run do not).

  `try_acquire` returns False when a live owner holds it; `acquire` raises `RunLockedError` then. While held, a daemon
  thread refreshes the heartbeat; `step` and `total` (set by the training loop) go into each heartbeat."""

  def __init__(self, workdir: str):
    self.path = os.path.abspath(os.path.join(workdir, LOCK_FILE))
    self.held = False
    self.token = uuid.uuid4().hex
    self.step: int | None = None
    self.total: int | None = None
    self.since = time.time()
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def _content(self) -> dict:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "token": self.token, "since": self.since,
            "heartbeat": time.time()}
    if self.step is not None:
      info.update(step=self.step, total_steps=self.total)
    return info

  def _take_over(self, other: dict) -> bool:
    """Moves a dead owner's lock aside atomically (only one taker wins the rename); True if this process won."""
    aside = f"{self.path}.stale-{self.token}"
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return False
    try:
      with open(aside) as f:
        moved = json.load(f)
    except (OSError, ValueError):
      moved = {}
    if moved.get("token") != other.get("token") or moved.get("heartbeat") != other.get("heartbeat"):
      if owner_alive(moved, aside):  # refreshed in between: give it back
        try:
          os.link(aside, self.path)
        except OSError:
          pass
        os.remove(aside)
        return False
    age = heartbeat_age(other, aside)
    os.remove(aside)
    why = "gone" if other.get("host") == socket.gethostname() else f"no heartbeat for {age:.0f} s"
    warnings.warn(
      f"taking over the stale lock of process {other.get('pid')} on {other.get('host')!r} ({why}) in {self.path}",
      stacklevel=3,
    )
    return True

  def try_acquire(self) -> bool:
    """Takes the lock (a dead owner's is taken over); False if a live process holds it."""
    if jax.process_index() != 0:
      return True
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        other = self._read()
        unreadable_and_old = not other and heartbeat_age({}, self.path) > 60
        if (other and owner_alive(other, self.path)) or (not other and not unreadable_and_old):
          return False
        self._take_over(other)
        continue
      with os.fdopen(fd, "w") as f:
        json.dump(self._content(), f)
      self.held = True
      _HELD[self.path] = self
      self._thread = threading.Thread(target=self._beat, name="gence-jax-lock-heartbeat", daemon=True)
      self._thread.start()
      return True
    return False

  def acquire(self) -> "WorkdirLock":
    if not self.try_acquire():
      other = self._read() or {}
      raise RunLockedError(
        f"work directory {os.path.dirname(self.path)!r} is in use by process {other.get('pid')} on "
        f"{other.get('host')!r} (lock {self.path}); wait for it: a lock of this host is taken over once its process "
        f"is gone, one of another host after {LEASE_SECONDS:.0f} s without a heartbeat"
      )
    return self

  def heartbeat(self) -> None:
    """Rewrites the lock with a fresh heartbeat (atomically), unless another process took it over."""
    if not self.held:
      return
    current = self._read()
    if current.get("token") != self.token:
      return  # lost (taken over after a long stall): never overwrite the new owner's lock
    tmp = f"{self.path}.{self.token}.tmp"
    with open(tmp, "w") as f:
      json.dump(self._content(), f)
    os.replace(tmp, self.path)

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        self.heartbeat()
      except OSError:
        pass  # a full or unreachable disk: the run reports it; the lease may lapse

  def _read(self) -> dict:
    try:
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return {}

  def release(self) -> None:
    if self.held:
      self._stop.set()
      if self._thread is not None and self._thread is not threading.current_thread():
        self._thread.join(timeout=5)
      if self._read().get("token") == self.token:
        try:
          os.remove(self.path)
        except FileNotFoundError:
          pass
      _HELD.pop(self.path, None)
      self.held = False


def release_all() -> None:
  """Releases every lock this process holds (a job about to be requeued elsewhere)."""
  for lock in list(_HELD.values()):
    lock.release()
