"""One small interface over a Linen or an NNX model, so the training program has one train step for both.

``as_adapter(model, bn_axis_name=None)`` wraps a Flax Linen ``nn.Module`` or a Flax NNX ``nnx.Module``:

* ``adapter.init(key, sample) -> (params, batch_stats)``: nested dicts of arrays (string keys only, so orbax
  checkpoints and optax see plain pytrees; ``batch_stats`` is ``{}`` for a model without running statistics);
* ``adapter.apply(params, batch_stats, x, *, train, key=None) -> (logits, batch_stats)``: float32 logits; in
  training (``train=True``) the updated running statistics, in evaluation the ones given. ``key`` seeds dropout.

Linen side: ``module.init({"params": key, "dropout": key}, sample, train=False)`` and
``module.apply(..., mutable=["batch_stats"], rngs={"dropout": key})``, as the program always did.

NNX side (the "split once, merge inside the jitted function" pattern of Flax's performance guide): the module is
split once into its graph (one for training mode, ``model.train()``, one for evaluation, ``model.eval()``), its
``nnx.Param`` state (``params``), its RNG streams, and every other variable (``nnx.BatchStat`` and any other
mutable state: ``batch_stats``). ``apply`` merges the graph with the given arrays, calls ``model(x)`` (with
``train=`` when ``__call__`` takes it) and splits the updated state off again. RNG streams are not state of the
run: every call rebuilds them from ``key`` (stream i gets ``fold_in(key, i)``, counts 0), so dropout masks are a
function of the step's key, and a resumed run draws the same masks as the uninterrupted one. An NNX module is
initialised by its constructor (the factory's ``rngs``), so ``init`` ignores its key.

``bn_axis_name`` (``pmap``: ``"data"``) makes BatchNorm average its batch statistics over that mapped axis: a Linen
module gets it through its ``bn_axis_name`` field (the built-ins have one; a user's Linen module without that field
keeps per-device statistics under pmap, see `has_global_batch_norm`), an NNX module by setting ``axis_name`` on
each of its ``nnx.BatchNorm`` layers that has none.

Adapters compare equal when they run the same computation (a Linen module's fields; an NNX module's graph and state
structure, not its values), so the executor cache reuses compiled steps across the runs of a grid.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["LinenAdapter", "NNXAdapter", "as_adapter", "has_global_batch_norm", "is_model"]


def is_model(obj: Any) -> bool:
  """Whether `obj` is a Flax Linen or NNX module."""
  return isinstance(obj, (nn.Module, nnx.Module))


def as_adapter(model, *, bn_axis_name: str | None = None):
  """The adapter of a Linen or NNX `model` (an adapter is returned as it is). An NNX module is split here: keep
  using the adapter, not the module, afterwards. Raises TypeError for anything else."""
  if isinstance(model, (LinenAdapter, NNXAdapter)):
    return model
  if isinstance(model, nn.Module):
    return LinenAdapter(model, bn_axis_name=bn_axis_name)
  if isinstance(model, nnx.Module):
    return NNXAdapter(model, bn_axis_name=bn_axis_name)
  raise TypeError(f"expected a flax.linen.Module or a flax.nnx.Module, got {type(model).__name__}")


def has_global_batch_norm(model) -> bool:
  """False for a Linen module that cannot be given a ``bn_axis_name`` (no such field); True otherwise."""
  return not isinstance(model, nn.Module) or "bn_axis_name" in getattr(type(model), "__dataclass_fields__", {})


# ------------------------------------------------------------------------------------------------------ Linen
def _linen_init(module, key, sample):
  return module.init({"params": key, "dropout": key}, sample, train=False)


# one compilation per (module, input shape): Linen modules hash by their fields, so equal modules reuse it
_linen_init_jit = jax.jit(_linen_init, static_argnums=0)


class LinenAdapter:
  """A Linen module called as ``module.apply(variables, x, train=...)`` (the `gence_jax.models` convention)."""

  kind = "linen"

  def __init__(self, module: nn.Module, *, bn_axis_name: str | None = None):
    if bn_axis_name is not None and "bn_axis_name" in getattr(type(module), "__dataclass_fields__", {}):
      module = module.clone(bn_axis_name=bn_axis_name)
    self.module = module

  def init(self, key, sample):
    try:
      hash(self.module)
    except TypeError:  # a module with unhashable attributes (e.g. a list): no compilation cache
      variables = _linen_init(self.module, key, sample)
    else:
      variables = _linen_init_jit(self.module, key, sample)
    return variables["params"], variables.get("batch_stats", {})

  def apply(self, params, batch_stats, x, *, train: bool, key=None):
    variables = {"params": params}
    has_bn = bool(jax.tree_util.tree_leaves(batch_stats))
    if has_bn:
      variables["batch_stats"] = batch_stats
    rngs = {"dropout": key} if key is not None else None
    if train and has_bn:
      logits, updates = self.module.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
      return logits.astype(jnp.float32), updates["batch_stats"]
    return self.module.apply(variables, x, train=train, rngs=rngs).astype(jnp.float32), batch_stats

  def computation(self) -> "LinenAdapter":
    """What a compiled step needs (the module itself)."""
    return self

  def __eq__(self, other):
    return isinstance(other, LinenAdapter) and self.module == other.module

  def __hash__(self):
    return hash(("linen", self.module))

  def __repr__(self):
    return f"LinenAdapter({type(self.module).__name__})"


# -------------------------------------------------------------------------------------------------------- NNX
def _key_path(path) -> tuple[str, ...]:
  """A pytree key path of an `nnx.State` leaf as string keys (the trailing ``.value`` of a Variable dropped)."""
  out = []
  for k in path:
    if isinstance(k, jax.tree_util.GetAttrKey):
      continue  # the Variable's value
    for attr in ("key", "idx", "name"):
      if hasattr(k, attr):
        out.append(str(getattr(k, attr)))
        break
    else:
      out.append(str(k))
  return tuple(out)


class _Layout:
  """The structure of one `nnx.State`: its treedef and each leaf's string path, to convert to and from a nested dict
  of arrays without Python work per Variable."""

  def __init__(self, state):
    leaves = jax.tree_util.tree_leaves_with_path(state)
    self.treedef = jax.tree_util.tree_structure(state)
    self.paths = tuple(_key_path(p) for p, _ in leaves)
    if len(set(self.paths)) != len(self.paths):
      raise ValueError("NNX model: two variables map to the same path after converting keys to strings")

  def to_dict(self, state) -> dict:
    out: dict = {}
    for path, leaf in zip(self.paths, jax.tree_util.tree_leaves(state)):
      node = out
      for k in path[:-1]:
        node = node.setdefault(k, {})
      node[path[-1]] = leaf
    return out

  def from_dict(self, tree: dict):
    leaves = []
    for path in self.paths:
      node = tree
      for k in path:
        node = node[k]
      leaves.append(node)
    return jax.tree_util.tree_unflatten(self.treedef, leaves)

  def key(self):
    return (self.treedef, self.paths)


def _set_batch_norm_axis(module: nnx.Module, axis_name: str) -> None:
  for _, node in nnx.iter_graph(module):
    if isinstance(node, nnx.BatchNorm) and node.axis_name is None:
      node.axis_name = axis_name


def _takes_train(module: nnx.Module) -> bool:
  try:
    return "train" in inspect.signature(type(module).__call__).parameters
  except (TypeError, ValueError):
    return False


class NNXAdapter:
  """An NNX module split once into graph and state; see the module docstring."""

  kind = "nnx"

  def __init__(self, module: nnx.Module, *, bn_axis_name: str | None = None):
    if bn_axis_name is not None:
      _set_batch_norm_axis(module, bn_axis_name)
    self.takes_train = _takes_train(module)
    module.eval()
    self._graph_eval = nnx.split(module, nnx.Param, nnx.RngState, ...)[0]
    module.train()
    self._graph_train, params, rngs, rest = nnx.split(module, nnx.Param, nnx.RngState, ...)
    self._params, self._rngs, self._rest = _Layout(params), _Layout(rngs), _Layout(rest)
    # which RNG leaves are keys (the others are counts), and their shapes
    self._rng_leaves = tuple(
      (jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key), leaf.shape) for leaf in jax.tree_util.tree_leaves(rngs)
    )
    self._initial = (self._params.to_dict(params), self._rest.to_dict(rest))

  def init(self, key=None, sample=None):
    """The module's own initial params and batch statistics (set by its constructor; `key` and `sample` unused)."""
    del key, sample
    if self._initial is None:
      raise ValueError("this NNX adapter holds no initial state (a computation() copy): use the original adapter")
    return self._initial

  def computation(self) -> "NNXAdapter":
    """A copy without the initial arrays (graph and layouts only): what a compiled step, and the executor cache
    holding it, keeps."""
    copy = object.__new__(NNXAdapter)
    copy.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_initial"})
    copy._initial = None
    return copy

  def _fresh_rngs(self, key):
    """Every RNG stream reseeded from `key`: stream i's key is ``fold_in(key, i)``, its count 0."""
    key = jax.random.PRNGKey(0) if key is None else key
    leaves, i = [], 0
    for is_key, shape in self._rng_leaves:
      if is_key:
        k = jax.random.wrap_key_data(jax.random.fold_in(key, i))
        leaves.append(jnp.broadcast_to(k, shape) if shape else k)
        i += 1
      else:
        leaves.append(jnp.zeros(shape, jnp.uint32))
    return jax.tree_util.tree_unflatten(self._rngs.treedef, leaves)

  def apply(self, params, batch_stats, x, *, train: bool, key=None):
    graph = self._graph_train if train else self._graph_eval
    model = nnx.merge(graph, self._params.from_dict(params), self._fresh_rngs(key), self._rest.from_dict(batch_stats))
    logits = model(x, train=train) if self.takes_train else model(x)
    if not train:
      return logits.astype(jnp.float32), batch_stats
    rest = nnx.split(model, nnx.Param, nnx.RngState, ...)[3]
    return logits.astype(jnp.float32), self._rest.to_dict(rest)

  @functools.cached_property
  def _identity(self):
    return ("nnx", self._graph_train, self._graph_eval, self._params.key(), self._rngs.key(), self._rest.key())

  def __eq__(self, other):
    return isinstance(other, NNXAdapter) and self._identity == other._identity

  def __hash__(self):
    return hash(self._identity)

  def __repr__(self):
    return f"NNXAdapter({self._graph_train.type.__name__ if hasattr(self._graph_train, 'type') else 'graph'})"
