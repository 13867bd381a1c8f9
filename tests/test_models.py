"""Tests for gence_jax.models: shapes and dtypes, parameter counts from the architectures, BatchNorm semantics, bf16."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gence_jax.models import CNN, MLP, ResNet, WideResNet, available_models, get_model, init_model

# --------------------------------------------------------------------------------------------------------------------
# Parameter counts written out from the architectures (bias-free convolutions, BatchNorm scale + bias, dense + bias).


def _conv(k, cin, cout):
  return k * k * cin * cout


def _bn(c):
  return 2 * c


def _dense(cin, cout):
  return cin * cout + cout


def _resnet_count(stage_sizes, bottleneck, num_classes, width=64, stem_kernel=3):
  total = _conv(stem_kernel, 3, width) + _bn(width)
  cin = width
  for stage, n in enumerate(stage_sizes):
    w = width * 2**stage
    for i in range(n):
      stride = 2 if stage > 0 and i == 0 else 1
      if bottleneck:
        cout = 4 * w
        total += _conv(1, cin, w) + _bn(w) + _conv(3, w, w) + _bn(w) + _conv(1, w, cout) + _bn(cout)
      else:
        cout = w
        total += _conv(3, cin, w) + _bn(w) + _conv(3, w, w) + _bn(w)
      if stride != 1 or cin != cout:
        total += _conv(1, cin, cout) + _bn(cout)
      cin = cout
  return total + _dense(cin, num_classes)


def _wrn_count(depth, k, num_classes):
  n = (depth - 4) // 6
  total = _conv(3, 3, 16)
  cin = 16
  for group in range(3):
    w = 16 * 2**group * k
    for i in range(n):
      stride = 2 if group > 0 and i == 0 else 1
      total += _bn(cin) + _conv(3, cin, w) + _bn(w) + _conv(3, w, w)
      if stride != 1 or cin != w:
        total += _conv(1, cin, w)
      cin = w
  return total + _bn(cin) + _dense(cin, num_classes)


def _key(seed):
  """RBG keys: their initialisers compile in a fraction of the time of threefry's (these tests are compile-bound)."""
  return jax.random.key(seed, impl="rbg")


def _normal(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _jit_apply(model, variables, x, **kwargs):
  """``model.apply`` compiled once instead of dispatched op by op."""
  return jax.jit(functools.partial(model.apply, **kwargs))(variables, x)


def _num_params(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_variables(model, shape):
  return jax.eval_shape(lambda: model.init(_key(0), jnp.zeros(shape), train=False))


def test_formula_constants():
  # The well-known counts of the CIFAR ResNets / WRN (10 classes), checked against the hand-written formulas.
  assert _resnet_count((2, 2, 2, 2), False, 10) == 11_173_962
  assert _resnet_count((3, 4, 6, 3), False, 10) == 21_282_122
  assert _resnet_count((3, 4, 6, 3), True, 10) == 23_520_842
  assert _wrn_count(28, 10, 10) == 36_479_194


def test_resnet18_full_forward_and_param_count():
  model = get_model("resnet18", 10)
  variables = init_model(model, _key(0), (32, 32, 3))
  assert set(variables) == {"params", "batch_stats"}
  assert _num_params(variables["params"]) == _resnet_count((2, 2, 2, 2), False, 10) == 11_173_962
  x = _normal(1, (2, 32, 32, 3))
  logits = jax.jit(functools.partial(model.apply, train=False))(variables, x)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


@pytest.mark.parametrize(
  "name, expected",
  [
    ("resnet34", _resnet_count((3, 4, 6, 3), False, 10)),
    ("resnet50", _resnet_count((3, 4, 6, 3), True, 10)),
    ("wrn28_10", _wrn_count(28, 10, 10)),
  ],
)
def test_param_counts(name, expected):
  variables = _abstract_variables(get_model(name, 10), (2, 32, 32, 3))
  assert _num_params(variables["params"]) == expected
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))


def test_param_counts_other_configs():
  # 100 classes, narrow width, ImageNet stem, another WRN.
  v = _abstract_variables(get_model("resnet18", 100, width=16), (2, 32, 32, 3))
  assert _num_params(v["params"]) == _resnet_count((2, 2, 2, 2), False, 100, width=16)
  v = _abstract_variables(get_model("resnet50", 200, stem="imagenet"), (2, 64, 64, 3))
  assert _num_params(v["params"]) == _resnet_count((3, 4, 6, 3), True, 200, stem_kernel=7)
  v = _abstract_variables(get_model("wide_resnet", 100, depth=16, widen_factor=4), (2, 32, 32, 3))
  assert _num_params(v["params"]) == _wrn_count(16, 4, 100)


# --------------------------------------------------------------------------------------------------------------------
# Shapes and dtypes.


def test_registry_shapes_full_size_abstract():
  # Every registered model at its default size: output shape/dtype via abstract evaluation (no FLOPs).
  for name in available_models():
    model = get_model(name, 10)
    variables = _abstract_variables(model, (2, 32, 32, 3))
    out = jax.eval_shape(functools.partial(model.apply, train=False), variables, jnp.zeros((2, 32, 32, 3)))
    assert out.shape == (2, 10) and out.dtype == jnp.float32, name


_TINY = {
  "mlp": dict(hidden=(16,)),
  "cnn": dict(features=(4, 8), hidden=16),
  "resnet18": dict(width=4),
  "resnet34": dict(width=2),
  "resnet50": dict(width=2),
  "wrn28_10": dict(widen_factor=1),
  "wide_resnet": dict(depth=10, widen_factor=1, dropout_rate=0.3),
}


@pytest.mark.parametrize(  # the deeper ResNets repeat resnet18's blocks: the extended tier
  "name", [pytest.param(n, marks=pytest.mark.extended) if n in ("resnet34", "resnet50") else n for n in sorted(_TINY)]
)
@pytest.mark.slow
def test_tiny_forward_train_and_eval(name):
  assert set(_TINY) == set(available_models())
  model = get_model(name, 7, **_TINY[name])
  variables = init_model(model, _key(0), (8, 8, 3))
  x = _normal(1, (3, 8, 8, 3))
  # Eval mode is executed by the full ResNet-18 / bf16 / BatchNorm tests; here its shape suffices (saves compiles).
  logits = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
  assert logits.shape == (3, 7) and logits.dtype == jnp.float32
  out, updates = _jit_apply(model, variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": _key(2)})
  assert out.shape == (3, 7) and out.dtype == jnp.float32
  assert np.all(np.isfinite(out))
  assert set(updates) == ({"batch_stats"} if "batch_stats" in variables else set())


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3), (8, 8)])
def test_cnn_input_shapes(shape):
  model = CNN(10, features=(4, 8), hidden=16)
  variables = init_model(model, _key(0), shape)
  logits = _jit_apply(model, variables, jnp.ones((2, *shape)), train=False)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32


def test_resnet_imagenet_stem_tiny_imagenet():
  model = get_model("resnet18", 200, width=4, stem="imagenet")
  variables = init_model(model, _key(0), (64, 64, 3))
  logits = _jit_apply(model, variables, jnp.ones((2, 64, 64, 3)), train=False)
  assert logits.shape == (2, 200) and logits.dtype == jnp.float32
  # The stem downsamples by 4 (conv stride 2 + max-pool stride 2): the last stage sees 64 / 4 / 8 = 2x2 maps.
  _, state = _jit_apply(model, variables, jnp.ones((2, 64, 64, 3)), train=False, capture_intermediates=True)
  last = state["intermediates"]["stage4_block2"]["__call__"][0]
  assert last.shape == (2, 2, 2, 32)


def test_init_model_collections():
  assert set(init_model(MLP(3, hidden=(4,)), _key(0), (5,))) == {"params"}
  assert set(init_model(CNN(3, features=(2,), hidden=4), _key(0), (8, 8, 1))) == {"params", "batch_stats"}


# --------------------------------------------------------------------------------------------------------------------
# Registry.


def test_get_model_registry_and_errors():
  assert available_models() == sorted(["mlp", "cnn", "resnet18", "resnet34", "resnet50", "wrn28_10", "wide_resnet"])
  assert isinstance(get_model("ResNet18", 10), ResNet)
  assert isinstance(get_model("wrn28_10", 10), WideResNet)
  m = get_model("wide_resnet", 10, depth=16, widen_factor=8, dropout_rate=0.3)
  assert (m.depth, m.widen_factor, m.dropout_rate) == (16, 8, 0.3)
  with pytest.raises(ValueError, match="Unknown model 'vgg16'.*cnn.*resnet18.*wrn28_10"):
    get_model("vgg16", 10)
  with pytest.raises(ValueError, match="num_classes"):
    get_model("cnn", 0)
  with pytest.raises(TypeError):
    get_model("cnn", 10, no_such_argument=1)


def test_invalid_architecture_arguments():
  x = jnp.zeros((1, 8, 8, 3))
  with pytest.raises(ValueError, match="depth"):
    WideResNet(10, depth=27).init(_key(0), x)
  with pytest.raises(ValueError, match="stem"):
    ResNet(10, stem="foo").init(_key(0), x)
  with pytest.raises(ValueError, match="block"):
    ResNet(10, block="foo").init(_key(0), x)


# --------------------------------------------------------------------------------------------------------------------
# BatchNorm semantics.


def _trained_cnn():
  """A tiny CNN whose running statistics have moved away from (0, 1) after a few train-mode updates."""
  model = CNN(5, features=(3, 4), hidden=8)
  variables = init_model(model, _key(0), (8, 8, 1))
  for i in range(3):
    x = 2.0 + 3.0 * jax.random.normal(_key(10 + i), (6, 8, 8, 1))
    _, updates = _jit_apply(model, variables, x, train=True, mutable=["batch_stats"])
    variables = {**variables, **updates}
  return model, variables


def test_bn_train_mode_uses_batch_statistics_and_updates_them():
  model = CNN(5, features=(3, 4), hidden=8)
  variables = init_model(model, _key(0), (8, 8, 1))
  x = _normal(1, (4, 8, 8, 1)) + 1.0
  out, updates = _jit_apply(model, variables, x, train=True, mutable=["batch_stats"])
  for old, new in zip(jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(updates["batch_stats"])):
    assert not np.allclose(old, new)
  # Changing the other examples changes example 0's train-mode output.
  x2 = x.at[1:].set(5.0 * _normal(2, (3, 8, 8, 1)))
  out2, _ = _jit_apply(model, variables, x2, train=True, mutable=["batch_stats"])
  assert not np.allclose(out[0], out2[0], atol=1e-4)
  # Eval mode leaves no mutable state and does not need it.
  eval_out = _jit_apply(model, variables, x, train=False)
  assert not np.allclose(eval_out, out, atol=1e-4)


def test_bn_eval_mode_is_per_example():
  model, variables = _trained_cnn()
  x = _normal(3, (4, 8, 8, 1))
  x2 = x.at[1:].set(7.0 * _normal(4, (3, 8, 8, 1)) - 3.0)
  out = _jit_apply(model, variables, x, train=False)
  out2 = _jit_apply(model, variables, x2, train=False)
  np.testing.assert_allclose(out[0], out2[0], rtol=1e-6, atol=1e-6)
  single = _jit_apply(model, variables, x[:1], train=False)
  np.testing.assert_allclose(single[0], out[0], rtol=1e-5, atol=1e-5)


def test_bn_running_stats_momentum():
  model, variables = _trained_cnn()
  old = variables["batch_stats"]["bn1"]
  assert not np.allclose(old["mean"], 0.0) and not np.allclose(old["var"], 1.0)
  x = 1.0 + 2.0 * _normal(5, (6, 8, 8, 1))
  _, state = _jit_apply(
    model,
    variables,
    x,
    train=True,
    mutable=["batch_stats", "intermediates"],
    capture_intermediates=lambda mdl, method: mdl.name == "conv1",
  )
  h = np.asarray(state["intermediates"]["conv1"]["__call__"][0], np.float64)
  batch_mean = h.mean(axis=(0, 1, 2))
  batch_var = h.var(axis=(0, 1, 2))  # biased, as in Flax
  new = state["batch_stats"]["bn1"]
  np.testing.assert_allclose(new["mean"], 0.9 * np.asarray(old["mean"]) + 0.1 * batch_mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new["var"], 0.9 * np.asarray(old["var"]) + 0.1 * batch_var, rtol=1e-5, atol=1e-6)


def test_bn_eval_uses_running_average_numerically():
  # Eval-mode BatchNorm output equals (h - running_mean) / sqrt(running_var + 1e-5) * scale + bias.
  model, variables = _trained_cnn()
  x = _normal(6, (2, 8, 8, 1))
  _, state = _jit_apply(
    model,
    variables,
    x,
    train=False,
    mutable=["intermediates"],
    capture_intermediates=lambda mdl, method: mdl.name in ("conv1", "bn1"),
  )
  h = state["intermediates"]["conv1"]["__call__"][0]
  y = state["intermediates"]["bn1"]["__call__"][0]
  stats, params = variables["batch_stats"]["bn1"], variables["params"]["bn1"]
  expected = (h - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-5) * params["scale"] + params["bias"]
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_bn_axis_name_cross_device_statistics():
  n = jax.local_device_count()
  if n < 2:
    pytest.skip("needs several (fake) devices")
  model = CNN(5, features=(3,), hidden=4, bn_axis_name="batch")
  local = CNN(5, features=(3,), hidden=4)
  variables = init_model(local, _key(0), (8, 8, 1))
  x = _normal(1, (n, 2, 8, 8, 1)) * jnp.arange(1, n + 1)[:, None, None, None, None]

  @functools.partial(jax.pmap, axis_name="batch", in_axes=(None, 0))
  def step(v, xb):
    out, upd = model.apply(v, xb, train=True, mutable=["batch_stats"])
    return out, upd["batch_stats"]

  out, stats = step(variables, x)
  ref_out, ref_upd = _jit_apply(local, variables, x.reshape(2 * n, 8, 8, 1), train=True, mutable=["batch_stats"])
  for leaf, ref in zip(jax.tree.leaves(stats), jax.tree.leaves(ref_upd["batch_stats"])):
    for d in range(n):  # every device holds the global statistics
      np.testing.assert_allclose(leaf[d], ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.reshape(2 * n, 5), ref_out, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------------
# Compute dtype.


@pytest.mark.parametrize(
  "name, kwargs, shape",
  [
    ("resnet18", dict(width=4), (4, 8, 8, 3)),
    ("wide_resnet", dict(depth=10, widen_factor=1), (4, 8, 8, 3)),
    ("cnn", dict(features=(4, 8), hidden=16), (4, 28, 28, 1)),
  ],
)
def test_bfloat16_compute(name, kwargs, shape):
  m32 = get_model(name, 10, **kwargs)
  m16 = get_model(name, 10, dtype=jnp.bfloat16, **kwargs)
  variables = init_model(m16, _key(0), shape[1:])
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  x = _normal(1, shape)
  logits16, state = _jit_apply(
    m16,
    variables,
    x,
    train=False,
    mutable=["intermediates"],
    capture_intermediates=lambda mdl, method: isinstance(mdl, (nn.Conv, nn.BatchNorm)),
  )
  activations = jax.tree.leaves(state["intermediates"])
  assert activations and all(a.dtype == jnp.bfloat16 for a in activations)
  logits32 = _jit_apply(m32, variables, x, train=False)
  assert logits16.dtype == jnp.float32 and logits32.dtype == jnp.float32
  scale = float(jnp.max(jnp.abs(logits32)))
  # bf16 keeps ~3 significant digits: about 1% of the logit scale here; identical logits would mean no bf16 compute.
  np.testing.assert_allclose(logits16, logits32, atol=0.03 * scale + 1e-3)
  assert not np.array_equal(logits16, logits32)
  # Train mode: float32 logits and float32 running statistics.
  out, upd = _jit_apply(m16, variables, x, train=True, mutable=["batch_stats"])
  assert out.dtype == jnp.float32
  assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(upd["batch_stats"]))


def test_mlp_bfloat16_logits_float32():
  model = MLP(4, hidden=(8,), dtype=jnp.bfloat16)
  variables = init_model(model, _key(0), (6,))
  assert _jit_apply(model, variables, jnp.ones((2, 6))).dtype == jnp.float32


# --------------------------------------------------------------------------------------------------------------------
# Dropout and residual initialisation.


def test_wide_resnet_dropout():
  model = get_model("wide_resnet", 3, depth=10, widen_factor=1, dropout_rate=0.5)
  variables = init_model(model, _key(0), (8, 8, 3))
  x = _normal(1, (2, 8, 8, 3))
  train = jax.jit(lambda rng: model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": rng})[0])
  a, b = train(_key(2)), train(_key(3))
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(a, train(_key(2)))
  # Eval mode needs no dropout key.
  assert _jit_apply(model, variables, x, train=False).shape == (2, 3)


def test_zero_init_residual_blocks_start_as_identity():
  model = ResNet(4, stage_sizes=(1, 1), width=4, zero_init_residual=True)
  variables = init_model(model, _key(0), (8, 8, 3))
  assert np.all(variables["params"]["stage1_block1"]["BatchNorm_1"]["scale"] == 0)
  assert np.all(variables["params"]["stage1_block1"]["BatchNorm_0"]["scale"] == 1)


@pytest.mark.parametrize("init", ["lecun_normal", "he_normal", "torch_default"])
def test_mlp_initialisations_have_their_published_scale(init):
  # Var(W) for fan_in d: LeCun normal 1/d, He normal 2/d, PyTorch's nn.Linear default U(+-1/sqrt(d)) -> 1/(3d)
  from gence_jax.models.mlp import MLP

  d, width = 400, 512
  params = MLP(num_classes=3, hidden=(width,), initializer=init).init(jax.random.PRNGKey(0), jnp.zeros((1, d)))["params"]
  kernel, bias = np.asarray(params["Dense_0"]["kernel"], np.float64), np.asarray(params["Dense_0"]["bias"])
  want = {"lecun_normal": 1 / d, "he_normal": 2 / d, "torch_default": 1 / (3 * d)}[init]
  assert abs(kernel.var() / want - 1) < 0.03  # 204,800 draws (the normals are truncated at 2 std: var 0.774 of
  # the untruncated scale, which Flax's variance_scaling already corrects for)
  if init == "torch_default":
    assert np.abs(kernel).max() <= 1 / np.sqrt(d) and np.abs(bias).max() <= 1 / np.sqrt(d) and bias.std() > 0
  else:
    assert np.all(bias == 0)
  with pytest.raises(ValueError, match="`initializer` must be one of"):
    MLP(num_classes=3, initializer="xavier").init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
