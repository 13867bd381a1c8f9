"""GenCE against an independent float64 NumPy implementation of the paper's equation, and its global-batch semantics.

Reference: l_i = -log q(y_i|x_i) + log((1/B) sum_j q(y_i|x_j)), Zhan, Zhou & Shen 2026 (arXiv:2604.06689).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _numerics import central_difference
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gence_jax.losses import gence


def ref_gence(z, y, valid=None, include_self=True):
  """Float64 NumPy GenCE with explicit loops over the batch."""
  z = np.asarray(z, np.float64)
  n, k = z.shape
  valid = np.ones(n, bool) if valid is None else np.asarray(valid)
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  out = np.zeros(n)
  idx = np.flatnonzero(valid)
  for i in idx:
    others = [j for j in idx if include_self or j != i]
    q_y = np.mean([p[j, y[i]] for j in others])
    out[i] = -np.log(p[i, y[i]]) + np.log(q_y)
  return out


def ref_grad(z, y, valid=None, include_self=True):
  """Central finite differences of sum_i ref_gence_i (float64)."""
  return central_difference(lambda zz: ref_gence(zz, y, valid, include_self).sum(), z)


def _data(n=12, k=5, seed=0, scale=2.0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, k)) * scale).astype(np.float32), rng.integers(0, k, n).astype(np.int32)


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("scale", [0.5, 3.0, 20.0])
def test_value_matches_reference(include_self, scale):
  z, y = _data(scale=scale)
  got = gence(z, y, include_self=include_self)
  np.testing.assert_allclose(got, ref_gence(z, y, include_self=include_self), rtol=2e-5, atol=2e-5)


def test_hand_computed_two_examples():
  # B = 2, K = 2, logits 0 and log 3: q(.|x_1) = (1/2, 1/2), q(.|x_2) = (1/4, 3/4), labels (0, 1).
  z = np.array([[0.0, 0.0], [0.0, np.log(3.0)]], np.float32)
  y = np.array([0, 1])
  # l_1 = -log(1/2) + log((1/2 + 1/4)/2);  l_2 = -log(3/4) + log((1/2 + 3/4)/2)
  want = [np.log(2) + np.log(3 / 8), -np.log(3 / 4) + np.log(5 / 8)]
  np.testing.assert_allclose(gence(z, y), want, rtol=1e-6)
  # excluding the sample: l_1 = -log(1/2) + log(1/4), l_2 = -log(3/4) + log(1/2)
  np.testing.assert_allclose(
    gence(z, y, include_self=False), [np.log(2) + np.log(1 / 4), -np.log(3 / 4) + np.log(1 / 2)], rtol=1e-6
  )


@pytest.mark.parametrize("include_self", [True, False])
def test_gradient_matches_finite_differences(include_self):
  z, y = _data(n=7, k=4, seed=1)
  valid = np.array([1, 1, 0, 1, 1, 0, 1], bool)
  with jax.enable_x64(True):
    g = jax.grad(lambda z: jnp.sum(gence(z, y, where=valid, include_self=include_self)))(jnp.asarray(z, jnp.float64))
  np.testing.assert_allclose(g, ref_grad(z, y, valid, include_self), rtol=1e-6, atol=1e-7)
  assert np.all(np.asarray(g)[~valid] == 0.0)


def test_weighted_cotangent_matches_autodiff_of_reference():
  # A non-uniform upstream cotangent exercises every term of the analytic backward pass.
  z, y = _data(n=6, k=3, seed=2)
  w = np.linspace(0.5, 2.0, 6)
  for include_self in (True, False):
    with jax.enable_x64(True):
      g = jax.grad(lambda z: jnp.sum(jnp.asarray(w) * gence(z, y, include_self=include_self)))(
        jnp.asarray(z, jnp.float64)
      )
    fd = central_difference(lambda zz: w @ ref_gence(zz, y, include_self=include_self), z)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)


def test_mask_counts_nowhere():
  z, y = _data(n=10, seed=3)
  valid = np.arange(10) % 3 != 0
  got = np.asarray(gence(z, y, where=valid))
  np.testing.assert_allclose(got[valid], ref_gence(z[valid], y[valid]), rtol=2e-5, atol=2e-5)
  assert np.all(got[~valid] == 0)
  # garbage in masked rows changes nothing
  z2 = z.copy()
  z2[~valid] = 1e3
  np.testing.assert_allclose(gence(z2, y, where=valid), got, rtol=1e-6)


def test_no_underflow_for_tiny_class_probabilities():
  # Class 2 has probability ~e^-200 for every example: the naive mean underflows, the log-space form does not.
  z = np.array([[200.0, 0.0, 0.0], [0.0, 200.0, 0.0], [190.0, 0.0, 0.0]], np.float32)
  y = np.array([0, 1, 2])
  got = gence(z, y)
  assert np.all(np.isfinite(got))
  with jax.enable_x64(True):
    np.testing.assert_allclose(got, ref_gence(z, y), rtol=1e-5)
  g = jax.grad(lambda z: gence(z, y).sum())(jnp.asarray(z))
  assert np.all(np.isfinite(g))


def test_underflowing_class_switches_to_shifted_sums():
  # Class 6 has probability < e^-150 everywhere: its softmax sum underflows and the shifted sums take over.
  z, y = _data(n=23, k=7, seed=2)
  z[:, 6] -= 150.0
  y[:3] = 6
  got = gence(z, y)
  with jax.enable_x64(True):  # log-probabilities near -150 carry float32 steps of 1.5e-5
    np.testing.assert_allclose(got, ref_gence(z, y), rtol=1e-5, atol=3e-5)
  g = jax.grad(lambda z: jnp.sum(gence(z, y)))(jnp.asarray(z))
  with jax.enable_x64(True):
    np.testing.assert_allclose(g, ref_grad(z, y), rtol=1e-3, atol=1e-4)


def test_leading_batch_axes_are_one_batch():
  z, y = _data(n=12)
  got = gence(z.reshape(3, 4, -1), y.reshape(3, 4))
  np.testing.assert_allclose(got.reshape(-1), ref_gence(z, y), rtol=2e-5, atol=2e-5)


def test_out_of_range_label_is_nan_in_its_row_only():
  z, y = _data(n=6)
  y = y.copy()
  y[2] = 99
  got = np.asarray(gence(z, y))
  assert np.isnan(got[2]) and np.all(np.isfinite(np.delete(got, 2)))


def test_bfloat16_is_computed_in_float32():
  z, y = _data()
  got = gence(jnp.asarray(z, jnp.bfloat16), y)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(
    got, ref_gence(np.asarray(jnp.asarray(z, jnp.bfloat16).astype(jnp.float32)), y), rtol=1e-4, atol=1e-4
  )


# ---------------------------------------------------------------- global batch: 8 fake CPU devices
NDEV = 8


def _needs_devices():
  if jax.device_count() < NDEV:
    pytest.skip(f"needs {NDEV} devices (XLA_FLAGS=--xla_force_host_platform_device_count={NDEV})")


def _global_data(seed=4):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(NDEV * 6, 7)).astype(np.float32) * 2
  y = rng.integers(0, 7, NDEV * 6).astype(np.int32)
  valid = rng.random(NDEV * 6) > 0.2
  return z, y, valid


def _single_device(z, y, valid, include_self):
  fn = lambda z: jnp.sum(gence(z, y, where=valid, include_self=include_self))
  return gence(z, y, where=valid, include_self=include_self), jax.grad(fn)(z)


def _mesh(axis_type):
  return jax.make_mesh((NDEV,), ("data",), axis_types=(axis_type,))


@pytest.mark.parametrize("axis_type", [jax.sharding.AxisType.Auto, jax.sharding.AxisType.Explicit])
@pytest.mark.parametrize("include_self", [True, False])
def test_jit_sharded_equals_single_device(include_self, axis_type):
  _needs_devices()
  z, y, valid = _global_data()
  mesh = _mesh(axis_type)
  sh = NamedSharding(mesh, P("data"))
  zs, ys, vs = (jax.device_put(a, sh) for a in (z, y, valid))

  @jax.jit
  def f(z, y, v):
    loss = gence(z, y, where=v, include_self=include_self)
    return loss, jax.grad(lambda z: jnp.sum(gence(z, y, where=v, include_self=include_self)))(z)

  loss, grad = f(zs, ys, vs)
  want_loss, want_grad = _single_device(z, y, valid, include_self)
  assert len(loss.sharding.device_set) == NDEV
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6)


def _per_device_fn(include_self):
  def fn(z, y, v):
    local = lambda z: jnp.sum(gence(z, y, where=v, axis_name="data", include_self=include_self))
    return gence(z, y, where=v, axis_name="data", include_self=include_self), jax.grad(local)(z)

  return fn


@pytest.mark.parametrize("include_self", [True, False])
def test_pmap_equals_single_device(include_self):
  _needs_devices()
  z, y, valid = _global_data(5)
  split = lambda a: a.reshape(NDEV, -1, *a.shape[1:])
  loss, grad = jax.pmap(_per_device_fn(include_self), axis_name="data")(split(z), split(y), split(valid))
  want_loss, want_grad = _single_device(z, y, valid, include_self)
  np.testing.assert_allclose(np.asarray(loss).reshape(-1), want_loss, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(grad).reshape(z.shape), want_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("include_self", [True, False])
def test_shard_map_equals_single_device(include_self):
  _needs_devices()
  z, y, valid = _global_data(6)
  mesh = _mesh(jax.sharding.AxisType.Auto)
  fn = jax.jit(
    jax.shard_map(_per_device_fn(include_self), mesh=mesh, in_specs=P("data"), out_specs=(P("data"), P("data")))
  )
  loss, grad = fn(z, y, valid)
  want_loss, want_grad = _single_device(z, y, valid, include_self)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_named_vmap_axis_couples_the_batch():
  # A per-example function vmapped with an axis name sees the whole vmapped batch.
  z, y = _data(n=9, seed=7)

  def per_example(zi, yi):
    return gence(zi, yi, axis_name="batch")  # zi: [K], yi: []

  got = jax.vmap(per_example, axis_name="batch")(z, y)
  np.testing.assert_allclose(got, ref_gence(z, y), rtol=2e-5, atol=2e-5)
  g = jax.grad(lambda z: jnp.sum(jax.vmap(per_example, axis_name="batch")(z, y)))(jnp.asarray(z))
  np.testing.assert_allclose(g, jax.grad(lambda z: jnp.sum(gence(z, y)))(jnp.asarray(z)), rtol=1e-5, atol=1e-6)
  with jax.enable_x64(True):
    np.testing.assert_allclose(g, ref_grad(z, y), rtol=1e-3, atol=1e-4)


def test_devices_agree_when_a_class_underflows():
  # Class 6 has probability < e^-150 for every example on every device: the softmax sums underflow and every
  # device must switch to the shifted sums together (the switch is decided on the global sums).
  _needs_devices()
  z, y, valid = _global_data(8)
  z[:, 6] -= 150.0
  y[::5] = 6
  split = lambda a: a.reshape(NDEV, -1, *a.shape[1:])
  loss, grad = jax.pmap(_per_device_fn(True), axis_name="data")(split(z), split(y), split(valid))
  with jax.enable_x64(True):
    want = np.where(valid, ref_gence(z, y, valid), 0.0)
  np.testing.assert_allclose(np.asarray(loss).reshape(-1), want, rtol=1e-5, atol=3e-5)  # float32 steps at -150
  _, want_grad = _single_device(z, y, valid, True)
  np.testing.assert_allclose(np.asarray(grad).reshape(z.shape), want_grad, rtol=1e-5, atol=1e-6)
  got = jax.vmap(lambda zi, yi, vi: gence(zi, yi, where=vi, axis_name="b"), axis_name="b")(z, y, valid)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=3e-5)
