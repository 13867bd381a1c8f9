"""The built-in models written in Flax NNX: the same architectures, parameter counts and outputs as the Linen ones.

Each NNX module here computes what its Linen namesake in :mod:`gence_jax.models` computes, with the same
initialisers, BatchNorm settings (momentum 0.9, epsilon 1e-5, ``bn_axis_name``) and ``dtype`` handling, and names
its layers as Linen names them (``Dense_0``, ``conv1``, ``stage1_block1/Conv_0``, ``head``, ...). So
``nnx.state(model, nnx.Param)`` has the paths and shapes of the Linen ``params`` and ``nnx.BatchStat`` those of its
``batch_stats``: one set of weights loads into either (`load_linen_variables`), and the outputs agree (tested).
The initial weights of a given seed differ (NNX draws keys from ``rngs`` in construction order).

NNX modules are built with their input shape (``input_shape``: one example's shape) and ``rngs``; they start in
training mode (BatchNorm on batch statistics, dropout on): call ``model.eval()`` for inference. The training
program calls them through `gence_jax.models.adapter`.

``get_nnx_model(name, num_classes, input_shape, rngs=..., **kwargs)`` builds one by the registry's names; the
factories of the same names (``mlp``, ``cnn``, ``resnet18``, ...) take the arguments the program gives a user's
factory, so ``model.name=nnx:cnn`` and ``model.name=gence_jax.models.nnx_models:cnn`` train the same model.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional, Sequence

import jax.numpy as jnp
from flax import nnx
from flax.linen import max_pool

from gence_jax.models.mlp import INITS, _torch_uniform
from gence_jax.models.resnet import BN_EPSILON, BN_MOMENTUM, conv_kernel_init

__all__ = [
  "CNN",
  "MLP",
  "ResNet",
  "WideResNet",
  "available_nnx_models",
  "get_nnx_model",
  "load_linen_variables",
]


def _batch_norm(features: int, *, dtype: Any, axis_name: Optional[str], rngs: nnx.Rngs, zero_scale: bool = False):
  """BatchNorm as `gence_jax.models.resnet.batch_norm`: momentum 0.9, epsilon 1e-5, float32 parameters."""
  return nnx.BatchNorm(
    features,
    momentum=BN_MOMENTUM,
    epsilon=BN_EPSILON,
    dtype=dtype,
    param_dtype=jnp.float32,
    axis_name=axis_name,
    scale_init=nnx.initializers.zeros if zero_scale else nnx.initializers.ones,
    rngs=rngs,
  )


def _conv(in_features: int, features: int, kernel: int, stride: int = 1, *, dtype: Any, rngs: nnx.Rngs) -> nnx.Conv:
  """Bias-free ``kernel x kernel`` convolution with symmetric padding ``kernel // 2`` (`resnet.conv`)."""
  pad = kernel // 2
  return nnx.Conv(
    in_features,
    features,
    (kernel, kernel),
    strides=(stride, stride),
    padding=((pad, pad), (pad, pad)),
    use_bias=False,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=conv_kernel_init,
    rngs=rngs,
  )


def _head(in_features: int, num_classes: int, dtype: Any, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(in_features, num_classes, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


def _image_batch(x, dtype):
  return (x[..., None] if x.ndim == 3 else x).astype(dtype)


def _channels(input_shape: Sequence[int]) -> int:
  """Input channels of an image shape ``(H, W)`` (grey, 1) or ``(H, W, C)``."""
  if len(input_shape) not in (2, 3):
    raise ValueError(f"expected images of shape (H, W) or (H, W, C), got input_shape {tuple(input_shape)}")
  return 1 if len(input_shape) == 2 else int(input_shape[2])


# -------------------------------------------------------------------------------------------------------- MLP
class MLP(nnx.Module):
  """ReLU MLP (`gence_jax.models.MLP`): ``hidden`` widths, then a linear layer to ``num_classes`` logits."""

  def __init__(
    self,
    num_classes: int,
    input_shape: Sequence[int],
    *,
    hidden: Sequence[int] = (1024,),
    dtype: Any = jnp.float32,
    initializer: str = "lecun_normal",
    rngs: nnx.Rngs,
  ):
    if initializer not in INITS:
      raise ValueError(f"MLP: `initializer` must be one of {INITS}, got {initializer!r}.")
    self.dtype = dtype
    self.num_layers = len(hidden) + 1
    fan_in = math.prod(input_shape)
    for i, width in enumerate([*hidden, num_classes]):
      setattr(self, f"Dense_{i}", self._dense(fan_in, width, initializer, rngs))
      fan_in = width

  def _dense(self, fan_in: int, width: int, initializer: str, rngs: nnx.Rngs) -> nnx.Linear:
    inits = {}
    if initializer == "he_normal":
      inits = {"kernel_init": nnx.initializers.he_normal()}
    elif initializer == "torch_default":
      bias = _torch_uniform()
      inits = {
        "kernel_init": _torch_uniform(0),
        "bias_init": lambda key, shape, dtype=jnp.float32: bias(key, shape, dtype, fan_in=fan_in),
      }
    return nnx.Linear(fan_in, width, dtype=self.dtype, param_dtype=jnp.float32, rngs=rngs, **inits)

  def __call__(self, x):
    x = x.reshape(x.shape[0], -1).astype(self.dtype)
    for i in range(self.num_layers - 1):
      x = nnx.relu(getattr(self, f"Dense_{i}")(x))
    return getattr(self, f"Dense_{self.num_layers - 1}")(x).astype(jnp.float32)


# -------------------------------------------------------------------------------------------------------- CNN
class CNN(nnx.Module):
  """Conv-BN-ReLU-pool blocks, dense ``hidden``, optional dropout, linear head (`gence_jax.models.CNN`)."""

  def __init__(
    self,
    num_classes: int,
    input_shape: Sequence[int],
    *,
    features: Sequence[int] = (32, 64),
    hidden: int = 128,
    dropout_rate: float = 0.0,
    dtype: Any = jnp.float32,
    bn_axis_name: Optional[str] = None,
    rngs: nnx.Rngs,
  ):
    self.dtype, self.num_blocks, self.hidden, self.dropout_rate = dtype, len(features), hidden, dropout_rate
    height, width, channels = int(input_shape[0]), int(input_shape[1]), _channels(input_shape)
    for i, out in enumerate(features):
      conv = nnx.Conv(
        channels,
        out,
        (3, 3),
        padding="SAME",
        use_bias=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=conv_kernel_init,
        rngs=rngs,
      )
      setattr(self, f"conv{i + 1}", conv)
      setattr(self, f"bn{i + 1}", _batch_norm(out, dtype=dtype, axis_name=bn_axis_name, rngs=rngs))
      channels, height, width = out, -(-height // 2), -(-width // 2)  # SAME pooling rounds up
    flat = height * width * channels
    if hidden:
      self.dense = nnx.Linear(flat, hidden, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
      flat = hidden
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.head = _head(flat, num_classes, dtype, rngs)

  def __call__(self, x):
    x = _image_batch(x, self.dtype)
    for i in range(self.num_blocks):
      x = nnx.relu(getattr(self, f"bn{i + 1}")(getattr(self, f"conv{i + 1}")(x)))
      x = max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    x = x.reshape(x.shape[0], -1)
    if self.hidden:
      x = nnx.relu(self.dense(x))
    if self.dropout_rate > 0:
      x = self.dropout(x)
    return self.head(x).astype(jnp.float32)


# ----------------------------------------------------------------------------------------------------- ResNet
class BasicBlock(nnx.Module):
  """Two 3x3 convolutions (`gence_jax.models.BasicBlock`); projection shortcut when the shape changes."""

  expansion = 1

  def __init__(self, in_features, features, stride=1, *, dtype, bn_axis_name, zero_init_residual=False, rngs):
    bn = functools.partial(_batch_norm, dtype=dtype, axis_name=bn_axis_name, rngs=rngs)
    self.Conv_0 = _conv(in_features, features, 3, stride, dtype=dtype, rngs=rngs)
    self.BatchNorm_0 = bn(features)
    self.Conv_1 = _conv(features, features, 3, dtype=dtype, rngs=rngs)
    self.BatchNorm_1 = bn(features, zero_scale=zero_init_residual)
    self.projection = stride != 1 or in_features != features
    if self.projection:
      self.shortcut_conv = _conv(in_features, features, 1, stride, dtype=dtype, rngs=rngs)
      self.shortcut_bn = bn(features)

  def __call__(self, x):
    y = nnx.relu(self.BatchNorm_0(self.Conv_0(x)))
    y = self.BatchNorm_1(self.Conv_1(y))
    if self.projection:
      x = self.shortcut_bn(self.shortcut_conv(x))
    return nnx.relu(y + x)


class Bottleneck(nnx.Module):
  """1x1 -> 3x3 (strided) -> 1x1 bottleneck, output ``4 * features`` (`gence_jax.models.Bottleneck`)."""

  expansion = 4

  def __init__(self, in_features, features, stride=1, *, dtype, bn_axis_name, zero_init_residual=False, rngs):
    bn = functools.partial(_batch_norm, dtype=dtype, axis_name=bn_axis_name, rngs=rngs)
    out = features * self.expansion
    self.Conv_0 = _conv(in_features, features, 1, dtype=dtype, rngs=rngs)
    self.BatchNorm_0 = bn(features)
    self.Conv_1 = _conv(features, features, 3, stride, dtype=dtype, rngs=rngs)
    self.BatchNorm_1 = bn(features)
    self.Conv_2 = _conv(features, out, 1, dtype=dtype, rngs=rngs)
    self.BatchNorm_2 = bn(out, zero_scale=zero_init_residual)
    self.projection = stride != 1 or in_features != out
    if self.projection:
      self.shortcut_conv = _conv(in_features, out, 1, stride, dtype=dtype, rngs=rngs)
      self.shortcut_bn = bn(out)

  def __call__(self, x):
    y = nnx.relu(self.BatchNorm_0(self.Conv_0(x)))
    y = nnx.relu(self.BatchNorm_1(self.Conv_1(y)))
    y = self.BatchNorm_2(self.Conv_2(y))
    if self.projection:
      x = self.shortcut_bn(self.shortcut_conv(x))
    return nnx.relu(y + x)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nnx.Module):
  """ResNet (He et al. 2016) with the attributes of `gence_jax.models.ResNet`."""

  def __init__(
    self,
    num_classes: int,
    input_shape: Sequence[int],
    *,
    stage_sizes: Sequence[int] = (2, 2, 2, 2),
    block: str = "basic",
    width: int = 64,
    stem: str = "cifar",
    dtype: Any = jnp.float32,
    bn_axis_name: Optional[str] = None,
    zero_init_residual: bool = False,
    rngs: nnx.Rngs,
  ):
    if block not in BLOCKS:
      raise ValueError(f"Unknown ResNet block {block!r}; expected one of {sorted(BLOCKS)}.")
    if stem not in ("cifar", "imagenet"):
      raise ValueError(f"Unknown ResNet stem {stem!r}; expected 'cifar' or 'imagenet'.")
    self.dtype, self.stem = dtype, stem
    self.stem_conv = _conv(
      _channels(input_shape), width, 3 if stem == "cifar" else 7, 1 if stem == "cifar" else 2, dtype=dtype, rngs=rngs
    )
    self.stem_bn = _batch_norm(width, dtype=dtype, axis_name=bn_axis_name, rngs=rngs)
    block_cls, channels, names = BLOCKS[block], width, []
    for stage, num_blocks in enumerate(stage_sizes):
      for i in range(num_blocks):
        features = width * 2**stage
        name = f"stage{stage + 1}_block{i + 1}"
        setattr(
          self,
          name,
          block_cls(
            channels,
            features,
            2 if stage > 0 and i == 0 else 1,
            dtype=dtype,
            bn_axis_name=bn_axis_name,
            zero_init_residual=zero_init_residual,
            rngs=rngs,
          ),
        )
        channels = features * block_cls.expansion
        names.append(name)
    self.block_names = tuple(names)
    self.head = _head(channels, num_classes, dtype, rngs)

  def __call__(self, x):
    x = nnx.relu(self.stem_bn(self.stem_conv(_image_batch(x, self.dtype))))
    if self.stem == "imagenet":
      x = max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for name in self.block_names:
      x = getattr(self, name)(x)
    return self.head(jnp.mean(x, axis=(1, 2))).astype(jnp.float32)


# ------------------------------------------------------------------------------------------------ Wide ResNet
class WideBasicBlock(nnx.Module):
  """Pre-activation wide block BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3 (`gence_jax.models.WideBasicBlock`)."""

  def __init__(self, in_features, features, stride=1, dropout_rate=0.0, *, dtype, bn_axis_name, rngs):
    bn = functools.partial(_batch_norm, dtype=dtype, axis_name=bn_axis_name, rngs=rngs)
    self.BatchNorm_0 = bn(in_features)
    self.Conv_0 = _conv(in_features, features, 3, stride, dtype=dtype, rngs=rngs)
    self.BatchNorm_1 = bn(features)
    self.dropout_rate = dropout_rate
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.Conv_1 = _conv(features, features, 3, dtype=dtype, rngs=rngs)
    self.projection = stride != 1 or in_features != features
    if self.projection:
      self.shortcut_conv = _conv(in_features, features, 1, stride, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    pre = nnx.relu(self.BatchNorm_0(x))
    y = nnx.relu(self.BatchNorm_1(self.Conv_0(pre)))
    if self.dropout_rate > 0:
      y = self.dropout(y)
    y = self.Conv_1(y)
    if self.projection:
      x = self.shortcut_conv(pre)
    return x + y


class WideResNet(nnx.Module):
  """WRN-``depth``-``widen_factor`` (Zagoruyko & Komodakis 2016), the attributes of `gence_jax.models.WideResNet`."""

  def __init__(
    self,
    num_classes: int,
    input_shape: Sequence[int],
    *,
    depth: int = 28,
    widen_factor: int = 10,
    dropout_rate: float = 0.0,
    dtype: Any = jnp.float32,
    bn_axis_name: Optional[str] = None,
    rngs: nnx.Rngs,
  ):
    if depth < 10 or (depth - 4) % 6:
      raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1, got {depth}.")
    n = (depth - 4) // 6
    self.dtype = dtype
    self.stem_conv = _conv(_channels(input_shape), 16, 3, dtype=dtype, rngs=rngs)
    channels, names = 16, []
    for group, stride in enumerate((1, 2, 2)):
      for i in range(n):
        features, name = 16 * 2**group * widen_factor, f"group{group + 1}_block{i + 1}"
        setattr(
          self,
          name,
          WideBasicBlock(
            channels,
            features,
            stride if i == 0 else 1,
            dropout_rate,
            dtype=dtype,
            bn_axis_name=bn_axis_name,
            rngs=rngs,
          ),
        )
        channels = features
        names.append(name)
    self.block_names = tuple(names)
    self.final_bn = _batch_norm(channels, dtype=dtype, axis_name=bn_axis_name, rngs=rngs)
    self.head = _head(channels, num_classes, dtype, rngs)

  def __call__(self, x):
    x = self.stem_conv(_image_batch(x, self.dtype))
    for name in self.block_names:
      x = getattr(self, name)(x)
    x = nnx.relu(self.final_bn(x))
    return self.head(jnp.mean(x, axis=(1, 2))).astype(jnp.float32)


# ---------------------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, Callable[..., nnx.Module]] = {
  "mlp": MLP,
  "cnn": CNN,
  "resnet18": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block="basic"),
  "resnet34": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="basic"),
  "resnet50": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="bottleneck"),
  "wrn28_10": functools.partial(WideResNet, depth=28, widen_factor=10),
  "wide_resnet": WideResNet,
}


def available_nnx_models() -> list[str]:
  """Names accepted by :func:`get_nnx_model` (those of `gence_jax.models.available_models`), sorted."""
  return sorted(_REGISTRY)


def get_nnx_model(name: str, num_classes: int, input_shape: Sequence[int], *, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
  """The NNX model registered as ``name`` (case-insensitive); ``kwargs`` as for `gence_jax.models.get_model`."""
  key = name.lower() if isinstance(name, str) else name
  if key not in _REGISTRY:
    raise ValueError(f"Unknown model {name!r}; available models: {', '.join(available_nnx_models())}.")
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
  return _REGISTRY[key](num_classes, tuple(input_shape), rngs=rngs, **kwargs)


def _factory(name: str):
  def factory(num_classes: int, input_shape: Sequence[int], *, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
    return get_nnx_model(name, num_classes, input_shape, rngs=rngs, **kwargs)

  factory.__name__ = factory.__qualname__ = name
  factory.__doc__ = f"The NNX ``{name}`` (`get_nnx_model`), with the arguments the program gives a factory."
  return factory


mlp, cnn, resnet18, resnet34, resnet50, wrn28_10, wide_resnet = (
  _factory(n) for n in ("mlp", "cnn", "resnet18", "resnet34", "resnet50", "wrn28_10", "wide_resnet")
)


def load_linen_variables(model: nnx.Module, variables: dict) -> nnx.Module:
  """Loads a Linen model's ``{"params": ..., "batch_stats": ...}`` into the NNX `model` of the same architecture
  (in place; returned for chaining). Raises ValueError when a path or shape differs."""
  for collection, kind in (("params", nnx.Param), ("batch_stats", nnx.BatchStat)):
    state = nnx.state(model, kind)
    flat = {tuple(str(k) for k in path): var for path, var in nnx.to_flat_state(state)}
    given = {tuple(path): value for path, value in _flatten(variables.get(collection, {}))}
    if set(flat) != set(given):
      missing, extra = sorted(set(flat) - set(given))[:3], sorted(set(given) - set(flat))[:3]
      raise ValueError(f"load_linen_variables: {collection} differ (missing {missing}, unexpected {extra})")
    for path, var in flat.items():
      value = jnp.asarray(given[path])
      if value.shape != var.get_value().shape:
        want = var.get_value().shape
        raise ValueError(f"load_linen_variables: {'/'.join(path)} has shape {value.shape}, expected {want}")
      var.set_value(value)
    nnx.update(model, state)
  return model


def _flatten(tree, prefix=()):
  if isinstance(tree, dict) or hasattr(tree, "items"):
    for k, v in tree.items():
      yield from _flatten(v, (*prefix, str(k)))
  else:
    yield prefix, tree
