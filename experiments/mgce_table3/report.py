"""The MGCE paper's Table 3 (Bondugula, Mazuelas, Perez & Liu, AISTATS 2026, Appendix G.4) next to this program's
numbers, from a finished (or partly finished) `gence-jax compare --select mgce` workdir.

Writes to ``--out``: ``table.md`` (per regime: MGCE selected on validation, generalized CE q = 0.7, CE and the
convex minimax 0-1 loss (MGCE at beta = 1, the paper's "MAE"), test accuracy and SCE, mean +/- sample std and 95%
t-interval over the seeds that finished, the paper's number beside each, the paired difference to CE; the chosen
beta per seed; the MGCE objective next to the randomised rule's training error and the argmax test error),
``table.json``, ``accuracy_over_epochs_<regime>.png`` (test accuracy at every evaluation, MGCE at its chosen beta against
GCE, mean over seeds: the paper's Figure 6 claim that MGCE converges faster).

    python experiments/mgce_table3/report.py runs/mgce_table3/adult --dataset adult \
        --out experiments/results/mgce_table3/adult
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np

from gence_jax import metrics, plots, stats
from gence_jax.train.report import run_record, select_on_validation, selection_groups

# The paper's Table 3 (accuracy %, SCE %; label noise 0 / 0.2 / 0.4), as published.
PAPER = {
  "mnist": {
    "MGCE": ((97.28, 96.15, 94.99), (0.79, 6.52, 10.53)),
    "GCE": ((97.14, 95.74, 94.19), (0.37, 17.3, 1.43)),
    "CE": ((97.17, 95.59, 94.02), (0.4, 21.18, 39.46)),
    "MAE": ((97.24, 96.1, 94.95), (80.03, 81.18, 80.55)),
  },
  "adult": {
    "MGCE": ((85.68, 84.56, 82.63), (7.85, 12.13, 6.02)),
    "GCE": ((85.68, 85.33, 83.51), (1.2, 5.69, 5.21)),
    "CE": ((85.68, 84.56, 81.38), (0.76, 14.3, 23.48)),
    "MAE": ((85.49, 83.85, 82.01), (16.72, 19.36, 18.69)),
  },
}
REGIMES = {"clean": 0, "symmetric:0.2": 1, "symmetric:0.4": 2}
ROWS = {"MGCE": "mgce (selected on validation)", "GCE": "generalized_ce:q=0.7", "CE": "cross_entropy", "MAE": "mgce:beta=1"}


def load_grid(workdir: str) -> dict:
  """``{regime: {spec: [run record]}}`` of every finished run (``results.json``) under `workdir`. A record is the
  best-on-validation checkpoint's (`run_record`), plus ``last`` (the test metrics of the final epoch's state),
  ``sce_skip_zeros`` (SCE of the reported state's test probabilities with exact zeros skipped, Nixon et al.'s
  implementation) and ``epochs`` (test accuracy at each evaluation)."""
  grid: dict = {}
  for path in sorted(glob.glob(os.path.join(workdir, "*", "*", "seed*", "results.json"))):
    run_dir = os.path.dirname(path)
    result = json.load(open(path))
    regime = result["config"]["dataset"]["regimes"] or "clean"
    name = result["config"]["loss"]["name"]
    hp = result["config"]["loss"]["hparams"]
    spec = name + (":" + ";".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in hp.items()) if hp else "")
    record = run_record(result["seed"], result, run_dir)
    record["last"] = run_record(result["seed"], result, run_dir, selection="last")["test"]
    record.update(_sce_variants(run_dir, result["config"]["calibration"]["num_bins"]))
    record["epochs"] = _test_curve(run_dir)
    grid.setdefault(regime, {}).setdefault(spec, []).append(record)
  return grid


def _sce_variants(run_dir: str, num_bins: int) -> dict:
  """SCE of the reported state's test predictions under two other conventions: exact zeros skipped (Nixon et al.'s
  implementation; MGCE's link gives exact zeros) and softmax of the logits instead of the loss's link (what a
  pipeline that always applies softmax would report for MGCE)."""
  with np.load(os.path.join(run_dir, "predictions.npz")) as arrays:
    probs, logits, labels = arrays["test_probs"], arrays["test_logits"], arrays["test_labels"]
  softmax = np.exp(logits - logits.max(axis=-1, keepdims=True))
  softmax /= softmax.sum(axis=-1, keepdims=True)
  return {
    "sce_skip_zeros": float(metrics.sce(probs, labels, num_bins=num_bins, skip_zeros=True)),
    "sce_softmax": float(metrics.sce(softmax, labels, num_bins=num_bins)),
  }


def _test_curve(run_dir: str) -> list[tuple[int, float]]:
  events = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
  return [(e["epoch"], e["accuracy"]) for e in events if e.get("event") == "eval" and e.get("split") == "test"]


def _cell(values: list[float]) -> dict:
  return stats.summarize(values) if values else {"mean": float("nan"), "std": float("nan"), "n": 0}


def _fmt(c: dict, scale: float = 100.0) -> str:
  if not c.get("n"):
    return "-"
  text = f"{scale * c['mean']:.2f}"
  if c["n"] > 1:
    text += f" +/- {scale * c['std']:.2f} [{scale * c['ci_low']:.2f}, {scale * c['ci_high']:.2f}]"
  return text + f" (n={c['n']})"


# What a table cell reads from a run record.
GETTERS = {
  "accuracy": lambda r: r["test"]["raw"]["accuracy"],
  "last_accuracy": lambda r: r["last"]["raw"]["accuracy"],
  "sce": lambda r: r["test"]["raw"]["sce"],
  "sce_skip_zeros": lambda r: r["sce_skip_zeros"],
  "sce_softmax": lambda r: r["sce_softmax"],
  "ece": lambda r: r["test"]["raw"]["ece"],
}


def _paired(runs: list, reference: list, get) -> dict | None:
  """Paired difference (runs - reference) over the seeds both have, or None with fewer than 2 pairs."""
  ref = {r["seed"]: get(r) for r in reference}
  mine = {r["seed"]: get(r) for r in runs if r["seed"] in ref}
  if len(mine) < 2:
    return None
  return stats.paired_difference(mine, {s: ref[s] for s in mine})


def _fmt_paired(d: dict | None) -> str:
  if d is None:
    return "-"
  return f"{100 * d['mean_diff']:+.2f} [{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}] p={d['t_pvalue']:.3f}"


def mgce_selection(grid: dict) -> dict:
  """MGCE's beta chosen per seed on validation (`select_on_validation`) among every beta of the grid, for the seeds
  of a regime that have a finished run at every beta (a partly finished grid selects nothing for the others)."""
  mgce_specs = sorted({s for by in grid.values() for s in by if s.startswith("mgce:")})
  if len(mgce_specs) < 2:
    return {}
  complete = {}
  for regime, by_spec in grid.items():
    seeds = set.intersection(*({r["seed"] for r in by_spec.get(spec, [])} for spec in mgce_specs))
    if seeds:
      complete[regime] = {spec: [r for r in runs if r["seed"] in seeds] for spec, runs in by_spec.items()}
  return select_on_validation(complete, selection_groups(mgce_specs))


def build(grid: dict, dataset: str, chosen: dict) -> tuple[str, dict]:
  """The Markdown table per regime (ours beside the paper's) and its numbers."""
  lines, out = [], {}
  for regime, col in REGIMES.items():
    if regime not in grid:
      continue
    rows = dict(grid[regime])
    if regime in chosen:
      rows[ROWS["MGCE"]] = chosen[regime]["mgce"]["runs"]
    ce_runs = rows.get(ROWS["CE"], [])
    seeds = sorted({r["seed"] for runs in rows.values() for r in runs})
    lines += [f"### {dataset}, {regime}: seeds {seeds}", ""]
    lines += [
      "Test accuracy of the best-on-validation checkpoint (the program's report) and of the final epoch, SCE of the "
      "reported checkpoint (15 bins, every (example, class) pair counted; then with exact zeros skipped, and of "
      "softmax(logits) instead of the loss's link), in %: mean +/- sample std [95% t-interval] (n seeds). The paired columns are this row minus CE over "
      "the same seeds [95% t-interval], paired t-test p.",
      "",
      "| loss | accuracy (ours) | paper | last-epoch accuracy | SCE (ours) | SCE, zeros skipped | SCE, softmax "
      "| paper SCE | accuracy - CE | SCE - CE |",
      "|---|---|---|---|---|---|---|---|---|---|",
    ]
    out[regime] = {}
    for label, spec in ROWS.items():
      runs = rows.get(spec, [])
      cells = {m: _cell([get(r) for r in runs]) for m, get in GETTERS.items()}
      pa, ps = PAPER[dataset][label][0][col], PAPER[dataset][label][1][col]
      diffs = {} if label == "CE" else {m: _paired(runs, ce_runs, GETTERS[m]) for m in ("accuracy", "sce")}
      lines.append(
        f"| {label} ({spec}) | {_fmt(cells['accuracy'])} | {pa} | {_fmt(cells['last_accuracy'])} "
        f"| {_fmt(cells['sce'])} | {_fmt(cells['sce_skip_zeros'])} | {_fmt(cells['sce_softmax'])} | {ps} "
        f"| {_fmt_paired(diffs.get('accuracy'))} | {_fmt_paired(diffs.get('sce'))} |"
      )
      out[regime][label] = {"spec": spec, **cells, "paper_accuracy": pa, "paper_sce": ps, "minus_ce": diffs}
    lines.append("")
    if regime in chosen:
      lines += _chosen_lines(chosen[regime]["mgce"])
      out[regime]["chosen"] = chosen[regime]["mgce"]["chosen"]
  return "\n".join(lines), {"rows": out, "chosen": {k: v["mgce"]["chosen"] for k, v in chosen.items()}}


def _chosen_lines(selected: dict) -> list[str]:
  picks, runs = selected["chosen"], selected["runs"]
  lines = ["beta chosen on validation: " + ", ".join(f"seed {c['seed']}: {c['hparams']['beta']:g}" for c in picks), ""]
  reports = [r.get("loss_report", {}) for r in runs]
  if all("objective" in rep for rep in reports):
    lines += ["MGCE objective (mean loss + L1) vs the randomised rule's training error vs the argmax test error:", ""]
    for c, rep, run in zip(picks, reports, runs):
      lines.append(
        f"- seed {c['seed']}: objective {rep['objective']:.4f} >= randomised training error "
        f"{rep.get('train_randomized_error', float('nan')):.4f}; argmax test error {1 - run['test']['raw']['accuracy']:.4f}"
      )
    lines.append("")
  return lines


def sensitivity(grids: dict[str, dict], specs: tuple[str, ...] = ("mgce:beta=1.43", "cross_entropy")) -> tuple[str, dict]:
  """One table per regime: for each named variant of the protocol (``{name: grid}``, e.g. the hidden layer's
  initialiser) and each spec, the test accuracy of the best-on-validation checkpoint and of the final epoch, and the
  first spec's paired difference to the last (CE) under the same variant."""
  lines, out = [], {}
  for regime in [r for r in REGIMES if any(r in g for g in grids.values())]:
    lines += [
      f"### {regime}: test accuracy % by variant (best on validation \\| final epoch)",
      "",
      "| variant | " + " | ".join(specs) + f" | {specs[0]} - {specs[-1]} (best) | {specs[0]} - {specs[-1]} (final) |",
      "|---|" + "---|" * (len(specs) + 2),
    ]
    for name, grid in grids.items():
      by_spec = grid.get(regime, {})
      if not any(s in by_spec for s in specs):
        continue
      cells = []
      for spec in specs:
        runs = by_spec.get(spec, [])
        best, last = _cell([GETTERS["accuracy"](r) for r in runs]), _cell([GETTERS["last_accuracy"](r) for r in runs])
        cells.append(f"{_fmt(best)} \\| {_fmt(last)}")
        out.setdefault(regime, {}).setdefault(name, {})[spec] = {"best": best, "last": last}
      first, ref = by_spec.get(specs[0], []), by_spec.get(specs[-1], [])
      diffs = [_paired(first, ref, GETTERS[m]) for m in ("accuracy", "last_accuracy")]
      out[regime][name]["minus_last_spec"] = diffs
      lines.append(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(_fmt_paired(d) for d in diffs) + " |")
    lines.append("")
  return "\n".join(lines), out


def curves(grid: dict, chosen: dict) -> dict:
  """``{regime: {"MGCE": (epochs, [seeds, E]), "GCE": ...}}`` of test accuracy at each evaluation."""
  out = {}
  for regime in REGIMES:
    if regime not in grid:
      continue
    series = {}
    mgce_runs = chosen.get(regime, {}).get("mgce", {}).get("runs")
    for label, runs in (("MGCE (chosen beta)", mgce_runs), ("GCE q=0.7", grid[regime].get(ROWS["GCE"]))):
      if not runs:
        continue
      epochs = [e for e, _ in runs[0]["epochs"]]
      values = np.array([[a for _, a in r["epochs"]] for r in runs if len(r["epochs"]) == len(epochs)]) * 100
      series[label] = (np.asarray(epochs), values)
    out[regime] = series
  return out


def convergence_lines(by_regime: dict, within: float = 0.5) -> list[str]:
  """Per regime and curve: the first evaluation epoch at which test accuracy comes within `within` points of that
  run's best, per seed and mean (a number for the paper's Figure 6 claim that MGCE converges faster)."""
  lines = [f"First evaluation epoch at which test accuracy is within {within} points of the run's best:", ""]
  for regime, series in by_regime.items():
    for label, (epochs, values) in series.items():
      firsts = [int(epochs[np.argmax(row >= np.nanmax(row) - within)]) for row in np.atleast_2d(values)]
      lines.append(f"- {regime}, {label}: mean {np.mean(firsts):.1f} (per seed: {', '.join(map(str, firsts))})")
  return lines + [""]


def _write(out_dir: str, name: str, text: str, numbers: dict) -> None:
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, name + ".md"), "w") as f:
    f.write(text + "\n")
  with open(os.path.join(out_dir, name + ".json"), "w") as f:
    json.dump(numbers, f, indent=2, default=float)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("workdir")
  parser.add_argument("--dataset", choices=sorted(PAPER), required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument(
    "--sensitivity",
    nargs="*",
    default=[],
    metavar="NAME=WORKDIR",
    help="variants of the protocol to set beside the main grid (e.g. he_normal=runs/mgce_table3/adult_init_he_normal);"
    " writes sensitivity.md",
  )
  parser.add_argument("--main-name", default="main grid", help="the main grid's name in sensitivity.md")
  args = parser.parse_args(argv)
  grid = load_grid(args.workdir)
  chosen = mgce_selection(grid)
  table, numbers = build(grid, args.dataset, chosen)
  by_regime = curves(grid, chosen)
  table += "\n" + "\n".join(convergence_lines(by_regime))
  _write(args.out, "table", table, numbers)
  for regime, series in by_regime.items():
    if series:
      plots.metric_curves(
        series,
        ylabel="test accuracy (%)",
        path=os.path.join(args.out, f"accuracy_over_epochs_{regime.replace(':', '-')}.png"),
        title=f"{args.dataset}, {regime}: test accuracy at each evaluation",
      )
  if args.sensitivity:
    variants = {args.main_name: grid}
    for item in args.sensitivity:
      name, _, path = item.partition("=")
      if not path:
        parser.error(f"--sensitivity: expected NAME=WORKDIR, got {item!r}")
      variants[name] = load_grid(path)
    _write(args.out, "sensitivity", *sensitivity(variants))
  print(table)


if __name__ == "__main__":
  main()
