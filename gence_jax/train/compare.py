"""`gence-jax compare`: a grid of losses x regimes x seeds on one dataset, run and summarised.

Each cell is a full `train_and_evaluate` run in its own work directory, claimed through that directory's lock
(`gence_jax.train.grid`), so an interrupted grid resumes and any number of processes can work on one grid: local
jobs (``jobs``), the slices of a job array (``shard``), submitit jobs (``launcher``) or the same command started twice;
each cell trains once. A finished run (its ``results.json``) is reused only when its run identity (config and data
fingerprint, see `gence_jax.train.identity`) equals the cell's; a different one is refused with the keys that differ.
A cell that fails records why (``failed.json``) and the others go on; the command then fails naming them, and a rerun
retries them. The process that finds the grid complete writes the summary (`gence_jax.train.report`: statistics over
seeds, paired tests against a reference loss, selection on validation) as ``summary.md`` and ``summary.json``;
``ece.png`` plots test ECE per loss and regime and ``reliability_<regime>.png`` draws one reliability diagram per
loss, seeds pooled (`gence_jax.plots`). ``train=False`` summarises the finished cells at any time, listing the missing ones.
"""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Sequence

import numpy as np

from gence_jax.train import grid as cells_lib
from gence_jax.train import identity
from gence_jax.train.config import apply_overrides, validate
from gence_jax.train.errors import ConfigError, GridError
from gence_jax.train.grid import Cell
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
) -> list[Cell]:
  """The `Cell` ``(regime, spec, seed, config, run_dir)`` of every run, each config validated (nothing is loaded or
  trained). The run folders, ``<regime>/<loss>/seed<k>``, are the runs' names in TensorBoard."""
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
        plans.append(Cell(regime, spec, seed, config, run_dir))
  return plans


def check_cells(cells: Sequence[Cell], *, overwrite: bool = False) -> None:
  """Every cell's identity against its folder (`identity.check_workdir`; ``overwrite`` moves other runs aside),
  before anything trains; a cell a live process holds is checked by that process."""
  for cell in cells:
    info = identity.read_lock(cell.run_dir)
    if info and identity.owner_alive(info, os.path.join(cell.run_dir, identity.LOCK_FILE)):
      continue
    identity.check_workdir(cell.config, cell.run_dir, overwrite=overwrite)


def collect(cells: Sequence[Cell], selection: str = "val") -> tuple[dict, list[Cell]]:
  """``({regime: {loss: [run record per seed]}}, cells not finished)`` from the cells' ``results.json``."""
  grid, missing = {}, []
  for cell in cells:
    done = os.path.join(cell.run_dir, "results.json")
    if not os.path.exists(done):
      missing.append(cell)
      continue
    with open(done) as f:
      result = json.load(f)
    record = run_record(cell.seed, result, cell.run_dir, selection)
    grid.setdefault(cell.regime or "clean", {}).setdefault(cell.spec, []).append(record)
  return grid, missing


def train_cells(
  cells: Sequence[Cell],
  workdir: str,
  *,
  since: float,
  jobs: int = 1,
  devices_per_job: int | None = None,
  launcher: str | None = None,
  launcher_options: dict | None = None,
) -> list[str]:
  """Trains `cells` in this process (``jobs=1``), in local jobs, or through a launcher; returns a line per job that
  ended abnormally (the cells' own failures are in their ``failed.json``)."""
  if launcher is not None:
    from gence_jax.train import launch

    cluster = {"slurm": "slurm", "submitit-local": "local"}.get(launcher)
    if cluster is None:
      raise ConfigError(f"--launcher must be slurm or submitit-local, got {launcher!r}")
    return launch.run_submitit(cells, workdir, cluster=cluster, options=dict(launcher_options or {}), since=since)
  if jobs > 1:
    from gence_jax.train import launch

    return launch.run_local_jobs(cells, workdir, jobs=jobs, devices_per_job=devices_per_job, since=since)
  cells_lib.work(cells, since=since)
  return []


def _failure_line(cell: Cell) -> str:
  failure = cells_lib.read_failure(cell.run_dir) or {}
  message = failure.get("message", "")
  message = message if len(message) <= 240 else message[:240] + " ..."
  return f"{cell.name} ({failure.get('kind', '?')}: {message})"


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
  jobs: int = 1,
  devices_per_job: int | None = None,
  shard: tuple[int, int] | None = None,
  launcher: str | None = None,
  launcher_options: dict | None = None,
) -> tuple[dict, list[Cell]] | None:
  """Trains this process's cells of the grid (all, or the ``shard`` ``(K, N)``) and returns ``(grid, missing)``:
  ``{regime: {loss: [run record per seed]}}`` of the finished cells and the cells not finished; None when cells of
  other processes are not finished yet (the process that finishes the last one summarises).

  Every cell's identity is checked against its folder before the first cell trains. ``train=False`` trains nothing:
  only the finished cells are read (a partial grid's summary; missing cells are listed on stdout). Raises
  `GridError` naming the cells of this process that failed (the others were trained)."""
  if launcher is not None and jobs > 1:
    raise ConfigError("--jobs runs local processes and --launcher submits jobs: choose one")
  cells = plan_grid(base_config, workdir, losses=losses, seeds=seeds, regimes=regimes)
  check_cells(cells, overwrite=overwrite)
  if train:
    since = time.time()
    cells_lib.write_manifest(workdir, cells)
    mine = cells_lib.shard(cells, *shard) if shard else cells
    problems = train_cells(mine, workdir, since=since, jobs=jobs, devices_per_job=devices_per_job,
                           launcher=launcher, launcher_options=launcher_options)
    failed = [c for c in mine if cells_lib.cell_status(c.run_dir)["state"] == "failed"]
    if failed or problems:
      lines = [_failure_line(c) for c in failed] + problems
      raise GridError(
        f"{len(failed)} of {len(mine)} cells failed: " + "; ".join(lines) + ". The other cells finished; each failed "
        "cell's folder has its failed.json (and train.log with --jobs). Rerun the same command to retry them."
      )
    left = [c for c in cells if not os.path.exists(os.path.join(c.run_dir, "results.json"))]
    if left:
      print(
        f"{len(left)} of {len(cells)} cells of the grid are not finished (other shards or processes); the summary "
        "is written by the process that finishes the last one, or by --summarize-only.",
        flush=True,
      )
      return None
  grid, missing = collect(cells, selection)
  for cell in missing:
    print(f"not finished (left out of the summary): {cell.name}", flush=True)
  return grid, missing


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
  jobs: int = 1,
  devices_per_job: int | None = None,
  shard: tuple[int, int] | None = None,
  launcher: str | None = None,
  launcher_options: dict | None = None,
) -> dict | None:
  """Runs the grid, prints the Markdown table and writes ``summary.json``, ``summary.md`` and the plots
  (``train=False``: the summary of the finished runs only, nothing trained, the missing cells listed).

  ``select``: None (no selection), ``[]`` (every loss with two or more specs) or loss names: adds the
  "selected on validation" rows. ``columns``: table columns as ``metric[:stage]`` (default
  `gence_jax.train.report.COLUMNS`, less the calibrators the config does not fit). ``reference``: the loss spec
  (or selected row) every other row is compared with, paired by seed (default: the first loss). ``selection``:
  which checkpoint of each run the table shows (``val``, ``last``, ``clean_val``). All are checked before anything
  trains. ``jobs``, ``devices_per_job``, ``shard``, ``launcher`` (``slurm``, ``submitit-local``) and
  ``launcher_options``: where the cells run (see `run_grid`, `gence_jax.train.launch`). Returns the summary, or None
  when this process's cells are done but other processes' are not (no summary written then).
  """
  cols = parse_columns(columns)
  if columns is None:
    cols = tuple(c for c in cols if c[0] in ("raw", *base_config.calibration.methods))
  groups = selection_groups(losses, select) if select is not None else {}
  if reference is not None and reference not in losses and not reference.endswith(" (selected on validation)"):
    raise ValueError(f"--reference {reference!r} must be one of --losses {list(losses)} or a selected row")
  os.makedirs(workdir, exist_ok=True)
  out = run_grid(
    base_config,
    workdir,
    losses=losses,
    seeds=seeds,
    regimes=regimes,
    selection=selection,
    overwrite=overwrite,
    train=train,
    jobs=jobs,
    devices_per_job=devices_per_job,
    shard=shard,
    launcher=launcher,
    launcher_options=launcher_options,
  )
  if out is None:
    return None
  grid, missing = out
  if not grid:
    raise ConfigError(f"--summarize-only: no finished run in {workdir!r} for this grid")
  chosen = select_on_validation(grid, groups) if groups else {}
  summary = summarize(grid, chosen, reference=reference)
  table = markdown_table(summary, base_config.dataset.name, cols, selection=selection)
  if missing:
    table += "\n\nNot finished (left out of this summary): " + "; ".join(c.name for c in missing) + "."
  print(table)
  record = {
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
  }
  if missing:
    record["missing"] = [{"regime": c.regime or "clean", "loss": c.spec, "seed": c.seed} for c in missing]
  write_json(os.path.join(workdir, "summary.json"), record)
  _write_text(os.path.join(workdir, "summary.md"), table + "\n")
  plotted = {regime: dict(by_loss) for regime, by_loss in grid.items()}
  for regime, by_name in chosen.items():
    for group in by_name.values():
      plotted[regime][group["row"]] = group["runs"]
  _plots(plotted, workdir, base_config.calibration.num_bins)
  return summary


def _write_text(path: str, text: str) -> None:
  """Writes `text` atomically (processes finishing a grid together each write the same summary)."""
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def _atomic_png(path: str) -> str:
  return f"{path[:-4]}.{os.getpid()}.tmp.png"


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
  path = os.path.join(workdir, "ece.png")
  plots.grouped_bars(ece, ylabel="test ECE (%)", path=_atomic_png(path))
  os.replace(_atomic_png(path), path)
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
      path = os.path.join(workdir, f"reliability_{_slug(regime)}.png")
      plots.reliability_panels(
        curves,
        num_bins=num_bins,
        path=_atomic_png(path),
        title=f"{regime}: test predictions before calibration, pooled over seeds {', '.join(map(str, sorted(seeds)))}\n"
        "(ECE of the pooled predictions, not the table's mean over seeds)",
      )
      os.replace(_atomic_png(path), path)
