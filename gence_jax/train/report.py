"""Summaries of a finished grid (`gence_jax.train.compare`): statistics over seeds, paired comparisons, the choice of
hyper-parameters on validation, and Markdown tables.

Across seeds every number is the mean, the sample standard deviation (``ddof=1``) and a 95% Student-t interval
(`gence_jax.stats.summarize`). Every loss in a grid sees, for a given seed, the same split and the same noisy labels,
so differences to a reference loss are paired by seed: mean difference with its 95% t-interval, a paired t-test and
a Wilcoxon signed-rank test (`gence_jax.stats.paired_difference`). In the Markdown table a cell is marked ``*`` when
the paired t-test against the reference gives p < 0.05 (the reference row is marked ``(ref)``).

Hyper-parameter selection on validation (the MGCE paper picks beta this way): loss specs that share a loss name and
differ in hyper-parameters (``mgce:beta=1 mgce:beta=2 ...``) form a group; for each (regime, seed) the spec whose
run has the best VALIDATION accuracy is chosen (ties: lower validation NLL; still tied: the spec listed first), where
the validation metrics are those of the run's own selected (best-on-validation) checkpoint, through the loss's link,
on the validation labels as trained with (noisy under a label-noise regime). See :func:`select_on_validation`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from gence_jax import stats
from gence_jax.calibration import available_methods
from gence_jax.train.evaluate import ESTIMATORS, LONGTAIL, REPORTED, SELECTIONS
from gence_jax.train.specs import parse_loss_spec


#: "raw" (the loss's link) and every post-hoc calibrator a run may report (``calibration.methods``).
STAGES = ("raw", *available_methods())
SELECTED_SUFFIX = " (selected on validation)"
OOD_TABLE_METRICS = (("auroc", "AUROC"), ("aupr_in", "AUPR-In"), ("fpr95", "FPR95"))
P_MARK = 0.05

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


def spec_hparams(spec: str) -> dict:
  """``"mgce:beta=2.0;tol=1e-6"`` -> ``{"beta": 2.0, "tol": 1e-06}`` (values parsed as for ``--set``)."""
  return parse_loss_spec(spec)[1]


def loss_group(spec: str) -> str:
  """The registry name of a spec's loss (aliases resolved: ``lq:q=0.5`` -> ``generalized_ce``)."""
  from gence_jax.losses import get_loss

  name = parse_loss_spec(spec)[0]
  try:
    return get_loss(name).name
  except (ValueError, TypeError):  # names the config validation rejects with its own message
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


def _choose(by_spec: dict, specs: list[str], seed: int) -> tuple[str, dict]:
  """The spec (and its run) with the best validation key for `seed`; the first of equal candidates stays."""
  best_spec, best_run = None, None
  for spec in specs:
    for run in by_spec[spec]:
      if run["seed"] == seed and (best_run is None or _val_key(run) > _val_key(best_run)):
        best_spec, best_run = spec, run
  return best_spec, best_run


def select_on_validation(grid: dict, groups: dict[str, list[str]]) -> dict:
  """Per regime, per group, per seed: the spec with the best validation accuracy (ties: lower validation NLL, then
  the spec listed first in the group).

  ``grid``: ``{regime: {spec: [run, ...]}}`` with each run a dict holding ``seed``, ``val`` (``{"accuracy", "nll"}``
  of the run's selected (best-on-validation) checkpoint on the validation split) and ``test``. ``groups``:
  ``{name: [specs]}`` (see :func:`selection_groups`). Returns ``{regime: {name: {"row": "<name> (selected on
  validation)", "specs": [...], "runs": [chosen run per seed], "chosen": [{"seed", "spec", "hparams",
  "val_accuracy", "val_nll"}]}}}``, seeds in increasing order; a seed is considered when at least one spec of the
  group has a run for it.
  """
  out: dict = {}
  for regime, by_spec in grid.items():
    for name, specs in groups.items():
      present = [spec for spec in specs if spec in by_spec]
      if not present:
        continue
      runs, chosen = [], []
      for seed in sorted({run["seed"] for spec in present for run in by_spec[spec]}):
        spec, run = _choose(by_spec, present, seed)
        runs.append(run)
        chosen.append(
          {
            "seed": seed,
            "spec": spec,
            "hparams": spec_hparams(spec),
            "val_accuracy": run["val"].get("accuracy"),
            "val_nll": run["val"].get("nll"),
          }
        )
      out.setdefault(regime, {})[name] = {"row": name + SELECTED_SUFFIX, "specs": present, "runs": runs, "chosen": chosen}
  return out


def run_record(seed: int, result: dict, run_dir: str, selection: str = "val") -> dict:
  """What the summary keeps of one run's ``results.json``: the test metrics of checkpoint choice `selection`
  (``val``, ``last`` or ``clean_val``; ``clean_val`` falls back to ``val`` when the validation labels are clean)."""
  if selection not in SELECTIONS:
    raise ValueError(f"--selection must be one of {sorted(SELECTIONS)}, got {selection!r}")
  choices = result.get("checkpoints") or {"val": {"test": result["test"], **result.get("selected", {})}}
  used = selection if selection in choices else "val"
  if used not in choices:
    raise ValueError(f"{run_dir}: results.json has no {selection!r} checkpoint (written by an older version)")
  test = choices[used]["test"]
  val = test.get("val_raw") or {k: choices[used].get(k) for k in ("accuracy", "nll")}
  record = {
    "seed": seed,
    "test": test,
    "selection": used,
    "step": choices[used].get("step"),
    "val": {"accuracy": val.get("accuracy"), "nll": val.get("nll")},
    "data": result["data"].get("label_noise"),
    "workdir": run_dir,
  }
  if "loss_report" in result:
    record["loss_report"] = {k: v for k, v in result["loss_report"].items() if isinstance(v, (int, float))}
  if "ood" in result:
    record["ood"] = {
      name: {k: v for k, v in entry.items() if k != "source"} for name, entry in result["ood"]["datasets"].items()
    }
  return record


def _values(runs: list, get) -> dict[int, float]:
  out = {}
  for r in runs:
    v = get(r)
    out[r["seed"]] = np.nan if v is None else float(v)
  return out


def _stat_cell(by_seed: dict[int, float], ref_by_seed: dict[int, float] | None) -> dict:
  """Summary over seeds of one number (the seeds where it is finite), with the paired comparison to the reference
  on the seeds where both are finite."""
  seeds = sorted(s for s in by_seed if np.isfinite(by_seed[s]))
  values = [by_seed[s] for s in sorted(by_seed)]
  if not seeds:
    return {"mean": float("nan"), "std": float("nan"), "n": 0, "ci_low": float("nan"), "ci_high": float("nan"), "values": values}
  cell = {**stats.summarize([by_seed[s] for s in seeds], seeds=seeds), "values": values}
  if ref_by_seed is not None:
    common = [s for s in seeds if np.isfinite(ref_by_seed.get(s, np.nan))]
    if len(common) >= 2:
      cell["vs_reference"] = stats.paired_difference(
        {s: by_seed[s] for s in common}, {s: ref_by_seed[s] for s in common}
      )
  return cell


def _metric_getters(runs: list) -> dict:
  """``{"<metric>_<stage>": getter}`` for every test metric all runs have, and the loss report's numbers."""
  getters = {}
  for stage in STAGES:
    if not all(stage in r["test"] for r in runs):
      continue
    for metric, value in runs[0]["test"][stage].items():
      if metric == "bootstrap" and all("bootstrap" in r["test"][stage] for r in runs):
        for m, iv in value.items():
          if isinstance(iv, dict):
            for end in ("low", "high"):
              getters[f"{m}_ci{end}_{stage}"] = lambda r, s=stage, m=m, e=end: r["test"][s]["bootstrap"][m][e]
      elif isinstance(value, (int, float)) and all(metric in r["test"][stage] for r in runs):
        getters[f"{metric}_{stage}"] = lambda r, s=stage, m=metric: r["test"][s][m]
  for key in runs[0].get("loss_report", {}):
    if all(key in r.get("loss_report", {}) for r in runs):
      getters[f"report_{key}"] = lambda r, k=key: r["loss_report"][k]
  return getters


def _ood_cells(runs: list) -> dict | None:
  if not all("ood" in r for r in runs):
    return None
  return {
    name: {
      score: {m: _stat_cell(_values(runs, lambda r, n=name, s=score, m=m: r["ood"][n][s][m]), None) for m in values}
      for score, values in entry.items()
      if isinstance(values, dict)
    }
    for name, entry in runs[0]["ood"].items()
  }


def summarize(grid: dict, selection: dict | None = None, reference: str | None = None) -> dict:
  """Per regime and loss spec: every reported test number (``<metric>_<stage>``) summarised over seeds (mean,
  sample std, 95% t-interval, values) and compared, paired by seed, with the `reference` spec (default: the first
  one); OOD metrics when the runs have them; one row per selection group (with the hyper-parameters chosen)."""
  out = {}
  for regime, by_loss in grid.items():
    rows = dict(by_loss)
    for group in (selection or {}).get(regime, {}).values():
      rows[group["row"]] = group["runs"]
    ref = reference if reference is not None else next(iter(rows))
    if ref not in rows:
      raise ValueError(f"--reference {ref!r} is not a loss of the grid: {list(rows)}")
    ref_getters = _metric_getters(rows[ref])
    for spec, runs in rows.items():
      cell = {"seeds": sorted(r["seed"] for r in runs), "reference": ref, "is_reference": spec == ref}
      for key, get in _metric_getters(runs).items():
        ref_vals = _values(rows[ref], ref_getters[key]) if key in ref_getters and spec != ref else None
        cell[key] = _stat_cell(_values(runs, get), ref_vals)
      ood_cells = _ood_cells(runs)
      if ood_cells is not None:
        cell["ood"] = ood_cells
      out.setdefault(regime, {})[spec] = cell
    for group in (selection or {}).get(regime, {}).values():
      out[regime][group["row"]]["chosen"] = group["chosen"]
  return out


def parse_columns(items: Sequence[str] | None) -> tuple[tuple[str, str], ...]:
  """``["accuracy", "ece", "ece:ts", "classwise_ece:ats"]`` -> ((stage, metric), ...); None -> :data:`COLUMNS`."""
  if not items:
    return COLUMNS
  out = []
  known = (*REPORTED, *ESTIMATORS, *LONGTAIL)
  known_ci = tuple(f"{m}_ci" for m in (*REPORTED, "adaptive_ece"))
  for item in items:
    metric, _, stage = item.partition(":")
    stage = stage or "raw"
    if stage not in STAGES:
      raise ValueError(f"--columns {item!r}: the stage after ':' must be one of {list(STAGES)}")
    if metric not in known + known_ci:
      raise ValueError(f"--columns {item!r}: unknown metric {metric!r}; expected one of {list(known + known_ci)}")
    out.append((stage, metric))
  return tuple(out)


def _scale(metric: str) -> float:
  return 1.0 if metric == "nll" else 100.0  # the rest in %


def _fmt(cell: dict, stage: str, metric: str, n: int | None = None) -> str:
  if metric.endswith("_ci"):  # the test set's bootstrap interval, averaged over seeds
    lo, hi = cell.get(f"{metric[:-3]}_cilow_{stage}"), cell.get(f"{metric[:-3]}_cihigh_{stage}")
    if lo is None or hi is None:
      return "n/a"
    s = _scale(metric[:-3])
    return f"[{s * lo['mean']:.2f}, {s * hi['mean']:.2f}]"
  m = cell.get(f"{metric}_{stage}")
  if m is None or not np.isfinite(m.get("mean", np.nan)):
    return "n/a"
  s = _scale(metric)
  text = f"{s * m['mean']:.2f} +/- {s * m['std']:.2f}"
  if np.isfinite(m.get("ci_low", np.nan)):
    text += f" [{s * m['ci_low']:.2f}, {s * m['ci_high']:.2f}]"
  if n is not None and m.get("n", n) != n:  # fewer seeds than the table's header (a run missing or non-finite)
    text += f" (n={m['n']})"
  p = m.get("vs_reference", {}).get("t_pvalue")
  return text + (" *" if p is not None and np.isfinite(p) and p < P_MARK else "")


def _fmt_diff(cell: dict, stage: str, metric: str) -> str:
  if metric.endswith("_ci"):
    return "-"
  d = cell.get(f"{metric}_{stage}", {}).get("vs_reference")
  if not d:
    return "-"
  s = _scale(metric)

  def p(v):
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"

  return f"{s * d['mean_diff']:+.2f} [{s * d['ci_low']:+.2f}, {s * d['ci_high']:+.2f}] p={p(d['t_pvalue'])}/{p(d['wilcoxon_pvalue'])}"


def _chosen_line(row: str, chosen: list) -> str:
  def hp(h):
    return ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in h.items()) or "-"

  return f"{row}: " + "; ".join(f"seed {c['seed']}: {hp(c['hparams'])}" for c in chosen)


def _header(columns) -> list[str]:
  return ["loss"] + [metric if stage == "raw" else f"{metric} ({stage.upper()})" for stage, metric in columns]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def markdown_table(
  summary: dict, dataset: str, columns: Sequence[tuple[str, str]] = COLUMNS, selection: str = "val"
) -> str:
  """Per regime: the test-metric table (``columns``), the paired differences to the reference, the
  hyper-parameters chosen on validation, and an OOD-detection table when the runs have OOD sets."""
  lines = []
  for regime, by_loss in summary.items():
    first = next(iter(by_loss.values()))
    seeds = sorted({s for cell in by_loss.values() for s in cell["seeds"]})
    ref = first.get("reference")
    fitted = " and ".join(dict.fromkeys(s.upper() for s, _ in columns if s != "raw"))
    lines.append(f"### {dataset}, {regime}: test metrics, mean +/- std over seeds {seeds}")
    lines.append(
      f"Checkpoint: {SELECTIONS[selection]}. Mean +/- sample std (ddof=1) [95% Student-t interval] over the seeds; "
      f"`*`: paired t-test against `{ref}` (same seed = same split and labels) gives p < {P_MARK}. accuracy, ECE, "
      "SCE in %; NLL in nats; ECE/SCE with the configured bins"
      + (f"; {fitted} fitted on the validation split." if fitted else ".")
    )
    lines.append("")
    rows = [
      [spec + (" (ref)" if cell.get("is_reference") else "")] + [_fmt(cell, s, m, len(seeds)) for s, m in columns]
      for spec, cell in by_loss.items()
    ]
    lines += _table(_header(columns), rows) + [""]
    diff_rows = [[spec] + [_fmt_diff(cell, s, m) for s, m in columns] for spec, cell in by_loss.items() if not cell.get("is_reference")]
    if diff_rows:
      lines.append(
        f"Paired differences to `{ref}` (loss minus reference): mean [95% t-interval] p = paired t / Wilcoxon "
        "signed-rank (n/a: too few seeds or no non-zero difference)."
      )
      lines.append("")
      lines += _table(_header(columns), diff_rows) + [""]
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
    f"OOD detection, {regime}: in-distribution test split = positive, in %, mean +/- sample std over seeds "
    "(FPR95: OOD examples accepted at 95% in-distribution recall; lower is better).",
    "",
  ]
  header = ["loss", "OOD set"] + [f"{score} {label}" for score in scores for _, label in OOD_TABLE_METRICS]
  rows = []
  for spec, by_set in with_ood.items():
    for name, by_score in by_set.items():
      row = [spec, name]
      for score in scores:
        for metric, _ in OOD_TABLE_METRICS:
          m = by_score[score][metric]
          row.append(f"{100 * m['mean']:.2f} +/- {100 * m['std']:.2f}")
      rows.append(row)
  return lines + _table(header, rows) + [""]
