"""ResNet-18/34/50 for CIFAR-sized and Tiny-ImageNet-sized images.

He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (arXiv:1512.03385).

The default ``stem="cifar"`` is the CIFAR adaptation used throughout the calibration literature (e.g. Mukhoti et al.,
"Calibrating Deep Neural Networks using Focal Loss", NeurIPS 2020, and the MGCE paper's CIFAR-10 runs): a single 3x3
convolution with stride 1 and 64 channels, BatchNorm, ReLU and no max-pool, followed by four stages of widths
64/128/256/512 (times ``width / 64``) with strides 1/2/2/2, global average pooling and one linear layer. Convolutions
carry no bias (BatchNorm follows each one); a projection shortcut (1x1 convolution + BatchNorm) is used whenever the
stride or the number of channels changes ("option B" of the paper). ``stem="imagenet"`` is the original ImageNet stem
(7x7 convolution with stride 2, BatchNorm, ReLU, 3x3 max-pool with stride 2), useful for 64x64 Tiny-ImageNet.

Parameter counts with 10 classes and ``width=64`` (``stem="cifar"``): ResNet-18 11,173,962; ResNet-34 21,282,122;
ResNet-50 23,520,842. BatchNorm running statistics live in the ``batch_stats`` collection and are not parameters.

BatchNorm conventions shared by every model of :mod:`gence_jax.models`: ``__call__(x, train)``; with ``train=True``
the batch statistics normalise and the running averages in ``batch_stats`` are updated (apply with
``mutable=["batch_stats"]``); with ``train=False`` the running averages are used, so each example's output is
independent of the rest of the batch. Momentum 0.9 (``running = 0.9 * running + 0.1 * batch``, the PyTorch default
written the Flax way), epsilon 1e-5, and ``bn_axis_name`` names the mapped axis over which batch statistics are
averaged under ``pmap`` / ``shard_map`` (``None``: per-device statistics). Flax's running variance is the biased batch
variance (PyTorch keeps the unbiased one; the difference is a factor ``n / (n - 1)`` per update).

``dtype`` is the compute dtype (e.g. ``jnp.bfloat16``): inputs, convolutions, normalisation outputs and the head run in
it, while parameters stay float32 (``param_dtype``), BatchNorm statistics are reduced in float32 and the logits are
returned as float32.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# He et al. (2015, "Delving Deep into Rectifiers") normal initialisation, fan-out mode as in torchvision's ResNets.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def batch_norm(
  train: bool,
  *,
  dtype: Any = jnp.float32,
  axis_name: Optional[str] = None,
  zero_scale: bool = False,
  name: Optional[str] = None,
) -> nn.BatchNorm:
  """The BatchNorm used by every model here: momentum 0.9, epsilon 1e-5, float32 parameters and statistics."""
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=BN_MOMENTUM,
    epsilon=BN_EPSILON,
    dtype=dtype,
    param_dtype=jnp.float32,
    axis_name=axis_name,
    scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
    name=name,
  )


def conv(
  features: int, kernel: int, stride: int = 1, *, dtype: Any = jnp.float32, name: Optional[str] = None
) -> nn.Conv:
  """Bias-free ``kernel x kernel`` convolution with PyTorch-style symmetric padding ``kernel // 2``."""
  pad = kernel // 2
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=(stride, stride),
    padding=((pad, pad), (pad, pad)),
    use_bias=False,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=conv_kernel_init,
    name=name,
  )


def _image_batch(x: Any, dtype: Any) -> Any:
  """Model input ``[batch, H, W, C]`` in the compute ``dtype``; ``[batch, H, W]`` grey images get a channel axis."""
  if x.ndim == 3:
    x = x[..., None]
  return x.astype(dtype)


def _block_norm(block: nn.Module, train: bool) -> Callable[..., nn.BatchNorm]:
  """:func:`batch_norm` with ``train`` and the ``dtype`` and ``bn_axis_name`` of ``block`` bound."""
  return functools.partial(batch_norm, train, dtype=block.dtype, axis_name=block.bn_axis_name)


def _linear_head(x: Any, num_classes: int, dtype: Any) -> Any:
  """The linear classifier every model ends with (``name="head"``), computed in ``dtype``; float32 logits."""
  return nn.Dense(num_classes, dtype=dtype, param_dtype=jnp.float32, name="head")(x).astype(jnp.float32)


class BasicBlock(nn.Module):
  """Two 3x3 convolutions (ResNet-18/34), output channels ``features``; projection shortcut when the shape changes."""

  features: int
  stride: int = 1
  dtype: Any = jnp.float32
  bn_axis_name: Optional[str] = None
  zero_init_residual: bool = False

  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = _block_norm(self, train)
    y = conv(self.features, 3, self.stride, dtype=self.dtype)(x)
    y = nn.relu(bn()(y))
    y = conv(self.features, 3, dtype=self.dtype)(y)
    y = bn(zero_scale=self.zero_init_residual)(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = conv(self.features, 1, self.stride, dtype=self.dtype, name="shortcut_conv")(x)
      x = bn(name="shortcut_bn")(x)
    return nn.relu(y + x)


class Bottleneck(BasicBlock):
  """1x1 -> 3x3 (strided) -> 1x1 bottleneck (ResNet-50), output channels ``4 * features``; the attributes of
  :class:`BasicBlock`."""

  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = _block_norm(self, train)
    out = self.features * self.expansion
    y = nn.relu(bn()(conv(self.features, 1, dtype=self.dtype)(x)))
    y = nn.relu(bn()(conv(self.features, 3, self.stride, dtype=self.dtype)(y)))
    y = bn(zero_scale=self.zero_init_residual)(conv(out, 1, dtype=self.dtype)(y))
    if self.stride != 1 or x.shape[-1] != out:
      x = conv(out, 1, self.stride, dtype=self.dtype, name="shortcut_conv")(x)
      x = bn(name="shortcut_bn")(x)
    return nn.relu(y + x)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
  """ResNet classifier (He et al. 2016) returning float32 logits ``[batch, num_classes]``.

  Attributes:
    num_classes: size of the linear head.
    stage_sizes: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
    block: ``"basic"`` (two 3x3 convolutions) or ``"bottleneck"`` (1x1-3x3-1x1, expansion 4).
    width: channels of the stem and of the first stage (64 in the paper); stages use ``width * (1, 2, 4, 8)``. Small
      values (8, 16) give narrow variants for fast CPU runs.
    stem: ``"cifar"`` (3x3 stride-1 convolution, no max-pool) or ``"imagenet"`` (7x7 stride-2 + 3x3 max-pool).
    dtype: compute dtype; parameters stay float32 and logits are returned as float32.
    bn_axis_name: mapped axis name for cross-device BatchNorm statistics (``None``: per-device).
    zero_init_residual: initialise the last BatchNorm scale of each block to zero (Goyal et al. 2017); off by default.
  """

  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = "basic"
  width: int = 64
  stem: str = "cifar"
  dtype: Any = jnp.float32
  bn_axis_name: Optional[str] = None
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.block not in BLOCKS:
      raise ValueError(f"Unknown ResNet block {self.block!r}; expected one of {sorted(BLOCKS)}.")
    if self.stem not in ("cifar", "imagenet"):
      raise ValueError(f"Unknown ResNet stem {self.stem!r}; expected 'cifar' or 'imagenet'.")
    x = _image_batch(x, self.dtype)
    if self.stem == "cifar":
      x = conv(self.width, 3, dtype=self.dtype, name="stem_conv")(x)
    else:
      x = conv(self.width, 7, 2, dtype=self.dtype, name="stem_conv")(x)
    x = nn.relu(batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, name="stem_bn")(x))
    if self.stem == "imagenet":
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    block_cls = BLOCKS[self.block]
    for stage, num_blocks in enumerate(self.stage_sizes):
      for i in range(num_blocks):
        stride = 2 if stage > 0 and i == 0 else 1
        x = block_cls(
          self.width * 2**stage,
          stride,
          dtype=self.dtype,
          bn_axis_name=self.bn_axis_name,
          zero_init_residual=self.zero_init_residual,
          name=f"stage{stage + 1}_block{i + 1}",
        )(x, train)
    return _linear_head(jnp.mean(x, axis=(1, 2)), self.num_classes, self.dtype)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block="basic")
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="basic")
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="bottleneck")
