"""A small convolutional network for fast CPU runs (8x8x1 digits, 28x28x1 MNIST-like, 32x32x3 CIFAR-like inputs).

The classic LeNet-style layout (LeCun et al., "Gradient-Based Learning Applied to Document Recognition", Proc. IEEE
1998) with BatchNorm (Ioffe and Szegedy, ICML 2015): ``len(features)`` blocks of 3x3 convolution (``SAME`` padding) ->
BatchNorm -> ReLU -> 2x2 max-pool (``SAME`` padding, so odd sizes round up: 8 -> 4 -> 2, 28 -> 14 -> 7, 32 -> 16 -> 8),
then flatten -> dense ``hidden`` -> ReLU -> optional dropout -> dense logits.

BatchNorm (momentum 0.9, epsilon 1e-5, ``bn_axis_name``) and ``dtype`` follow the conventions of
:mod:`gence_jax.models.resnet`. With ``dropout_rate > 0`` and ``train=True`` apply with ``rngs={"dropout": key}``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from gence_jax.models.resnet import _image_batch, _linear_head, batch_norm, conv_kernel_init


class CNN(nn.Module):
  """Small conv-BN-ReLU-pool network returning float32 logits ``[batch, num_classes]``.

  Attributes:
    num_classes: size of the linear head.
    features: output channels of the convolutional blocks (one block per entry).
    hidden: width of the dense layer after flattening (0: none, the head follows the flattened features).
    dropout_rate: dropout before the head (default 0).
    dtype: compute dtype; parameters stay float32 and logits are returned as float32.
    bn_axis_name: mapped axis name for cross-device BatchNorm statistics (``None``: per-device).
  """

  num_classes: int
  features: Sequence[int] = (32, 64)
  hidden: int = 128
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = _image_batch(x, self.dtype)
    for i, width in enumerate(self.features):
      x = nn.Conv(
        width,
        (3, 3),
        padding="SAME",
        use_bias=False,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        kernel_init=conv_kernel_init,
        name=f"conv{i + 1}",
      )(x)
      x = nn.relu(batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, name=f"bn{i + 1}")(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    x = x.reshape(x.shape[0], -1)
    if self.hidden:
      x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, param_dtype=jnp.float32, name="dense")(x))
    if self.dropout_rate > 0:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return _linear_head(x, self.num_classes, self.dtype)
