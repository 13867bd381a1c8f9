"""Reliability diagrams (Guo et al. 2017; DeGroot & Fienberg 1983) with per-bin intervals, and metric-over-epoch
curves with across-seed bands, headless.

Uses ``matplotlib.figure.Figure`` directly (no pyplot, no global backend switch), so it works on machines without
a display and does not disturb a notebook's backend. PNG output goes through the Agg canvas.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional, Tuple, Union

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gence_jax import metrics as _metrics
from gence_jax import stats as _stats

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


def _save(fig, path, dpi):
  if path is not None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)


def reliability_diagram(
  curves: Mapping[str, CurveInput],
  *,
  num_bins: int = 15,
  path: Optional[str] = None,
  title: Optional[str] = None,
  dpi: int = 150,
  interval: Optional[str] = "wilson",
  level: float = 0.95,
  min_count: int = 20,
) -> Figure:
  """Reliability diagram with per-bin intervals and a confidence histogram underneath, several models overlaid.

  Top panel: for each model (one colour), the accuracy acc_b of every non-empty top-label confidence bin plotted at
  the bin's mean confidence conf_b (markers joined by a line), the region between that curve and the diagonal
  shaded (the calibration gap), and the diagonal of perfect calibration. The legend gives each model's ECE (%).
  With ``interval="wilson"`` each bin carries a vertical bar: the Wilson score interval (:func:`stats.wilson_interval`,
  at ``level``) of acc_b = correct_b / n_b, i.e. the uncertainty of the bin's accuracy given its n_b examples
  (binomial, conditional on which examples fell in the bin). Bins with fewer than ``min_count`` examples get open
  markers, and a note on the panel says how many there are.
  Bottom panel: the fraction of examples per bin (n_b / N) as a step histogram per model, log-scaled; when every
  model has the same N, a right-hand axis reads the same bars as counts n_b.
  Bins follow :mod:`gence_jax.metrics` (equal width, edges b / M, (lo, hi], 0 -> first, 1.0 -> last).

  Args:
    curves: ``{name: (probs [N, K], labels [N])}`` or ``{name: CalibrationStats | EvalStats}`` (precomputed,
      e.g. accumulated over an evaluation loop; their own number of bins is used and ``num_bins`` is ignored).
    num_bins: number of bins for (probs, labels) inputs.
    path: if given, the figure is saved there as PNG (parent directories are created).
    title: optional figure title.
    dpi: resolution of the saved PNG.
    interval: ``"wilson"`` (default) or None (no bars).
    level: confidence level of the per-bin intervals.
    min_count: bins with fewer examples are marked as sparse (open markers and a note).

  Returns:
    the ``matplotlib.figure.Figure`` (axes: ``fig.axes[0]`` reliability, ``fig.axes[1]`` histogram).
  """
  if not curves:
    raise ValueError("reliability_diagram: `curves` must contain at least one model")
  if interval not in ("wilson", None):
    raise ValueError(f"reliability_diagram: `interval` must be 'wilson' or None, got {interval!r}.")
  if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 0:
    raise ValueError(f"reliability_diagram: `min_count` must be an integer >= 0, got {min_count!r}.")
  fig = Figure(figsize=(6.0, 6.5), layout="constrained")
  FigureCanvasAgg(fig)
  ax, hax = fig.subplots(2, 1, sharex=True, gridspec_kw=dict(height_ratios=[3, 1]))
  colours = [c["color"] for c in matplotlib.rcParams["axes.prop_cycle"]]
  _diagonal(ax)
  drawn = [
    _draw_reliability(ax, hax, name, _to_stats(name, value, num_bins), colours[i % len(colours)], interval, level,
                      min_count)
    for i, (name, value) in enumerate(curves.items())
  ]
  _finish_reliability(ax, hax, drawn, interval, level, min_count, title)
  _save(fig, path, dpi)
  return fig


def _draw_reliability(ax, hax, name, stats, colour, interval, level, min_count, label=None):
  """One model's curve, gap, Wilson bars and histogram on (ax, hax); returns (N, sparse bins, sparse examples)."""
  count = np.asarray(stats.count, np.float64)
  n = count.sum()
  nonempty = count > 0
  cnt = count[nonempty]
  hits = np.asarray(stats.correct, np.float64)[nonempty]
  conf = np.asarray(stats.conf_sum, np.float64)[nonempty] / cnt
  acc = hits / cnt
  sparse = cnt < min_count
  ece = float(_metrics.ece_from_stats(stats))
  ax.fill_between(conf, acc, conf, color=colour, alpha=0.15, lw=0)
  ax.plot(
    conf, acc, marker="o", ms=4, lw=1.5, color=colour, markevery=list(np.flatnonzero(~sparse)),
    label=label or f"{name} (ECE {100 * ece:.2f}%)",
  )
  if sparse.any():
    ax.scatter(conf[sparse], acc[sparse], s=16, facecolors="white", edgecolors=colour, linewidths=1.2, zorder=3)
  if interval == "wilson":
    low, high = _stats.wilson_interval(hits, cnt, level=level)
    ax.vlines(conf, low, high, color=colour, lw=1.0, alpha=0.7)
  edges = np.arange(stats.num_bins + 1) / stats.num_bins
  frac = count / max(n, 1.0)
  hax.stairs(np.where(frac > 0, frac, np.nan), edges, color=colour, lw=1.5)
  return n, int(sparse.sum()), int(cnt[sparse].sum())


def _diagonal(ax):
  ax.plot([0, 1], [0, 1], ls="--", color="0.4", lw=1, label="perfect calibration")


def _notes(drawn, interval, level, min_count) -> list[str]:
  sparse_bins, sparse_examples = sum(d[1] for d in drawn), sum(d[2] for d in drawn)
  notes = []
  if interval == "wilson":
    notes.append(f"bars: {100 * level:g}% Wilson intervals of bin accuracy")
  if sparse_bins:
    notes.append(f"open markers: {sparse_bins} bins with < {min_count} examples ({sparse_examples} examples)")
  return notes


def _finish_reliability(ax, hax, drawn, interval, level, min_count, title, *, legend=True, ylabel=True, notes=True):
  totals = [d[0] for d in drawn]
  notes = _notes(drawn, interval, level, min_count) if notes else []
  if notes:
    ax.text(
      0.98, 0.02, "\n".join(notes), transform=ax.transAxes, ha="right", va="bottom", fontsize="x-small", color="0.25",
      bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"),
    )
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1)
  if ylabel:
    ax.set_ylabel("accuracy")
  ax.grid(alpha=0.3)
  if legend:
    ax.legend(loc="upper left", fontsize="small", framealpha=0.9)
  if title:
    ax.set_title(title, fontsize="medium")
  hax.set_yscale("log")
  hax.set_xlabel("confidence (top-label probability)")
  if ylabel:
    hax.set_ylabel("fraction")
  hax.grid(alpha=0.3)
  if len(set(totals)) == 1 and totals[0] > 0:
    total = totals[0]
    counts_axis = hax.secondary_yaxis("right", functions=(lambda f: f * total, lambda c: c / total))
    counts_axis.set_ylabel("count")


def reliability_panels(
  curves: Mapping[str, CurveInput],
  *,
  num_bins: int = 15,
  path: Optional[str] = None,
  title: Optional[str] = None,
  dpi: int = 120,
  interval: Optional[str] = "wilson",
  level: float = 0.95,
  min_count: int = 20,
  columns: int = 3,
) -> Figure:
  """Small multiples: one reliability diagram per model (panel titled with its name and ECE), same axes, so curves,
  gaps and intervals never sit on top of each other. Inputs and conventions as :func:`reliability_diagram`; pass
  merged :class:`CalibrationStats` to pool several seeds (and say so in ``title``)."""
  if not curves:
    raise ValueError("reliability_panels: `curves` must contain at least one model")
  if interval not in ("wilson", None):
    raise ValueError(f"reliability_panels: `interval` must be 'wilson' or None, got {interval!r}.")
  names = list(curves)
  cols = min(columns, len(names))
  rows = -(-len(names) // cols)
  fig = Figure(figsize=(3.6 * cols, 4.2 * rows + (0.4 if title else 0)), layout="constrained")
  FigureCanvasAgg(fig)
  grid = fig.add_gridspec(2 * rows, cols, height_ratios=[3, 1] * rows)
  colours = [c["color"] for c in matplotlib.rcParams["axes.prop_cycle"]]
  all_drawn = []
  for i, name in enumerate(names):
    r, c = divmod(i, cols)
    ax = fig.add_subplot(grid[2 * r, c])
    hax = fig.add_subplot(grid[2 * r + 1, c], sharex=ax)
    stats = _to_stats(name, curves[name], num_bins)
    ece = float(_metrics.ece_from_stats(stats))
    _diagonal(ax)
    drawn = _draw_reliability(ax, hax, name, stats, colours[i % len(colours)], interval, level, min_count)
    all_drawn.append(drawn)
    _finish_reliability(ax, hax, [drawn], interval, level, min_count, f"{name}\nECE {100 * ece:.2f}%, n = {int(drawn[0])}",
                        legend=False, ylabel=c == 0, notes=False)
    ax.tick_params(labelbottom=False)
  if title:
    fig.suptitle(title, fontsize="medium")
  notes = _notes(all_drawn, interval, level, min_count)
  if notes:
    fig.supxlabel("; ".join(notes), fontsize="small", color="0.25")
  _save(fig, path, dpi)
  return fig


def _curve_arrays(name, value):
  if not (isinstance(value, (tuple, list)) and len(value) == 2):
    raise TypeError(f"metric_curves: `curves[{name!r}]` must be an (epochs, values) pair, got {type(value).__name__}.")
  epochs = np.asarray(value[0], np.float64)
  values = np.asarray(value[1], np.float64)
  if epochs.ndim != 1 or values.ndim not in (1, 2) or values.shape[-1] != epochs.size:
    raise ValueError(
      f"metric_curves: `curves[{name!r}]` needs epochs [E] and values [E] or [seeds, E]; got {epochs.shape} and "
      f"{values.shape}."
    )
  return epochs, values


def metric_curves(
  curves: Mapping[str, Tuple[object, object]],
  ylabel: str,
  path: Optional[str] = None,
  title: Optional[str] = None,
  *,
  band: Optional[str] = "std",
  level: float = 0.95,
  xlabel: str = "epoch",
  logy: bool = False,
  dpi: int = 150,
) -> Figure:
  """A metric over epochs, one line per curve, with an optional across-seed band.

  Args:
    curves: ``{name: (epochs [E], values)}`` with ``values`` either [E] (one run) or [S, E] (S seeds; NaN marks a
      missing point). For [S, E] the line is the mean over the seeds present at each epoch and the band is
      ``band="std"``: mean -/+ the sample std (ddof = 1); ``band="ci"``: the Student-t interval of the mean at
      ``level`` (:func:`stats.t_interval`); ``band=None``: no band. Epochs with one seed get no band.
    ylabel: y-axis label (the metric).
    path: if given, the figure is saved there as PNG (parent directories are created).
    title: optional title.
    xlabel: x-axis label.
    logy: log-scale y axis (e.g. for losses).
    dpi: resolution of the saved PNG.

  Returns:
    the ``matplotlib.figure.Figure`` (one axes). Legend entries read ``name`` or ``name (S seeds)``.
  """
  if not curves:
    raise ValueError("metric_curves: `curves` must contain at least one curve")
  if band not in ("std", "ci", None):
    raise ValueError(f"metric_curves: `band` must be 'std', 'ci' or None, got {band!r}.")
  fig = Figure(figsize=(6.0, 4.0), layout="constrained")
  FigureCanvasAgg(fig)
  ax = fig.subplots()
  colours = [c["color"] for c in matplotlib.rcParams["axes.prop_cycle"]]
  banded = False
  for i, (name, value) in enumerate(curves.items()):
    epochs, values = _curve_arrays(name, value)
    colour = colours[i % len(colours)]
    if values.ndim == 1:
      ax.plot(epochs, values, color=colour, lw=1.5, label=name)
      continue
    present = np.isfinite(values)
    k = present.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
      mean = np.where(k > 0, np.nansum(values, 0) / np.maximum(k, 1), np.nan)
      sq = np.nansum((values - mean) ** 2, 0)
      std = np.where(k > 1, np.sqrt(sq / np.maximum(k - 1, 1)), np.nan)
    ax.plot(epochs, mean, color=colour, lw=1.5, label=f"{name} ({values.shape[0]} seeds)")
    if band is not None:
      if band == "std":
        low, high = mean - std, mean + std
      else:
        bounds = [_stats.t_interval(m, s, int(n), level) for m, s, n in zip(mean, std, k)]
        low, high = np.array(bounds).T if bounds else (mean, mean)
      ok = np.isfinite(low) & np.isfinite(high)
      if ok.any():
        ax.fill_between(epochs, low, high, where=ok, color=colour, alpha=0.2, lw=0)
        banded = True
  if all(np.all(np.asarray(v[0], np.float64) % 1 == 0) for v in curves.values()):
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if logy:
    ax.set_yscale("log")
  ax.grid(alpha=0.3)
  legend_title = None
  if banded:
    legend_title = "band: mean ± std over seeds" if band == "std" else f"band: {100 * level:g}% t-interval of the mean"
  ax.legend(fontsize="small", title=legend_title, title_fontsize="small")
  if title:
    ax.set_title(title)
  _save(fig, path, dpi)
  return fig


def grouped_bars(
  values: Mapping[str, Mapping[str, Mapping[str, list]]],
  *,
  ylabel: str,
  path: Optional[str] = None,
  level: float = 0.95,
) -> Figure:
  """One panel per outer key (e.g. regime), one group of bars per middle key (e.g. loss), one bar per inner key
  (e.g. raw / TS / ATS): the mean of each list of values (e.g. over seeds) with its Student-t interval at ``level``
  (mean -/+ t sd / sqrt(n), the interval of the summary tables) as error bar; no bar for a single value. A note on
  the figure says what the bars are and over how many values; the legend sits outside the panels.

  ``values[panel][group][bar] = [v_seed0, v_seed1, ...]``. Saved to ``path`` (PNG) when given.
  """
  panels = list(values)
  fig = Figure(figsize=(5 * len(panels) + 1.5, 4.4), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  counts = set()
  handles = None
  for ax, panel in zip(axes, panels):
    groups = list(values[panel])
    bars = list(next(iter(values[panel].values())))
    width = 0.8 / max(1, len(bars))
    xs = np.arange(len(groups))
    for j, bar in enumerate(bars):
      vals = [np.asarray(values[panel][g][bar], float) for g in groups]
      means = [float(np.mean(v)) for v in vals]
      half = []
      for v, m in zip(vals, means):
        counts.add(len(v))
        lo, hi = _stats.t_interval(m, float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v), level)
        half.append(0.0 if not np.isfinite(lo) else hi - m)
      offset = (j - (len(bars) - 1) / 2) * width
      ax.bar(xs + offset, means, width, yerr=half, label=bar, capsize=2)
    ax.set_xticks(xs, groups, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(panel)
    ax.grid(axis="y", alpha=0.3)
    handles = ax.get_legend_handles_labels()
  n = ", ".join(str(c) for c in sorted(counts))
  fig.legend(*handles, loc="outside right upper", title="stage")
  fig.text(0.995, 0.01, f"bars: mean over seeds; error bars: {100 * level:g}% Student-t interval (n = {n})",
           ha="right", va="bottom", fontsize="small", color="0.25")
  if path is not None:
    fig.savefig(path, dpi=120)
  return fig
