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
