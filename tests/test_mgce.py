"""MGCE against an independent float64 reference: nu by SciPy root finding on the paper's equation.

F(nu) = sum_c relu((z_c + nu)/beta + 1)^beta - 1 = 0;  loss = -z_y - nu;  grad = w - e_y;  probs = psi^beta.
Bondugula, Mazuelas, Perez & Liu, AISTATS 2026.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _numerics import central_difference
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from scipy.optimize import brentq

from gence_jax.losses import cross_entropy, get_loss, mgce, mgce_l1_penalty, mgce_nu, mgce_probs, mgce_worst_case

BETAS = [1.0, 1.02, 1.43, 2.0, 5.0, 11.0, 100.0]


def ref_nu(z, beta):
  z = np.asarray(z, np.float64)
  k = z.size
  b = beta * ((1.0 / k) ** (1.0 / beta) - 1.0)
  f = lambda nu: np.sum(np.maximum((z + nu) / beta + 1.0, 0.0) ** beta) - 1.0
  lo, hi = b - z.max(), b - z.min()
  if f(lo) >= 0.0:  # all logits equal: the bracket is a point
    return lo
  if f(hi) <= 0.0:
    return hi
  return brentq(f, lo, hi, xtol=1e-13, rtol=4 * np.finfo(float).eps, maxiter=500)


def ref_all(z, y, beta):
  """Float64 loss, gradient w - e_y and probabilities psi^beta for each row."""
  z = np.asarray(z, np.float64)
  nus = np.array([ref_nu(row, beta) for row in z])
  psi = np.maximum((z + nus[:, None]) / beta + 1.0, 0.0)
  if beta == 1.0:
    w = (psi > 0).astype(float)
  else:
    w = psi ** (beta - 1.0)
  w /= w.sum(1, keepdims=True)
  loss = -z[np.arange(len(y)), y] - nus
  grad = w - np.eye(z.shape[1])[y]
  return nus, loss, grad, psi**beta


def _data(n=16, k=7, scale=2.0, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, k)) * scale).astype(np.float32), rng.integers(0, k, n).astype(np.int32)


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("scale", [0.01, 1.0, 10.0])
def test_nu_loss_probs_match_scipy(beta, scale):
  z, y = _data(scale=scale, seed=int(beta * 10))
  nus, loss, _, probs = ref_all(z, y, beta)
  np.testing.assert_allclose(mgce_nu(z, beta=beta), nus, rtol=1e-5, atol=2e-5)
  np.testing.assert_allclose(mgce(z, y, beta=beta), loss, rtol=1e-5, atol=2e-5)
  np.testing.assert_allclose(mgce_probs(z, beta=beta), probs, atol=2e-5)


@pytest.mark.parametrize("beta", BETAS)
def test_float64_is_tight(beta):
  z, y = _data(n=8, k=12, seed=3)
  nus, loss, grad, probs = ref_all(z, y, beta)
  with jax.enable_x64(True):
    z64 = jnp.asarray(z, jnp.float64)
    np.testing.assert_allclose(mgce(z64, y, beta=beta), loss, rtol=1e-10, atol=1e-10)
    g = jax.grad(lambda z: mgce(z, y, beta=beta).sum())(z64)
    np.testing.assert_allclose(g, grad, atol=1e-9)
    np.testing.assert_allclose(mgce_probs(z64, beta=beta), probs, atol=1e-10)


@pytest.mark.parametrize("beta", [1.02, 1.43, 2.0, 5.0, 11.0])
def test_implicit_gradient_matches_finite_differences(beta):
  z, y = _data(n=5, k=6, seed=4)
  with jax.enable_x64(True):
    z64 = jnp.asarray(z, jnp.float64)
    g = np.asarray(jax.grad(lambda z: mgce(z, y, beta=beta).sum())(z64))
  fd = central_difference(lambda zz: ref_all(zz, y, beta)[1].sum(), z)
  np.testing.assert_allclose(g, fd, atol=1e-6)


def _unrolled_nu(z, beta, iters=80):
  """Float64 nu by a plainly unrolled solver that jax.grad differentiates step by step.

  Bisection's iterates are piecewise-constant in z between bracket updates (only the endpoints b - max z,
  b - min z carry derivatives), so bisection is used to land inside the basin, and the unrolled part is Newton's
  iteration on F from the bisection point: its autodiff converges to the true derivative as the iterates converge.
  """
  k = z.shape[-1]
  b = beta * ((1.0 / k) ** (1.0 / beta) - 1.0)
  F = lambda nu: jnp.sum(jax.nn.relu((z + nu) / beta + 1.0) ** beta) - 1.0
  dF = lambda nu: jnp.sum(jax.nn.relu((z + nu) / beta + 1.0) ** (beta - 1.0))
  lo, hi = b - jnp.max(z), b - jnp.min(z)
  for _ in range(60):  # unrolled float64 bisection
    mid = 0.5 * (lo + hi)
    pos = F(mid) > 0
    lo, hi = jnp.where(pos, lo, mid), jnp.where(pos, mid, hi)
  nu = hi  # F(hi) >= 0: Newton on the convex F from the right converges monotonically
  for _ in range(iters - 60):
    nu = nu - F(nu) / dF(nu)
  return nu


@pytest.mark.parametrize("beta", [1.43, 2.0, 5.0, 11.0])
def test_implicit_gradient_matches_autodiff_through_unrolled_solver(beta):
  z, y = _data(n=4, k=5, seed=5)
  with jax.enable_x64(True):
    z64 = jnp.asarray(z, jnp.float64)
    want = jax.vmap(jax.grad(lambda zi: _unrolled_nu(zi, beta)))(z64)
    got = jax.grad(lambda z: mgce_nu(z, beta=beta).sum())(z64)
    np.testing.assert_allclose(got, want, atol=1e-9)
    np.testing.assert_allclose(got, -mgce_worst_case(z64, beta=beta), atol=1e-12)


def test_beta_one_by_hand():
  # z = (1, 0.5, -3): support {0, 1}, (1 + nu + 1) + (0.5 + nu + 1) = 1  =>  nu = -1.25, h = (0.75, 0.25, 0).
  z = np.array([[1.0, 0.5, -3.0]] * 3, np.float32)
  y = np.array([0, 1, 2])
  np.testing.assert_allclose(mgce_nu(z, beta=1.0), [-1.25] * 3, rtol=1e-6)
  np.testing.assert_allclose(mgce(z, y, beta=1.0), [0.25, 0.75, 4.25], rtol=1e-6)
  np.testing.assert_allclose(mgce_probs(z, beta=1.0)[0], [0.75, 0.25, 0.0], atol=1e-7)
  g = jax.grad(lambda z: mgce(z, y, beta=1.0).sum())(jnp.asarray(z))
  np.testing.assert_allclose(g, np.array([[0.5, 0.5, 0.0]] * 3) - np.eye(3), atol=1e-7)


@pytest.mark.parametrize("max_iter", [1, 2, 50])
def test_beta_one_exact_with_support_iteration_and_sort_fallback(max_iter):
  # Rows whose support has not settled within max_iter fall back to the sort-based rule: exact either way.
  z, y = _data(n=64, k=40, scale=0.3, seed=11)
  nus, loss, grad, probs = ref_all(z, y, 1.0)
  np.testing.assert_allclose(mgce(z, y, beta=1.0, max_iter=max_iter), loss, rtol=1e-6, atol=2e-6)
  np.testing.assert_allclose(mgce_probs(z, beta=1.0, max_iter=max_iter), probs, atol=2e-6)


def test_beta_one_single_class_support():
  # A dominant logit takes all the mass: nu = -z_max, loss = z_max - z_y.
  z = np.array([[5.0, 0.0, -1.0]], np.float32)
  np.testing.assert_allclose(mgce_nu(z, beta=1.0), [-5.0])
  np.testing.assert_allclose(mgce(z, np.array([1]), beta=1.0), [5.0])


@pytest.mark.parametrize("scale", [0.5, 3.0, 20.0])
def test_large_beta_tends_to_cross_entropy(scale):
  z, y = _data(scale=scale, seed=6)
  np.testing.assert_allclose(mgce(z, y, beta=1e4), cross_entropy(z, y), atol=1e-3)
  np.testing.assert_allclose(mgce_probs(z, beta=1e4), jax.nn.softmax(z), atol=1e-3)
  # and the gap shrinks as beta grows (the limit, not a coincidence)
  gaps = [float(jnp.max(jnp.abs(mgce(z, y, beta=b) - cross_entropy(z, y)))) for b in (10.0, 100.0, 1000.0)]
  assert gaps[0] > gaps[1] > gaps[2]


@pytest.mark.parametrize("beta", [1.0, 1.43, 2.0, 11.0])
def test_float32_stable_for_huge_logits(beta):
  rng = np.random.default_rng(7)
  z = rng.uniform(-1e4, 1e4, size=(32, 10)).astype(np.float32)
  z[0] = 1e4  # all equal
  z[1, :2] = 1e4  # tie at the top
  y = rng.integers(0, 10, 32)
  nus, loss, grad, probs = ref_all(z, y, beta)
  got = mgce(z, y, beta=beta)
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, loss, rtol=1e-6, atol=1e-3)
  g = jax.grad(lambda z: mgce(z, y, beta=beta).sum())(jnp.asarray(z))
  np.testing.assert_allclose(g, grad, atol=1e-5)
  np.testing.assert_allclose(mgce_probs(z, beta=beta), probs, atol=1e-5)


def test_bfloat16_computed_in_float32():
  z, y = _data(seed=8)
  zb = jnp.asarray(z, jnp.bfloat16)
  got = mgce(zb, y, beta=2.0)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, ref_all(np.asarray(zb.astype(jnp.float32)), y, 2.0)[1], rtol=1e-5, atol=2e-5)
  g = jax.grad(lambda z: mgce(z, y, beta=2.0).sum())(zb)
  assert g.dtype == jnp.bfloat16


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_nan_and_inf_rows_give_nan_and_terminate(beta):
  z, y = _data(n=4, seed=9)
  z[1, 2] = np.nan
  z[2, 0] = np.inf
  got = np.asarray(jax.jit(lambda z: mgce(z, y, beta=beta, max_iter=10**6))(z))
  assert np.isnan(got[1]) and np.isnan(got[2]) and np.all(np.isfinite(got[[0, 3]]))


def test_root_finder_is_a_while_loop_without_host_sync():
  z, y = _data()
  jaxpr = str(jax.make_jaxpr(lambda z: mgce(z, y, beta=2.0))(z))
  assert "while" in jaxpr
  assert "callback" not in jaxpr
  # Reverse-mode autodiff of a while_loop is impossible in JAX, so a working grad with exactly one loop (the
  # forward solve) shows the gradient comes from the custom_vjp, not from differentiating the root finder.
  grad_jaxpr = str(jax.make_jaxpr(jax.grad(lambda z: mgce(z, y, beta=2.0).sum()))(z))
  assert grad_jaxpr.count("while[") == 1


def test_max_iter_and_tol_bound_the_work():
  z, y = _data(scale=5.0)
  loose = mgce(z, y, beta=2.0, max_iter=1)
  tight = mgce(z, y, beta=2.0)
  ref = ref_all(z, y, 2.0)[1]
  assert np.max(np.abs(loose - ref)) > 10 * np.max(np.abs(tight - ref))  # one Newton step is not enough


def test_jit_vmap_and_sharding():
  z, y = _data(n=32)
  want = ref_all(z, y, 2.0)[1]
  np.testing.assert_allclose(jax.jit(lambda z, y: mgce(z, y, beta=2.0))(z, y), want, rtol=1e-5, atol=2e-5)
  per_ex = jax.vmap(lambda zi, yi: mgce(zi, yi, beta=2.0))(z, y)  # rank-1 logits, scalar label
  np.testing.assert_allclose(per_ex, want, rtol=1e-5, atol=2e-5)
  if jax.device_count() >= 8:
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sh = NamedSharding(mesh, P("data"))
    f = jax.jit(jax.value_and_grad(lambda z, y: mgce(z, y, beta=2.0).mean()))
    v, g = f(jax.device_put(z, sh), jax.device_put(y, sh))
    v1, g1 = f(z, y)
    np.testing.assert_allclose(v, v1, rtol=1e-6)
    np.testing.assert_allclose(g, g1, atol=1e-7)


def test_where_mask_and_out_of_range_labels():
  z, y = _data(n=6)
  y = y.copy()
  y[4] = -1
  valid = np.array([1, 0, 1, 1, 1, 1], bool)
  got = np.asarray(mgce(z, y, beta=2.0, where=valid))
  assert got[1] == 0 and np.isnan(got[4])
  g = jax.grad(lambda z: jnp.sum(mgce(z, y, beta=2.0, where=valid)[np.array([0, 1, 2, 3, 5])]))(jnp.asarray(z))
  assert np.all(np.asarray(g)[1] == 0)


def test_bad_hyperparameters_name_the_argument():
  z, y = _data()
  with pytest.raises(ValueError, match="beta"):
    mgce(z, y, beta=0.5)
  with pytest.raises(ValueError, match="beta"):
    get_loss("mgce", beta=0.99)
  with pytest.raises(TypeError, match="beta"):
    jax.jit(lambda b: mgce(z, y, beta=b))(2.0)
  with pytest.raises(ValueError, match="max_iter"):
    mgce(z, y, max_iter=0)
  with pytest.raises(ValueError, match="tol"):
    mgce(z, y, tol=-1.0)
  with pytest.raises(TypeError, match="labels"):
    mgce(z, y.astype(np.float32))
  with pytest.raises(ValueError, match="labels"):
    mgce(z, y[:3])


def test_registry_uses_the_mgce_link():
  z, _ = _data()
  loss = get_loss("mgce", beta=1.43)
  np.testing.assert_allclose(loss.probs(z), mgce_probs(z, beta=1.43), atol=1e-7)
  assert not np.allclose(loss.probs(z), jax.nn.softmax(z), atol=1e-3)


def test_l1_penalty_by_hand():
  params = {"w": jnp.array([[1.0, -2.0], [0.5, 0.0]]), "b": jnp.array([-3.0])}
  np.testing.assert_allclose(mgce_l1_penalty(params, lam=0.1), 0.1 * 6.5, rtol=1e-6)
  g = jax.grad(lambda p: mgce_l1_penalty(p, lam=0.1))(params)
  np.testing.assert_allclose(g["w"], 0.1 * np.sign(params["w"]))
  with pytest.raises(ValueError, match="lam"):
    mgce_l1_penalty(params, lam=-1.0)


@pytest.mark.parametrize("p", [0.43, 1.43, 2.33, 7.7, 63.3, 0.5, 7.0, 63.5])
def test_power_kernel_matches_float64(p):
  # psi^p on the support, 0 off it: bit-level exp2/log2 for general p, multiplications for (half-)integers.
  from gence_jax.losses import minimax_gce as impl

  rng = np.random.default_rng(12)
  lin = np.concatenate([np.logspace(-6, 0, 4001), rng.uniform(0, 1, 4000), -rng.uniform(0, 3, 100), [0.0]])
  lin = lin.astype(np.float32)
  got = np.asarray(jax.jit(lambda v: impl._pow_support(v, p))(lin), np.float64)
  psi = np.asarray(lin, np.float64)
  want = np.where(psi > 0, np.maximum(psi, 1e-300) ** p, 0.0)
  assert np.all(got[psi <= 0] == 0.0)
  # float32 rounding: of y = p log2(psi) for exp2 (~1.2e-7 |y|), or one rounding per multiplication, compounded
  # by the squarings (~1.2e-7 p), for (half-)integer p; plus the polynomials' own error for p <= 2 (lower degrees:
  # p ln2 1.3e-6 + 2.3e-7 relative, from their fits)
  tol = 2.5e-7 * (1.0 + np.abs(p * np.log2(np.where(psi > 0, psi, 1.0)))) + 1.2e-7 * p
  if p <= 2.0 and 2 * p != round(2 * p):
    tol = tol + p * np.log(2.0) * 1.3e-6 + 2.3e-7
  assert np.all(np.abs(got - want) <= tol * want + 1e-30), np.max(np.abs(got - want) / (want + 1e-30))


@pytest.mark.parametrize("beta", [1.43, 1.5, 2.5, 3.33, 8.0, 20.7, 64.0])
@pytest.mark.slow
def test_many_classes_match_scipy(beta):
  # K = 300: wide rows, large supports for large beta (Newton/Halley passes) and small ones for small beta.
  z, y = _data(n=12, k=300, scale=2.0, seed=int(beta * 7))
  nus, loss, grad, probs = ref_all(z, y, beta)
  np.testing.assert_allclose(mgce(z, y, beta=beta), loss, rtol=1e-5, atol=2e-5)
  g = jax.grad(lambda z: mgce(z, y, beta=beta).sum())(jnp.asarray(z))
  np.testing.assert_allclose(g, grad, atol=2e-5)
  np.testing.assert_allclose(np.asarray(g).sum(-1), 0.0, atol=2e-6)  # w is normalised where it was computed
  np.testing.assert_allclose(mgce_probs(z, beta=beta), probs, atol=2e-5)
  with jax.enable_x64(True):
    z64 = jnp.asarray(z, jnp.float64)
    np.testing.assert_allclose(mgce_nu(z64, beta=beta), nus, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("beta", [1.43, 3.33, 64.0])
def test_newton_passes_nan_rows_and_max_iter(beta):
  z, y = _data(n=6, k=9, scale=5.0, seed=21)
  ref = ref_all(z, y, beta)[1]
  loose = np.asarray(mgce(z, y, beta=beta, max_iter=1))
  if beta < 10.0:  # (at beta = 64 a single Halley step from t = 0 is already at float32 accuracy)
    assert np.max(np.abs(loose - ref)) > 10 * np.max(np.abs(np.asarray(mgce(z, y, beta=beta)) - ref))
  z[2, 3], z[4, 0] = np.nan, -np.inf
  got = np.asarray(jax.jit(lambda z: mgce(z, y, beta=beta, max_iter=10**6))(z))
  assert np.isnan(got[2]) and np.isnan(got[4]) and np.all(np.isfinite(got[[0, 1, 3, 5]]))


@pytest.mark.parametrize("beta", [1.43, 1.5, 3.33])
def test_probs_gradient_matches_finite_differences(beta):
  # float32 autodiff through the link h = psi^beta / sum psi^beta (bit-level powers carry an explicit derivative,
  # the half-integer root a finite one at psi = 0) against central differences of the float64 reference.
  z, y = _data(n=4, k=6, seed=31)
  v = np.random.default_rng(32).normal(size=z.shape)
  g = np.asarray(jax.grad(lambda z: jnp.sum(mgce_probs(z, beta=beta) * v))(jnp.asarray(z)))
  assert np.all(np.isfinite(g))
  fd = central_difference(lambda zz: np.sum(ref_all(zz, y, beta)[3] * v), z)
  np.testing.assert_allclose(g, fd, atol=2e-3)
