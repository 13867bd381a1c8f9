"""Flax classifiers: each maps an input batch to float32 logits ``[batch, num_classes]``.

Every model is called as ``model.apply(variables, x, train=...)``. Models with BatchNorm (all but ``MLP``) keep their
running statistics in the ``batch_stats`` collection: in training apply with ``mutable=["batch_stats"]`` and store the
returned statistics; in evaluation (``train=False``) the running averages are used. See :mod:`gence_jax.models.resnet`
for the shared BatchNorm and dtype conventions.

``get_model(name, num_classes, **kwargs)`` builds a model by name (``available_models()`` lists them) and
``init_model(model, rng, input_shape)`` initialises its variables.

The same architectures written in Flax NNX are in :mod:`gence_jax.models.nnx_models` (``get_nnx_model``; the same
parameter paths, counts and outputs). ``build_model(name, num_classes, input_shape, key=...)`` builds what the
training program's ``model.name`` names (a registry name, ``nnx:<name>``, or a user's ``module:factory`` /
``file.py:factory``, see :mod:`gence_jax.models.factory`) behind the one interface the train step calls
(:mod:`gence_jax.models.adapter`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gence_jax.models.adapter import LinenAdapter, NNXAdapter, as_adapter, has_global_batch_norm, is_model
from gence_jax.models.cnn import CNN
from gence_jax.models.mlp import MLP
from gence_jax.models.resnet import BasicBlock, Bottleneck, ResNet, ResNet18, ResNet34, ResNet50
from gence_jax.models.wide_resnet import WRN28_10, WideBasicBlock, WideResNet
from gence_jax.models import factory as _factory
from gence_jax.models.factory import NNX_PREFIX, is_nnx_builtin, is_reference
from gence_jax.models.nnx_models import available_nnx_models, get_nnx_model, load_linen_variables

_REGISTRY: Dict[str, Callable[..., nn.Module]] = {
  "mlp": MLP,
  "cnn": CNN,
  "resnet18": ResNet18,
  "resnet34": ResNet34,
  "resnet50": ResNet50,
  "wrn28_10": WRN28_10,
  "wide_resnet": WideResNet,
}


def available_models() -> list[str]:
  """Names accepted by :func:`get_model`, sorted."""
  return sorted(_REGISTRY)


def get_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
  """Builds the model registered as ``name`` (case-insensitive) with ``num_classes`` outputs.

  ``kwargs`` go to the module's constructor, e.g. ``dtype=jnp.bfloat16``, ``width=16`` (ResNets), ``stem="imagenet"``,
  ``depth=16, widen_factor=4, dropout_rate=0.3`` (``wide_resnet``), ``bn_axis_name="batch"``.

  Raises:
    ValueError: for an unknown name (the message lists the known ones) or a non-positive ``num_classes``.
  """
  key = name.lower() if isinstance(name, str) else name
  if key not in _REGISTRY:
    raise ValueError(f"Unknown model {name!r}; available models: {', '.join(available_models())}.")
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
  return _REGISTRY[key](num_classes=num_classes, **kwargs)


def init_model(
  model: nn.Module, rng: jax.Array, input_shape: Sequence[int], batch_size: int = 2, dtype: Any = jnp.float32
) -> Dict[str, Any]:
  """Initialises ``model`` on zeros of shape ``(batch_size, *input_shape)`` (``input_shape`` is one example's shape).

  Returns the variables dict: ``{"params": ...}`` plus ``"batch_stats"`` for models with BatchNorm. Initialisation runs
  under ``jax.jit`` (one compilation instead of op-by-op dispatch) in eval mode, so no dropout key is needed.
  """
  x = jnp.zeros((batch_size, *tuple(input_shape)), dtype)
  variables = jax.jit(functools.partial(model.init, train=False))(rng, x)
  return dict(variables)


def builtin_name(name: str) -> str | None:
  """The registry name behind ``name`` (``"cnn"`` for ``"cnn"`` and ``"nnx:cnn"``); None for a user's reference."""
  if is_reference(name):
    return None
  return (name[len(NNX_PREFIX) :] if is_nnx_builtin(name) else name).lower()


def build_model(
  name: str,
  num_classes: int,
  input_shape: Sequence[int] | None,
  *,
  key: jax.Array,
  kwargs: dict | None = None,
  dtype: Any = None,
  bn_axis_name: str | None = None,
):
  """The model ``model.name`` names, behind the train step's interface (`gence_jax.models.adapter.as_adapter`).

  ``name``: a registry name (Linen), ``nnx:<registry name>`` (NNX) or a user's ``module:factory`` /
  ``file.py:factory``; ``kwargs`` go to the constructor or factory; ``key`` seeds an NNX model's ``rngs`` (a Linen
  model is initialised later, by ``adapter.init``); ``dtype`` (the compute dtype) goes to the built-ins only;
  ``bn_axis_name`` makes BatchNorm statistics global over that mapped axis (pmap).

  Raises ValueError for an unknown name, a bad reference or a factory that does not return a Linen or NNX module,
  TypeError for a constructor argument the model does not take.
  """
  kwargs = dict(kwargs or {})
  if input_shape is None and (is_reference(name) or is_nnx_builtin(name)):
    raise ValueError(f"building {name!r} needs input_shape (one example's shape)")
  if is_reference(name):
    from flax import nnx

    factory = _factory.load_factory(name)
    _factory.check_factory_kwargs(factory, name, kwargs)
    module = _factory.call_factory(
      factory, name, num_classes=num_classes, input_shape=input_shape, kwargs=kwargs, rngs=nnx.Rngs(key)
    )
  elif is_nnx_builtin(name):
    from flax import nnx

    if dtype is not None:
      kwargs["dtype"] = dtype
    module = get_nnx_model(builtin_name(name), num_classes, input_shape, rngs=nnx.Rngs(key), **kwargs)
  else:
    if dtype is not None:
      kwargs["dtype"] = dtype
    module = get_model(name, num_classes, **kwargs)
  return as_adapter(module, bn_axis_name=bn_axis_name)


__all__ = [
  "BasicBlock",
  "Bottleneck",
  "CNN",
  "MLP",
  "ResNet",
  "ResNet18",
  "ResNet34",
  "ResNet50",
  "WRN28_10",
  "WideBasicBlock",
  "WideResNet",
  "LinenAdapter",
  "NNXAdapter",
  "as_adapter",
  "available_models",
  "available_nnx_models",
  "build_model",
  "builtin_name",
  "get_nnx_model",
  "has_global_batch_norm",
  "is_model",
  "is_nnx_builtin",
  "is_reference",
  "load_linen_variables",
  "get_model",
  "init_model",
]
