"""L2 calibration error (plug-in and debiased), RMSCE, equal-mass statistics and smooth ECE against float64 NumPy
implementations of the papers' equations, written here; the debiased estimator's unbiasedness on a calibrated model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, special

from gence_jax import metrics as M


def _data(seed, n=400, k=4, scale=1.7):
  rng = np.random.default_rng(seed)
  t = rng.normal(size=(n, k)) * 2
  labels = (special.softmax(t, 1).cumsum(1) > rng.random((n, 1))).argmax(1).astype(np.int32)
  return special.softmax(scale * t, axis=1).astype(np.float32), labels


def _top(probs, labels):
  p = probs.astype(np.float64)
  return p.max(1), (p.argmax(1) == labels).astype(np.float64)


def _width_bins(conf, m):
  return np.clip(np.ceil(conf * m) - 1, 0, m - 1).astype(int)


def _mass_bins(conf, corr, m):
  """Equal-mass bins by rank (sorted by confidence; rank r -> floor(r m / n)), as arrays per example. Only for
  tie-free confidences, where it is the value-edge rule; `_value_edge_bins` is the reference with ties."""
  n = conf.size
  assert np.unique(conf).size == n, "rank bins are the reference only for distinct confidences"
  order = np.argsort(conf)
  b = np.empty(n, int)
  b[order] = (np.arange(n) * m) // n
  return b


def _value_edge_bins(conf, m):
  """Equal-mass bins with value edges, as Kumar et al.'s get_equal_bins builds them: the edge between bins j-1 and j
  is the midpoint of the sorted confidences on either side of rank ceil(j n / m), duplicates dropped, and a value
  goes to the first bin whose upper edge is >= it (bisect_left), so equal values share a bin."""
  s = np.sort(conf)
  n = s.size
  cuts = [-(-j * n // m) for j in range(1, m)]
  edges = sorted(set((s[c - 1] + s[c]) / 2.0 for c in cuts if 0 < c < n))
  return np.searchsorted(np.asarray(edges + [np.inf]), conf, side="left")


def _l2_squared(conf, corr, bins, m, debias):
  """Kumar, Liang & Ma (2019), Section 5: sum_b (n_b/N) [(conf_b - acc_b)^2 - debias * acc_b(1-acc_b)/(n_b-1)]."""
  n, total = conf.size, 0.0
  for j in range(m):
    sel = bins == j
    nb = sel.sum()
    if nb == 0 or (debias and nb < 2):
      continue
    gap = (conf[sel].mean() - corr[sel].mean()) ** 2
    if debias:
      a = corr[sel].mean()
      gap -= a * (1 - a) / (nb - 1)
    total += nb / n * gap
  return total


@pytest.mark.parametrize("binning", ["width", "mass"])
def test_l2_calibration_error_matches_numpy(binning):
  probs, labels = _data(0)
  keep = np.arange(400) % 9 != 4
  probs_nan = np.where(keep[:, None], probs, np.nan).astype(np.float32)
  conf, corr = _top(probs[keep], labels[keep])
  m = 12
  bins = _width_bins(conf, m) if binning == "width" else _mass_bins(conf, corr, m)
  for debias in (False, True):
    e2 = _l2_squared(conf, corr, bins, m, debias)
    got2 = M.l2_calibration_error(probs_nan, labels, num_bins=m, where=keep, debias=debias, squared=True, binning=binning)
    got = M.l2_calibration_error(probs_nan, labels, num_bins=m, where=keep, debias=debias, binning=binning)
    np.testing.assert_allclose(float(got2), e2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(got), np.sqrt(max(e2, 0)), rtol=1e-5, atol=1e-7)
  # RMSCE (Hendrycks et al. 2019) is the equal-mass plug-in: sqrt(sum_b (n_b/N)(acc_b - conf_b)^2).
  if binning == "mass":
    np.testing.assert_allclose(
      float(M.rmsce(probs_nan, labels, num_bins=m, where=keep)), np.sqrt(_l2_squared(conf, corr, bins, m, False)),
      rtol=1e-5,
    )


def test_l2_from_merged_stats_and_debiased_can_be_negative():
  probs, labels = _data(1)
  a = M.calibration_stats(probs[:150], labels[:150], num_bins=10, classwise=False)
  b = M.calibration_stats(probs[150:], labels[150:], num_bins=10, classwise=False)
  merged = M.l2_calibration_error_from_stats(M.merge(a, b), debias=True, squared=True)
  np.testing.assert_allclose(merged, M.l2_calibration_error(probs, labels, num_bins=10, debias=True, squared=True),
                             rtol=1e-5)
  # One bin, 4 examples at confidence 0.75 with 3 correct: plug-in gap 0, debiased 0 - 0.75 * 0.25 / 3 = -1/16.
  p = np.array([[0.75, 0.25]] * 4, np.float32)
  y = np.array([0, 0, 0, 1], np.int32)
  assert float(M.l2_calibration_error(p, y, num_bins=1, squared=True)) == 0.0
  np.testing.assert_allclose(float(M.l2_calibration_error(p, y, num_bins=1, debias=True, squared=True)), -1 / 16)
  assert float(M.l2_calibration_error(p, y, num_bins=1, debias=True)) == 0.0  # sqrt(max(E2, 0))


def test_debiased_l2_is_unbiased_where_the_plugin_is_not():
  """A perfectly calibrated synthetic model: P(correct | confidence c) = c, so every binned calibration error is 0
  in the population. Over many test sets the plug-in squared error averages clearly above 0 (its bias is about
  sum_b conf_b(1 - conf_b)/N), while the debiased estimate averages 0 within its standard error."""
  seeds, n, m = 400, 120, 10
  rng = np.random.default_rng(0)
  c = rng.uniform(0.5, 1.0, size=(seeds, n))
  probs = np.stack([c, 1 - c], -1).astype(np.float32)
  labels = (rng.random((seeds, n)) >= c).astype(np.int32)  # label 0 (the top class) with probability c
  fn = lambda d: jax.vmap(lambda p, y: M.l2_calibration_error(p, y, num_bins=m, debias=d, squared=True))
  plugin = np.asarray(fn(False)(probs, labels), np.float64)
  debiased = np.asarray(fn(True)(probs, labels), np.float64)
  se = lambda x: x.std(ddof=1) / np.sqrt(x.size)
  assert plugin.mean() > 10 * se(plugin)
  assert abs(debiased.mean()) < 3 * se(debiased)
  # Size of the plug-in's bias given the confidences: E[(conf_b - acc_b)^2] = Var(acc_b) = sum_{i in b} c_i(1 - c_i)/n_b^2.
  def plugin_bias(ci):
    b = _width_bins(ci, m)
    return sum(np.sum(ci[b == j] * (1 - ci[b == j])) / np.sum(b == j) for j in range(m) if np.any(b == j)) / ci.size

  expected = np.mean([plugin_bias(ci) for ci in probs[..., 0].astype(np.float64)])
  np.testing.assert_allclose(plugin.mean(), expected, atol=3 * se(plugin))


def test_equal_mass_stats_with_weights_is_the_repeated_sample():
  probs, labels = _data(2, n=100)
  w = np.random.default_rng(1).poisson(1.0, 100).astype(np.int32)
  got = M.equal_mass_stats(probs, labels, num_bins=7, weights=w)
  idx = np.repeat(np.arange(100), w)
  conf, corr = _top(probs[idx], labels[idx])
  b = _value_edge_bins(conf, 7)  # the copies of an example are ties: they stay in one bin
  # Compared as the multiset of non-empty bins (duplicate edges leave empty bins in the library's fixed M slots).
  nonempty = np.asarray(got.count) > 0
  ref = [j for j in range(7) if np.any(b == j)]
  np.testing.assert_array_equal(np.asarray(got.count)[nonempty], [np.sum(b == j) for j in ref])
  np.testing.assert_array_equal(np.asarray(got.correct)[nonempty], [corr[b == j].sum() for j in ref])
  np.testing.assert_allclose(np.asarray(got.conf_sum)[nonempty], [conf[b == j].sum() for j in ref], rtol=1e-5)
  # Unit weights: the adaptive ECE of the library's existing definition.
  np.testing.assert_allclose(M.ece_from_stats(M.equal_mass_stats(probs, labels, num_bins=7)),
                             M.adaptive_ece(probs, labels, num_bins=7), rtol=1e-5)


# ----------------------------------------------------------------------------------------------- smooth ECE


def _reflected_kernel(t, c, sigma):
  """K(t, c) = sum_k phi_sigma(t - c - 2k) + phi_sigma(t + c - 2k) (Blasiok & Nakkiran 2023); |k| <= 2 is exact to
  1e-30 for sigma <= 0.35 (the next terms are >= 3 away)."""
  out = np.zeros((t.size, c.size))
  for k in range(-2, 3):
    for u in (t[:, None] - c[None, :] - 2 * k, t[:, None] + c[None, :] - 2 * k):
      out += np.exp(-0.5 * (u / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
  return out


def _smece_sigma(conf, corr, sigma, points=6001):
  """smECE_sigma = int_0^1 |(1/n) sum_i K(t, c_i)(y_i - c_i)| dt on the raw confidences (no grid), fine trapezoid."""
  t = np.linspace(0, 1, points)
  h = _reflected_kernel(t, conf, sigma) @ (corr - conf) / conf.size
  return np.trapezoid(np.abs(h), t)


def test_smooth_ece_at_fixed_sigma_matches_the_kernel_integral():
  probs, labels = _data(3, n=300)
  conf, corr = _top(probs, labels)
  for sigma in (0.02, 0.07, 0.3):
    np.testing.assert_allclose(float(M.smooth_ece(probs, labels, sigma=sigma)), _smece_sigma(conf, corr, sigma),
                               rtol=2e-4)


def test_smooth_ece_fixed_point_matches_root_of_reference():
  # A smoothly miscalibrated model, P(correct | c) = c + 0.08 sin(9c), with enough data for sigma* to lie where
  # smECE_sigma still decreases (so the bandwidth rule matters).
  rng = np.random.default_rng(4)
  n = 600
  c = rng.uniform(0.5, 1.0, n)
  z = rng.random(n) < np.clip(c + 0.08 * np.sin(9 * c), 0, 1)
  probs = np.stack([c, 1 - c], -1).astype(np.float32)
  labels = np.where(z, 0, 1).astype(np.int32)  # the top class 0 is correct iff z
  conf, corr = _top(probs, labels)
  ref = lambda s: _smece_sigma(conf, corr, s, points=2001)
  root = optimize.brentq(lambda s: ref(s) - s, 0.005, 0.5, xtol=1e-8)
  assert ref(0.5 * root) > 1.1 * ref(2 * root)
  value, sigma = M.smooth_ece(probs, labels, return_sigma=True)
  np.testing.assert_allclose(float(sigma), root, rtol=1e-3)
  np.testing.assert_allclose(float(value), root, rtol=1e-3)  # at the fixed point smECE = sigma*


def test_smooth_ece_stats_merge_psum_mask_and_known_values():
  probs, labels = _data(5, n=256)
  keep = np.arange(256) % 4 != 1
  whole = M.smooth_ece_stats(probs, labels, where=keep)
  parts = jax.vmap(lambda p, y, w: M.smooth_ece_stats(p, y, where=w, axis_name="b"), axis_name="b")(
    probs.reshape(4, 64, -1), labels.reshape(4, 64), keep.reshape(4, 64)
  )
  merged = M.merge(
    M.smooth_ece_stats(probs[:128], labels[:128], where=keep[:128]),
    M.smooth_ece_stats(probs[128:], labels[128:], where=keep[128:]),
  )
  for other in (merged, jax.tree.map(lambda x: x[2], parts)):
    assert int(other.count) == int(whole.count) == keep.sum()
    np.testing.assert_allclose(other.residual, whole.residual, atol=1e-5)
  np.testing.assert_allclose(M.smooth_ece_from_stats(merged), M.smooth_ece(probs[keep], labels[keep]), rtol=1e-5)
  # Every prediction a confident correct one: zero residual, smECE = 0 at any bandwidth.
  onehot = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]
  assert float(M.smooth_ece(onehot, np.array([0, 1, 2, 1], np.int32), sigma=0.1)) == 0.0
  # All confidences 1 and all wrong: |residual| = 1 everywhere, smECE_sigma = 1 for every sigma, sigma* = 1.
  v, s = M.smooth_ece(onehot, np.array([1, 2, 0, 0], np.int32), return_sigma=True)
  np.testing.assert_allclose([float(v), float(s)], [1.0, 1.0], rtol=1e-5)


def test_bad_input():
  probs, labels = _data(6, n=10)
  with pytest.raises(ValueError, match="l2_calibration_error: `binning`"):
    M.l2_calibration_error(probs, labels, binning="quantile")
  with pytest.raises(ValueError, match="smooth_ece: `sigma`"):
    M.smooth_ece(probs, labels, sigma=0.0)
  with pytest.raises(ValueError, match="smooth_ece_stats: `grid_size`"):
    M.smooth_ece_stats(probs, labels, grid_size=2)
  with pytest.raises(ValueError, match="equal_mass_stats: `weights`"):
    M.equal_mass_stats(probs, labels, weights=np.ones(10, np.float32))
  with pytest.raises(TypeError, match="labels"):
    M.rmsce(probs, labels.astype(np.float32))
