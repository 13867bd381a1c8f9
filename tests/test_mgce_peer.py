"""MGCE against the reference implementation MRCpy (PyTorch), used only as an optional peer (GPL-3: called, never
copied). Skipped unless both torch and MRCpy are importable.

MRCpy's conventions, established by reading its documentation and checked by the tests below
(``MRCpy.pytorch.mgce.loss.mgce_loss(num_classes, beta)``):

* ``get_gradient(logits, labels) -> (grad, loss_value)``: ``grad`` is the gradient of the batch MEAN of the
  per-example loss, ``(w - onehot(y)) / B``; ``loss_value = mean_i(-z_{i,y_i} - nu_i)``, the batch mean with no
  regularisation term (for beta = 1 MRCpy carries ``-nu`` in its internal variable and adds it, the same value).
* ``get_loss_value(logits, labels, reg_val) -> (loss_value, probs)``: the same mean plus ``reg_val`` (the caller's
  ``lambda * ||params||_1``; we pass 0 and also check that it is added as is), and ``probs = psi^beta`` normalised.
* For beta = 1, MRCpy's probabilities are NOT the documented link h = relu(z + nu + 1) (sparsemax): its internal
  ``nu`` for beta = 1 is the negated root, and ``get_loss_value``/``get_probs`` form ``relu(1 + z + (-nu))``. We accept
  either the documented link (should MRCpy fix this) or exactly that sign-flipped form, and check our beta = 1 link
  against an independent NumPy sparsemax instead.
* It computes in the logits' dtype but builds a float32 ``torch.tensor(0.)`` for ``torch.isclose``, which fails on
  float64 inputs unless torch's default dtype is float64: we run it under ``torch.set_default_dtype(torch.float64)``.

Tolerances. MRCpy finds nu by bisection to an interval width of 1e-4 and returns the midpoint (or stops early when
|F(nu)| <= 1e-8, isclose's atol, and F' = sum psi^(beta-1) >= 1 there), so its nu is within DELTA = 5e-5 of the root;
ours (float64, Newton to 1e-12) is exact by comparison. Everything is compared with bounds derived from DELTA:
* loss (a mean of -z_y - nu):  |diff| <= DELTA.
* probabilities h_c = psi_c^beta / sum_k psi_k^beta, psi = relu((z + nu)/beta + 1) <= 1:  d psi_c^beta / d nu =
  psi_c^(beta-1), so |d psi_c^beta| <= a_c DELTA with a_c = (psi_c + DELTA/beta)^(beta-1) (mean value theorem), and the
  normalisation adds h_c sum_k a_k DELTA.
* gradient w_c = psi_c^(beta-1) / S, S = sum_k psi_k^(beta-1) >= sum_k psi_k^beta = 1: per class,
  |d psi_c^(beta-1)| <= e_c with e_c from the derivative (beta-1)/beta psi^(beta-2) on the interval
  [psi_c - DELTA/beta, psi_c + DELTA/beta] when that derivative is bounded there (beta >= 2, or psi_c well inside the
  support), and from Hoelder continuity |x^p - y^p| <= |x - y|^p (p = beta - 1 < 1) near the support boundary;
  then |dw_c| <= e_c + w_c sum_k e_k. For 1 < beta < 2 this bound is loose only for classes at the support boundary.
* beta = 1 (sorting, no bisection): MRCpy is exact up to its float32 cast of the support mask (1/|C| in float32).
All bounds get a factor 2 of slack for the first-order approximations.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
mgce_mod = pytest.importorskip("MRCpy.pytorch.mgce.loss")

from gence_jax.losses import mgce, mgce_nu, mgce_probs  # noqa: E402

pytestmark = pytest.mark.peer

BETAS = [1.0, 1.43, 2.0, 5.0, 11.0]
DELTA = 5e-5  # MRCpy bisection: midpoint of an interval of width <= 1e-4
SHAPES = [(64, 10), (32, 3), (16, 100)]


@pytest.fixture(autouse=True)
def _torch_float64():
  old = torch.get_default_dtype()
  torch.set_default_dtype(torch.float64)
  yield
  torch.set_default_dtype(old)


def _data(shape, seed, scale=3.0):
  rng = np.random.default_rng(seed)
  z = scale * rng.standard_normal(shape)
  y = rng.integers(0, shape[-1], size=shape[0])
  return z, y


@functools.partial(jax.jit, static_argnums=2)
def _ours_jit(z, y, beta):
  mean_loss, grad = jax.value_and_grad(lambda a: jnp.mean(mgce(a, y, beta=beta)))(z)
  return mean_loss, grad, mgce_probs(z, beta=beta), mgce_nu(z, beta=beta)


def _ours(z, y, beta):
  """Our per-example loss, gradient of the batch mean, probabilities and nu, in float64 (one compile)."""
  with jax.enable_x64(True):
    out = _ours_jit(jnp.asarray(z, jnp.float64), jnp.asarray(y), beta)
    assert out[1].dtype == jnp.float64
    mean_loss, grad, probs, nu = (np.asarray(o) for o in out)
    return float(mean_loss), grad, probs, nu


def _mrcpy(z, y, beta):
  loss = mgce_mod.mgce_loss(num_classes=z.shape[-1], beta=beta)
  zt, yt = torch.tensor(z, dtype=torch.float64), torch.tensor(y, dtype=torch.long)
  grad, loss_value = loss.get_gradient(zt.clone(), yt)
  loss_value2, probs = loss.get_loss_value(zt.clone(), yt, 0.0)
  return float(loss_value), grad.numpy(), float(loss_value2), probs.numpy()


def _grad_bounds(z, nu, beta):
  """Per-entry bound on |w_ours - w_mrcpy| for MRCpy's nu within DELTA of the root (see the module docstring)."""
  v = (z + nu[:, None]) / beta + 1.0  # psi = relu(v); MRCpy's v is within d of ours
  psi = np.maximum(v, 0.0)
  d = DELTA / beta  # |d psi| <= DELTA / beta
  p = beta - 1.0
  if beta >= 2.0:
    e = np.where(v + d > 0, p / beta * np.power(psi + d, beta - 2.0) * DELTA, 0.0)
  else:
    inside = v > 2.0 * d  # psi^(beta-1) is Lipschitz on [psi - d, psi + d]
    outside = v + d <= 0.0  # zero for both
    lip = p / beta * np.power(np.where(inside, psi - d, 1.0), beta - 2.0) * DELTA
    e = np.where(inside, lip, np.where(outside, 0.0, np.power(2.0 * d, p)))  # Hoelder at the boundary
  a = np.power(psi, p)
  w = a / a.sum(-1, keepdims=True)
  return e + w * e.sum(-1, keepdims=True)


def _prob_bounds(z, nu, beta):
  psi = np.maximum((z + nu[:, None]) / beta + 1.0, 0.0)
  supp = ((z + nu[:, None]) / beta + 1.0 + DELTA / beta) > 0
  a = np.where(supp, np.power(psi + DELTA / beta, beta - 1.0), 0.0) * DELTA
  h = psi**beta / np.sum(psi**beta, -1, keepdims=True)
  return a + h * a.sum(-1, keepdims=True)


def _np_sparsemax(z):
  """Independent sparsemax (Martins & Astudillo 2016): relu(z - tau), tau from the sorted cumulative sums."""
  zs = -np.sort(-z, axis=-1)
  cs = np.cumsum(zs, axis=-1)
  k = np.arange(1, z.shape[-1] + 1)
  kstar = np.sum(1.0 + k * zs > cs, axis=-1)
  tau = (cs[np.arange(z.shape[0]), kstar - 1] - 1.0) / kstar
  return np.maximum(z - tau[:, None], 0.0), tau


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("beta", BETAS)
def test_loss_and_gradient_match_mrcpy(beta, shape):
  z, y = _data(shape, seed=int(beta * 100) + shape[1])
  b = shape[0]
  ours_loss, ours_grad, _, ours_nu = _ours(z, y, beta)
  mrc_loss, mrc_grad, mrc_loss2, _ = _mrcpy(z, y, beta)

  # Loss: a batch mean, no regularisation; get_loss_value with reg_val = 0 is the same number.
  loss_tol = 1e-10 if beta == 1.0 else 2 * DELTA
  assert abs(ours_loss - mrc_loss) <= loss_tol, (ours_loss, mrc_loss)
  assert abs(mrc_loss2 - mrc_loss) <= 1e-12
  # ... and not the sum (a convention mismatch would be off by a factor B).
  assert abs(b * ours_loss - mrc_loss) > 1e-3 or abs(ours_loss) < 1e-6

  # Gradient: MRCpy returns that of the MEAN. Compare per example (times B) with the derived bound.
  assert mrc_grad.shape == ours_grad.shape
  if beta == 1.0:
    bound = np.full(shape, 2e-7)  # float32 cast of 1/|C| inside MRCpy
  else:
    bound = 2.0 * _grad_bounds(z, ours_nu, beta)
  err = np.abs(b * ours_grad - b * mrc_grad)
  assert np.all(err <= bound), (err.max(), bound[np.unravel_index(np.argmax(err - bound), shape)])
  # Rows of a per-example gradient sum to 0 (w is a distribution), in both.
  np.testing.assert_allclose(b * mrc_grad.sum(-1), 0.0, atol=1e-6)
  np.testing.assert_allclose(b * ours_grad.sum(-1), 0.0, atol=1e-12)


@pytest.mark.parametrize("beta", BETAS)
def test_probs_match_mrcpy(beta):
  z, y = _data((64, 10), seed=7 + int(beta))
  _, _, ours_probs, ours_nu = _ours(z, y, beta)
  _, _, _, mrc_probs = _mrcpy(z, y, beta)
  np.testing.assert_allclose(ours_probs.sum(-1), 1.0, atol=1e-12)
  if beta == 1.0:
    sparse, tau = _np_sparsemax(z)
    np.testing.assert_allclose(ours_probs, sparse, atol=1e-12)
    np.testing.assert_allclose(ours_nu, -tau - 1.0, atol=1e-12)  # relu(z + nu + 1) = relu(z - tau)
    if not np.allclose(mrc_probs, ours_probs, atol=1e-10):
      # MRCpy's beta = 1 link uses the negated root: normalise(relu(1 + z - nu)). Accept exactly that.
      flipped = np.maximum(1.0 + z - ours_nu[:, None], 0.0)
      flipped /= flipped.sum(-1, keepdims=True)
      np.testing.assert_allclose(mrc_probs, flipped, atol=1e-10)
  else:
    bound = 2.0 * _prob_bounds(z, ours_nu, beta)
    err = np.abs(ours_probs - mrc_probs)
    assert np.all(err <= bound), (err.max(), bound.max())
    assert err.max() < 1e-3


def test_reg_val_is_added_as_is():
  z, y = _data((16, 5), seed=99)
  loss = mgce_mod.mgce_loss(num_classes=5, beta=2.0)
  zt, yt = torch.tensor(z), torch.tensor(y)
  v0, _ = loss.get_loss_value(zt, yt, 0.0)
  v1, _ = loss.get_loss_value(zt, yt, 0.25)
  assert abs(float(v1) - float(v0) - 0.25) < 1e-12


@pytest.mark.parametrize("beta", [2.0, 11.0])
def test_large_logits_match_mrcpy(beta):
  """Scale-30 logits: nearly one-hot rows, where the root sits at the top of the bracket."""
  z, y = _data((32, 10), seed=123, scale=30.0)
  ours_loss, ours_grad, ours_probs, ours_nu = _ours(z, y, beta)
  mrc_loss, mrc_grad, _, mrc_probs = _mrcpy(z, y, beta)
  assert abs(ours_loss - mrc_loss) <= 2 * DELTA
  err = np.abs(32 * (ours_grad - mrc_grad))
  assert np.all(err <= 2.0 * _grad_bounds(z, ours_nu, beta))
  assert np.all(np.abs(ours_probs - mrc_probs) <= 2.0 * _prob_bounds(z, ours_nu, beta))
