"""`gence-jax compare`: a grid of losses x regimes x seeds on one dataset, run and summarised.

Each cell is a full `train_and_evaluate` run in its own work directory, so an interrupted grid resumes: a finished
run (its ``results.json``) is reused only when its run identity (config and data fingerprint, see
`gence_jax.train.identity`) equals the cell's; a different one is refused with the keys that differ. The summary
(`gence_jax.train.report`: statistics over seeds, paired tests against a reference loss, selection on validation)
is written as ``summary.md`` and ``summary.json``; ``ece.png`` plots test ECE per loss and regime and
``reliability_<regime>.png`` draws one reliability diagram per loss, seeds pooled (`gence_jax.plots`).
"""

from __future__ import annotations

import copy
import json
import os
from typing import Sequence

import numpy as np

from gence_jax.train import identity
from gence_jax.train.config import apply_overrides, validate
from gence_jax.train.loop import train_and_evaluate
from gence_jax.train.outputs import write_json
from gence_jax.train.report import (
  COLUMNS,
  STAGES,
  markdown_table,
  parse_columns,
  run_record,
  select_on_validation,
  selection_groups,
  spec_hparams,
  summarize,
)
from gence_jax.train.specs import loss_overrides

__all__ = ["COLUMNS", "compare", "parse_columns", "plan_grid", "run_grid", "selection_groups", "spec_hparams"]


def _slug(regime: str) -> str:
  """A file-name-safe name for a regime spec ("" -> "clean", "symmetric:0.4" -> "symmetric-0.4")."""
  return regime.replace(":", "-").replace(",", "_") or "clean"


def plan_grid(
  base_config, workdir: str, *, losses: Sequence[str], seeds: Sequence[int], regimes: Sequence[str] = ("",)
) -> list[tuple]:
  """``(regime, spec, seed, config, run_dir)`` of every cell, each config validated (nothing is loaded or trained)."""
  plans = []
  for regime in regimes:
    for spec in losses:
      overrides = loss_overrides(spec)
      for seed in seeds:
        config = copy.deepcopy(base_config)
        apply_overrides(config, overrides + [f"seed={seed}"])
        with config.unlocked():
          config.dataset.regimes = regime
          config.outputs.reliability_plot = False  # the summary overlays the runs' diagrams per regime
        validate(config)  # every cell is checked before the first one trains
        run_dir = os.path.join(
          workdir, _slug(regime), spec.replace(":", "_").replace("=", "").replace(";", "_"), f"seed{seed}"
        )
        plans.append((regime, spec, seed, config, run_dir))
  return plans


def run_grid(
  base_config,
  workdir: str,
  *,
  losses: Sequence[str],
  seeds: Sequence[int],
  regimes: Sequence[str] = ("",),
  selection: str = "val",
  overwrite: bool = False,
  train: bool = True,
) -> dict:
  """Runs every (regime, loss, seed) cell and returns ``{regime: {loss: [run record per seed]}}``.

  Every cell's identity is checked against its folder before the first cell trains. ``train=False`` trains nothing:
  only the finished cells are read (a partial grid's summary; missing cells are listed on stdout)."""
  plans = plan_grid(base_config, workdir, losses=losses, seeds=seeds, regimes=regimes)
  for _, _, _, config, run_dir in plans:
    identity.check_workdir(config, run_dir, overwrite=overwrite)
  grid: dict = {}
  for i, (regime, spec, seed, config, run_dir) in enumerate(plans):
    done = os.path.join(run_dir, "results.json")
    if os.path.exists(done):
      with open(done) as f:
        result = json.load(f)
    elif not train:
      print(f"not finished (left out of the summary): regime={regime or 'clean'} loss={spec} seed={seed}", flush=True)
      continue
    else:
      print(f"[{i + 1}/{len(plans)}] regime={regime or 'clean'} loss={spec} seed={seed}", flush=True)
      result = train_and_evaluate(config, run_dir)
    grid.setdefault(regime or "clean", {}).setdefault(spec, []).append(run_record(seed, result, run_dir, selection))
  return grid


def compare(
  base_config,
  workdir: str,
  *,
  losses: Sequence[str],
  seeds: Sequence[int],
  regimes: Sequence[str] = ("",),
  select: Sequence[str] | None = None,
  columns: Sequence[str] | None = None,
  reference: str | None = None,
  selection: str = "val",
  overwrite: bool = False,
  train: bool = True,
) -> dict:
  """Runs the grid, prints the Markdown table and writes ``summary.json``, ``summary.md`` and the plots
  (``train=False``: the summary of the finished runs only, nothing trained).

  ``select``: None (no selection), ``[]`` (every loss with two or more specs) or loss names: adds the
  "selected on validation" rows. ``columns``: table columns as ``metric[:stage]`` (default
  `gence_jax.train.report.COLUMNS`, less the calibrators the config does not fit). ``reference``: the loss spec
  (or selected row) every other row is compared with, paired by seed (default: the first loss). ``selection``:
  which checkpoint of each run the table shows (``val``, ``last``, ``clean_val``). All are checked before anything
  trains.
  """
  cols = parse_columns(columns)
  if columns is None:
    cols = tuple(c for c in cols if c[0] in ("raw", *base_config.calibration.methods))
  groups = selection_groups(losses, select) if select is not None else {}
  if reference is not None and reference not in losses and not reference.endswith(" (selected on validation)"):
    raise ValueError(f"--reference {reference!r} must be one of --losses {list(losses)} or a selected row")
  os.makedirs(workdir, exist_ok=True)
  grid = run_grid(
    base_config,
    workdir,
    losses=losses,
    seeds=seeds,
    regimes=regimes,
    selection=selection,
    overwrite=overwrite,
    train=train,
  )
  if not grid:
    raise ValueError(f"--summarize-only: no finished run in {workdir!r} for this grid")
  chosen = select_on_validation(grid, groups) if groups else {}
  summary = summarize(grid, chosen, reference=reference)
  table = markdown_table(summary, base_config.dataset.name, cols, selection=selection)
  print(table)
  write_json(
    os.path.join(workdir, "summary.json"),
    {
      "config": base_config.to_dict(),
      "losses": list(losses),
      "seeds": list(seeds),
      "regimes": list(regimes),
      "checkpoint": selection,
      "std": "sample standard deviation (ddof=1); intervals: 95% Student-t over seeds",
      "summary": summary,
      "selection": {
        regime: {name: {k: v for k, v in group.items() if k != "runs"} for name, group in by_name.items()}
        for regime, by_name in chosen.items()
      },
      "runs": grid,
    },
  )
  with open(os.path.join(workdir, "summary.md"), "w") as f:
    f.write(table + "\n")
  plotted = {regime: dict(by_loss) for regime, by_loss in grid.items()}
  for regime, by_name in chosen.items():
    for group in by_name.values():
      plotted[regime][group["row"]] = group["runs"]
  _plots(plotted, workdir, base_config.calibration.num_bins)
  return summary


def _plots(grid: dict, workdir: str, num_bins: int) -> None:
  """``ece.png`` (test ECE raw / TS / ATS per loss and regime, mean and 95% t-interval over seeds) and one
  reliability figure per regime: one panel per loss, the test predictions of every seed pooled, before
  calibration."""
  from gence_jax import plots

  def stages(runs):
    return [s for s in STAGES if all(s in r["test"] for r in runs)]

  ece = {
    regime: {
      spec: {stage: [100 * r["test"][stage]["ece"] for r in runs] for stage in stages(runs)}
      for spec, runs in by_loss.items()
    }
    for regime, by_loss in grid.items()
  }
  plots.grouped_bars(ece, ylabel="test ECE (%)", path=os.path.join(workdir, "ece.png"))
  from gence_jax import metrics

  for regime, by_loss in grid.items():
    curves, seeds = {}, set()
    for spec, runs in by_loss.items():
      pooled = None
      for run in runs:
        path = os.path.join(run["workdir"], "predictions.npz")
        if not os.path.exists(path):
          continue
        with np.load(path) as f:
          stats = metrics.calibration_stats(f["test_probs"], f["test_labels"], num_bins=num_bins, classwise=False)
        pooled = stats if pooled is None else metrics.merge(pooled, stats)
        seeds.add(run["seed"])
      if pooled is not None:
        curves[spec] = pooled
    if curves:
      plots.reliability_panels(
        curves,
        num_bins=num_bins,
        path=os.path.join(workdir, f"reliability_{_slug(regime)}.png"),
        title=f"{regime}: test predictions before calibration, pooled over seeds {', '.join(map(str, sorted(seeds)))}\n"
        "(ECE of the pooled predictions, not the table's mean over seeds)",
      )
