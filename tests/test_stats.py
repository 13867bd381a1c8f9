"""Across-seed statistics against SciPy (ttest_rel, wilcoxon, t.ppf / t.interval), hand-computed cases, and the
Wilson interval against the root of its defining inequality."""

import math

import numpy as np
import pytest
from scipy import optimize
from scipy import stats as sps

from gence_jax import stats


def test_summarize_mean_std_and_t_interval():
  v = [0.031, 0.027, 0.035, 0.029, 0.040]
  out = stats.summarize(v, seeds=[0, 1, 2, 3, 4])
  a = np.asarray(v)
  sd = math.sqrt(sum((x - a.mean()) ** 2 for x in v) / 4)
  half = sps.t.ppf(0.975, 4) * sd / math.sqrt(5)
  assert out["n"] == 5 and out["seeds"] == [0, 1, 2, 3, 4] and out["level"] == 0.95
  np.testing.assert_allclose([out["mean"], out["std"]], [a.mean(), sd], rtol=1e-12)
  np.testing.assert_allclose([out["ci_low"], out["ci_high"]], [a.mean() - half, a.mean() + half], rtol=1e-12)
  lo, hi = sps.t.interval(0.9, 4, loc=a.mean(), scale=sps.sem(a))
  got = stats.summarize(v, level=0.9)
  np.testing.assert_allclose([got["ci_low"], got["ci_high"]], [lo, hi], rtol=1e-12)
  # A mapping: seeds are its keys. One value: mean only, std and interval NaN.
  m = stats.summarize({7: 1.0, 9: 3.0})
  assert m["seeds"] == [7, 9] and m["mean"] == 2.0 and m["std"] == pytest.approx(math.sqrt(2))
  one = stats.summarize([0.5])
  assert one["mean"] == 0.5 and one["n"] == 1 and all(math.isnan(one[k]) for k in ("std", "ci_low", "ci_high"))


def test_paired_difference_against_scipy():
  rng = np.random.default_rng(0)
  ref = rng.normal(0.05, 0.01, 8)
  val = ref - 0.004 + rng.normal(0, 0.003, 8)
  out = stats.paired_difference(val, ref)
  d = val - ref
  half = sps.t.ppf(0.975, 7) * d.std(ddof=1) / math.sqrt(8)
  np.testing.assert_allclose(out["mean_diff"], d.mean(), rtol=1e-12)
  np.testing.assert_allclose(out["std"], d.std(ddof=1), rtol=1e-12)
  np.testing.assert_allclose([out["ci_low"], out["ci_high"]], [d.mean() - half, d.mean() + half], rtol=1e-12)
  np.testing.assert_allclose(out["t_pvalue"], sps.ttest_rel(val, ref).pvalue, rtol=1e-10)
  np.testing.assert_allclose(out["wilcoxon_pvalue"], sps.wilcoxon(val, ref).pvalue, rtol=1e-10)
  assert out["wilcoxon_note"] is None and out["n"] == 8


def test_paired_difference_hand_computed_and_edge_cases():
  # Six positive differences with distinct magnitudes: W- = 0; the exact two-sided p is 2 / 2^6 = 0.03125.
  ref = [0.0] * 6
  out = stats.paired_difference([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], ref)
  assert out["wilcoxon_pvalue"] == pytest.approx(2 / 64, rel=1e-12)
  # Paired t by hand: d = (1, 2, 3), mean 2, sd 1, t = 2 sqrt(3) on 2 df.
  out = stats.paired_difference([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
  assert out["t_pvalue"] == pytest.approx(2 * sps.t.sf(2 * math.sqrt(3), 2), rel=1e-12)
  assert out["wilcoxon_pvalue"] is None and "0.25" in out["wilcoxon_note"]  # 3 non-zero: smallest p = 2^-2
  zero = stats.paired_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
  assert zero["t_pvalue"] == 1.0 and zero["wilcoxon_pvalue"] is None and "zero" in zero["wilcoxon_note"]
  const = stats.paired_difference([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
  assert const["std"] == 0.0 and const["t_pvalue"] == 0.0 and const["ci_low"] == const["ci_high"] == 1.0
  # Mappings pair by seed, whatever their order.
  by_seed = stats.paired_difference({0: 1.0, 1: 5.0, 2: 2.0}, {2: 1.0, 0: 0.5, 1: 4.0})
  assert by_seed["mean_diff"] == pytest.approx((0.5 + 1.0 + 1.0) / 3) and by_seed["seeds"] == [0, 1, 2]


def test_errors():
  with pytest.raises(ValueError, match="paired_difference: `values` has 3 entries and `reference` 2"):
    stats.paired_difference([1, 2, 3], [1, 2])
  with pytest.raises(ValueError, match="paired_difference: needs at least 2 pairs"):
    stats.paired_difference([1.0], [2.0])
  with pytest.raises(ValueError, match=r"paired_difference: seeds \[3\]"):
    stats.paired_difference({0: 1.0, 3: 2.0}, {0: 1.0})
  with pytest.raises(TypeError, match="paired_difference: `values` and `reference` must both"):
    stats.paired_difference({0: 1.0, 1: 2.0}, [1.0, 2.0])
  with pytest.raises(ValueError, match="summarize: `values` is empty"):
    stats.summarize([])
  with pytest.raises(ValueError, match="summarize: `values` contains NaN"):
    stats.summarize([1.0, float("nan")])
  with pytest.raises(ValueError, match="summarize: `seeds` has 1 entries"):
    stats.summarize([1.0, 2.0], seeds=[0])
  with pytest.raises(ValueError, match="summarize: `level`"):
    stats.summarize([1.0, 2.0], level=95)


def test_wilson_interval_solves_its_inequality():
  k = np.array([0, 3, 10, 17, 20, 0])
  n = np.array([10, 10, 10, 20, 20, 0])
  low, high = stats.wilson_interval(k, n, level=0.9)
  z = sps.norm.ppf(0.95)
  for ki, ni, lo, hi in zip(k, n, low, high):
    if ni == 0:
      assert math.isnan(lo) and math.isnan(hi)
      continue
    p = ki / ni
    g = lambda q: (p - q) ** 2 - z * z * q * (1 - q) / ni  # <= 0 exactly on the Wilson interval
    ref_lo = 0.0 if ki == 0 else optimize.brentq(g, 0.0, p - 1e-9, xtol=1e-14)  # g < 0 just inside, > 0 outside
    ref_hi = 1.0 if ki == ni else optimize.brentq(g, p + 1e-9, 1.0, xtol=1e-14)
    np.testing.assert_allclose([lo, hi], [ref_lo, ref_hi], atol=1e-10)
  # Known closed form at p = 0: upper end z^2 / (n + z^2).
  assert stats.wilson_interval(0, 10)[1] == pytest.approx(sps.norm.ppf(0.975) ** 2 / (10 + sps.norm.ppf(0.975) ** 2))
  with pytest.raises(ValueError, match="wilson_interval: `successes`"):
    stats.wilson_interval(5, 3)
