"""What the MGCE objective bounds: the 0-1 error of the randomised rule h, not that of argmax.

The pointwise inequality behind the bound, for every logit vector z, label y and beta >= 1, with
psi = relu((z + nu(z)) / beta + 1) and h = psi^beta (`mgce_probs`):

    1 - h_y(z) <= -z_y - nu(z)                                                                     (*)

Proof. Let u = (z_y + nu) / beta + 1, so that -z_y - nu = beta (1 - u).
* u <= 0: h_y = 0 and beta (1 - u) >= beta >= 1 = 1 - h_y.
* u > 0: h_y = u^beta <= sum_c h_c = 1, so u is in (0, 1]. f(u) = beta (1 - u) - (1 - u^beta) has f(1) = 0 and
  f'(u) = beta (u^(beta - 1) - 1) <= 0 on (0, 1], so f(u) >= f(1) = 0.
Equality holds where h_y = 1, and for beta = 1 wherever y is in the support (f = 0 identically).

Averaged over a training set, the mean loss (and the objective, which adds lambda ||theta||_1 >= 0) is at least
mean_i (1 - h_{y_i}(z_i)): the expected 0-1 error, on those labels, of the randomised classifier that predicts class
c with probability h_c. Nothing of the kind holds for the argmax prediction: z = (0.05, 0), y = 1, beta = 2 has loss
0.611 < 1 while argmax predicts class 0.

nu is computed here by an independent float64 bisection (its own bracket, no call into the library), then the
library's `mgce` / `mgce_probs` are checked against it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gence_jax.losses as L

BETAS = [1.0, 1.43, 2.0, 3.33, 8.0]


def bisect_nu(z, beta, iters=200):
  """Row-wise root of F(nu) = sum_c relu((z_c + nu)/beta + 1)^beta - 1 (increasing in nu), float64.

  Bracket: at nu = -max z the top class alone gives relu(1)^beta = 1, so F >= 0; at nu = -max z - beta every term
  is relu(<= 0) = 0, so F = -1 < 0.
  """
  z = np.atleast_2d(np.asarray(z, np.float64))
  hi = -z.max(axis=-1)
  lo = hi - beta
  for _ in range(iters):
    mid = 0.5 * (lo + hi)
    f = np.sum(np.maximum((z + mid[:, None]) / beta + 1.0, 0.0) ** beta, axis=-1) - 1.0
    hi = np.where(f > 0, mid, hi)
    lo = np.where(f > 0, lo, mid)
  return 0.5 * (lo + hi)


def ref_loss_and_h(z, y, beta):
  z = np.atleast_2d(np.asarray(z, np.float64))
  nu = bisect_nu(z, beta)
  h = np.maximum((z + nu[:, None]) / beta + 1.0, 0.0) ** beta
  rows = np.arange(z.shape[0])
  return -z[rows, y] - nu, h


def test_bisection_against_closed_form():
  # K = 2, beta = 2, z = (0.05, 0), both classes in the support: with a = nu/2 + 1,
  # (a + 0.025)^2 + a^2 = 1  <=>  2a^2 + 0.05a - 0.999375 = 0  =>  a = (-0.05 + sqrt(0.0025 + 7.995)) / 4.
  a = (-0.05 + math.sqrt(0.0025 + 8 * 0.999375)) / 4
  np.testing.assert_allclose(bisect_nu([0.05, 0.0], 2.0), [2 * (a - 1)], atol=1e-14)
  # beta = 1 (sparsemax): z = (1, 0) sits at the support boundary, nu = -1; uniform logits: nu = beta (K^(-1/beta) - 1).
  np.testing.assert_allclose(bisect_nu([1.0, 0.0], 1.0), [-1.0], atol=1e-14)
  for beta in BETAS:
    np.testing.assert_allclose(bisect_nu(np.zeros(5), beta), [beta * (5 ** (-1 / beta) - 1)], atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_counter_example_loss_below_one_while_argmax_errs(dtype):
  z, y, beta = np.array([[0.05, 0.0]]), np.array([1]), 2.0
  loss_ref, h_ref = ref_loss_and_h(z, y, beta)
  # loss = -z_1 - nu = 2 (1 - a) = 0.6110074 (closed form above); argmax picks class 0, so its 0-1 error is 1.
  np.testing.assert_allclose(loss_ref, [0.6110074257620728], rtol=1e-12)
  assert np.argmax(z[0]) != y[0]
  assert loss_ref[0] < 1.0
  # The randomised rule errs with probability 1 - h_1 = 0.5177, within the bound.
  np.testing.assert_allclose(1.0 - h_ref[0, 1], 0.5176749, atol=1e-7)
  assert 1.0 - h_ref[0, 1] <= loss_ref[0]
  with jax.enable_x64(dtype == np.float64):
    loss = np.asarray(L.mgce(jnp.asarray(z.astype(dtype)), jnp.asarray(y), beta=beta))
    h = np.asarray(L.mgce_probs(jnp.asarray(z.astype(dtype)), beta=beta))
  tol = 1e-6 if dtype == np.float32 else 1e-12
  np.testing.assert_allclose(loss, loss_ref, atol=tol)
  np.testing.assert_allclose(h, h_ref, atol=tol)
  # A training set made of this example: mean objective 0.611, argmax training error 1.
  assert loss.mean() < 1.0
  assert np.mean(np.argmax(z, -1) != y) == 1.0


@pytest.mark.parametrize("beta", BETAS)
def test_argmax_error_not_bounded_for_any_beta(beta):
  """z = (0.05, 0), y = 1: argmax errs, yet the loss is at most beta (1 - 2^(-1/beta)) + 0.05 < ln 2 + 0.05 < 1.

  (At z = (0, 0) the loss is -nu = beta (1 - 2^(-1/beta)), increasing in beta towards ln 2; raising z_0 by 0.05
  raises -nu by at most 0.05, since d nu / d z_0 = -w_0 is in [-1, 0].)
  """
  loss, _ = ref_loss_and_h([[0.05, 0.0]], [1], beta)
  assert loss[0] <= beta * (1 - 2 ** (-1 / beta)) + 0.05 < math.log(2) + 0.05 < 1.0


@pytest.mark.parametrize("beta", BETAS)
def test_pointwise_inequality_random(beta):
  """(*) on random logits of several scales and class counts, nu by bisection."""
  rng = np.random.default_rng(int(beta * 100))
  checked_tight = checked_strict = 0
  for k in (2, 3, 5, 10):
    for scale in (0.1, 1.0, 3.0, 10.0):
      z = scale * rng.standard_normal((400, k))
      y = rng.integers(0, k, 400)
      loss, h = ref_loss_and_h(z, y, beta)
      h_y = h[np.arange(400), y]
      gap = loss - (1.0 - h_y)
      assert np.all(gap >= -1e-12), (k, scale, gap.min())
      inside = (h_y > 1e-9) & (h_y < 1 - 1e-9)
      if beta == 1.0:
        # Equality on the support: loss = 1 - h_y exactly; off the support loss > 1 = 1 - h_y.
        np.testing.assert_allclose(gap[inside], 0.0, atol=1e-10)
        assert np.all(loss[h_y == 0] >= 1.0 - 1e-12)
        checked_tight += inside.sum()
      else:
        # Strict where 0 < h_y < 1 (f'(u) < 0 on (0, 1) for beta > 1); the gap is of order (1 - h_y)^2 near
        # h_y = 1, so test strictness away from it, where it exceeds rounding.
        away = inside & (h_y < 0.999)
        assert np.all(gap[away] > 0)
        checked_strict += away.sum()
  assert checked_tight + checked_strict > 1000


def test_library_values_satisfy_the_inequality():
  """The same inequality on the library's own loss and link (float64), which also match the bisection."""
  rng = np.random.default_rng(7)
  z = 3.0 * rng.standard_normal((64, 6))
  y = rng.integers(0, 6, 64)
  with jax.enable_x64(True):
    for beta in BETAS:
      loss = np.asarray(L.mgce(jnp.asarray(z), jnp.asarray(y), beta=beta))
      h = np.asarray(L.mgce_probs(jnp.asarray(z), beta=beta))
      loss_ref, h_ref = ref_loss_and_h(z, y, beta)
      np.testing.assert_allclose(loss, loss_ref, atol=1e-10)
      np.testing.assert_allclose(h, h_ref, atol=1e-10)
      assert np.all(loss - (1.0 - h[np.arange(64), y]) >= -1e-10)
      # Mean over the "training set": the mean loss bounds the randomised rule's training error.
      assert loss.mean() >= np.mean(1.0 - h[np.arange(64), y]) - 1e-12
