"""Where the train step runs: one interface, two small builders (`jax.jit` over a device mesh, or `jax.pmap`).

An executor places the train state on devices, runs a chunk of steps (``lax.scan`` over a leading step axis, so one
dispatch runs several steps) and predicts logits. A chunk of n steps runs as scans whose lengths are the powers of
two in n's binary expansion (a single step as the plain jitted step), so a run compiles a handful of scan lengths
whatever its epoch, log and checkpoint boundaries; every scan runs the same step body, so the grouping does not change
the numbers. Batches are this process's rows of each global batch, as
``{"x", "label", "mask"}`` NumPy arrays with a leading step axis: ``[steps, rows, ...]``.

* `JitExecutor`: the batch is one global array sharded over the mesh's ``data`` axis, the state replicated and
  donated; works across processes (multi-host).
* `PmapExecutor`: each local device holds a slice of every batch; the step psums over ``axis_name="data"`` (GenCE's
  class sums, BatchNorm statistics, gradients), so both executors compute the same update. One process only.
"""

from __future__ import annotations

import collections
from typing import Callable, Hashable, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from gence_jax.data import to_device
from gence_jax.train.step import TrainState, make_multi_step, make_predict, make_train_step


class Executor(Protocol):
  def place_state(self, state: TrainState) -> TrainState: ...

  def host_state(self, state: TrainState) -> TrainState: ...

  def restore_template(self, state: TrainState) -> TrainState: ...

  def place_key(self, key: jax.Array) -> jax.Array: ...

  def run(self, state: TrainState, batches: dict, key: jax.Array) -> tuple[TrainState, dict]: ...

  def predict(self, state: TrainState, x: np.ndarray) -> jax.Array: ...


def _parts(n: int) -> list[int]:
  """The powers of two that sum to n, largest first (13 -> [8, 4, 1])."""
  return [1 << b for b in range(n.bit_length() - 1, -1, -1) if n >> b & 1]


def _run_in_parts(run_scan: Callable, run_one: Callable, state, batches: dict, key, step_axis: int = 0):
  """`batches` ([n, ...] arrays) through ``run_scan`` for each power-of-two part (``run_one`` for a single step);
  the metrics of the parts concatenated along their step axis (1 under pmap, after the device axis)."""
  n = len(next(iter(batches.values())))
  metrics, start = [], 0
  for size in _parts(n):
    part = {k: v[start : start + size] for k, v in batches.items()}
    if size == 1:
      state, m = run_one(state, {k: v[0] for k, v in part.items()}, key)
      m = jax.tree_util.tree_map(lambda x: jnp.expand_dims(x, step_axis), m)
    else:
      state, m = run_scan(state, part, key)
    metrics.append(m)
    start += size
  if len(metrics) == 1:
    return state, metrics[0]
  return state, jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=step_axis), *metrics)


class JitExecutor:
  """`jax.jit` with `NamedSharding`s over a one-axis mesh of every device (all processes)."""

  def __init__(self, train_step: Callable, predict: Callable):
    devices = jax.devices()
    mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)
    self.replicated = NamedSharding(mesh, P())
    self.rows = NamedSharding(mesh, P("data"))
    self.step_rows = NamedSharding(mesh, P(None, "data"))  # [steps, rows, ...]: rows over the mesh
    self._run = jax.jit(
      make_multi_step(train_step),
      in_shardings=(self.replicated, self.step_rows, self.replicated),
      out_shardings=(self.replicated, self.replicated),
      donate_argnums=0,
    )
    self._step = jax.jit(
      train_step,
      in_shardings=(self.replicated, self.rows, self.replicated),
      out_shardings=(self.replicated, self.replicated),
      donate_argnums=0,
    )
    self._predict = jax.jit(predict, in_shardings=(self.replicated, self.rows), out_shardings=self.rows)

  def place_state(self, state):
    return jax.device_put(jax.device_get(state), self.replicated)

  def host_state(self, state):
    return jax.device_get(state)

  def restore_template(self, state):
    return self.place_state(state)

  def place_key(self, key):
    return jax.device_put(key, self.replicated)

  def run(self, state, batches, key):
    return _run_in_parts(
      lambda s, b, k: self._run(s, to_device(b, self.step_rows), k),
      lambda s, b, k: self._step(s, to_device(b, self.rows), k),
      state,
      batches,
      key,
    )

  def predict(self, state, x):
    return self._predict(state, to_device({"x": x}, self.rows)["x"])


class PmapExecutor:
  """`jax.pmap` over the local devices, state replicated along a leading device axis."""

  def __init__(self, train_step: Callable, predict: Callable):
    if jax.process_count() > 1:
      raise ValueError("config key 'train.mode': the pmap path runs on one host; use 'jit' for multi-host runs")
    self.devices = jax.local_devices()
    self._run = jax.pmap(make_multi_step(train_step), axis_name="data", donate_argnums=0, in_axes=(0, 0, None))
    self._step = jax.pmap(train_step, axis_name="data", donate_argnums=0, in_axes=(0, 0, None))
    self._predict = jax.pmap(predict, axis_name="data")

  def place_state(self, state):
    # one copy per local device along a new leading axis (what pmap maps over)
    n = len(self.devices)
    stacked = NamedSharding(jax.sharding.Mesh(np.asarray(self.devices), ("data",)), P("data"))
    return jax.tree_util.tree_map(
      lambda x: jax.device_put(np.broadcast_to(np.asarray(x)[None], (n, *np.shape(x))), stacked),
      jax.device_get(state),
    )

  def host_state(self, state):
    return jax.device_get(jax.tree_util.tree_map(lambda x: x[0], state))

  def restore_template(self, state):
    return state

  def place_key(self, key):
    return key

  def _split(self, x: np.ndarray, step_axis: bool) -> np.ndarray:
    """Rows to devices: device d gets rows [d*b, (d+1)*b) of each batch."""
    n = len(self.devices)
    if not step_axis:
      return x.reshape(n, -1, *x.shape[1:])
    return np.swapaxes(x.reshape(x.shape[0], n, -1, *x.shape[2:]), 0, 1)

  def run(self, state, batches, key):
    state, metrics = _run_in_parts(
      lambda s, b, k: self._run(s, {n: self._split(np.asarray(v), True) for n, v in b.items()}, k),
      lambda s, b, k: self._step(s, {n: self._split(np.asarray(v), False) for n, v in b.items()}, k),
      state,
      batches,
      key,
      step_axis=1,
    )
    return state, jax.tree_util.tree_map(lambda m: m[0], metrics)

  def predict(self, state, x):
    logits = self._predict(state, self._split(np.asarray(x), False))
    return logits.reshape(-1, logits.shape[-1])


EXECUTORS = {"jit": JitExecutor, "pmap": PmapExecutor}
_CACHE: collections.OrderedDict = collections.OrderedDict()
_CACHE_SIZE = 8


def make_executor(
  mode: str, model, loss, tx, *, l1: float, mix: Callable | None = None, cache_key: Hashable | None = None
) -> Executor:
  """The executor for ``train.mode`` (``"jit"`` or ``"pmap"``) running `model` trained with `loss` and `tx`.

  With ``cache_key`` (a hashable description of `loss` and `tx`, e.g. their configs), an executor built earlier in
  this process for an equal (mode, model, cache_key, l1) is reused with its compiled functions: the runs of a grid
  that differ only in seed or data regime compile once (`cache_key` must then also describe `mix`)."""
  key = None
  if cache_key is not None:
    try:
      key = (mode, model, cache_key, float(l1), tuple(d.id for d in jax.devices()))
      hash(key)
    except TypeError:
      key = None
  if key is not None and key in _CACHE:
    _CACHE.move_to_end(key)
    return _CACHE[key]
  axis_name = "data" if mode == "pmap" else None
  step = make_train_step(model, loss, tx, l1=l1, axis_name=axis_name, mix=mix)
  executor = EXECUTORS[mode](step, make_predict(model))
  if key is not None:
    _CACHE[key] = executor
    while len(_CACHE) > _CACHE_SIZE:
      _CACHE.popitem(last=False)
  return executor


__all__ = ["EXECUTORS", "Executor", "JitExecutor", "PmapExecutor", "make_executor"]
