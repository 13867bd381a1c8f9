"""Wide Residual Networks (WRN-d-k) for CIFAR-sized images.

Zagoruyko and Komodakis, "Wide Residual Networks", BMVC 2016 (arXiv:1605.07146).

Depth ``d = 6n + 4``: a 3x3 stem convolution with 16 channels, three groups of ``n`` pre-activation blocks with widths
``16k``, ``32k``, ``64k`` and strides 1, 2, 2, a final BatchNorm + ReLU, global average pooling and a linear head. Each
block is BN-ReLU-conv3x3(stride)-BN-ReLU-dropout-conv3x3 (the paper's B(3,3) block with dropout between the two
convolutions); when the number of channels or the stride changes the shortcut is a 1x1 convolution applied to the
pre-activated input, otherwise the identity. Convolutions carry no bias. WRN-28-10 with 10 classes has 36,479,194
parameters (the paper's "36.5M").

BatchNorm (momentum 0.9, epsilon 1e-5, ``bn_axis_name``) and ``dtype`` follow the conventions of
:mod:`gence_jax.models.resnet`. With ``dropout_rate > 0`` and ``train=True`` apply with ``rngs={"dropout": key}``.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from gence_jax.models.resnet import _block_norm, _image_batch, _linear_head, batch_norm, conv


class WideBasicBlock(nn.Module):
  """Pre-activation wide block (BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3) with ``features`` output channels."""

  features: int
  stride: int = 1
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = _block_norm(self, train)
    pre = nn.relu(bn()(x))
    y = conv(self.features, 3, self.stride, dtype=self.dtype)(pre)
    y = nn.relu(bn()(y))
    if self.dropout_rate > 0:
      y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    y = conv(self.features, 3, dtype=self.dtype)(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = conv(self.features, 1, self.stride, dtype=self.dtype, name="shortcut_conv")(pre)
    return x + y


class WideResNet(nn.Module):
  """WRN-``depth``-``widen_factor`` (Zagoruyko & Komodakis 2016) returning float32 logits ``[batch, num_classes]``.

  Attributes:
    num_classes: size of the linear head.
    depth: total depth ``6n + 4`` (28 for WRN-28-10).
    widen_factor: ``k``; group widths are ``16k``, ``32k``, ``64k``.
    dropout_rate: dropout between the two convolutions of each block (the paper uses 0.3 on CIFAR; default 0).
    dtype: compute dtype; parameters stay float32 and logits are returned as float32.
    bn_axis_name: mapped axis name for cross-device BatchNorm statistics (``None``: per-device).
  """

  num_classes: int
  depth: int = 28
  widen_factor: int = 10
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.depth < 10 or (self.depth - 4) % 6:
      raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1, got {self.depth}.")
    n = (self.depth - 4) // 6
    x = conv(16, 3, dtype=self.dtype, name="stem_conv")(_image_batch(x, self.dtype))
    for group, stride in enumerate((1, 2, 2)):
      for i in range(n):
        x = WideBasicBlock(
          16 * 2**group * self.widen_factor,
          stride if i == 0 else 1,
          self.dropout_rate,
          dtype=self.dtype,
          bn_axis_name=self.bn_axis_name,
          name=f"group{group + 1}_block{i + 1}",
        )(x, train)
    x = nn.relu(batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, name="final_bn")(x))
    return _linear_head(jnp.mean(x, axis=(1, 2)), self.num_classes, self.dtype)


WRN28_10 = functools.partial(WideResNet, depth=28, widen_factor=10)
