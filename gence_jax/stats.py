"""Statistics across seeds (host side, NumPy/SciPy): summaries with t-intervals, paired comparisons, Wilson intervals.

Conventions:

* ``values`` are one number per run (seed), e.g. the test ECE of 5 seeds. They may be given as a sequence, or as a
  mapping ``{seed: value}``; :func:`paired_difference` pairs mappings by seed (the same seed means the same data
  split and the same noisy labels, so the runs are paired).
* Standard deviations are sample standard deviations (ddof = 1). Intervals are two-sided at ``level`` (0.95).
* With one run, :func:`summarize` returns the mean and NaN for std and the interval (the spread is unknown, and NaN
  keeps a results table going); :func:`paired_difference` needs at least 2 pairs and raises otherwise.
* Results are Python floats / ints (JSON-ready).
"""

from __future__ import annotations

import math
import numbers
from typing import Mapping, Optional, Sequence, Union

import numpy as np
from scipy import stats as _sps

Values = Union[Sequence[float], np.ndarray, Mapping[object, float]]

#: Fewest non-zero differences for which :func:`paired_difference` reports a Wilcoxon p-value (see there).
MIN_WILCOXON_NONZERO = 6


def _check_level(fn: str, level) -> float:
  if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
    raise ValueError(f"{fn}: `level` must be a number in (0, 1), got {level!r}.")
  return float(level)


def _as_array(fn: str, name: str, values) -> tuple:
  """(float64 array [n], keys or None) of a sequence or {key: value} mapping of finite numbers."""
  keys = None
  if isinstance(values, Mapping):
    keys = list(values)
    values = [values[k] for k in keys]
  try:
    arr = np.asarray(values, dtype=np.float64)
  except (TypeError, ValueError):
    raise TypeError(f"{fn}: `{name}` must be a sequence or mapping of numbers, got {type(values).__name__}.") from None
  if arr.ndim != 1:
    raise ValueError(f"{fn}: `{name}` must be one-dimensional (one value per seed), got shape {arr.shape}.")
  if arr.size == 0:
    raise ValueError(f"{fn}: `{name}` is empty.")
  if not np.all(np.isfinite(arr)):
    raise ValueError(f"{fn}: `{name}` contains NaN or inf: {arr.tolist()}.")
  return arr, keys


def t_interval(mean: float, std: float, n: int, level: float = 0.95) -> tuple:
  """Student-t interval mean -/+ t_{(1+level)/2, n-1} std / sqrt(n); (nan, nan) when n < 2."""
  if n < 2:
    return math.nan, math.nan
  half = float(_sps.t.ppf((1 + level) / 2, n - 1)) * std / math.sqrt(n)
  return mean - half, mean + half


def summarize(values: Values, *, seeds: Optional[Sequence] = None, level: float = 0.95) -> dict:
  """Mean, sample std and Student-t interval of one value per seed.

      mean = (1/n) sum_i v_i,   std = sqrt( sum_i (v_i - mean)^2 / (n - 1) ),
      [ci_low, ci_high] = mean -/+ t_{(1+level)/2, n-1} * std / sqrt(n)

  (the t-interval assumes the per-seed values are i.i.d. and roughly normal; with 3-5 seeds it is wide, as it
  should be).

  Args:
    values: a sequence of numbers, or ``{seed: value}`` (then ``seeds`` are its keys).
    seeds: optional seed of each value (returned as given, to keep the provenance of the numbers).
    level: two-sided confidence level.

  Returns:
    ``{"mean", "std", "n", "ci_low", "ci_high", "level"}`` plus ``"seeds"`` when known. With n = 1, ``std``,
    ``ci_low`` and ``ci_high`` are NaN.
  """
  level = _check_level("summarize", level)
  arr, keys = _as_array("summarize", "values", values)
  if seeds is not None and keys is not None:
    raise ValueError("summarize: give `seeds` or a mapping of `values`, not both.")
  if seeds is not None and len(seeds) != arr.size:
    raise ValueError(f"summarize: `seeds` has {len(seeds)} entries for {arr.size} values.")
  n = int(arr.size)
  mean = float(arr.mean())
  std = float(arr.std(ddof=1)) if n > 1 else math.nan
  lo, hi = t_interval(mean, std, n, level)
  out = {"mean": mean, "std": std, "n": n, "ci_low": lo, "ci_high": hi, "level": level}
  seeds = keys if keys is not None else seeds
  if seeds is not None:
    out["seeds"] = list(seeds)
  return out


def _pair(values, reference):
  a, ka = _as_array("paired_difference", "values", values)
  b, kb = _as_array("paired_difference", "reference", reference)
  if (ka is None) != (kb is None):
    raise TypeError("paired_difference: `values` and `reference` must both be sequences or both be {seed: value}.")
  if ka is not None:
    missing = sorted(set(ka) ^ set(kb), key=str)
    if missing:
      raise ValueError(f"paired_difference: seeds {missing} are in only one of `values` and `reference`.")
    b = np.asarray([reference[k] for k in ka], np.float64)
  elif a.size != b.size:
    raise ValueError(f"paired_difference: `values` has {a.size} entries and `reference` {b.size}; they must pair up.")
  if a.size < 2:
    raise ValueError(f"paired_difference: needs at least 2 pairs for a spread and a test, got {a.size}.")
  return a, b, ka


def paired_difference(
  values: Values, reference: Values, *, level: float = 0.95, min_wilcoxon: int = MIN_WILCOXON_NONZERO
) -> dict:
  """Paired comparison of ``values`` with ``reference`` (same seeds), on the differences d_i = v_i - r_i.

      mean_diff = (1/n) sum_i d_i,   std = sample std of d (ddof = 1),
      [ci_low, ci_high] = mean_diff -/+ t_{(1+level)/2, n-1} std / sqrt(n)
      t_pvalue: two-sided paired t-test, t = mean_diff / (std / sqrt(n)) with n - 1 degrees of freedom
        (Student 1908; scipy.stats.ttest_rel). When std = 0 it is 1.0 if every d_i = 0 and 0.0 otherwise.
      wilcoxon_pvalue: two-sided Wilcoxon signed-rank test (Wilcoxon 1945) of the differences, zeros dropped
        (Wilcoxon's convention), exact null distribution when there are no ties (scipy.stats.wilcoxon,
        ``zero_method="wilcox"``, ``method="auto"``).

  The Wilcoxon p-value is None, with the reason in ``wilcoxon_note``, when every difference is zero or fewer than
  ``min_wilcoxon`` (6) differences are non-zero: with m non-zero differences the smallest two-sided p-value the test
  can give is 2^(1-m), so for m <= 5 it can never reach 0.05 (m = 5: 0.0625) and reporting it would suggest a test
  that was not really possible.

  Args:
    values, reference: one value per seed each; sequences paired by position, or ``{seed: value}`` mappings paired
      by seed (the seed sets must be equal).
    level: two-sided confidence level of the t-interval.
    min_wilcoxon: fewest non-zero differences for a Wilcoxon p-value.

  Returns:
    ``{"mean_diff", "std", "n", "ci_low", "ci_high", "level", "t_pvalue", "wilcoxon_pvalue", "wilcoxon_note"}``
    (+ ``"seeds"`` for mappings). Positive ``mean_diff``: ``values`` larger than ``reference``.
  """
  level = _check_level("paired_difference", level)
  if isinstance(min_wilcoxon, bool) or not isinstance(min_wilcoxon, numbers.Integral) or min_wilcoxon < 1:
    raise ValueError(f"paired_difference: `min_wilcoxon` must be an integer >= 1, got {min_wilcoxon!r}.")
  a, b, keys = _pair(values, reference)
  d = a - b
  n = int(d.size)
  mean = float(d.mean())
  std = float(d.std(ddof=1))
  lo, hi = t_interval(mean, std, n, level)
  if std > 0:
    t = mean / (std / math.sqrt(n))
    t_p = float(2 * _sps.t.sf(abs(t), n - 1))
  else:
    t_p = 1.0 if mean == 0 else 0.0
  nonzero = int(np.count_nonzero(d))
  w_p, note = None, None
  if nonzero == 0:
    note = "every difference is zero: the signed-rank test is undefined"
  elif nonzero < min_wilcoxon:
    note = (
      f"only {nonzero} non-zero differences: the smallest attainable two-sided p-value is "
      f"{2.0 ** (1 - nonzero):.4g}; needs >= {min_wilcoxon}"
    )
  else:
    w_p = float(_sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
  out = {
    "mean_diff": mean,
    "std": std,
    "n": n,
    "ci_low": lo,
    "ci_high": hi,
    "level": level,
    "t_pvalue": t_p,
    "wilcoxon_pvalue": w_p,
    "wilcoxon_note": note,
  }
  if keys is not None:
    out["seeds"] = list(keys)
  return out


def wilson_interval(
  successes: np.typing.ArrayLike, trials: np.typing.ArrayLike, *, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
  """Wilson score interval for a binomial proportion (Wilson 1927), elementwise.

      center = (p + z^2 / (2n)) / (1 + z^2 / n),   half = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))

  with p = successes / trials, n = trials, z = Phi^-1((1 + level) / 2): the set of proportions q with
  |p - q| <= z sqrt(q (1 - q) / n). Unlike the normal (Wald) interval it stays inside [0, 1] and is not empty at
  p = 0 or 1, which matters for sparse reliability-diagram bins. Returns ``(low, high)`` float64 arrays; NaN where
  ``trials`` is 0.
  """
  level = _check_level("wilson_interval", level)
  k = np.asarray(successes, np.float64)
  n = np.asarray(trials, np.float64)
  if np.any(k < 0) or np.any(k > n):
    raise ValueError("wilson_interval: `successes` must lie in [0, trials].")
  z = float(_sps.norm.ppf((1 + level) / 2))
  with np.errstate(invalid="ignore", divide="ignore"):
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = np.where(n > 0, np.clip(center - half, 0, 1), np.nan)
    high = np.where(n > 0, np.clip(center + half, 0, 1), np.nan)
  return low, high
