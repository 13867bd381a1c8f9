"""Flax classifiers: each maps an input batch to float32 logits ``[batch, num_classes]``.

Every model is called as ``model.apply(variables, x, train=...)``. Models with BatchNorm (all but ``MLP``) keep their
running statistics in the ``batch_stats`` collection: in training apply with ``mutable=["batch_stats"]`` and store the
returned statistics; in evaluation (``train=False``) the running averages are used. See :mod:`gence_jax.models.resnet`
for the shared BatchNorm and dtype conventions.

``get_model(name, num_classes, **kwargs)`` builds a model by name (``available_models()`` lists them) and
``init_model(model, rng, input_shape)`` initialises its variables.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gence_jax.models.cnn import CNN
from gence_jax.models.mlp import MLP
from gence_jax.models.resnet import BasicBlock, Bottleneck, ResNet, ResNet18, ResNet34, ResNet50
from gence_jax.models.wide_resnet import WRN28_10, WideBasicBlock, WideResNet

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
  "available_models",
  "get_model",
  "init_model",
]
