"""torchvision ResNet state dicts -> the Flax ResNet (gence_jax.models.pretrained).

A random state dict with torchvision's tensor names and shapes (conv1, bn1, layer<s>.<i>.conv<j>/bn<j>,
downsample.0/1, fc) is run through a reference forward pass written here with torch.nn.functional (torchvision's
ResNet computation: 7x7/2 stem, 3x3/2 max-pool, stride in the 3x3 convolution, eval-mode BatchNorm with eps 1e-5); the
converted Flax model's logits must equal it; where torch is not installed, the same forward in float64 NumPy
(`_NumpyFunctional`) is the reference. Also: .pth, .safetensors and .npz read the same; a mismatched model is
refused; the program loads ``model.pretrained`` with the head re-initialised.
"""

import numpy as np
import pytest

from gence_jax import models
from gence_jax.models import pretrained

try:
  import torch
except ImportError:  # the conversion is then checked against the NumPy forward below only
  torch = None


class _NumpyFunctional:
  """The few torch.nn.functional operations a ResNet forward needs, in float64 NumPy (NCHW, OIHW), so the conversion
  is checked where torch is not installed: convolution by explicit patches, eval-mode BatchNorm, max-pooling with
  -inf padding, global average pooling, a linear layer."""

  @staticmethod
  def conv2d(x, w, stride=1, padding=0):
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    k = w.shape[-1]
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", win, w, optimize=True)

  @staticmethod
  def batch_norm(x, mean, var, weight, bias, training=False, eps=1e-5):
    r = lambda v: np.asarray(v)[None, :, None, None]
    return (x - r(mean)) / np.sqrt(r(var) + eps) * r(weight) + r(bias)

  @staticmethod
  def relu(x):
    return np.maximum(x, 0)

  @staticmethod
  def max_pool2d(x, k, stride, padding):
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=-np.inf)
    return np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride].max((-1, -2))

  @staticmethod
  def adaptive_avg_pool2d(x, size):
    assert size == 1
    return x.mean((2, 3), keepdims=True)

  @staticmethod
  def linear(x, w, b):
    return x @ np.asarray(w).T + np.asarray(b)


def random_state_dict(stage_sizes, block, num_classes, seed=0, base=64, backend="torch"):
  """torchvision's names and shapes for a ResNet of ``stage_sizes`` blocks ('basic' or 'bottleneck'), random values
  (positive running variances); torch tensors, or float64 NumPy arrays with ``backend="numpy"``."""
  if backend == "torch":
    g = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g)
    rand = lambda *shape: torch.rand(*shape, generator=g)
    count = torch.tensor(7)
  else:
    rng = np.random.default_rng(seed)
    randn, rand, count = (lambda *shape: rng.standard_normal(shape)), (lambda *shape: rng.random(shape)), np.array(7)
  sd = {}

  def conv(name, cout, cin, k):
    sd[f"{name}.weight"] = randn(cout, cin, k, k) * (2.0 / (cin * k * k)) ** 0.5

  def bn(name, c):
    sd[f"{name}.weight"] = 1 + 0.1 * randn(c)
    sd[f"{name}.bias"] = 0.1 * randn(c)
    sd[f"{name}.running_mean"] = 0.1 * randn(c)
    sd[f"{name}.running_var"] = 0.5 + rand(c)
    sd[f"{name}.num_batches_tracked"] = count

  conv("conv1", base, 3, 7)
  bn("bn1", base)
  expansion, cin = (1, base) if block == "basic" else (4, base)
  for s, n in enumerate(stage_sizes, start=1):
    width = base * 2 ** (s - 1)
    for i in range(n):
      pre = f"layer{s}.{i}"
      if block == "basic":
        conv(f"{pre}.conv1", width, cin, 3), bn(f"{pre}.bn1", width)
        conv(f"{pre}.conv2", width, width, 3), bn(f"{pre}.bn2", width)
      else:
        conv(f"{pre}.conv1", width, cin, 1), bn(f"{pre}.bn1", width)
        conv(f"{pre}.conv2", width, width, 3), bn(f"{pre}.bn2", width)
        conv(f"{pre}.conv3", width * 4, width, 1), bn(f"{pre}.bn3", width * 4)
      stride = 2 if s > 1 and i == 0 else 1
      if stride != 1 or cin != width * expansion:
        conv(f"{pre}.downsample.0", width * expansion, cin, 1), bn(f"{pre}.downsample.1", width * expansion)
      cin = width * expansion
  sd["fc.weight"] = randn(num_classes, cin) * cin**-0.5
  sd["fc.bias"] = 0.1 * randn(num_classes)
  return sd


def reference_forward(sd, x, stage_sizes, block, F=None):
  """torchvision's ResNet forward in eval mode, from the state dict, with torch.nn.functional (or ``F``, e.g.
  :class:`_NumpyFunctional`); ``x`` NCHW."""
  F = torch.nn.functional if F is None else F

  def bn(h, name):
    return F.batch_norm(h, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                        sd[f"{name}.bias"], training=False, eps=1e-5)

  def conv(h, name, stride=1):
    k = sd[f"{name}.weight"].shape[-1]
    return F.conv2d(h, sd[f"{name}.weight"], stride=stride, padding=k // 2)

  h = F.relu(bn(conv(x, "conv1", 2), "bn1"))
  h = F.max_pool2d(h, 3, 2, 1)
  for s, n in enumerate(stage_sizes, start=1):
    for i in range(n):
      pre, stride = f"layer{s}.{i}", 2 if s > 1 and i == 0 else 1
      if block == "basic":
        y = F.relu(bn(conv(h, f"{pre}.conv1", stride), f"{pre}.bn1"))
        y = bn(conv(y, f"{pre}.conv2"), f"{pre}.bn2")
      else:
        y = F.relu(bn(conv(h, f"{pre}.conv1"), f"{pre}.bn1"))
        y = F.relu(bn(conv(y, f"{pre}.conv2", stride), f"{pre}.bn2"))
        y = bn(conv(y, f"{pre}.conv3"), f"{pre}.bn3")
      if f"{pre}.downsample.0.weight" in sd:
        h = bn(F.conv2d(h, sd[f"{pre}.downsample.0.weight"], stride=stride), f"{pre}.downsample.1")
      h = F.relu(y + h)
  pooled = F.adaptive_avg_pool2d(h, 1)
  return F.linear(pooled.reshape(pooled.shape[0], -1), sd["fc.weight"], sd["fc.bias"])


def _shapes(model, size):
  """The model's variables as shapes and dtypes (``jax.eval_shape``: nothing initialised or compiled); the conversion
  replaces every one of them when the head is converted too."""
  import jax

  return jax.eval_shape(lambda: models.init_model(model, jax.random.PRNGKey(0), (size, size, 3)))


@pytest.mark.parametrize("stage_sizes, block", [((1, 1, 1, 1), "basic"), ((1, 1, 1, 1), "bottleneck")],
                         ids=["basic", "bottleneck"])  # one block per stage: identity and projection shortcuts
def test_converted_resnet_gives_the_numpy_reference_logits(tmp_path, stage_sizes, block):
  """Without torch: a torchvision-layout state dict in .npz, against the float64 NumPy forward."""
  import jax

  sd = random_state_dict(stage_sizes, block, num_classes=5, base=16, backend="numpy")
  x = np.random.default_rng(1).standard_normal((2, 3, 64, 64))
  expected = reference_forward(sd, x, stage_sizes, block, F=_NumpyFunctional)
  np.savez(tmp_path / "w.npz", **{k: np.asarray(v, np.float32) for k, v in sd.items()})
  model = models.ResNet(num_classes=5, stage_sizes=stage_sizes, block=block, stem="imagenet", width=16)
  variables = _shapes(model, 64)
  params, stats, record = pretrained.apply_pretrained(variables["params"], variables["batch_stats"],
                                                      tmp_path / "w.npz", with_head=True)
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(
    {"params": params, "batch_stats": stats}, x.transpose(0, 2, 3, 1).astype(np.float32)
  )
  np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-4)
  assert record["params"] == jax.tree_util.tree_structure(variables["params"]).num_leaves


@pytest.mark.parametrize("stage_sizes, block", [((1, 1, 1, 1), "basic"), ((1, 1, 1, 1), "bottleneck")],
                         ids=["basic", "bottleneck"])
def test_converted_torchvision_resnet_gives_the_same_logits(tmp_path, stage_sizes, block):
  import jax

  if torch is None:
    pytest.skip("torch is not installed (the NumPy reference test covers the conversion)")

  sd = random_state_dict(stage_sizes, block, num_classes=5, base=16)  # torchvision's layout at 1/4 of its width
  x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    expected = reference_forward(sd, x, stage_sizes, block).numpy()
  torch.save(sd, tmp_path / "w.pth")
  model = models.ResNet(num_classes=5, stage_sizes=stage_sizes, block=block, stem="imagenet", width=16)
  variables = _shapes(model, 64)
  params, stats, record = pretrained.apply_pretrained(variables["params"], variables["batch_stats"],
                                                      tmp_path / "w.pth", with_head=True)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  logits = apply({"params": params, "batch_stats": stats}, x.permute(0, 2, 3, 1).numpy())
  np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-4)
  assert record["head"] == "converted" and record["batch_stats"] == 2 * sum(k.endswith("running_mean") for k in sd)
  assert record["params"] == jax.tree_util.tree_structure(variables["params"]).num_leaves  # every array replaced


def test_pth_safetensors_npz_read_the_same_and_mismatches_are_refused(tmp_path):
  from safetensors.numpy import save_file

  sd = random_state_dict((1, 1, 1, 1), "basic", 3, backend="numpy" if torch is None else "torch")
  arrays = {k: np.asarray(v).astype(np.float32) for k, v in sd.items()}
  exts = ("safetensors", "npz")
  if torch is not None:  # .pth files need torch
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "w.pth")
    exts = ("pth", *exts)
  save_file(arrays, str(tmp_path / "w.safetensors"))
  np.savez(tmp_path / "w.npz", **arrays)
  loaded = [pretrained.load_state_dict(tmp_path / f"w.{ext}") for ext in exts]
  for other in loaded[1:]:
    assert other.keys() == loaded[0].keys()
    for k in other:
      np.testing.assert_array_equal(other[k], loaded[0][k])
  cifar = models.ResNet(num_classes=3, stage_sizes=(1, 1, 1, 1))  # 3x3 stem: not torchvision's layout
  v = _shapes(cifar, 32)
  with pytest.raises(ValueError, match=r"stem_conv/kernel has shape \(7, 7, 3, 64\), the model \(3, 3, 3, 64\)"):
    pretrained.apply_pretrained(v["params"], v["batch_stats"], tmp_path / "w.npz")


def test_the_program_starts_from_pretrained_weights(replicas, tmp_path):
  """``model.pretrained`` on a run (the Clothing-1M replica, as its protocol starts from ImageNet weights): every layer
  but the head comes from the file, the head is re-initialised for the 14 classes; the record lands in results.json.
  A one-stage ResNet at 1/8 of torchvision's width keeps the CPU compilation short."""
  import json

  from safetensors.numpy import save_file

  import _replicas as R

  sd = random_state_dict((1,), "basic", 3, base=8, backend="numpy")  # torchvision's names: conv1, bn1, layer1.0.*, fc
  save_file({k: np.asarray(v).astype(np.float32) for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
  rc = R.train(tmp_path / "w", f"dataset.name=clothing1m:{replicas['clothing1m']}", *R.SHAPE, "train.epochs=1",
               "model.name=resnet18", "model.kwargs={'stem': 'imagenet', 'stage_sizes': (1,), 'width': 8}",
               f"model.pretrained={tmp_path}/w.safetensors", "optimizer.learning_rate=1e-9")
  assert rc == 0
  record = json.load(open(tmp_path / "w" / "results.json"))["pretrained"]
  assert record["head"] == "re-initialised" and record["batch_stats"] == 6 and record["params"] == 9
  # 3 BatchNorms (scale, bias; mean, var) and 3 convolution kernels; the head kept as initialised
