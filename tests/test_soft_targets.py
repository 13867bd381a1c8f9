"""Soft-target losses (gence_jax.losses.soft) against independent float64 NumPy references of their docstring
equations, central finite differences, their integer-label versions on one-hot targets, and their input checks.

The references below recompute softmax, the MGCE root (bisection) and the GenCE batch sums in NumPy with explicit
loops; nothing here calls the library to build an expected value, except the integer-label losses (tested in
test_baselines.py, test_mgce.py and test_gence.py) for the one-hot equalities.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _numerics import central_difference
from jax.sharding import PartitionSpec as P

import gence_jax.losses as L

# ----------------------------------------------------------------------------------------------------------------
# float64 NumPy references
# ----------------------------------------------------------------------------------------------------------------


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max(-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def ref_ce(z, t, label_smoothing=0.0):
  k = z.shape[-1]
  t = (1.0 - label_smoothing) * np.asarray(t, np.float64) + label_smoothing / k
  return -np.sum(t * np_log_softmax(z), -1)


def ref_gce(z, t, q=0.7):
  p = np.exp(np_log_softmax(z))
  return np.sum(t * (1.0 - p**q) / q, -1)


def ref_mae(z, t):
  return np.sum(np.abs(np.asarray(t, np.float64) - np.exp(np_log_softmax(z))), -1)


def ref_focal(z, t, gamma=2.0):
  log_p = np_log_softmax(z)
  return -np.sum(t * (1.0 - np.exp(log_p)) ** gamma * log_p, -1)


def ref_brier(z, t):
  return np.sum((np.exp(np_log_softmax(z)) - t) ** 2, -1)


def ref_nce_rce(z, t, alpha=1.0, beta=1.0, log_zero=-4.0):
  t = np.asarray(t, np.float64)
  log_p = np_log_softmax(z)
  nce = np.sum(t * log_p, -1) / np.sum(log_p, -1)
  log_t = np.full_like(t, log_zero)
  pos = t > 0
  log_t[pos] = np.maximum(np.log(t[pos]), log_zero)
  rce = -np.sum(np.exp(log_p) * log_t, -1)
  return alpha * nce + beta * rce


def np_mgce_nu(z, beta):
  """nu per row solving sum_c relu((z_c + nu)/beta + 1)^beta = 1, by bisection on [b - max z, b - min z]."""
  z = np.asarray(z, np.float64)
  k = z.shape[-1]
  b = beta * ((1.0 / k) ** (1.0 / beta) - 1.0)
  lo, hi = b - z.max(-1), b - z.min(-1)
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    above = np.sum(np.maximum((z + mid[..., None]) / beta + 1.0, 0.0) ** beta, -1) > 1.0
    hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
  return 0.5 * (lo + hi)


def ref_mgce(z, t, beta=2.0):
  return -np.sum(np.asarray(t, np.float64) * np.asarray(z, np.float64), -1) - np_mgce_nu(z, beta)


def ref_gence(z, t, valid=None, include_self=True):
  """l_i = sum_y t_iy [-log q(y|x_i) + log(mean_j q(y|x_j))] with explicit loops over examples and classes."""
  z = np.asarray(z, np.float64)
  n, k = z.shape
  valid = np.ones(n, bool) if valid is None else np.asarray(valid)
  p = np.exp(np_log_softmax(z))
  out = np.zeros(n)
  rows = np.flatnonzero(valid)
  for i in rows:
    others = [j for j in rows if include_self or j != i]
    for y in range(k):
      if t[i, y] > 0:
        out[i] += t[i, y] * (-np.log(p[i, y]) + np.log(np.mean([p[j, y] for j in others])))
  return out


# case -> (integer loss name, reference, hparams); the soft loss is L.SOFT_VARIANTS[name].
CASES = {
  "cross_entropy": ("cross_entropy", ref_ce, {}),
  "cross_entropy_ls": ("cross_entropy", ref_ce, {"label_smoothing": 0.1}),
  "generalized_ce": ("generalized_ce", ref_gce, {"q": 0.7}),
  "generalized_ce_q1": ("generalized_ce", ref_gce, {"q": 1.0}),
  "mae": ("mae", ref_mae, {}),
  "focal": ("focal", ref_focal, {"gamma": 2.0}),
  "focal_half": ("focal", ref_focal, {"gamma": 0.5}),
  "brier": ("brier", ref_brier, {}),
  "nce_rce": ("nce_rce", ref_nce_rce, {"alpha": 1.0, "beta": 1.0, "log_zero": -4.0}),
  "nce_rce_code": ("nce_rce", ref_nce_rce, {"alpha": 10.0, "beta": 0.1, "log_zero": float(np.log(1e-4))}),
  "mgce": ("mgce", ref_mgce, {"beta": 2.0}),
  "mgce_b1.43": ("mgce", ref_mgce, {"beta": 1.43}),
}


def _data(n=6, k=4, seed=0, scale=2.0):
  """Logits and soft targets (Dirichlet rows, some entries exactly 0, then renormalised)."""
  rng = np.random.default_rng(seed)
  z = (rng.normal(size=(n, k)) * scale).astype(np.float32)
  t = rng.dirichlet(np.full(k, 0.7), size=n)
  t[rng.random((n, k)) < 0.25] = 0.0
  t[np.arange(n), rng.integers(0, k, n)] += 0.05  # every row keeps some mass
  t /= t.sum(-1, keepdims=True)
  return z, t


def _onehot(y, k):
  return (np.asarray(y)[..., None] == np.arange(k)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# One-hot targets: the integer-label loss
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_onehot_equals_integer_loss(case):
  name, _, hp = CASES[case]
  z, _ = _data(seed=1)
  y = np.array([0, 1, 2, 3, 0, 2], np.int32)
  got = L.SOFT_VARIANTS[name](z, _onehot(y, 4), **hp)
  want = getattr(L, name)(z, y, **hp)
  assert got.dtype == jnp.float32 and got.shape == (6,)
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("include_self", [True, False])
def test_gence_onehot_equals_integer_loss_with_mask(include_self):
  z, _ = _data(seed=2)
  y = np.array([0, 1, 2, 3, 1, 3], np.int32)
  valid = np.array([1, 1, 0, 1, 1, 1], bool)
  got = L.gence_soft(z, _onehot(y, 4), where=valid, include_self=include_self)
  want = L.gence(z, y, where=valid, include_self=include_self)
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)
  gs = jax.grad(lambda z: jnp.sum(L.gence_soft(z, _onehot(y, 4), where=valid, include_self=include_self)))(z)
  gi = jax.grad(lambda z: jnp.sum(L.gence(z, y, where=valid, include_self=include_self)))(z)
  np.testing.assert_allclose(gs, gi, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Random soft targets: values and gradients against the float64 references
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_value_matches_reference(case):
  name, ref, hp = CASES[case]
  fn = L.SOFT_VARIANTS[name]
  z, t = _data(seed=3)
  got = fn(z, t.astype(np.float32), **hp)
  np.testing.assert_allclose(got, ref(z, t.astype(np.float32), **hp), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_matches_finite_differences(case):
  name, ref, hp = CASES[case]
  fn = L.SOFT_VARIANTS[name]
  z, t = _data(seed=4)
  w = np.linspace(0.5, 1.5, 6)  # a non-uniform cotangent
  with jax.enable_x64(True):
    got = jax.grad(lambda z: jnp.sum(w * fn(z, t, **hp)))(jnp.asarray(z, jnp.float64))
  want = central_difference(lambda zz: np.sum(w * ref(zz, t, **hp)), z)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_mgce_gradient_is_worst_case_minus_target():
  z, t = _data(seed=5)
  with jax.enable_x64(True):
    z64 = jnp.asarray(z, jnp.float64)
    g = jax.grad(lambda z: jnp.sum(L.mgce_soft(z, t, beta=3.0)))(z64)
    w = L.mgce_worst_case(z64, beta=3.0)
  np.testing.assert_allclose(g, np.asarray(w) - t, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("include_self", [True, False])
def test_gence_value_and_gradient_match_reference(include_self):
  z, t = _data(seed=6)
  valid = np.array([1, 1, 0, 1, 1, 1], bool)
  got = L.gence_soft(z, t.astype(np.float32), where=valid, include_self=include_self)
  np.testing.assert_allclose(got, ref_gence(z, t.astype(np.float32), valid, include_self), rtol=2e-5, atol=2e-6)
  with jax.enable_x64(True):
    fn = lambda z: jnp.sum(L.gence_soft(z, t, where=valid, include_self=include_self))
    g = jax.grad(fn)(jnp.asarray(z, jnp.float64))
  want = central_difference(lambda zz: ref_gence(zz, t, valid, include_self).sum(), z)
  np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-7)
  assert np.all(np.asarray(g)[~valid] == 0.0)


def test_gence_tiny_class_probabilities_stay_finite():
  # Class 3 has probability < e^-150 for every example: plain float32 class sums would underflow to 0.
  z, t = _data(seed=7)
  z[:, 3] -= 150.0
  got = L.gence_soft(z, t.astype(np.float32))
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, ref_gence(z, t.astype(np.float32)), rtol=1e-5, atol=3e-5)


def test_mixed_targets_give_the_mixup_criterion():
  # Losses linear in the target: l(z, lam e_a + (1 - lam) e_b) = lam l(z, a) + (1 - lam) l(z, b).
  z, _ = _data(seed=8)
  a, b, lam = np.array([0, 1, 2, 3, 3, 0], np.int32), np.array([1, 1, 3, 0, 2, 3], np.int32), 0.3
  t = lam * _onehot(a, 4) + (1 - lam) * _onehot(b, 4)
  for name in ("cross_entropy", "generalized_ce", "focal", "mgce", "gence"):
    soft, hard = L.SOFT_VARIANTS[name], getattr(L, name)
    want = lam * np.asarray(hard(z, a)) + (1 - lam) * np.asarray(hard(z, b))
    np.testing.assert_allclose(soft(z, t), want, rtol=1e-5, atol=1e-6, err_msg=name)


# ----------------------------------------------------------------------------------------------------------------
# GenCE across devices and named axes
# ----------------------------------------------------------------------------------------------------------------

NDEV = 8


def _global_data(seed=9):
  z, t = _data(n=NDEV * 2, seed=seed)
  valid = np.random.default_rng(seed).random(NDEV * 2) > 0.25
  return z, t.astype(np.float32), valid


def _single_device(z, t, valid, include_self):
  fn = lambda z: jnp.sum(L.gence_soft(z, t, where=valid, include_self=include_self))
  return L.gence_soft(z, t, where=valid, include_self=include_self), jax.grad(fn)(z)


@pytest.mark.parametrize("include_self", [False])
def test_gence_shard_map_equals_single_device(include_self):
  if jax.device_count() < NDEV:
    pytest.skip(f"needs {NDEV} devices (XLA_FLAGS=--xla_force_host_platform_device_count={NDEV})")
  z, t, valid = _global_data()

  def per_device(z, t, v):
    local = lambda z: jnp.sum(L.gence_soft(z, t, where=v, axis_name="data", include_self=include_self))
    return L.gence_soft(z, t, where=v, axis_name="data", include_self=include_self), jax.grad(local)(z)

  mesh = jax.make_mesh((NDEV,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  fn = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P("data"), out_specs=(P("data"), P("data"))))
  loss, grad = fn(z, t, valid)
  want_loss, want_grad = _single_device(z, t, valid, include_self)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(loss, ref_gence(z, t, valid, include_self), rtol=2e-5, atol=2e-6)


def test_gence_named_vmap_couples_the_batch():
  z, t, valid = _global_data(10)
  per_example = lambda zi, ti, vi: L.gence_soft(zi, ti, where=vi, axis_name="batch")  # zi, ti: [K]
  batch = jax.vmap(per_example, axis_name="batch")
  got = jax.jit(batch)(z, t, valid)
  np.testing.assert_allclose(got, ref_gence(z, t, valid), rtol=2e-5, atol=2e-6)
  g = jax.jit(jax.grad(lambda z: jnp.sum(batch(z, t, valid))))(jnp.asarray(z))
  np.testing.assert_allclose(g, _single_device(z, t, valid, True)[1], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Masks, dtypes, registry
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(L.SOFT_VARIANTS))
def test_masked_rows_give_zero_and_no_gradient_whatever_they_hold(name):
  fn = L.SOFT_VARIANTS[name]
  z, t = _data(seed=11)
  valid = np.array([1, 0, 1, 1, 0, 1], bool)
  z[1] = np.nan
  t[4] = np.nan  # padding rows may hold anything: no value check, no NaN
  t[1] = 0.0
  loss = fn(z, t.astype(np.float32), where=valid)
  g = jax.grad(lambda z: jnp.sum(fn(z, t.astype(np.float32), where=valid)))(jnp.asarray(z))
  assert np.all(np.asarray(loss)[~valid] == 0.0) and np.all(np.isfinite(loss))
  assert np.all(np.asarray(g)[~valid] == 0.0) and np.all(np.isfinite(g))


def test_low_precision_inputs_are_computed_in_float32():
  z, t = _data(seed=12)
  zb, tb = jnp.asarray(z, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16)
  got = L.cross_entropy_soft(zb, tb)
  assert got.dtype == jnp.float32
  zr, tr = np.asarray(zb.astype(jnp.float32)), np.asarray(tb.astype(jnp.float32))
  np.testing.assert_allclose(got, ref_ce(zr, tr), rtol=1e-5, atol=1e-6)


def test_leading_axes():
  z, t = _data(n=6, seed=13)
  got = L.mgce_soft(z.reshape(2, 3, 4), t.reshape(2, 3, 4).astype(np.float32))
  assert got.shape == (2, 3)
  np.testing.assert_allclose(np.asarray(got).reshape(-1), ref_mgce(z, t.astype(np.float32)), rtol=2e-5, atol=2e-6)


def test_registry_soft_variants_take_the_same_hyperparameters():
  for name in L.available_losses():
    soft = L.soft_variant(name)
    if soft is None:
      continue
    hard = L.get_loss(name).fn
    params = lambda f: {n for n, p in inspect.signature(f).parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert params(soft) == params(hard), name
  assert L.soft_variant("ce") is L.cross_entropy_soft and L.soft_variant("lq") is L.generalized_ce_soft
  assert L.soft_variant("dual_focal") is None and L.soft_variant("flsd53") is None
  with pytest.raises(ValueError, match="unknown loss name"):
    L.soft_variant("nope")


# ----------------------------------------------------------------------------------------------------------------
# Errors: one line, naming the function and the argument
# ----------------------------------------------------------------------------------------------------------------


def _raises(exc, fn, *args, match, **kwargs):
  with pytest.raises(exc, match=match) as info:
    fn(*args, **kwargs)
  msg = str(info.value)
  assert "\n" not in msg, msg
  return msg


@pytest.mark.parametrize("name", sorted(L.SOFT_VARIANTS))
def test_invalid_targets_raise_one_line_errors(name):
  fn, soft_name = L.SOFT_VARIANTS[name], f"{name}_soft"
  z, t = _data(seed=14)
  t = t.astype(np.float32)
  _raises(ValueError, fn, z, t[:, :3], match=rf"^{soft_name}: `targets` must have the shape of `logits`")
  _raises(ValueError, fn, z, t[0], match=rf"^{soft_name}: `targets` must have the shape")
  neg = t.copy()
  neg[2, :2] = [-0.25, neg[2, 0] + neg[2, 1] + 0.25]
  _raises(ValueError, fn, z, neg, match=rf"^{soft_name}: `targets` must be non-negative")
  off = t.copy()
  off[3] *= 1.01
  _raises(ValueError, fn, z, off, match=rf"^{soft_name}: rows of `targets` must sum to 1 .* row 3 sums to 1.01")
  nan = t.copy()
  nan[5, 0] = np.nan
  _raises(ValueError, fn, z, nan, match=rf"^{soft_name}: `targets` must be finite, got NaN or Inf in row 5")
  ints = (t > 0.5).astype(np.int32)
  _raises(TypeError, fn, z, ints, match=rf"^{soft_name}: `targets` must be floating.* use {name}\)")
  _raises(TypeError, fn, z.astype(np.int32), t, match=rf"^{soft_name}: `logits` must be a floating-point array")
  _raises(TypeError, fn, z, t, where=np.ones(6, np.int32), match=rf"^{soft_name}: `where` must be a boolean mask")
  # a masked-out row is not checked; a tolerance of float32 round-off passes
  valid = np.ones(6, bool)
  valid[3] = False
  fn(z, off, where=valid)
  fn(z, t * np.float32(1 + 1e-5))


def test_hyperparameter_errors_name_the_soft_function():
  z, t = _data(seed=15)
  _raises(ValueError, L.cross_entropy_soft, z, t, label_smoothing=1.0, match=r"^cross_entropy_soft: `label_smoothing`")
  _raises(ValueError, L.generalized_ce_soft, z, t, q=0.0, match=r"^generalized_ce_soft: `q`")
  _raises(ValueError, L.focal_soft, z, t, gamma=-1.0, match=r"^focal_soft: `gamma`")
  _raises(ValueError, L.nce_rce_soft, z, t, log_zero=0.0, match=r"^nce_rce_soft: `log_zero`")
  _raises(ValueError, L.mgce_soft, z, t, beta=0.5, match=r"^mgce_soft: `beta`")
  _raises(ValueError, L.mgce_soft, z, t, max_iter=0, match=r"^mgce_soft: `max_iter`")


@pytest.mark.parametrize("name", sorted(L.SOFT_VARIANTS))
def test_integer_loss_given_probability_targets_names_the_soft_variant(name):
  z, t = _data(seed=16)
  _raises(TypeError, getattr(L, name), z, t.astype(np.float32), match=rf"^{name}: `labels` .* use {name}_soft for")


def test_integer_loss_without_soft_form_says_so():
  z, t = _data(seed=17)
  _raises(TypeError, L.dual_focal, z, t.astype(np.float32), match=r"^dual_focal: `labels` .*has no soft-target form")


def test_under_jit_values_are_not_checked_and_the_formula_applies():
  # Documented behaviour: tracers cannot be inspected, so a row summing to 2 is used as given (not renormalised).
  z, t = _data(seed=18)
  t2 = (2.0 * t).astype(np.float32)
  got = jax.jit(L.cross_entropy_soft)(z, t2)
  np.testing.assert_allclose(got, ref_ce(z, t2), rtol=1e-5, atol=1e-6)
