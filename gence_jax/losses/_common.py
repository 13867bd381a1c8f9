"""Input checks and small helpers shared by every loss.

The checks themselves live in `gence_jax.checks`; this module adds the loss conventions. Checks run at trace time
on shapes, dtypes and hyper-parameters, so they cost nothing inside `jax.jit`. Value checks (labels in range, finite logits) cannot raise under `jit`; see `gence_jax.losses.checked`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gence_jax import checks
from gence_jax.checks import check_hparam  # noqa: F401  (re-exported: every loss imports it from here)


def check_logits_labels(
  logits: ArrayLike, labels: ArrayLike, where: ArrayLike | None = None, *, fn: str
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """Validates `logits` [..., K], integer `labels` [...] and the optional bool mask `where` [...].

  Returns `(logits, labels, where)` as arrays with `logits` promoted to at least float32 (bfloat16 and
  float16 inputs are computed in float32). The checks are `gence_jax.checks`'; this adds the loss-specific hint.
  """
  logits = checks.check_class_logits(fn, logits)
  labels = jnp.asarray(labels)
  hint = ""
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    from gence_jax.losses.soft import SOFT_VARIANTS  # imported here: that module imports this one

    hint = f"use {fn}_soft for probability targets [..., K]" if fn in SOFT_VARIANTS else f"{fn} has no soft-target form"
    hint = f"; {hint}"
  labels = checks.check_labels(fn, labels, logits.shape[:-1], hint=hint)
  where = checks.check_mask(fn, where, labels.shape)
  return logits.astype(compute_dtype(logits.dtype)), labels, where


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
  """float32 for bfloat16/float16/float32 inputs, float64 for float64 inputs."""
  return jnp.promote_types(dtype, jnp.float32)


def label_in_range(labels, num_classes):
  return (labels >= 0) & (labels < num_classes)


def take_label(values, labels):
  """values[..., labels] for integer labels of shape values.shape[:-1]; out-of-range labels are clipped."""
  safe = jnp.clip(labels, 0, values.shape[-1] - 1)
  return jnp.take_along_axis(values, safe[..., None], axis=-1)[..., 0]


def finalize(loss, labels, num_classes, where):
  """Per-example output convention shared by all losses.

  * rows with an out-of-range label give NaN (a clear value; `checked` raises instead);
  * rows masked out by `where=False` give exactly 0 (and no gradient).
  """
  loss = jnp.where(label_in_range(labels, num_classes), loss, jnp.nan)
  if where is not None:
    loss = jnp.where(where, loss, 0.0)
  return loss


CPU_BLOCK_BYTES = 1 << 21  # 2 MiB of logits per block: a block stays in cache through every pass over it


def _single_cpu_device() -> bool:
  try:
    return jax.process_count() == 1 and len(jax.devices("cpu")) == 1
  except RuntimeError:
    return False


def map_row_blocks(fn, *arrays, block_bytes: int | None = None):
  """``fn(*arrays)`` for arrays sharing a leading (row) axis, run over blocks of rows on a single CPU device.

  ``fn`` returns ``(per_row, totals)``: ``per_row`` a pytree of ``[n, ...]`` arrays computed row by row, ``totals`` a
  pytree of sums over rows (per-class sums, say; ``()`` if none). Padding rows are zeros (False for masks), so
  ``totals`` must ignore rows whose mask is False.

  A loss that makes several passes over its [N, K] logits (an iterative root finder, a max then a sum, a forward
  then a backward sweep) is bound by memory traffic on a CPU once the logits outgrow the cache: every pass streams
  the whole array from memory. Run block by block (``lax.map`` over contiguous groups of about ``block_bytes`` of
  the first array's rows; ``CPU_BLOCK_BYTES`` by default), every pass after the first hits the cache. This happens only when the computation runs
  on a CPU and the process has a single CPU device (`lax.platform_dependent`); elsewhere (GPU/TPU, or CPU batches
  sharded over several devices, where blocks would cut across shards) ``fn`` runs once on the whole arrays. Either
  way the per-row results are the same.
  """
  block_bytes = CPU_BLOCK_BYTES if block_bytes is None else block_bytes
  n = arrays[0].shape[0]
  width = max(1, math.prod(arrays[0].shape[1:]) * arrays[0].dtype.itemsize)
  rows = max(1, block_bytes // width)
  if n <= rows or not _single_cpu_device():
    return fn(*arrays)
  blocks = -(-n // rows)
  rows = -(-n // blocks)
  pad = blocks * rows - n

  def blocked(*arrays):
    if pad:
      arrays = [jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)) for a in arrays]
    per_row, totals = jax.lax.map(
      lambda args: fn(*args), tuple(a.reshape((blocks, rows) + a.shape[1:]) for a in arrays)
    )
    per_row = jax.tree_util.tree_map(lambda o: o.reshape((blocks * rows,) + o.shape[2:])[:n], per_row)
    return per_row, jax.tree_util.tree_map(lambda o: jnp.sum(o, axis=0), totals)

  return jax.lax.platform_dependent(*arrays, cpu=blocked, default=fn)
