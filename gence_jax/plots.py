"""Reliability diagrams (Guo et al. 2017; DeGroot & Fienberg 1983), headless.

Uses ``matplotlib.figure.Figure`` directly (no pyplot, no global backend switch), so it works on machines without
a display and does not disturb a notebook's backend. PNG output goes through the Agg canvas.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional, Tuple, Union

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gence_jax import metrics as _metrics

CurveInput = Union[Tuple[object, object], "_metrics.CalibrationStats", "_metrics.EvalStats"]


def _to_stats(name, value, num_bins):
  if isinstance(value, _metrics.EvalStats):
    return value.calibration
  if isinstance(value, _metrics.CalibrationStats):
    return value
  if isinstance(value, (tuple, list)) and len(value) == 2:
    probs, labels = value
    return _metrics.calibration_stats(probs, labels, num_bins=num_bins, classwise=False)
  raise TypeError(
    f"curves[{name!r}] must be a (probs, labels) pair, CalibrationStats or EvalStats; got {type(value).__name__}"
  )


def reliability_diagram(
  curves: Mapping[str, CurveInput],
  *,
  num_bins: int = 15,
  path: Optional[str] = None,
  title: Optional[str] = None,
  dpi: int = 150,
) -> Figure:
  """Reliability diagram with a confidence histogram underneath, several models overlaid.

  Top panel: for each model (one colour), the accuracy acc_b of every non-empty top-label confidence bin plotted at
  the bin's mean confidence conf_b (markers joined by a line), the region between that curve and the diagonal
  shaded (the calibration gap), and the diagonal of perfect calibration. The legend gives each model's ECE (%).
  Bottom panel: the fraction of examples per bin (n_b / N) as a step histogram per model, log-scaled.
  Bins follow :mod:`gence_jax.metrics` (equal width, edges b / M, (lo, hi], 0 -> first, 1.0 -> last).

  Args:
    curves: ``{name: (probs [N, K], labels [N])}`` or ``{name: CalibrationStats | EvalStats}`` (precomputed,
      e.g. accumulated over an evaluation loop; their own number of bins is used and ``num_bins`` is ignored).
    num_bins: number of bins for (probs, labels) inputs.
    path: if given, the figure is saved there as PNG (parent directories are created).
    title: optional figure title.
    dpi: resolution of the saved PNG.

  Returns:
    the ``matplotlib.figure.Figure`` (axes: ``fig.axes[0]`` reliability, ``fig.axes[1]`` histogram).
  """
  if not curves:
    raise ValueError("curves must contain at least one model")
  fig = Figure(figsize=(6.0, 6.5), layout="constrained")
  FigureCanvasAgg(fig)
  ax, hax = fig.subplots(2, 1, sharex=True, gridspec_kw=dict(height_ratios=[3, 1]))
  ax.plot([0, 1], [0, 1], ls="--", color="0.4", lw=1, label="perfect calibration")
  colours = [c["color"] for c in matplotlib.rcParams["axes.prop_cycle"]]
  for i, (name, value) in enumerate(curves.items()):
    stats = _to_stats(name, value, num_bins)
    colour = colours[i % len(colours)]
    count = np.asarray(stats.count, np.float64)
    n = count.sum()
    nonempty = count > 0
    conf = np.asarray(stats.conf_sum, np.float64)[nonempty] / count[nonempty]
    acc = np.asarray(stats.correct, np.float64)[nonempty] / count[nonempty]
    ece = float(_metrics.ece_from_stats(stats))
    ax.fill_between(conf, acc, conf, color=colour, alpha=0.15, lw=0)
    ax.plot(conf, acc, marker="o", ms=4, lw=1.5, color=colour, label=f"{name} (ECE {100 * ece:.2f}%)")
    edges = np.arange(stats.num_bins + 1) / stats.num_bins
    frac = count / max(n, 1.0)
    hax.stairs(np.where(frac > 0, frac, np.nan), edges, color=colour, lw=1.5)
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1)
  ax.set_ylabel("accuracy")
  ax.grid(alpha=0.3)
  ax.legend(loc="upper left", fontsize="small", framealpha=0.9)
  if title:
    ax.set_title(title)
  hax.set_yscale("log")
  hax.set_xlabel("confidence (top-label probability)")
  hax.set_ylabel("fraction")
  hax.grid(alpha=0.3)
  if path is not None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)
  return fig
