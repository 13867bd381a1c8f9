"""Tests for gence_jax.plots.reliability_diagram (headless)."""

import numpy as np
import pytest
from scipy import special

from gence_jax import metrics as M
from gence_jax import plots


def _data(seed, n=500, k=5, scale=1.0):
  rng = np.random.default_rng(seed)
  t = rng.normal(size=(n, k)) * 2
  labels = (special.softmax(t, 1).cumsum(1) > rng.random((n, 1))).argmax(1).astype(np.int32)
  return special.softmax(scale * t, axis=1).astype(np.float32), labels


def test_reliability_diagram_png_and_axes(tmp_path):
  a = _data(0, scale=1.0)
  b = _data(0, scale=3.0)
  path = tmp_path / "sub" / "reliability.png"
  fig = plots.reliability_diagram({"calibrated": a, "overconfident": b}, num_bins=15, path=str(path), title="t")
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
  assert len(fig.axes) == 2
  ax, hax = fig.axes
  assert ax.get_ylabel() == "accuracy" and hax.get_ylabel() == "fraction" and ax.get_title() == "t"
  labels = [t.get_text() for t in ax.get_legend().get_texts()]
  assert labels[0] == "perfect calibration"
  assert labels[1].startswith("calibrated (ECE ") and labels[2].startswith("overconfident (ECE ")
  ece_b = float(M.ece(*b, num_bins=15))
  assert f"{100 * ece_b:.2f}%" in labels[2]
  # The plotted points are (mean confidence, accuracy) of the non-empty bins, computed here from the definition.
  probs, y = b
  conf, corr = probs.max(1).astype(np.float64), (probs.argmax(1) == y)
  bins = np.clip(np.ceil(conf * 15) - 1, 0, 14).astype(int)
  xs = [conf[bins == j].mean() for j in range(15) if (bins == j).any()]
  ys = [corr[bins == j].mean() for j in range(15) if (bins == j).any()]
  line = ax.get_lines()[2]  # diagonal, first model, second model
  np.testing.assert_allclose(line.get_xdata(), xs, rtol=1e-5)
  np.testing.assert_allclose(line.get_ydata(), ys, rtol=1e-6)


def test_reliability_diagram_from_stats_and_bad_input(tmp_path):
  p, y = _data(1)
  stats = M.EvalStats.zeros(5, num_bins=10).update(p[:200], y[:200]).update(p[200:], y[200:])
  fig = plots.reliability_diagram({"eval": stats, "calib": M.calibration_stats(p, y, num_bins=20)})
  assert len(fig.axes) == 2
  assert len(fig.axes[0].get_lines()) == 3
  with pytest.raises(ValueError, match="at least one"):
    plots.reliability_diagram({})
  with pytest.raises(TypeError, match="curves\\['x'\\]"):
    plots.reliability_diagram({"x": p})


def test_reliability_diagram_wilson_bars_sparse_bins_and_counts():
  p, y = _data(2, n=300)
  fig = plots.reliability_diagram({"m": (p, y)}, num_bins=10, min_count=20, level=0.9)
  ax, hax = fig.axes
  stats = M.calibration_stats(p, y, num_bins=10, classwise=False)
  count, correct = np.asarray(stats.count), np.asarray(stats.correct)
  ne = count > 0
  # Per-bin bars: the Wilson score interval of correct_b / n_b, from its formula.
  z = 1.6448536269514722  # Phi^-1(0.95)
  ph, n = correct[ne] / count[ne], count[ne].astype(float)
  centre = (ph + z * z / (2 * n)) / (1 + z * z / n)
  half = z / (1 + z * z / n) * np.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n))
  segs = ax.collections[-1].get_segments()
  np.testing.assert_allclose([s[0][1] for s in segs], np.clip(centre - half, 0, 1), atol=1e-7)
  np.testing.assert_allclose([s[1][1] for s in segs], np.clip(centre + half, 0, 1), atol=1e-7)
  # The note names the sparse bins (fewer than 20 examples), which are drawn with open markers.
  sparse = int(np.sum(ne & (count < 20)))
  assert sparse > 0
  notes = " ".join(t.get_text() for t in ax.texts)
  assert "90% Wilson" in notes and f"{sparse} bins with < 20 examples" in notes
  line = ax.get_lines()[1]
  assert len(line.get_markevery()) == int(ne.sum()) - sparse
  # Counts readable on the histogram: a right-hand "count" axis when every model has the same N.
  assert any(getattr(c, "get_ylabel", lambda: "")() == "count" for c in hax.child_axes)
  plain = plots.reliability_diagram({"m": (p, y)}, num_bins=10, interval=None, min_count=0)
  assert not plain.axes[0].texts
  with pytest.raises(ValueError, match="reliability_diagram: `interval`"):
    plots.reliability_diagram({"m": (p, y)}, interval="bootstrap")


def test_metric_curves_mean_and_bands(tmp_path):
  epochs = np.arange(1, 6)
  runs = np.array([[0.9, 0.7, 0.5, 0.4, 0.35], [1.0, 0.8, 0.6, 0.5, np.nan], [0.8, 0.6, 0.55, 0.45, 0.3]])
  path = tmp_path / "curves" / "ece.png"
  fig = plots.metric_curves({"ce": (epochs, runs), "single": (epochs, runs[0])}, "ECE", str(path), "test ECE")
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  (ax,) = fig.axes
  assert ax.get_ylabel() == "ECE" and ax.get_title() == "test ECE" and ax.get_xlabel() == "epoch"
  mean_line, single_line = ax.get_lines()
  expected_mean = [np.mean([v for v in col if not np.isnan(v)]) for col in runs.T]
  np.testing.assert_allclose(mean_line.get_ydata(), expected_mean)
  np.testing.assert_allclose(single_line.get_ydata(), runs[0])
  assert mean_line.get_label() == "ce (3 seeds)" and ax.get_legend().get_title().get_text().startswith("band: mean")
  # Band: mean -/+ sample std (ddof=1) of the seeds present at each epoch.
  verts = ax.collections[0].get_paths()[0].vertices
  sd = [np.std([v for v in col if not np.isnan(v)], ddof=1) for col in runs.T]
  top = np.array(expected_mean) + sd
  for x, t in zip(epochs, top):
    assert np.any(np.isclose(verts[:, 0], x) & np.isclose(verts[:, 1], t))
  # band="ci": Student-t half-width t_{0.975, n-1} sd / sqrt(n); epoch 5 has n = 2.
  from scipy import stats as sps

  ci = plots.metric_curves({"ce": (epochs, runs)}, "ECE", band="ci")
  verts = ci.axes[0].collections[0].get_paths()[0].vertices
  n = np.array([3, 3, 3, 3, 2])
  tops = np.array(expected_mean) + sps.t.ppf(0.975, n - 1) * np.array(sd) / np.sqrt(n)
  for x, t in zip(epochs, tops):
    assert np.any(np.isclose(verts[:, 0], x) & np.isclose(verts[:, 1], t))
  with pytest.raises(ValueError, match="metric_curves: `curves\\['x'\\]`"):
    plots.metric_curves({"x": (epochs, runs[:, :3])}, "ECE")
  with pytest.raises(ValueError, match="metric_curves: `band`"):
    plots.metric_curves({"x": (epochs, runs)}, "ECE", band="iqr")


def test_reliability_panels_one_per_model_and_labelled_ece_bars(tmp_path):
  """Small multiples: one reliability panel (plus histogram) per model, titled with its ECE; the ECE bars of
  `grouped_bars` are 95% t-intervals over seeds, said on the figure, and the legend sits outside the panels."""
  from scipy import stats as sps

  rng = np.random.default_rng(0)
  curves = {}
  for name, scale in (("a", 1.0), ("b", 3.0), ("c", 0.5), ("d", 2.0)):
    z = rng.normal(size=(300, 4)) * scale
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    curves[name] = (p.astype(np.float32), rng.integers(0, 4, 300).astype(np.int32))
  fig = plots.reliability_panels(curves, num_bins=10, path=str(tmp_path / "r.png"), title="pooled", columns=3)
  assert (tmp_path / "r.png").stat().st_size > 0
  titled = [ax for ax in fig.axes if ax.get_title()]
  assert [ax.get_title().split("\n")[0] for ax in titled] == ["a", "b", "c", "d"]
  for ax, name in zip(titled, curves):
    ece = float(M.ece(*curves[name], num_bins=10))
    assert f"ECE {100 * ece:.2f}%" in ax.get_title()
  values = {"clean": {"ce": {"raw": [1.0, 2.0, 4.0], "ts": [1.0, 1.5, 2.0]}}}
  fig = plots.grouped_bars(values, ylabel="ECE")
  (ax,) = fig.axes
  errs = [c for c in ax.containers if hasattr(c, "has_yerr") and c.has_yerr]
  seg = errs[0].lines[2][0].get_segments()[0]
  v = np.array([1.0, 2.0, 4.0])
  half = sps.t.ppf(0.975, 2) * v.std(ddof=1) / np.sqrt(3)
  np.testing.assert_allclose(seg[1][1] - seg[0][1], 2 * half, rtol=1e-6)
  assert any("95% Student-t interval (n = 3)" in t.get_text() for t in fig.texts)
  assert fig.legends and ax.get_legend() is None
