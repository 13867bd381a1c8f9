"""Poisson-bootstrap intervals: per-resample values against a float64 NumPy bootstrap with the same weights,
merge of shards (8 fake devices, shard_map + psum) equal to the whole test set, determinism, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P
from scipy import special

from gence_jax import metrics as M

N, K, R, BINS = 384, 4, 40, 10


def _data(seed, n=N, k=K, scale=1.7):
  rng = np.random.default_rng(seed)
  t = rng.normal(size=(n, k)) * 2
  labels = (special.softmax(t, 1).cumsum(1) > rng.random((n, 1))).argmax(1).astype(np.int32)
  return special.softmax(scale * t, axis=1).astype(np.float32), labels


def _bins(v, m):
  return np.clip(np.ceil(v * m) - 1, 0, m - 1).astype(int)


def _reference(probs, labels, m):
  """Every metric of one (expanded) sample, float64 NumPy, from the definitions in docs/calibration.md."""
  p = probs.astype(np.float64)
  n, k = p.shape
  onehot = np.eye(k)[labels]
  conf, pred = p.max(1), p.argmax(1)
  corr = (pred == labels).astype(np.float64)
  b = _bins(conf, m)
  gaps = [abs(corr[b == j].mean() - conf[b == j].mean()) for j in range(m) if (b == j).any()]
  ece = sum((b == j).sum() / n * abs(corr[b == j].mean() - conf[b == j].mean()) for j in range(m) if (b == j).any())
  cw = 0.0
  for c in range(k):
    bc = _bins(p[:, c], m)
    cw += sum(abs(onehot[bc == j, c].sum() - p[bc == j, c].sum()) for j in range(m)) / n
  # Equal-mass bins with value edges (Kumar et al.'s get_equal_bins construction at the ranks ceil(j n / m)): the
  # midpoint of the sorted confidences either side of each cut, a value <= edge in the lower bin, so the copies of
  # a resampled example (ties) always share a bin.
  s = np.sort(conf)
  edges = np.asarray([(s[c - 1] + s[c]) / 2 for c in (-(-j * n // m) for j in range(1, m)) if 0 < c < n] + [np.inf])
  ab = np.searchsorted(edges, conf, side="left")
  ada = sum(abs(corr[ab == j].sum() - conf[ab == j].sum()) for j in range(edges.size)) / n
  return {
    "accuracy": corr.mean(),
    "nll": -np.log(p[np.arange(n), labels]).mean(),
    "brier": ((p - onehot) ** 2).sum(1).mean(),
    "ece": ece,
    "mce": max(gaps),
    "classwise_ece": cw / k,
    "sce": cw / k,
    "adaptive_ece": ada,
  }


def test_resamples_match_numpy_bootstrap_with_the_same_weights():
  probs, labels = _data(0)
  keep = np.arange(N) % 7 != 3
  probs_nan = np.where(keep[:, None], probs, np.nan).astype(np.float32)  # masked rows count nowhere
  weights = np.asarray(M.bootstrap_weights(np.arange(N), num_resamples=R, seed=3))
  assert weights.shape == (N, R) and weights.dtype == np.int32
  stats = M.bootstrap_stats(probs_nan, labels, num_resamples=R, seed=3, num_bins=BINS, where=keep)
  got = {k: np.asarray(v) for k, v in M.bootstrap_metrics(stats).items()}
  got["adaptive_ece"] = np.asarray(
    M.bootstrap_adaptive_ece(probs_nan, labels, num_resamples=R, seed=3, num_bins=BINS, where=keep)
  )
  np.testing.assert_array_equal(stats.resampled.num_examples, (weights * keep[:, None]).sum(0))
  ref = {name: np.empty(R) for name in M.BOOTSTRAP_METRICS}
  kept = np.flatnonzero(keep)
  for r in range(R):
    idx = np.repeat(kept, weights[kept, r])  # resample r: example i appears w_ir times
    for name, v in _reference(probs[idx], labels[idx], BINS).items():
      ref[name][r] = v
  for name in M.BOOTSTRAP_METRICS:
    np.testing.assert_allclose(got[name], ref[name], rtol=2e-5, atol=2e-6, err_msg=name)

  # Intervals: percentile (NumPy's default linear quantiles) and basic, std with ddof=1, value = unweighted metric.
  out = M.bootstrap_intervals(probs_nan, labels, num_resamples=R, seed=3, num_bins=BINS, where=keep, level=0.9)
  point = _reference(probs[kept], labels[kept], BINS)
  assert set(out) == set(M.BOOTSTRAP_METRICS)
  for name in M.BOOTSTRAP_METRICS:
    lo, hi = np.quantile(ref[name], [0.05, 0.95])
    np.testing.assert_allclose(float(out[name]["value"]), point[name], rtol=2e-5, atol=2e-6, err_msg=name)
    np.testing.assert_allclose([float(out[name]["low"]), float(out[name]["high"])], [lo, hi], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(float(out[name]["std"]), np.std(ref[name], ddof=1), rtol=1e-4, atol=1e-6)
    v = point[name]
    basic = M.resample_interval(got[name], out[name]["value"], level=0.9, method="basic")
    np.testing.assert_allclose([float(basic["low"]), float(basic["high"])], [2 * v - hi, 2 * v - lo], rtol=2e-5,
                               atol=2e-6)


def test_weights_are_poisson_and_depend_only_on_seed_and_global_index():
  w = np.asarray(M.bootstrap_weights(np.arange(2000), num_resamples=100, seed=11))
  # Poisson(1): mean 1, variance 1, P(0) = P(1) = exp(-1), P(2) = exp(-1)/2; 200k draws, bounds ~4 standard errors.
  assert abs(w.mean() - 1) < 0.01 and abs(w.var() - 1) < 0.015
  for k, pk in [(0, np.exp(-1)), (1, np.exp(-1)), (2, np.exp(-1) / 2), (3, np.exp(-1) / 6)]:
    assert abs((w == k).mean() - pk) < 4 * np.sqrt(pk * (1 - pk) / w.size), k
  part = np.asarray(M.bootstrap_weights(np.arange(700, 950), num_resamples=100, seed=11))
  np.testing.assert_array_equal(part, w[700:950])
  shuffled = np.random.default_rng(0).permutation(2000)
  np.testing.assert_array_equal(M.bootstrap_weights(shuffled, num_resamples=100, seed=11), w[shuffled])
  other = np.asarray(M.bootstrap_weights(np.arange(2000), num_resamples=100, seed=12))
  assert (other != w).mean() > 0.5


def test_same_seed_same_intervals():
  probs, labels = _data(1)
  a = M.bootstrap_intervals(probs, labels, num_resamples=R, seed=5, num_bins=BINS)
  b = M.bootstrap_intervals(probs, labels, num_resamples=R, seed=5, num_bins=BINS)
  c = M.bootstrap_intervals(probs, labels, num_resamples=R, seed=6, num_bins=BINS)
  for name in M.BOOTSTRAP_METRICS:
    for key in ("value", "low", "high", "std"):
      assert float(a[name][key]) == float(b[name][key])
  assert float(a["ece"]["low"]) != float(c["ece"]["low"]) and float(a["ece"]["value"]) == float(c["ece"]["value"])


def _assert_stats_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    if np.issubdtype(x.dtype, np.integer):
      np.testing.assert_array_equal(x, y)  # weighted counts: exact
    else:
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-4)  # float sums: up to summation order


def test_merge_of_shards_equals_whole_test_set_on_8_devices():
  assert jax.device_count() >= 8
  probs, labels = _data(2)
  keep = np.arange(N) % 5 != 0
  whole = M.bootstrap_stats(probs, labels, num_resamples=R, seed=9, num_bins=BINS, where=keep)

  mesh = Mesh(np.array(jax.devices()[:8]), ("d",))

  def per_device(p, y, w, idx):
    return M.bootstrap_stats(p, y, num_resamples=R, seed=9, num_bins=BINS, where=w, indices=idx, axis_name="d")

  sharded = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P("d"),) * 4, out_specs=P()))(
    probs, labels, keep, np.arange(N, dtype=np.int32)
  )
  _assert_stats_equal(sharded, whole)

  # An evaluation loop over two batches (global indices offset + arange) merged with M.merge.
  h = N // 2
  first = M.bootstrap_stats(probs[:h], labels[:h], num_resamples=R, seed=9, num_bins=BINS, where=keep[:h])
  second = M.bootstrap_stats(
    probs[h:], labels[h:], num_resamples=R, seed=9, num_bins=BINS, where=keep[h:], indices=h + np.arange(h)
  )
  merged = M.merge(first, second)
  _assert_stats_equal(merged, whole)
  a = M.bootstrap_intervals_from_stats(merged)
  b = M.bootstrap_intervals_from_stats(whole)
  for name in a:
    for key in a[name]:
      np.testing.assert_allclose(a[name][key], b[name][key], rtol=1e-5, atol=1e-6)


def test_bad_input():
  probs, labels = _data(3, n=20)
  with pytest.raises(ValueError, match="bootstrap_stats: `num_resamples`"):
    M.bootstrap_stats(probs, labels, num_resamples=1)
  with pytest.raises(TypeError, match="bootstrap_weights: `seed`"):
    M.bootstrap_weights(np.arange(3), seed=1.5)
  with pytest.raises(TypeError, match="bootstrap_weights: `indices`"):
    M.bootstrap_weights(np.zeros(3))
  with pytest.raises(ValueError, match="bootstrap_stats: `indices`"):
    M.bootstrap_stats(probs, labels, indices=np.arange(19))
  with pytest.raises(ValueError, match="bootstrap_intervals: `level`"):
    M.bootstrap_intervals(probs, labels, level=1.0)
  with pytest.raises(ValueError, match="resample_interval: `method`"):
    M.resample_interval(jnp.ones(5), 1.0, method="bca")
