"""Multi-layer perceptron for tabular features (the MGCE paper's tabular runs use one hidden layer of 1024)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

#: ``initializer`` choices: Flax's default (LeCun normal kernels, zero biases); He normal kernels (He et al. 2015), zero
#: biases; PyTorch's ``nn.Linear`` default (kernel and bias uniform in +-1/sqrt(fan_in)), what a PyTorch reference
#: implementation trains from unless it says otherwise.
INITS = ("lecun_normal", "he_normal", "torch_default")


def _torch_uniform(fan_in_axis: int = 0):
  def init(key, shape, dtype=jnp.float32, fan_in=None):
    bound = 1.0 / jnp.sqrt(fan_in if fan_in is not None else shape[fan_in_axis])
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class MLP(nn.Module):
  """ReLU MLP: ``hidden`` widths, then a linear layer to ``num_classes`` logits. Inputs are flattened.

  ``initializer`` picks the initialisation of every layer (:data:`INITS`)."""

  num_classes: int
  hidden: Sequence[int] = (1024,)
  dtype: jnp.dtype = jnp.float32
  initializer: str = "lecun_normal"

  def _dense(self, width: int, fan_in: int) -> nn.Dense:
    if self.initializer == "lecun_normal":
      return nn.Dense(width, dtype=self.dtype)
    if self.initializer == "he_normal":
      return nn.Dense(width, dtype=self.dtype, kernel_init=nn.initializers.he_normal())
    if self.initializer == "torch_default":
      bias = _torch_uniform()
      return nn.Dense(
        width,
        dtype=self.dtype,
        kernel_init=_torch_uniform(0),
        bias_init=lambda key, shape, dtype=jnp.float32: bias(key, shape, dtype, fan_in=fan_in),
      )
    raise ValueError(f"MLP: `initializer` must be one of {INITS}, got {self.initializer!r}.")

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = x.reshape(x.shape[0], -1).astype(self.dtype)
    for width in self.hidden:
      x = nn.relu(self._dense(width, x.shape[-1])(x))
    return self._dense(self.num_classes, x.shape[-1])(x).astype(jnp.float32)
