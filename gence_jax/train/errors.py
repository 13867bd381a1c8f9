"""The user errors of the training program, one class per kind, each with the exit status the command line uses.

A user error is one the user can fix (a config, a data file, a work directory, a diverging run); the command line
prints its message on one line (``gence-jax: error: ...``) and exits with :data:`EXIT_STATUS` of its class.
Anything else is a programming error and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
  """Base class of the errors the command line reports on one line."""

  exit_status = 1


class ConfigError(UserError, ValueError):
  """A config key, value, loss spec, regime spec or command-line option is invalid (names the key)."""

  exit_status = 2


class ConfigTypeError(ConfigError, TypeError):
  """A config value has the wrong type (names the key)."""


class RunIdentityError(UserError, ValueError):
  """A work directory holds a run of another config or data: resuming or reusing it would mix two runs."""

  exit_status = 4


class RunLockedError(UserError, RuntimeError):
  """Another live process is writing this work directory."""

  exit_status = 4


class WorkdirError(UserError, OSError):
  """The work directory cannot be written (read-only, disk full, ...); names the last good checkpoint."""

  exit_status = 7


class GridError(UserError, RuntimeError):
  """Cells of a grid failed (each recorded in its ``failed.json``); the other cells went on."""

  exit_status = 8


#: The exit status of an interrupted run (Ctrl-C; 128 + SIGINT, as a shell reports it).
INTERRUPTED = 130

EXIT_STATUS = {
  "config": ConfigError.exit_status,
  "data": 3,
  "workdir identity or lock": RunIdentityError.exit_status,
  "checkpoint": 5,
  "divergence": 6,
  "workdir write": WorkdirError.exit_status,
  "failed grid cells": GridError.exit_status,
}


def classify(error: BaseException) -> tuple[str, int] | None:
  """``(kind, exit status)`` of a user error (a key of :data:`EXIT_STATUS`); None for a programming error."""
  from gence_jax.data import DataError
  from gence_jax.train.checkpoint import CheckpointError
  from gence_jax.train.loop import TrainingDivergedError

  kinds = [
    (ConfigError, "config"),
    (DataError, "data"),
    ((RunIdentityError, RunLockedError), "workdir identity or lock"),
    (CheckpointError, "checkpoint"),
    (TrainingDivergedError, "divergence"),
    (WorkdirError, "workdir write"),
    (GridError, "failed grid cells"),
  ]
  for cls, kind in kinds:
    if isinstance(error, cls):
      return kind, EXIT_STATUS[kind]
  if isinstance(error, UserError):
    return "user", error.exit_status
  if isinstance(error, OSError) and error.errno is not None:  # read-only workdir, disk full, missing file
    return "workdir write", EXIT_STATUS["workdir write"]
  return None
