"""Baseline losses, the registry and the checked mode, tested against independent float64 NumPy references.

Every reference below is written from the equation in the loss's docstring, in NumPy (float64), without calling
jax: softmax, one-hot, the focal factor etc. are recomputed here. The library is never compared with itself
except under a transformation (jit / vmap / dtype), and then only after it has been checked against a reference.
"""

from __future__ import annotations

import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import gence_jax.losses as L

# ----------------------------------------------------------------------------------------------------------------
# NumPy float64 references (from the docstring equations).
# ----------------------------------------------------------------------------------------------------------------


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  m = np.max(z, axis=-1, keepdims=True)
  return z - m - np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True))


def np_softmax(z):
  return np.exp(np_log_softmax(z))


def np_onehot(y, k):
  return (np.asarray(y)[..., None] == np.arange(k)).astype(np.float64)


def _label_terms(z, y):
  """log p_y, p_y and 1 - p_y (the latter as the sum of the other classes' probabilities: no cancellation)."""
  k = z.shape[-1]
  log_p = np_log_softmax(z)
  e = np_onehot(y, k)
  log_py = np.sum(log_p * e, axis=-1)
  p = np.exp(log_p)
  one_minus = np.sum(p * (1.0 - e), axis=-1)
  return log_p, p, e, log_py, one_minus


def ref_cross_entropy(z, y, label_smoothing=0.0):
  k = z.shape[-1]
  log_p = np_log_softmax(z)
  t = (1.0 - label_smoothing) * np_onehot(y, k) + label_smoothing / k
  return -np.sum(t * log_p, axis=-1)


def ref_generalized_ce(z, y, q=0.7):
  _, _, _, log_py, _ = _label_terms(z, y)
  return (1.0 - np.exp(log_py) ** q) / q


def ref_mae(z, y):
  k = z.shape[-1]
  return np.sum(np.abs(np_onehot(y, k) - np_softmax(z)), axis=-1)


def ref_focal(z, y, gamma=2.0):
  _, _, _, log_py, one_minus = _label_terms(z, y)
  return -(one_minus**gamma) * log_py


def ref_flsd53(z, y):
  _, _, _, log_py, one_minus = _label_terms(z, y)
  gamma = np.where(np.exp(log_py) < 0.2, 5.0, 3.0)
  return -(one_minus**gamma) * log_py


def ref_dual_focal(z, y, gamma=2.0):
  """Tao, Dong & Xu 2023 from the definition, row by row: sort the probabilities, p_j = the largest one STRICTLY
  below p_y (0 when none is), loss = -(1 - p_y + p_j)^gamma log p_y."""
  k = z.shape[-1]
  log_p = np_log_softmax(z).reshape(-1, k)
  yy = np.asarray(y).reshape(-1)
  out = np.empty(len(yy))
  for i, (row, label) in enumerate(zip(log_p, yy)):
    p = np.exp(row)
    p_y = p[label]
    ranked = np.sort(p)[::-1]  # descending
    below = ranked[ranked < p_y]
    p_j = below[0] if below.size else 0.0
    one_minus = np.sum(np.delete(p, label))  # 1 - p_y without cancellation
    out[i] = -((one_minus + p_j) ** gamma) * row[label]
  return out.reshape(np.shape(y))


def ref_brier(z, y):
  k = z.shape[-1]
  return np.sum((np_softmax(z) - np_onehot(y, k)) ** 2, axis=-1)


def ref_nce_rce(z, y, alpha=1.0, beta=1.0, log_zero=-4.0):
  log_p, _, _, log_py, one_minus = _label_terms(z, y)
  nce = (-log_py) / (-np.sum(log_p, axis=-1))
  # RCE = -sum_k p_k log e_{y,k}, with log 1 = 0 and log 0 := A: -A * sum_{k != y} p_k.
  rce = -log_zero * one_minus
  return alpha * nce + beta * rce


def ref_nce_rce_clamped(z, y, alpha=1.0, beta=1.0):
  """NCE+RCE as Ma et al.'s released code computes it: RCE = -sum_k clip(p_k, 1e-7, 1) log clip(e_{y,k}, 1e-4, 1)."""
  log_p, p, e, log_py, _ = _label_terms(z, y)
  nce = (-log_py) / (-np.sum(log_p, axis=-1))
  rce = -np.sum(np.clip(p, 1e-7, 1.0) * np.log(np.clip(e, 1e-4, 1.0)), axis=-1)
  return alpha * nce + beta * rce


def ref_gence(z, y):
  """l_i = -log p_{i,y_i} + log((1/B) sum_j p_{j,y_i}) over all leading axes as the batch."""
  k = z.shape[-1]
  p = np_softmax(z).reshape(-1, k)
  yy = np.asarray(y).reshape(-1)
  col_mean = p.mean(axis=0)
  out = -np.log(p[np.arange(len(yy)), yy]) + np.log(col_mean[yy])
  return out.reshape(np.shape(y))


def _np_mgce_nu_row(z, beta):
  """nu solving sum_c relu((z_c + nu)/beta + 1)^beta = 1, by plain bisection on the documented bracket."""
  k = z.shape[-1]
  b = beta * ((1.0 / k) ** (1.0 / beta) - 1.0)
  lo, hi = b - np.max(z), b - np.min(z)
  f = lambda nu: np.sum(np.maximum((z + nu) / beta + 1.0, 0.0) ** beta) - 1.0
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if f(mid) > 0:
      hi = mid
    else:
      lo = mid
  return 0.5 * (lo + hi)


def ref_mgce(z, y, beta=2.0):
  k = z.shape[-1]
  zf = np.asarray(z, np.float64).reshape(-1, k)
  nu = np.array([_np_mgce_nu_row(r, beta) for r in zf]).reshape(np.shape(y))
  return -np.sum(np.asarray(z, np.float64) * np_onehot(y, k), axis=-1) - nu


def ref_mgce_probs(z, beta=2.0):
  k = z.shape[-1]
  zf = np.asarray(z, np.float64).reshape(-1, k)
  nu = np.array([_np_mgce_nu_row(r, beta) for r in zf])
  h = np.maximum((zf + nu[:, None]) / beta + 1.0, 0.0) ** beta
  return (h / h.sum(-1, keepdims=True)).reshape(np.shape(z))


# (library function, reference, hparams) for every baseline configuration under test.
CASES = {
  "ce": (L.cross_entropy, ref_cross_entropy, {}),
  "ce_ls0.1": (L.cross_entropy, ref_cross_entropy, {"label_smoothing": 0.1}),
  "ce_ls0.5": (L.cross_entropy, ref_cross_entropy, {"label_smoothing": 0.5}),
  "lq_default": (L.generalized_ce, ref_generalized_ce, {}),
  "lq_q1": (L.generalized_ce, ref_generalized_ce, {"q": 1.0}),
  "lq_q0.3": (L.generalized_ce, ref_generalized_ce, {"q": 0.3}),
  "lq_q1e-3": (L.generalized_ce, ref_generalized_ce, {"q": 1e-3}),
  "lq_alias": (L.lq, ref_generalized_ce, {"q": 0.5}),
  "mae": (L.mae, ref_mae, {}),
  "focal_g0": (L.focal, ref_focal, {"gamma": 0.0}),
  "focal_g1": (L.focal, ref_focal, {"gamma": 1.0}),
  "focal_g2": (L.focal, ref_focal, {"gamma": 2.0}),
  "focal_g5": (L.focal, ref_focal, {"gamma": 5.0}),
  "flsd53": (L.flsd53, ref_flsd53, {}),
  "dual_focal": (L.dual_focal, ref_dual_focal, {}),
  "dual_focal_g1": (L.dual_focal, ref_dual_focal, {"gamma": 1.0}),
  "brier": (L.brier, ref_brier, {}),
  "nce_rce": (L.nce_rce, ref_nce_rce, {}),
  "nce_rce_hp": (L.nce_rce, ref_nce_rce, {"alpha": 10.0, "beta": 0.1, "log_zero": -2.0}),
  "nce_rce_code": (L.nce_rce, ref_nce_rce, {"log_zero": math.log(1e-4)}),
}
CASE_IDS = sorted(CASES)
# One configuration per function (plus label smoothing, which takes a different code path): for the contract tests
# (masking, bad labels, dtypes, transformations) where the hyper-parameter values do not matter.
CORE_CASES = ["ce", "ce_ls0.1", "lq_default", "mae", "focal_g2", "flsd53", "dual_focal", "brier", "nce_rce"]
BASELINE_FNS = [L.cross_entropy, L.generalized_ce, L.mae, L.focal, L.flsd53, L.dual_focal, L.brier, L.nce_rce]
SHAPES = [(16, 10), (7, 2), (3, 4, 6)]


def _data(shape, scale, seed):
  rng = np.random.default_rng(seed)
  z = scale * rng.standard_normal(shape)
  y = rng.integers(0, shape[-1], size=shape[:-1])
  return z, y


# ----------------------------------------------------------------------------------------------------------------
# Values against the references.
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", CASE_IDS)
def test_matches_reference_float32(case, shape):
  fn, ref, hp = CASES[case]
  for scale, seed in [(1.0, 0), (3.0, 1), (30.0, 2)]:
    z, y = _data(shape, scale, seed)
    z32 = z.astype(np.float32)
    out = fn(jnp.asarray(z32), jnp.asarray(y, jnp.int32), **hp)
    assert out.shape == y.shape and out.dtype == jnp.float32
    # Reference on the float32-rounded logits: what remains is float32 arithmetic error in the library.
    # Large-logit CE-type values are O(100) so a relative tolerance dominates there.
    np.testing.assert_allclose(
      np.asarray(out), ref(z32.astype(np.float64), y, **hp), rtol=2e-5, atol=2e-6, err_msg=f"{case} scale={scale}"
    )


@pytest.mark.parametrize("case", CASE_IDS)
def test_matches_reference_float64(case):
  fn, ref, hp = CASES[case]
  with jax.enable_x64(True):
    for shape, scale, seed in [((16, 10), 1.0, 3), ((3, 4, 6), 3.0, 4), ((16, 10), 30.0, 5)]:
      z, y = _data(shape, scale, seed)
      out = fn(jnp.asarray(z), jnp.asarray(y), **hp)
      assert out.dtype == jnp.float64
      np.testing.assert_allclose(
        np.asarray(out), ref(z, y, **hp), rtol=1e-10, atol=1e-13, err_msg=f"{case} scale={scale}"
      )


def test_reference_sanity():
  """The references themselves against hand-computed values (so that a wrong reference cannot hide a bug)."""
  z = np.array([[np.log(3.0), 0.0]])  # p = (3/4, 1/4)
  y = np.array([0])
  np.testing.assert_allclose(ref_cross_entropy(z, y), [-np.log(0.75)])
  np.testing.assert_allclose(ref_cross_entropy(z, y, 0.5), [-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))])
  np.testing.assert_allclose(ref_mae(z, y), [0.5])
  np.testing.assert_allclose(ref_brier(z, y), [2 * 0.25**2])
  np.testing.assert_allclose(ref_focal(z, y, 2.0), [-(0.25**2) * np.log(0.75)])
  np.testing.assert_allclose(ref_dual_focal(z, y, 2.0), [-(0.5**2) * np.log(0.75)])
  np.testing.assert_allclose(ref_generalized_ce(z, y, 0.5), [(1 - np.sqrt(0.75)) / 0.5])
  np.testing.assert_allclose(ref_nce_rce(z, y), [np.log(0.75) / (np.log(0.75) + np.log(0.25)) + 4 * 0.25])
  np.testing.assert_allclose(
    ref_flsd53(np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]), y), [-((5 / 6) ** 5) * np.log(1 / 6)]
  )
  # MGCE: beta = 1 on two classes with z = (1, 0): support {0, 1}: h = (1, 0) at the boundary, nu = -1.
  np.testing.assert_allclose(_np_mgce_nu_row(np.array([1.0, 0.0]), 1.0), -1.0, atol=1e-12)


def test_hand_computed_library_values():
  z = jnp.array([[np.log(3.0), 0.0]], jnp.float32)
  y = jnp.array([0])
  np.testing.assert_allclose(L.mae(z, y), [0.5], rtol=1e-6)
  np.testing.assert_allclose(L.brier(z, y), [0.125], rtol=1e-6)
  np.testing.assert_allclose(L.dual_focal(z, y, gamma=2.0), [-0.25 * np.log(0.75)], rtol=1e-6)
  np.testing.assert_allclose(L.nce_rce(z, y), [np.log(0.75) / np.log(0.1875) + 1.0], rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Dual focal: p_j is the probability ranked just below p_y (not the largest wrong-class probability).
# ----------------------------------------------------------------------------------------------------------------

# p = (0.5, 0.3, 0.2) in every row but the last two; labels chosen to cover each rank of the label.
DF_Z = np.log(np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.4, 0.4, 0.2], [1 / 3, 1 / 3, 1 / 3]]))
DF_Y = np.array([1, 2, 0, 1, 1])
DF_EXPECTED = np.array(
  [
    # misclassified, label ranked 2nd: p_y = .3, p_j = .2 (class 0's .5 is above p_y and skipped):
    # (1 - .3 + .2)^2 * -ln .3 = .81 * 1.2039728043 = 0.9752179715 (largest wrong class: 1.44 * 1.204 = 1.734)
    0.81 * -math.log(0.3),
    # misclassified, label ranked last: nothing below, p_j = 0: (1 - .2)^2 * -ln .2 = .64 * 1.6094379124 = 1.0300402640
    0.64 * -math.log(0.2),
    # correct: p_y = .5, p_j = .3: (1 - .5 + .3)^2 * -ln .5 = .64 * 0.6931471806 = 0.4436141956
    0.64 * -math.log(0.5),
    # label tied with class 0 at .4, a tie is not "strictly below": p_j = .2, (1 - .4 + .2)^2 * -ln .4 = .64 * .91629
    0.64 * -math.log(0.4),
    # all tied: p_j = 0: (2/3)^2 * ln 3 = 0.4444444 * 1.0986123 = 0.4882721
    (2 / 3) ** 2 * math.log(3.0),
  ]
)


def test_dual_focal_reference_hand_computed():
  np.testing.assert_allclose(ref_dual_focal(DF_Z, DF_Y), DF_EXPECTED, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dual_focal_hand_computed(dtype):
  with jax.enable_x64(dtype == np.float64):
    out = L.dual_focal(jnp.asarray(DF_Z.astype(dtype)), jnp.asarray(DF_Y), gamma=2.0)
    np.testing.assert_allclose(out, DF_EXPECTED, rtol=1e-6 if dtype == np.float32 else 1e-12)
  # gamma = 1 on the first row: (1 - .3 + .2) * -ln .3
  out1 = L.dual_focal(jnp.asarray(DF_Z[:1], jnp.float32), DF_Y[:1], gamma=1.0)
  np.testing.assert_allclose(out1, [0.9 * -math.log(0.3)], rtol=1e-6)


def test_dual_focal_differs_from_largest_wrong_class_on_misclassified_rows():
  """The two rules agree exactly where the label is the top class, and differ on misclassified rows."""
  z, y = _data((64, 6), 2.0, 90)
  _, p, e, log_py, one_minus = _label_terms(z, y)
  largest_wrong = -((one_minus + np.max(np.where(e > 0, -np.inf, p), axis=-1)) ** 2) * log_py
  out = np.asarray(L.dual_focal(jnp.asarray(z, jnp.float32), y))
  top = np.argmax(z, axis=-1) == y
  assert top.any() and (~top).any()
  np.testing.assert_allclose(out[top], largest_wrong[top], rtol=2e-5, atol=2e-6)
  assert np.all(out[~top] < largest_wrong[~top] - 1e-3)


def test_dual_focal_gradient_central_difference_of_reference():
  """jax.grad (float64) against central differences of the NumPy reference, on rows with misclassified labels."""
  z, y = _data((8, 5), 2.0, 91)
  z = z.copy()
  z[:4, y[:4]] -= 3.0  # push the label down the ranking in half the rows
  gaps = np.diff(np.sort(z, axis=-1), axis=-1)
  assert gaps.min() > 1e-3  # no near-ties: the ranking is constant within the finite-difference step
  ranks = np.sum(z > z[np.arange(8), y][:, None], axis=-1)
  assert np.any(ranks >= 1) and np.any(ranks == 0) and np.any(ranks == 4)  # misclassified, correct, label last
  with jax.enable_x64(True):
    g = np.asarray(jax.grad(lambda a: jnp.sum(L.dual_focal(a, jnp.asarray(y))))(jnp.asarray(z)))
  h = 1e-6
  fd = np.zeros_like(z)
  for idx in np.ndindex(z.shape):
    d = np.zeros_like(z)
    d[idx] = h
    fd[idx] = (ref_dual_focal(z + d, y).sum() - ref_dual_focal(z - d, y).sum()) / (2 * h)
  np.testing.assert_allclose(g, fd, atol=1e-8)


# ----------------------------------------------------------------------------------------------------------------
# NCE+RCE: the papers' A = -4 and the released code's clamped one-hot (A = log 1e-4).
# ----------------------------------------------------------------------------------------------------------------


def test_nce_rce_log_zero_constants_and_default():
  from gence_jax.losses import baselines

  assert baselines.RCE_LOG_ZERO_PAPER == -4.0
  assert baselines.RCE_LOG_ZERO_CODE == pytest.approx(-9.210340371976182, abs=1e-14)
  z, y = _data((16, 10), 2.0, 92)
  with jax.enable_x64(True):
    np.testing.assert_allclose(L.nce_rce(jnp.asarray(z), jnp.asarray(y)), ref_nce_rce(z, y, log_zero=-4.0), rtol=1e-12)


def test_nce_rce_code_value_matches_clamped_reference():
  """log_zero = log(1e-4) against the released code's computation (one-hot clamped at 1e-4, p clamped at 1e-7)."""
  with jax.enable_x64(True):
    for alpha, beta in [(1.0, 1.0), (10.0, 0.1)]:
      z, y = _data((16, 10), 2.0, 93)  # no probability below 1e-7: the two agree to rounding
      assert np_softmax(z).min() > 1e-7
      out = L.nce_rce(jnp.asarray(z), jnp.asarray(y), alpha=alpha, beta=beta, log_zero=math.log(1e-4))
      np.testing.assert_allclose(out, ref_nce_rce_clamped(z, y, alpha, beta), rtol=1e-12)
      # Saturated rows (probabilities below 1e-7): within the documented bound -A (K - 1) 1e-7.
      z, y = _data((16, 10), 30.0, 94)
      assert np_softmax(z).min() < 1e-7
      out = L.nce_rce(jnp.asarray(z), jnp.asarray(y), alpha=alpha, beta=beta, log_zero=math.log(1e-4))
      diff = np.abs(np.asarray(out) - ref_nce_rce_clamped(z, y, alpha, beta))
      assert np.all(diff <= beta * -math.log(1e-4) * 9 * 1e-7 + 1e-12)
  # Hand-computed: p = (3/4, 1/4), y = 0: NCE = ln .75 / ln(.75 * .25), RCE = -ln(1e-4) * .25 = 2.302585093
  zh = jnp.array([[math.log(3.0), 0.0]], jnp.float32)
  expected = math.log(0.75) / math.log(0.1875) + 0.25 * math.log(1e4)
  np.testing.assert_allclose(L.nce_rce(zh, jnp.array([0]), log_zero=math.log(1e-4)), [expected], rtol=1e-6)
  np.testing.assert_allclose(ref_nce_rce_clamped(np.asarray(zh, np.float64), np.array([0])), [expected], rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Known limits.
# ----------------------------------------------------------------------------------------------------------------


def test_focal_gamma0_is_ce():
  z, y = _data((32, 7), 3.0, 10)
  np.testing.assert_allclose(
    L.focal(jnp.asarray(z, jnp.float32), y, gamma=0.0), ref_cross_entropy(z, y), rtol=1e-5, atol=1e-6
  )


def test_lq_small_q_tends_to_ce():
  with jax.enable_x64(True):
    z, y = _data((64, 10), 3.0, 11)
    ce = ref_cross_entropy(z, y)
    errs = []
    for q in [1e-1, 1e-2, 1e-3, 1e-4, 1e-6]:
      lq = np.asarray(L.generalized_ce(jnp.asarray(z), jnp.asarray(y), q=q))
      # (1 - e^{q l})/q = -l - q l^2/2 - ... with l = log p_y <= 0: below CE by at most q l^2 / 2.
      assert np.all(lq <= ce + 1e-12)
      assert np.all(ce - lq <= 0.5 * q * ce**2 + 1e-12)
      errs.append(np.max(ce - lq))
    # O(q): each factor-10 decrease of q shrinks the gap by about 10.
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    assert np.all(ratios[1:] > 8.0), ratios  # (q = 0.1 is not yet in the linear regime)


def test_lq_q1_is_one_minus_py():
  z, y = _data((32, 7), 3.0, 12)
  np.testing.assert_allclose(
    L.generalized_ce(jnp.asarray(z, jnp.float32), y, q=1.0), 1.0 - np.exp(_label_terms(z, y)[3]), rtol=1e-5, atol=1e-6
  )
  # ... and MAE is twice that.
  np.testing.assert_allclose(
    L.mae(jnp.asarray(z, jnp.float32), y), 2.0 * (1.0 - np.exp(_label_terms(z, y)[3])), rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize("x64", [False, True])
def test_flsd53_switch_side(x64):
  """gamma = 5 if p_y < 0.2 else 3: p_y == 0.2 exactly (five equal logits) uses gamma = 3."""
  with jax.enable_x64(x64):
    dtype = jnp.float64 if x64 else jnp.float32
    z = jnp.zeros((1, 5), dtype)
    y = jnp.array([2])
    three = -(0.8**3) * np.log(0.2)
    np.testing.assert_allclose(L.flsd53(z, y), [three], rtol=1e-6)
    # Just below / just above 0.2: 5 then 3. p_y = e^d / (e^d + 4) for a label logit shifted by d.
    for d, gamma in [(-1e-3, 5.0), (1e-3, 3.0)]:
      zz = z.at[0, 2].set(d)
      p = np.exp(d) / (np.exp(d) + 4.0)
      np.testing.assert_allclose(L.flsd53(zz, y), [-((1 - p) ** gamma) * np.log(p)], rtol=1e-5)


def test_flsd53_equals_focal_on_each_side():
  z, y = _data((64, 10), 2.0, 13)
  py = np.exp(_label_terms(z, y)[3])
  z32 = jnp.asarray(z, jnp.float32)
  flsd = np.asarray(L.flsd53(z32, y))
  f3, f5 = np.asarray(L.focal(z32, y, gamma=3.0)), np.asarray(L.focal(z32, y, gamma=5.0))
  assert np.any(py < 0.2) and np.any(py >= 0.2)
  np.testing.assert_allclose(flsd, np.where(py < 0.2, f5, f3), rtol=1e-6, atol=1e-7)


def test_dual_focal_gamma0_is_ce():
  z, y = _data((16, 5), 3.0, 14)
  np.testing.assert_allclose(
    L.dual_focal(jnp.asarray(z, jnp.float32), y, gamma=0.0), ref_cross_entropy(z, y), rtol=1e-5, atol=1e-6
  )


def test_ce_label_smoothing_is_mixture():
  """CE with smoothing eps = (1 - eps) CE + eps * CE against the uniform target."""
  z, y = _data((16, 5), 3.0, 15)
  uniform = -np.mean(np_log_softmax(z), axis=-1)
  np.testing.assert_allclose(
    L.cross_entropy(jnp.asarray(z, jnp.float32), y, label_smoothing=0.3),
    0.7 * ref_cross_entropy(z, y) + 0.3 * uniform,
    rtol=1e-5,
  )


def test_translation_invariance():
  """Every softmax-based baseline depends on logits only up to a per-row constant."""
  z, y = _data((8, 6), 2.0, 16)
  shift = np.random.default_rng(0).standard_normal((8, 1)) * 50
  for fn in BASELINE_FNS:
    a = fn(jnp.asarray(z, jnp.float32), y)
    b = fn(jnp.asarray(z + shift, jnp.float32), y)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=fn.__name__)


# ----------------------------------------------------------------------------------------------------------------
# Gradients against finite differences (float64).
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASE_IDS)
def test_gradients_finite_differences(case):
  fn, _, hp = CASES[case]
  with jax.enable_x64(True):
    shapes = [((6, 5), 20), ((2, 3, 4), 21)] if case in CORE_CASES else [((6, 5), 20)]
    for shape, seed in shapes:
      z, y = _data(shape, 2.0, seed)
      if fn is L.flsd53:
        # Keep p_y away from the gamma switch at 0.2 (where the loss jumps): push rows near it up.
        py = np.exp(_label_terms(z, y)[3])
        near = np.abs(py - 0.2) < 0.05
        z = z + 2.0 * near[..., None] * np_onehot(y, shape[-1])
        assert np.all(np.abs(np.exp(_label_terms(z, y)[3]) - 0.2) > 0.02)
      yj = jnp.asarray(y)
      weights = jnp.asarray(np.random.default_rng(seed).uniform(0.5, 1.5, size=y.shape))
      f = lambda logits: jnp.sum(weights * fn(logits, yj, **hp))
      check_grads(f, (jnp.asarray(z),), order=1, modes=["rev"], atol=1e-6, rtol=1e-6, eps=1e-5)


def test_gradient_explicit_central_difference_and_analytic_ce():
  """CE's gradient is softmax - onehot (analytic), and a hand-rolled central difference for focal."""
  with jax.enable_x64(True):
    z, y = _data((5, 4), 2.0, 22)
    g = jax.grad(lambda a: jnp.sum(L.cross_entropy(a, jnp.asarray(y))))(jnp.asarray(z))
    np.testing.assert_allclose(g, np_softmax(z) - np_onehot(y, 4), atol=1e-12)
    gf = np.asarray(jax.grad(lambda a: jnp.sum(L.focal(a, jnp.asarray(y), gamma=2.0)))(jnp.asarray(z)))
    h = 1e-6
    fd = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
      e = np.zeros_like(z)
      e[idx] = h
      fd[idx] = (ref_focal(z + e, y).sum() - ref_focal(z - e, y).sum()) / (2 * h)
    np.testing.assert_allclose(gf, fd, atol=1e-8)


def test_flsd53_gradient_is_focal_gradient_on_each_side():
  """gamma(p_y) is not differentiated: the gradient is that of focal with the selected gamma."""
  z, y = _data((32, 10), 2.0, 23)
  py = np.exp(_label_terms(z, y)[3])
  assert np.any(py < 0.2) and np.any(py >= 0.2)
  z32 = jnp.asarray(z, jnp.float32)
  g = jax.grad(lambda a: jnp.sum(L.flsd53(a, y)))(z32)
  g3 = jax.grad(lambda a: jnp.sum(L.focal(a, y, gamma=3.0)))(z32)
  g5 = jax.grad(lambda a: jnp.sum(L.focal(a, y, gamma=5.0)))(z32)
  np.testing.assert_allclose(g, np.where((py < 0.2)[:, None], g5, g3), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fn", BASELINE_FNS, ids=lambda f: f.__name__)
def test_gradients_finite_on_large_logits(fn):
  """Scale-30 logits (saturated softmax rows): gradients stay finite, for default hyper-parameters."""
  z, y = _data((64, 10), 30.0, 24)
  g = jax.grad(lambda a: jnp.sum(fn(a, y)))(jnp.asarray(z, jnp.float32))
  assert np.all(np.isfinite(g))


# gamma < 1: d/dp (1 - p)^gamma is infinite where the base is 0 (saturated softmax); gradients must stay finite.
@pytest.mark.parametrize("fn", [L.focal, L.dual_focal], ids=lambda f: f.__name__)
@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_small_gamma_gradient_saturated(fn, gamma):
  z = jnp.array([[200.0, 0.0]], jnp.float32)  # float32: log p_y == 0 and p_j == 0 exactly
  y = jnp.array([0])
  g = jax.grad(lambda a: jnp.sum(fn(a, y, gamma=gamma)))(z)
  assert np.all(np.isfinite(g)), g
  # The true gradient there is 0 (as CE's, softmax - onehot = 0): d/dz_y of (1-p)^gamma log p ~ (1-p)^gamma -> 0.
  np.testing.assert_allclose(g, 0.0, atol=1e-6)
  assert float(fn(z, y, gamma=gamma)[0]) == 0.0
  # Just short of saturation (1 - p_y ~ 2e-9 > 0) gamma = 0 still gives CE's gradient.
  z2 = jnp.array([[20.0, 0.0]], jnp.float32)
  g0 = jax.grad(lambda a: jnp.sum(fn(a, y, gamma=0.0)))(z2)
  np.testing.assert_allclose(g0, np_softmax(np.asarray(z2, np.float64)) - np_onehot([0], 2), atol=1e-7)


# ----------------------------------------------------------------------------------------------------------------
# Masking, out-of-range labels, dtypes.
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CORE_CASES)
def test_where_masking(case):
  fn, ref, hp = CASES[case]
  for shape, seed in [((12, 5), 30), ((3, 4, 6), 31)]:
    z, y = _data(shape, 3.0, seed)
    mask = np.random.default_rng(seed).uniform(size=y.shape) < 0.5
    mask.reshape(-1)[:2] = [True, False]
    z32 = jnp.asarray(z, jnp.float32)
    out = np.asarray(fn(z32, y, where=jnp.asarray(mask), **hp))
    assert np.all(out[~mask] == 0.0)
    np.testing.assert_allclose(out[mask], ref(np.asarray(z32, np.float64), y, **hp)[mask], rtol=2e-5, atol=2e-6)
    g = np.asarray(jax.grad(lambda a: jnp.sum(fn(a, y, where=jnp.asarray(mask), **hp)))(z32))
    g_all = np.asarray(jax.grad(lambda a: jnp.sum(fn(a, y, **hp)))(z32))
    assert np.all(g[~mask] == 0.0)
    np.testing.assert_allclose(g[mask], g_all[mask], rtol=1e-6, atol=1e-7)
    assert np.any(g_all[~mask] != 0.0)  # the mask, not the loss, zeroed those rows


@pytest.mark.parametrize("case", CORE_CASES)
def test_out_of_range_labels_nan_in_that_row_only(case):
  fn, ref, hp = CASES[case]
  z, y = _data((6, 4), 2.0, 40)
  y[1], y[4] = -1, 4
  out = np.asarray(fn(jnp.asarray(z, jnp.float32), jnp.asarray(y), **hp))
  bad = np.zeros(6, bool)
  bad[[1, 4]] = True
  assert np.all(np.isnan(out[bad]))
  good_ref = ref(z[~bad].astype(np.float32).astype(np.float64), y[~bad], **hp)
  np.testing.assert_allclose(out[~bad], good_ref, rtol=2e-5, atol=2e-6)
  # A masked bad row gives 0, not NaN.
  out_m = np.asarray(fn(jnp.asarray(z, jnp.float32), jnp.asarray(y), where=jnp.asarray(~bad), **hp))
  assert np.all(out_m[bad] == 0.0)


@pytest.mark.parametrize("case", CORE_CASES)
def test_bfloat16_logits(case):
  fn, _, hp = CASES[case]
  z, y = _data((3, 4, 6), 3.0, 50)
  zb = jnp.asarray(z, jnp.bfloat16)
  out = fn(zb, y, **hp)
  assert out.dtype == jnp.float32
  # Computed in float32 on the bfloat16 values ...
  np.testing.assert_allclose(out, fn(zb.astype(jnp.float32), y, **hp), rtol=1e-6, atol=1e-7)
  # ... so close to the float32 result up to bfloat16 rounding of the logits (|dz| <= 2^-8 |z|).
  keep = np.ones(y.shape, bool)
  if fn is L.dual_focal:
    # p_j jumps where a logit crosses the label's (its class enters or leaves "strictly below p_y"): compare only
    # rows whose set of classes below the label survives the rounding.
    zr = np.asarray(zb.astype(jnp.float32), np.float64)
    below = lambda a: a < np.take_along_axis(a, y[..., None], axis=-1)
    keep = np.all(below(z) == below(zr), axis=-1)
    assert keep.sum() >= y.size - 2
  expected = np.asarray(fn(jnp.asarray(z, jnp.float32), y, **hp))
  np.testing.assert_allclose(np.asarray(out)[keep], expected[keep], rtol=0.1, atol=0.05)


# ----------------------------------------------------------------------------------------------------------------
# Bad inputs.
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", BASELINE_FNS, ids=lambda f: f.__name__)
def test_bad_label_inputs(fn):
  z = jnp.zeros((4, 3))
  with pytest.raises(TypeError, match="labels"):
    fn(z, jnp.zeros((4,), jnp.float32))
  with pytest.raises(ValueError, match="labels"):
    fn(z, jnp.zeros((3,), jnp.int32))
  with pytest.raises(ValueError, match="labels"):
    fn(z, jnp.zeros((4, 1), jnp.int32))
  with pytest.raises(TypeError, match="logits"):
    fn(jnp.zeros((4, 3), jnp.int32), jnp.zeros((4,), jnp.int32))
  with pytest.raises(ValueError, match="where"):
    fn(z, jnp.zeros((4,), jnp.int32), where=jnp.ones((3,), bool))


@pytest.mark.parametrize(
  "fn,name,values",
  [
    (L.generalized_ce, "q", [0.0, -0.1, 1.0001, 2.0]),
    (L.focal, "gamma", [-1e-3, -2.0]),
    (L.dual_focal, "gamma", [-1.0]),
    (L.cross_entropy, "label_smoothing", [-0.1, 1.0, 1.5]),
    (L.nce_rce, "alpha", [-1.0]),
    (L.nce_rce, "beta", [-1.0]),
    (L.nce_rce, "log_zero", [0.0, 1.0]),
  ],
  ids=lambda v: v.__name__ if callable(v) else str(v),
)
def test_bad_hparams(fn, name, values):
  z, y = jnp.zeros((2, 3)), jnp.zeros((2,), jnp.int32)
  for v in values:
    with pytest.raises(ValueError, match=f"`{name}`"):
      fn(z, y, **{name: v})


def test_boundary_hparams_accepted():
  z, y = jnp.zeros((2, 3)), jnp.zeros((2,), jnp.int32)
  L.generalized_ce(z, y, q=1.0)
  L.focal(z, y, gamma=0.0)
  L.cross_entropy(z, y, label_smoothing=0.0)
  L.cross_entropy(z, y, label_smoothing=0.999)


# ----------------------------------------------------------------------------------------------------------------
# jit and vmap.
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CORE_CASES)
def test_jit_and_vmap(case):
  fn, ref, hp = CASES[case]
  z, y = _data((3, 5, 6), 3.0, 60)
  z32, yj = jnp.asarray(z, jnp.float32), jnp.asarray(y)
  expected = ref(np.asarray(z32, np.float64), y, **hp)
  f = lambda a, b: fn(a, b, **hp)
  np.testing.assert_allclose(jax.jit(f)(z32, yj), expected, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(jax.jit(jax.vmap(f))(z32, yj), expected, rtol=2e-5, atol=2e-6)
  # Per-example calls ([K] logits, scalar label) vmapped twice.
  np.testing.assert_allclose(jax.jit(jax.vmap(jax.vmap(f)))(z32, yj), expected, rtol=2e-5, atol=2e-6)
  mask = jnp.asarray(np.arange(15).reshape(3, 5) % 3 != 0)
  fm = lambda a, b, m: fn(a, b, where=m, **hp)
  np.testing.assert_allclose(jax.jit(jax.vmap(fm))(z32, yj, mask), np.where(mask, expected, 0.0), rtol=2e-5, atol=2e-6)
  g = jax.jit(jax.grad(lambda a: jnp.sum(f(a, yj))))(z32)
  g_vmap = jax.jit(jax.vmap(jax.grad(lambda a, b: jnp.sum(f(a, b)))))(z32, yj)
  np.testing.assert_allclose(g, g_vmap, rtol=1e-5, atol=1e-7)
  assert np.max(np.abs(g)) > 1e-3


def test_traced_hparams_under_vmap():
  """check_hparam lets traced scalar hyper-parameters through; q and gamma can be vmapped."""
  z, y = _data((8, 5), 2.0, 61)
  qs = np.array([0.2, 0.7, 1.0])
  out = jax.vmap(lambda q: L.generalized_ce(jnp.asarray(z, jnp.float32), y, q=q))(jnp.asarray(qs))
  np.testing.assert_allclose(out, np.stack([ref_generalized_ce(z, y, q) for q in qs]), rtol=1e-5, atol=1e-6)
  gs = np.array([0.0, 2.0, 5.0])
  out = jax.vmap(lambda g: L.focal(jnp.asarray(z, jnp.float32), y, gamma=g))(jnp.asarray(gs))
  np.testing.assert_allclose(out, np.stack([ref_focal(z, y, g) for g in gs]), rtol=1e-5, atol=1e-6)


def test_traced_label_smoothing_under_vmap():
  z, y = _data((8, 5), 2.0, 62)
  eps = np.array([0.0, 0.1])
  out = jax.vmap(lambda e: L.cross_entropy(jnp.asarray(z, jnp.float32), y, label_smoothing=e))(jnp.asarray(eps))
  np.testing.assert_allclose(out, np.stack([ref_cross_entropy(z, y, e) for e in eps]), rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Registry.
# ----------------------------------------------------------------------------------------------------------------

REGISTRY_REFS = {
  "cross_entropy": ref_cross_entropy,
  "generalized_ce": ref_generalized_ce,
  "mae": ref_mae,
  "focal": ref_focal,
  "flsd53": ref_flsd53,
  "dual_focal": ref_dual_focal,
  "brier": ref_brier,
  "nce_rce": ref_nce_rce,
  "gence": ref_gence,
  "mgce": ref_mgce,
}
ALIASES = {"ce": "cross_entropy", "lq": "generalized_ce", "gce": "generalized_ce"}


def test_available_losses_contains_all():
  names = L.available_losses()
  assert set(REGISTRY_REFS) <= set(names)
  assert names == sorted(names)


@pytest.mark.parametrize("name", sorted(REGISTRY_REFS) + sorted(ALIASES))
def test_get_loss_default_hparams(name):
  loss = L.get_loss(name)
  assert isinstance(loss, L.Loss)
  canonical = ALIASES.get(name, name)
  assert loss.name == canonical
  z, y = _data((12, 5), 2.0, 70)
  z32 = jnp.asarray(z, jnp.float32)
  expected = REGISTRY_REFS[canonical](np.asarray(z32, np.float64), y)
  np.testing.assert_allclose(loss.per_example(z32, y), expected, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(loss(z32, y), expected, rtol=2e-5, atol=2e-6)
  mask = jnp.asarray(np.arange(12) % 4 != 0)
  out = np.asarray(loss.per_example(z32, y, where=mask))
  assert np.all(out[~np.asarray(mask)] == 0.0)
  assert loss.couples_batch == (canonical == "gence")


def test_get_loss_unregistered_names_smoke():
  """Losses registered after this file was written: at least the per-example contract."""
  z, y = _data((6, 4), 1.0, 71)
  for name in set(L.available_losses()) - set(REGISTRY_REFS):
    loss = L.get_loss(name, data={"class_counts": (50, 20, 5, 1)})  # for losses that read the training split
    out = loss.per_example(jnp.asarray(z, jnp.float32), y, state=loss.init_state() if loss.stateful else None)
    assert out.shape == (6,) and np.all(np.isfinite(out)), name


@pytest.mark.parametrize(
  "name,hp",
  [
    ("ce", {"label_smoothing": 0.2}),
    ("lq", {"q": 0.3}),
    ("gce", {"q": 1.0}),
    ("focal", {"gamma": 5.0}),
    ("dual_focal", {"gamma": 1.0}),
    ("nce_rce", {"alpha": 2.0, "beta": 0.5, "log_zero": -1.0}),
    ("mgce", {"beta": 5.0}),
  ],
)
def test_get_loss_binds_hparams(name, hp):
  loss = L.get_loss(name, **hp)
  assert dict(loss.hparams) == hp
  z, y = _data((10, 4), 2.0, 72)
  z32 = jnp.asarray(z, jnp.float32)
  expected = REGISTRY_REFS[ALIASES.get(name, name)](np.asarray(z32, np.float64), y, **hp)
  np.testing.assert_allclose(loss.per_example(z32, y), expected, rtol=2e-5, atol=2e-6)


def test_get_loss_unknown_name_lists_names():
  with pytest.raises(ValueError) as info:
    L.get_loss("not_a_loss")
  msg = str(info.value)
  assert "not_a_loss" in msg
  for name in L.available_losses():
    assert name in msg


@pytest.mark.parametrize(
  "name,hp", [("ce", {"gamma": 2.0}), ("focal", {"q": 0.7}), ("mae", {"alpha": 1.0}), ("mgce", {"gamma": 1.0})]
)
def test_get_loss_unknown_hparam(name, hp):
  with pytest.raises(ValueError, match=list(hp)[0]):
    L.get_loss(name, **hp)


@pytest.mark.parametrize(
  "name,hp",
  [
    ("focal", {"gamma": -1.0}),
    ("lq", {"q": 0.0}),
    ("gce", {"q": 1.5}),
    ("ce", {"label_smoothing": 1.0}),
    ("dual_focal", {"gamma": -0.5}),
    ("nce_rce", {"log_zero": 0.5}),
    ("mgce", {"beta": 0.5}),
  ],
)
def test_get_loss_invalid_value_raises_at_get_loss(name, hp):
  with pytest.raises(ValueError, match=f"`{list(hp)[0]}`"):
    L.get_loss(name, **hp)


@pytest.mark.parametrize("name", sorted(REGISTRY_REFS))
def test_loss_probs(name):
  z, y = _data((9, 6), 3.0, 73)
  z32 = jnp.asarray(z, jnp.float32)
  probs = np.asarray(L.get_loss(name).probs(z32))
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  if name == "mgce":
    assert np.max(np.abs(probs - np_softmax(z32))) > 1e-2  # not softmax
    np.testing.assert_allclose(probs, ref_mgce_probs(np.asarray(z32, np.float64), 2.0), atol=1e-5)
    np.testing.assert_allclose(
      L.get_loss("mgce", beta=5.0).probs(z32), ref_mgce_probs(np.asarray(z32, np.float64), 5.0), atol=1e-5
    )
  else:
    np.testing.assert_allclose(probs, np_softmax(np.asarray(z32, np.float64)), rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------------
# checked(...).
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [L.cross_entropy, L.flsd53, L.dual_focal, L.nce_rce], ids=lambda f: f.__name__)
def test_checked(fn):
  z, y = _data((8, 5), 2.0, 80)
  z32 = jnp.asarray(z, jnp.float32)
  cfn = L.checked(fn)
  np.testing.assert_allclose(
    cfn(z32, jnp.asarray(y)), REGISTRY_REFS[fn.__name__](np.asarray(z32, np.float64), y), rtol=2e-5, atol=2e-6
  )
  bad_y = y.copy()
  bad_y[3] = 5 if fn is not L.flsd53 else -2
  with pytest.raises(L.LossInputError, match="labels"):
    cfn(z32, jnp.asarray(bad_y))
  with pytest.raises(L.LossInputError, match="NaN"):
    cfn(z32.at[2, 1].set(jnp.nan), jnp.asarray(y))
  # Bad rows that are masked out do not count.
  mask = np.ones(8, bool)
  mask[3] = False
  out = cfn(z32, jnp.asarray(bad_y), where=jnp.asarray(mask))
  assert float(out[3]) == 0.0


def test_checked_passes_hparams():
  z, y = _data((8, 5), 2.0, 81)
  z32 = jnp.asarray(z, jnp.float32)
  np.testing.assert_allclose(
    L.checked(L.focal)(z32, jnp.asarray(y), gamma=5.0),
    ref_focal(np.asarray(z32, np.float64), y, 5.0),
    rtol=2e-5,
    atol=2e-6,
  )
  assert issubclass(L.LossInputError, ValueError)
  with pytest.raises(ValueError, match="Inf"):  # caught as a plain ValueError too
    L.checked(L.focal)(z32.at[0, 0].set(jnp.inf), jnp.asarray(y), gamma=5.0)


# ----------------------------------------------------------------------------------------------------------------
# Import hygiene.
# ----------------------------------------------------------------------------------------------------------------


def test_import_does_not_pull_tensorflow_or_flax():
  code = (
    "import sys, gence_jax.losses\n"
    "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
    "('tensorflow', 'tensorflow_datasets', 'flax', 'torch'))\n"
    "print(repr(bad))\n"
    "assert not bad, bad\n"
  )
  res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stdout + res.stderr
  assert res.stdout.strip() == "[]"
