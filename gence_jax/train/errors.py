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


EXIT_STATUS = {
  "config": ConfigError.exit_status,
  "data": 3,
  "workdir identity or lock": RunIdentityError.exit_status,
  "checkpoint": 5,
  "divergence": 6,
  "workdir write": WorkdirError.exit_status,
}
