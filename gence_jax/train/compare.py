"""`gence-jax compare`: a grid of losses x regimes x seeds on one dataset, summarised as mean +/- std.

Each cell is a full `train_and_evaluate` run in its own work directory (so an interrupted grid resumes: finished
runs are read back from their ``results.json``). The summary table (Markdown and JSON) reports test accuracy, NLL,
ECE and SCE before and after temperature scaling and ATS (other columns with ``columns``; ``summary.json`` has every
metric); ``ece.png`` plots test ECE per loss and regime, and ``reliability_<regime>.png`` overlays the losses'
reliability diagrams. Runs with OOD sets (the ``ood`` config block) add an OOD-detection table per regime.

Hyper-parameter selection on validation (``select``; the MGCE paper picks beta this way): loss specs that share a
loss name and differ in hyper-parameters (``mgce:beta=1 mgce:beta=2 ...``) form a group; for each (regime, seed) the
spec whose run has the best VALIDATION accuracy is chosen (ties: lower validation NLL; still tied: the spec listed
first), where the validation metrics are those of the run's own selected (best-on-validation) checkpoint, through the
loss's link, on the validation labels as trained with (noisy under a label-noise regime). The summary gets a row
``"<name> (selected on validation)"`` with the mean +/- std of the chosen runs' TEST metrics and the chosen
hyper-parameters per seed. See :func:`select_on_validation`.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Sequence

import numpy as np

from gence_jax.train.config import _parse_value, apply_overrides, validate
from gence_jax.train.loop import REPORTED, train_and_evaluate

STAGES = ("raw", "ts", "ats")
SELECTED_SUFFIX = " (selected on validation)"
OOD_TABLE_METRICS = (("auroc", "AUROC"), ("aupr_in", "AUPR-In"), ("fpr95", "FPR95"))

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


def spec_hparams(spec: str) -> dict:
  """``"mgce:beta=2.0;tol=1e-6"`` -> ``{"beta": 2.0, "tol": 1e-06}`` (values parsed as for ``--set``)."""
  _, _, rest = spec.partition(":")
  out = {}
  for item in filter(None, rest.split(";")):
    key, _, value = item.partition("=")
    out[key] = _parse_value(value)
  return out


def loss_group(spec: str) -> str:
  """The registry name of a spec's loss (aliases resolved: ``lq:q=0.5`` -> ``generalized_ce``)."""
  from gence_jax.losses import get_loss

  name = spec.partition(":")[0]
  try:
    return get_loss(name).name
  except (ValueError, TypeError):  # adafocal (configured in its own block) and names validate will reject
    return name


def selection_groups(specs: Sequence[str], only: Sequence[str] | None = None) -> dict[str, list[str]]:
  """``{loss name: [specs]}`` for every loss with at least two specs (``only``: just those loss names).

  Raises ValueError when ``only`` names a loss without two specs, or when no loss has two."""
  groups: dict[str, list[str]] = {}
  for spec in specs:
    groups.setdefault(loss_group(spec), []).append(spec)
  groups = {name: members for name, members in groups.items() if len(members) >= 2}
  if only:
    wanted = [loss_group(name) for name in only]
    missing = [name for name in wanted if name not in groups]
    if missing:
      raise ValueError(f"--select {missing}: selection needs at least two specs of that loss among --losses {specs}")
    groups = {name: groups[name] for name in wanted}
  if not groups:
    raise ValueError(f"--select: no loss has two or more specs (hyper-parameter values) among --losses {list(specs)}")
  return groups


def _val_key(run: dict) -> tuple[float, float]:
  """(validation accuracy, -validation NLL) of a run; missing / non-finite values rank last."""
  acc, nll = run["val"].get("accuracy"), run["val"].get("nll")
  acc = float(acc) if acc is not None and np.isfinite(acc) else -np.inf
  nll = float(nll) if nll is not None and np.isfinite(nll) else np.inf
  return acc, -nll


def select_on_validation(grid: dict, groups: dict[str, list[str]]) -> dict:
  """Per regime, per group, per seed: the spec with the best validation accuracy (ties: lower validation NLL, then
  the spec listed first in the group).

  ``grid``: ``{regime: {spec: [run, ...]}}`` with each run a dict holding ``seed``, ``val`` (``{"accuracy", "nll"}``
  of the run's selected checkpoint on the validation split) and ``test``. ``groups``: ``{name: [specs]}`` (see
  :func:`selection_groups`). Returns ``{regime: {name: {"row": "<name> (selected on validation)", "specs": [...],
  "runs": [chosen run per seed], "chosen": [{"seed", "spec", "hparams", "val_accuracy", "val_nll"}]}}}``, seeds in
  increasing order; a seed is considered when at least one spec of the group has a run for it.
  """
  out: dict = {}
  for regime, by_spec in grid.items():
    for name, specs in groups.items():
      present = [spec for spec in specs if spec in by_spec]
      if not present:
        continue
      seeds = sorted({run["seed"] for spec in present for run in by_spec[spec]})
      runs, chosen = [], []
      for seed in seeds:
        best_spec, best_run = None, None
        for spec in present:  # strict improvement only: the first of equal candidates stays
          for run in by_spec[spec]:
            if run["seed"] == seed and (best_run is None or _val_key(run) > _val_key(best_run)):
              best_spec, best_run = spec, run
        runs.append(best_run)
        chosen.append(
          {
            "seed": seed,
            "spec": best_spec,
            "hparams": spec_hparams(best_spec),
            "val_accuracy": best_run["val"].get("accuracy"),
            "val_nll": best_run["val"].get("nll"),
          }
        )
      out.setdefault(regime, {})[name] = {
        "row": name + SELECTED_SUFFIX,
        "specs": present,
        "runs": runs,
        "chosen": chosen,
      }
  return out


def _run_record(seed: int, result: dict, run_dir: str) -> dict:
  """What the summary keeps of one run's results.json."""
  test = result["test"]
  val = test.get("val_raw") or {k: result.get("selected", {}).get(k) for k in ("accuracy", "nll")}
  record = {
    "seed": seed,
    "test": test,
    "val": {"accuracy": val.get("accuracy"), "nll": val.get("nll")},
    "data": result["data"].get("label_noise"),
    "workdir": run_dir,
  }
  if "ood" in result:
    record["ood"] = {
      name: {k: v for k, v in entry.items() if k != "source"} for name, entry in result["ood"]["datasets"].items()
    }
  return record


def plan_grid(
  base_config, workdir: str, *, losses: Sequence[str], seeds: Sequence[int], regimes: Sequence[str] = ("",)
) -> list[tuple]:
  """``(regime, spec, seed, config, run_dir)`` of every cell, each config validated (nothing is loaded or trained)."""
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
  return plans


def run_grid(
  base_config, workdir: str, *, losses: Sequence[str], seeds: Sequence[int], regimes: Sequence[str] = ("",)
) -> dict:
  """Runs every (regime, loss, seed) cell and returns ``{regime: {loss: [results per seed]}}``."""
  plans = plan_grid(base_config, workdir, losses=losses, seeds=seeds, regimes=regimes)
  grid: dict = {}
  for i, (regime, spec, seed, config, run_dir) in enumerate(plans):
    done = os.path.join(run_dir, "results.json")
    if os.path.exists(done):
      with open(done) as f:
        result = json.load(f)
    else:
      print(f"[{i + 1}/{len(plans)}] regime={regime or 'clean'} loss={spec} seed={seed}", flush=True)
      result = train_and_evaluate(config, run_dir)
    grid.setdefault(regime or "clean", {}).setdefault(spec, []).append(_run_record(seed, result, run_dir))
  return grid


def _mean_std(values) -> dict:
  vals = np.array([np.nan if v is None else v for v in values], dtype=float)
  return {"mean": float(vals.mean()), "std": float(vals.std())}


def summarize(grid: dict, selection: dict | None = None) -> dict:
  """mean and std over seeds of every reported test number (``<metric>_<stage>``), of the OOD metrics when the runs
  have them (``ood``: ``{dataset: {score: {metric: {mean, std}}}}``), plus one row per selection group."""
  out = {}
  for regime, by_loss in grid.items():
    rows = dict(by_loss)
    for group in (selection or {}).get(regime, {}).values():
      rows[group["row"]] = group["runs"]
    for spec, runs in rows.items():
      cell = {"seeds": [r["seed"] for r in runs]}
      for stage in STAGES:
        metrics = [m for m in runs[0]["test"][stage] if all(m in r["test"][stage] for r in runs)]
        for metric in metrics:
          cell[f"{metric}_{stage}"] = _mean_std([r["test"][stage][metric] for r in runs])
      if all("ood" in r for r in runs):
        cell["ood"] = {
          name: {
            score: {m: _mean_std([r["ood"][name][score][m] for r in runs]) for m in values}
            for score, values in entry.items()
            if isinstance(values, dict)
          }
          for name, entry in runs[0]["ood"].items()
        }
      out.setdefault(regime, {})[spec] = cell
    for name, group in (selection or {}).get(regime, {}).items():
      out[regime][group["row"]]["chosen"] = group["chosen"]
  return out


def parse_columns(items: Sequence[str] | None) -> tuple[tuple[str, str], ...]:
  """``["accuracy", "ece", "ece:ts", "classwise_ece:ats"]`` -> ((stage, metric), ...); None -> :data:`COLUMNS`."""
  if not items:
    return COLUMNS
  out = []
  for item in items:
    metric, _, stage = item.partition(":")
    stage = stage or "raw"
    if stage not in STAGES:
      raise ValueError(f"--columns {item!r}: the stage after ':' must be one of {list(STAGES)}")
    if metric not in (*REPORTED, "adaptive_ece"):
      raise ValueError(f"--columns {item!r}: unknown metric {metric!r}; expected one of {[*REPORTED, 'adaptive_ece']}")
    out.append((stage, metric))
  return tuple(out)


def _fmt(cell: dict, stage: str, metric: str) -> str:
  m = cell.get(f"{metric}_{stage}")
  if m is None:
    return "n/a"
  scale = 1.0 if metric == "nll" else 100.0
  return f"{scale * m['mean']:.2f} +/- {scale * m['std']:.2f}"


def _chosen_line(row: str, chosen: list) -> str:
  def hp(h):
    return ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in h.items()) or "-"

  return f"{row}: " + "; ".join(f"seed {c['seed']}: {hp(c['hparams'])}" for c in chosen)


def markdown_table(summary: dict, dataset: str, columns: Sequence[tuple[str, str]] = COLUMNS) -> str:
  """Per regime: the test-metric table (``columns``), the hyper-parameters chosen on validation, and an
  OOD-detection table when the runs have OOD sets."""
  lines = []
  for regime, by_loss in summary.items():
    seeds = next(iter(by_loss.values()))["seeds"]
    lines.append(f"### {dataset}, {regime}: test metrics, mean +/- std over seeds {seeds}")
    lines.append(
      "accuracy, ECE, SCE in %; NLL in nats; ECE/SCE with the configured bins; TS and ATS fitted on the "
      "validation split."
    )
    lines.append("")
    header = ["loss"] + [metric if stage == "raw" else f"{metric} ({stage.upper()})" for stage, metric in columns]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for spec, cell in by_loss.items():
      lines.append("| " + " | ".join([spec] + [_fmt(cell, stage, metric) for stage, metric in columns]) + " |")
    lines.append("")
    chosen = [(spec, cell["chosen"]) for spec, cell in by_loss.items() if "chosen" in cell]
    if chosen:
      lines.append("Hyper-parameters chosen on validation (accuracy, ties: NLL), per seed:")
      lines.append("")
      lines += [f"- {_chosen_line(spec, c)}" for spec, c in chosen]
      lines.append("")
    lines += _ood_table(regime, by_loss)
  return "\n".join(lines)


def _ood_table(regime: str, by_loss: dict) -> list[str]:
  with_ood = {spec: cell["ood"] for spec, cell in by_loss.items() if "ood" in cell}
  if not with_ood:
    return []
  scores = list(next(iter(next(iter(with_ood.values())).values())))
  lines = [
    f"OOD detection, {regime}: in-distribution test split = positive, in %, mean +/- std over seeds "
    "(FPR95: OOD examples accepted at 95% in-distribution recall; lower is better).",
    "",
  ]
  header = ["loss", "OOD set"] + [f"{score} {label}" for score in scores for _, label in OOD_TABLE_METRICS]
  lines.append("| " + " | ".join(header) + " |")
  lines.append("|" + "---|" * len(header))
  for spec, by_set in with_ood.items():
    for name, by_score in by_set.items():
      row = [spec, name]
      for score in scores:
        for metric, _ in OOD_TABLE_METRICS:
          m = by_score[score][metric]
          row.append(f"{100 * m['mean']:.2f} +/- {100 * m['std']:.2f}")
      lines.append("| " + " | ".join(row) + " |")
  lines.append("")
  return lines


def compare(
  base_config,
  workdir: str,
  *,
  losses: Sequence[str],
  seeds: Sequence[int],
  regimes: Sequence[str] = ("",),
  select: Sequence[str] | None = None,
  columns: Sequence[str] | None = None,
) -> dict:
  """Runs the grid, prints the Markdown table and writes ``summary.json`` and ``summary.md`` to `workdir`.

  ``select``: None (no selection), ``[]`` (every loss with two or more specs) or loss names: adds the
  "selected on validation" rows (:func:`select_on_validation`). ``columns``: table columns as ``metric[:stage]``
  (see :func:`parse_columns`; default :data:`COLUMNS`). Both are checked before anything trains.
  """
  cols = parse_columns(columns)
  groups = selection_groups(losses, select) if select is not None else {}
  os.makedirs(workdir, exist_ok=True)
  grid = run_grid(base_config, workdir, losses=losses, seeds=seeds, regimes=regimes)
  selection = select_on_validation(grid, groups) if groups else {}
  summary = summarize(grid, selection)
  table = markdown_table(summary, base_config.dataset.name, cols)
  print(table)
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(
      {
        "config": base_config.to_dict(),
        "losses": list(losses),
        "seeds": list(seeds),
        "regimes": list(regimes),
        "summary": summary,
        "selection": {
          regime: {name: {k: v for k, v in group.items() if k != "runs"} for name, group in by_name.items()}
          for regime, by_name in selection.items()
        },
        "runs": grid,
      },
      f,
      indent=2,
    )
  with open(os.path.join(workdir, "summary.md"), "w") as f:
    f.write(table + "\n")
  plotted = {regime: dict(by_loss) for regime, by_loss in grid.items()}
  for regime, by_name in selection.items():
    for group in by_name.values():
      plotted[regime][group["row"]] = group["runs"]
  _plot(plotted, workdir)
  _reliability(plotted, workdir, base_config.calibration.num_bins)
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
