"""Models by name: the built-in registry (Linen, or NNX with ``nnx:<name>``) or a user's factory by reference.

``model.name`` is one of

* a registry name (``mlp``, ``cnn``, ``resnet18``, ...): the Linen model of `gence_jax.models.get_model`;
* ``nnx:<registry name>``: the same architecture written in NNX (`gence_jax.models.nnx_models`);
* ``<module>:<factory>`` (an importable module, e.g. ``my_pkg.models:make_model``) or
  ``<path/to/file.py>:<factory>`` (a Python file, relative to the working directory or absolute): a user's factory.

A factory is called with keyword arguments: ``num_classes``, ``input_shape`` (one example's shape, a tuple), the
entries of ``model.kwargs``, and ``rngs`` (an ``nnx.Rngs`` derived from the run's seed, for an NNX model). The ones
of ``num_classes``, ``input_shape`` and ``rngs`` that its signature does not take (and no ``**kwargs``) are left
out; every ``model.kwargs`` entry is passed. It returns a ``flax.linen.Module`` or a ``flax.nnx.Module`` whose call
on a batch ``[B, *input_shape]`` gives logits ``[B, num_classes]`` (see `gence_jax.models.adapter` for the
calling conventions).

Errors are ValueErrors whose message says what is wrong with the reference (a missing module, file or factory, a
factory that is not callable or returns something else); the config validation prefixes the config key.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from typing import Any, Callable, Sequence

import jax

from gence_jax.models.adapter import is_model

__all__ = [
  "NNX_PREFIX",
  "call_factory",
  "check_factory_kwargs",
  "is_reference",
  "load_factory",
  "parse_reference",
  "reference_identity",
]

NNX_PREFIX = "nnx:"
PROGRAM_ARGS = ("num_classes", "input_shape", "rngs")
_FILE_MODULES: dict[tuple[str, str], Any] = {}
_PROBED: set = set()


def is_nnx_builtin(name: str) -> bool:
  """Whether `name` is ``nnx:<registry name>`` (an NNX built-in)."""
  return isinstance(name, str) and name.lower().startswith(NNX_PREFIX)


def is_reference(name: str) -> bool:
  """Whether `name` refers to a user's factory (``module:factory`` or ``file.py:factory``)."""
  return isinstance(name, str) and ":" in name and not is_nnx_builtin(name)


def parse_reference(ref: str) -> tuple[str, str, str]:
  """``(kind, target, factory)``: kind ``"file"`` for ``<path>.py:<factory>`` (or a target with a path
  separator), ``"module"`` for ``<module>:<factory>``. Raises ValueError for an empty part."""
  target, _, attr = ref.rpartition(":")
  if not target or not attr:
    raise ValueError(f"model reference {ref!r}: expected <module>:<factory> or <path/to/file.py>:<factory>")
  kind = "file" if target.endswith(".py") or os.sep in target or "/" in target else "module"
  return kind, target, attr


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _load_file(path: str, ref: str):
  """The module of a Python file, loaded once per (path, content): a grid's runs share its classes."""
  full = os.path.abspath(path)
  if not os.path.isfile(full):
    raise ValueError(f"model file not found: {path!r} (in {ref!r})")
  digest = _sha256(full)
  if (full, digest) in _FILE_MODULES:
    return _FILE_MODULES[(full, digest)]
  name = f"_gence_jax_user_model_{digest[:16]}"
  spec = importlib.util.spec_from_file_location(name, full)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module  # dataclasses and pickling look the module up by name
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # noqa: BLE001 - any failure of the user's file is reported as a config error
    del sys.modules[name]
    raise ValueError(f"model file {path!r} failed to load: {type(e).__name__}: {e}") from None
  _FILE_MODULES[(full, digest)] = module
  return module


def _load_module(target: str, ref: str):
  try:
    return importlib.import_module(target)
  except ModuleNotFoundError as e:
    if e.name and (target == e.name or target.startswith(e.name + ".")):
      raise ValueError(f"cannot import module {target!r} (in {ref!r}): no module named {e.name!r}") from None
    raise ValueError(f"module {target!r} failed to import: {type(e).__name__}: {e}") from None
  except Exception as e:  # noqa: BLE001
    raise ValueError(f"module {target!r} failed to import: {type(e).__name__}: {e}") from None


def load_factory(ref: str) -> Callable:
  """The callable that `ref` (``module:factory`` or ``file.py:factory``) names; ValueError naming what is missing."""
  kind, target, attr = parse_reference(ref)
  module = _load_file(target, ref) if kind == "file" else _load_module(target, ref)
  where = f"file {target!r}" if kind == "file" else f"module {target!r}"
  if not hasattr(module, attr):
    raise ValueError(f"{where} has no factory {attr!r} (in {ref!r})")
  factory = getattr(module, attr)
  if not callable(factory):
    raise ValueError(f"{attr!r} in {where} is a {type(factory).__name__}, not a callable factory (in {ref!r})")
  return factory


def reference_identity(ref: str) -> dict:
  """``{"reference": ref, "file": path, "sha256": digest}`` of the file that defines the factory (for a module, its
  source file; ``None`` for a module without one)."""
  kind, target, _ = parse_reference(ref)
  if kind == "file":
    path = os.path.abspath(target)
  else:
    spec = importlib.util.find_spec(target)
    path = spec.origin if spec is not None and spec.origin and os.path.isfile(spec.origin) else None
  return {"reference": ref, "file": path, "sha256": _sha256(path) if path else None}


def _signature(factory: Callable) -> tuple[set[str], bool]:
  """(named keyword-capable parameters, whether it takes ``**kwargs``)."""
  try:
    params = inspect.signature(factory).parameters.values()
  except (TypeError, ValueError):
    return set(), True
  named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
  return named, any(p.kind == p.VAR_KEYWORD for p in params)


def check_factory_kwargs(factory: Callable, ref: str, kwargs: dict) -> None:
  """ValueError when `factory` cannot take one of ``model.kwargs`` (no parameter of that name, no ``**kwargs``)."""
  named, var_kw = _signature(factory)
  unknown = sorted(k for k in kwargs if k not in named and not var_kw)
  if unknown:
    raise ValueError(f"factory {ref!r} takes no argument(s) {unknown} (it takes {sorted(named)})")
  clash = sorted(k for k in kwargs if k in PROGRAM_ARGS)
  if clash:
    raise ValueError(f"{clash} are given by the program, not by model.kwargs")


def call_factory(
  factory: Callable, ref: str, *, num_classes: int, input_shape: Sequence[int], kwargs: dict, rngs=None
) -> Any:
  """``factory(num_classes=..., input_shape=..., **kwargs, rngs=...)`` (the program's arguments the factory takes);
  ValueError when it raises a TypeError (a wrong keyword) or returns something other than a Linen or NNX module."""
  named, var_kw = _signature(factory)
  given = {"num_classes": num_classes, "input_shape": tuple(int(s) for s in input_shape), "rngs": rngs}
  args = {k: v for k, v in given.items() if (k in named or var_kw) and not (k == "rngs" and v is None)}
  try:
    model = factory(**args, **kwargs)
  except TypeError as e:
    raise ValueError(f"factory {ref!r} called with {sorted([*args, *kwargs])}: TypeError: {e}") from None
  if not is_model(model):
    raise ValueError(
      f"factory {ref!r} returned a {type(model).__module__}.{type(model).__name__}, "
      "expected a flax.linen.Module or a flax.nnx.Module"
    )
  return model


def probe_factory(factory: Callable, ref: str, *, num_classes: int, input_shape: Sequence[int], kwargs: dict) -> None:
  """Calls `factory` abstractly (`jax.eval_shape`: no parameter is computed) with a guess of the data's shape, and
  raises ValueError if it returns something other than a module. A factory that fails on the guessed shape is not
  judged here (the real call, once the data is loaded, reports it)."""
  from flax import nnx

  try:
    cache_key = (factory, ref, num_classes, tuple(input_shape), repr(sorted(kwargs.items())))
    hash(cache_key)
  except TypeError:
    cache_key = None
  if cache_key is not None and cache_key in _PROBED:  # a grid's cells validate the same model once
    return
  out = {}

  def build():
    try:
      model = factory(**_probe_args(factory, num_classes, input_shape, nnx.Rngs(0)), **kwargs)
    except Exception:  # noqa: BLE001 - see the docstring
      return None
    out["type"] = type(model)
    out["ok"] = is_model(model)
    return None

  jax.eval_shape(build)
  if cache_key is not None and (not out or out["ok"]):
    _PROBED.add(cache_key)
  if out and not out["ok"]:
    t = out["type"]
    raise ValueError(
      f"factory {ref!r} returned a {t.__module__}.{t.__name__}, expected a flax.linen.Module or a flax.nnx.Module"
    )


def _probe_args(factory, num_classes, input_shape, rngs) -> dict:
  named, var_kw = _signature(factory)
  given = {"num_classes": num_classes, "input_shape": tuple(input_shape), "rngs": rngs}
  return {k: v for k, v in given.items() if k in named or var_kw}
