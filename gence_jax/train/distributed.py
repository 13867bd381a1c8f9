"""Multi-host start-up: `jax.distributed.initialize` from the config or the environment.

Set ``distributed.coordinator_address``, ``num_processes`` and ``process_id`` in the config, or the environment
variables ``GENCE_JAX_COORDINATOR``, ``GENCE_JAX_NUM_PROCESSES`` and ``GENCE_JAX_PROCESS_ID`` (on managed clusters
such as SLURM or Cloud TPU, ``jax.distributed.initialize()`` without arguments detects them itself: set
``GENCE_JAX_COORDINATOR=auto``). On CPU, cross-process collectives use gloo.
"""

from __future__ import annotations

import os

import jax

_initialized = False


def initialize(cfg) -> bool:
  """Initialises `jax.distributed` once when a coordinator is configured; returns whether it is multi-process."""
  global _initialized
  address = cfg.coordinator_address or os.environ.get("GENCE_JAX_COORDINATOR", "")
  if not address or _initialized:
    return jax.process_count() > 1
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # only affects the CPU backend
  if address == "auto":
    jax.distributed.initialize()
  else:
    num = cfg.num_processes or int(os.environ.get("GENCE_JAX_NUM_PROCESSES", "0"))
    pid = cfg.process_id if cfg.process_id >= 0 else int(os.environ.get("GENCE_JAX_PROCESS_ID", "-1"))
    if num < 1 or pid < 0:
      raise ValueError(
        "multi-host run: set distributed.num_processes and distributed.process_id (or "
        "GENCE_JAX_NUM_PROCESSES / GENCE_JAX_PROCESS_ID) together with the coordinator address"
      )
    jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
  _initialized = True
  return jax.process_count() > 1
