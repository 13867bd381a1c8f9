"""`gence-jax compare`: a grid of losses x regimes x seeds on one dataset, summarised as mean +/- std.

Each cell is a full `train_and_evaluate` run in its own work directory (so an interrupted grid resumes: finished
runs are read back from their ``results.json``). The summary table (Markdown and JSON) reports test accuracy, NLL,
ECE and SCE before and after temperature scaling and ATS; ``ece.png`` plots test ECE per loss and regime, and
``reliability_<regime>.png`` overlays the losses' reliability diagrams.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Sequence

import numpy as np

from gence_jax.train.config import apply_overrides, validate
from gence_jax.train.loop import train_and_evaluate

COLUMNS = (
  ("raw", "accuracy"),
  ("raw", "nll"),
  ("raw", "ece"),
  ("raw", "sce"),
  ("ts", "nll"),
  ("ts", "ece"),
  ("ts", "sce"),
  ("ats", "nll"),
  ("ats", "ece"),
  ("ats", "sce"),
)


def _slug(regime: str) -> str:
  """A file-name-safe name for a regime spec ("" -> "clean", "symmetric:0.4" -> "symmetric-0.4")."""
  return regime.replace(":", "-").replace(",", "_") or "clean"


def parse_loss_spec(spec: str) -> tuple[str, list[str]]:
  """``"mgce:beta=2.0"`` -> ("mgce", ["loss.hparams.beta=2.0"]); ``"lq:q=0.7"``; plain names have no overrides."""
  name, _, rest = spec.partition(":")
  overrides = [f"loss.name={name}"]
  for item in filter(None, rest.split(";")):
    overrides.append(f"loss.hparams.{item}")
  return spec, overrides


def run_grid(
  base_config, workdir: str, *, losses: Sequence[str], seeds: Sequence[int], regimes: Sequence[str] = ("",)
) -> dict:
  """Runs every (regime, loss, seed) cell and returns ``{regime: {loss: [results per seed]}}``."""
  plans = []
  for regime in regimes:
    for spec in losses:
      _, overrides = parse_loss_spec(spec)
      for seed in seeds:
        config = copy.deepcopy(base_config)
        apply_overrides(config, overrides + [f"seed={seed}"])
        with config.unlocked():
          config.dataset.regimes = regime
        validate(config)  # every cell is checked before the first one trains
        run_dir = os.path.join(
          workdir, _slug(regime), spec.replace(":", "_").replace("=", "").replace(";", "_"), f"seed{seed}"
        )
        plans.append((regime, spec, seed, config, run_dir))
  grid: dict = {}
  for i, (regime, spec, seed, config, run_dir) in enumerate(plans):
    done = os.path.join(run_dir, "results.json")
    if os.path.exists(done):
      with open(done) as f:
        result = json.load(f)
    else:
      print(f"[{i + 1}/{len(plans)}] regime={regime or 'clean'} loss={spec} seed={seed}", flush=True)
      result = train_and_evaluate(config, run_dir)
    grid.setdefault(regime or "clean", {}).setdefault(spec, []).append(
      {"seed": seed, "test": result["test"], "data": result["data"].get("label_noise"), "workdir": run_dir}
    )
  return grid


def summarize(grid: dict) -> dict:
  """mean and std over seeds of every reported number."""
  out = {}
  for regime, by_loss in grid.items():
    for spec, runs in by_loss.items():
      cell = {"seeds": [r["seed"] for r in runs]}
      for stage, metric in COLUMNS:
        vals = np.array([r["test"][stage][metric] for r in runs], dtype=float)
        cell[f"{metric}_{stage}"] = {"mean": float(vals.mean()), "std": float(vals.std())}
      out.setdefault(regime, {})[spec] = cell
  return out


def markdown_table(summary: dict, dataset: str) -> str:
  lines = []
  for regime, by_loss in summary.items():
    seeds = next(iter(by_loss.values()))["seeds"]
    lines.append(f"### {dataset}, {regime}: test metrics, mean +/- std over seeds {seeds}")
    lines.append(
      "accuracy, ECE, SCE in %; NLL in nats; ECE/SCE with the configured bins; TS and ATS fitted on the "
      "validation split."
    )
    lines.append("")
    header = ["loss"] + [metric if stage == "raw" else f"{metric} ({stage.upper()})" for stage, metric in COLUMNS]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for spec, cell in by_loss.items():
      row = [spec]
      for stage, metric in COLUMNS:
        m = cell[f"{metric}_{stage}"]
        scale = 1.0 if metric == "nll" else 100.0
        row.append(f"{scale * m['mean']:.2f} +/- {scale * m['std']:.2f}")
      lines.append("| " + " | ".join(row) + " |")
    lines.append("")
  return "\n".join(lines)


def compare(
  base_config, workdir: str, *, losses: Sequence[str], seeds: Sequence[int], regimes: Sequence[str] = ("",)
) -> dict:
  """Runs the grid, prints the Markdown table and writes ``summary.json`` and ``summary.md`` to `workdir`."""
  os.makedirs(workdir, exist_ok=True)
  grid = run_grid(base_config, workdir, losses=losses, seeds=seeds, regimes=regimes)
  summary = summarize(grid)
  table = markdown_table(summary, base_config.dataset.name)
  print(table)
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(
      {
        "config": base_config.to_dict(),
        "losses": list(losses),
        "seeds": list(seeds),
        "regimes": list(regimes),
        "summary": summary,
        "runs": grid,
      },
      f,
      indent=2,
    )
  with open(os.path.join(workdir, "summary.md"), "w") as f:
    f.write(table + "\n")
  _plot(grid, workdir)
  _reliability(grid, workdir, base_config.calibration.num_bins)
  return summary


def _reliability(grid: dict, workdir: str, num_bins: int) -> None:
  """Per regime, every loss's test reliability diagram (first seed, before calibration) overlaid in one PNG."""
  from gence_jax import plots

  for regime, by_loss in grid.items():
    curves = {}
    for spec, runs in by_loss.items():
      path = os.path.join(runs[0]["workdir"], "predictions.npz")
      if os.path.exists(path):
        with np.load(path) as f:
          curves[spec] = (f["test_probs"], f["test_labels"])
    if curves:
      plots.reliability_diagram(
        curves,
        num_bins=num_bins,
        path=os.path.join(workdir, f"reliability_{_slug(regime)}.png"),
        title=f"{regime}: test, seed {by_loss[next(iter(by_loss))][0]['seed']}, before calibration",
      )


def _plot(grid: dict, workdir: str) -> None:
  """A bar chart of test ECE (raw / TS / ATS) per loss and regime, mean +/- std over seeds."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  regimes = list(grid)
  fig, axes = plt.subplots(1, len(regimes), figsize=(5 * len(regimes), 4), squeeze=False)
  for ax, regime in zip(axes[0], regimes):
    specs = list(grid[regime])
    xs = np.arange(len(specs))
    for j, stage in enumerate(("raw", "ts", "ats")):
      vals = [[100 * r["test"][stage]["ece"] for r in grid[regime][s]] for s in specs]
      ax.bar(
        xs + (j - 1) * 0.27,
        [np.mean(v) for v in vals],
        0.27,
        yerr=[np.std(v) for v in vals],
        label=stage.upper() if stage != "raw" else "raw",
        capsize=2,
      )
    ax.set_xticks(xs, specs, rotation=30, ha="right")
    ax.set_ylabel("test ECE (%)")
    ax.set_title(regime)
    ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "ece.png"), dpi=120)
  plt.close(fig)
