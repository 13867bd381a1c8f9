"""Multi-layer perceptron for tabular features (the MGCE paper's tabular runs use one hidden layer of 1024)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
  """ReLU MLP: ``hidden`` widths, then a linear layer to ``num_classes`` logits. Inputs are flattened."""

  num_classes: int
  hidden: Sequence[int] = (1024,)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = x.reshape(x.shape[0], -1).astype(self.dtype)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
