"""Hyper-parameter selection on validation in ``gence-jax compare --select`` (the MGCE paper's beta selection).

* the pure selection on hand-made result dicts: best validation accuracy, ties by lower validation NLL, full ties
  by the spec listed first; the summary row's mean +/- std computed by hand;
* groups: same registry name (aliases resolved), at least two specs, errors before anything trains;
* end to end: ``gence-jax compare --select`` on digits with two Lq values of q x two seeds; the choice is checked
  against validation accuracies recomputed here from each run's saved validation logits.
"""

import contextlib
import io
import json
import os

import numpy as np
import pytest

from gence_jax import cli, train
from gence_jax.train.report import (
  markdown_table,
  parse_columns,
  select_on_validation,
  selection_groups,
  spec_hparams,
  summarize,
)


def run(seed, val_acc, val_nll, test_acc, test_ece=0.1):
  stage = {"accuracy": test_acc, "nll": 0.5, "ece": test_ece, "sce": 0.01}
  return {
    "seed": seed,
    "val": {"accuracy": val_acc, "nll": val_nll},
    "test": {"raw": stage, "ts": dict(stage), "ats": dict(stage)},
  }


SPECS = ["mgce:beta=1", "mgce:beta=2", "mgce:beta=11", "cross_entropy"]
GRID = {
  "symmetric:0.4": {
    # seed 0: beta=2 has the best validation accuracy
    # seed 1: beta=1 and beta=11 tie on accuracy (0.80); beta=11 has the lower NLL
    # seed 2: beta=1 and beta=2 tie on accuracy AND NLL: the spec listed first (beta=1) is kept
    "mgce:beta=1": [run(0, 0.70, 0.9, 0.71), run(1, 0.80, 0.7, 0.81), run(2, 0.90, 0.3, 0.91)],
    "mgce:beta=2": [run(0, 0.75, 0.9, 0.72), run(1, 0.78, 0.1, 0.82), run(2, 0.90, 0.3, 0.92)],
    "mgce:beta=11": [run(0, 0.74, 0.1, 0.73), run(1, 0.80, 0.6, 0.83), run(2, 0.85, 0.2, 0.93)],
    "cross_entropy": [run(0, 0.99, 0.0, 0.5), run(1, 0.99, 0.0, 0.5), run(2, 0.99, 0.0, 0.5)],
  }
}


def test_selection_on_hand_made_results_with_ties():
  groups = selection_groups(SPECS)
  assert groups == {"mgce": ["mgce:beta=1", "mgce:beta=2", "mgce:beta=11"]}  # cross_entropy has one spec
  sel = select_on_validation(GRID, groups)["symmetric:0.4"]["mgce"]
  assert sel["row"] == "mgce (selected on validation)"
  assert [c["spec"] for c in sel["chosen"]] == ["mgce:beta=2", "mgce:beta=11", "mgce:beta=1"]
  assert [c["hparams"] for c in sel["chosen"]] == [{"beta": 2}, {"beta": 11}, {"beta": 1}]
  assert [c["seed"] for c in sel["chosen"]] == [0, 1, 2]
  assert [(c["val_accuracy"], c["val_nll"]) for c in sel["chosen"]] == [(0.75, 0.9), (0.80, 0.6), (0.90, 0.3)]
  assert [r["test"]["raw"]["accuracy"] for r in sel["runs"]] == [0.72, 0.83, 0.91]

  summary = summarize(GRID, select_on_validation(GRID, groups))["symmetric:0.4"]
  row = summary["mgce (selected on validation)"]
  want = np.array([0.72, 0.83, 0.91])
  assert row["accuracy_raw"]["mean"] == pytest.approx(want.mean())
  assert row["accuracy_raw"]["std"] == pytest.approx(np.std(want, ddof=1))  # the sample std
  assert row["seeds"] == [0, 1, 2] and row["chosen"][1]["spec"] == "mgce:beta=11"
  assert list(summary)[:4] == SPECS  # the original rows stay, the selected row comes after them
  table = markdown_table(summarize(GRID, select_on_validation(GRID, groups)), "digits")
  assert "| mgce (selected on validation) | 82.00 +/- " in table
  assert "- mgce (selected on validation): seed 0: beta=2; seed 1: beta=11; seed 2: beta=1" in table


def test_selection_order_of_specs_decides_full_ties_and_missing_values_rank_last():
  grid = {"clean": {"a:x=1": [run(0, 0.5, 0.2, 0.1)], "a:x=2": [run(0, 0.5, 0.2, 0.2)]}}
  first = select_on_validation(grid, {"a": ["a:x=1", "a:x=2"]})["clean"]["a"]["chosen"][0]["spec"]
  swapped = select_on_validation(grid, {"a": ["a:x=2", "a:x=1"]})["clean"]["a"]["chosen"][0]["spec"]
  assert (first, swapped) == ("a:x=1", "a:x=2")
  grid["clean"]["a:x=1"][0]["val"]["nll"] = None  # e.g. an infinite NLL written as null
  assert select_on_validation(grid, {"a": ["a:x=1", "a:x=2"]})["clean"]["a"]["chosen"][0]["spec"] == "a:x=2"


def test_groups_resolve_aliases_and_fail_early():
  assert selection_groups(["lq:q=0.7", "generalized_ce:q=0.5", "gence"]) == {
    "generalized_ce": ["lq:q=0.7", "generalized_ce:q=0.5"]
  }
  assert selection_groups(SPECS + ["focal:gamma=1", "focal:gamma=3"], ["mgce"]) == {"mgce": SPECS[:3]}
  with pytest.raises(ValueError, match="no loss has two or more specs"):
    selection_groups(["cross_entropy", "mgce:beta=2"])
  with pytest.raises(ValueError, match="focal"):
    selection_groups(SPECS, ["focal"])
  assert spec_hparams("mgce:beta=1.43;tol=1e-6") == {"beta": 1.43, "tol": 1e-6}
  assert parse_columns(["accuracy", "classwise_ece:ats"]) == (("raw", "accuracy"), ("ats", "classwise_ece"))
  with pytest.raises(ValueError, match="unknown metric"):
    parse_columns(["acc"])
  with pytest.raises(ValueError, match="stage"):
    parse_columns(["ece:platt"])


def test_compare_select_fails_before_training(tmp_path, capsys):
  wd = tmp_path / "cmp"
  with pytest.raises(ValueError, match="no loss has two or more specs"):
    selection_groups(["cross_entropy", "gence"], [])
  args = ["compare", "--workdir", str(wd), "--losses", "cross_entropy", "gence", "--select", "--seeds", "0"]
  assert cli.main(args) == 2
  assert "no loss has two or more specs" in capsys.readouterr().err
  assert not wd.exists()


FAST = [
  "train.epochs=2",
  "train.batch_size=64",
  "train.eval_batch_size=256",
  "train.progress=False",
  "train.eval_every_epochs=1",
  "train.checkpoint_every_steps=1000",
  "train.log_every_steps=10",
  "optimizer.learning_rate=0.003",
  "calibration.bootstrap_resamples=0",  # intervals are tested in test_train / test_bootstrap
  "model.kwargs={'hidden': (32,)}",
  "calibration.methods=('ts',)",  # the columns read ece:ts
]


@pytest.mark.extended
@pytest.mark.slow
def test_compare_select_end_to_end_on_digits(tmp_path):
  wd = tmp_path / "cmp"
  specs = ["lq:q=0.3", "generalized_ce:q=0.9"]  # one group (an alias and the registry name)
  args = ["compare", "--workdir", str(wd), "--losses", *specs, "--seeds", "0", "1", "--regimes", "symmetric:0.2"]
  args += ["--select", "--columns", "accuracy", "sce", "ece:ts", *sum([["--set", o] for o in FAST], [])]
  ood_path = str(tmp_path / "noise.npz")  # an OOD set: the compare summary gets an OOD table
  np.savez(ood_path, x_test=np.random.default_rng(0).uniform(0, 16, (50, 64)).astype(np.float32))
  args += ["--set", f"ood.datasets={ood_path}"]
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert cli.main(args) == 0
  summary = json.load(open(wd / "summary.json"))
  chosen = summary["selection"]["symmetric:0.2"]["generalized_ce"]["chosen"]
  row = summary["summary"]["symmetric:0.2"]["generalized_ce (selected on validation)"]
  md = (wd / "summary.md").read_text()
  picked = []
  for seed in (0, 1):
    cands = []
    for spec in specs:
      run_dir = os.path.join(wd, "symmetric-0.2", spec.replace(":", "_").replace("=", ""), f"seed{seed}")
      res = json.load(open(os.path.join(run_dir, "results.json")))
      pred = np.load(os.path.join(run_dir, "predictions.npz"))
      acc = float(np.mean(pred["val_logits"].argmax(-1) == pred["val_labels"]))  # noisy labels, as selected on
      assert acc == pytest.approx(res["test"]["val_raw"]["accuracy"], abs=1e-6)
      assert res["data"]["label_noise"]["val"] > 0.15  # the regime applies to validation too
      cands.append((acc, -res["test"]["val_raw"]["nll"], -specs.index(spec), spec, res))
    best = max(cands)
    picked.append((best[4]["test"]["raw"]["accuracy"], best[4]["ood"]["datasets"][ood_path]["energy"]["fpr95"]))
    assert chosen[seed]["spec"] == best[3] and chosen[seed]["hparams"] == spec_hparams(best[3])
  assert row["accuracy_raw"]["mean"] == pytest.approx(np.mean([p[0] for p in picked]), abs=1e-9)
  assert row["ood"][ood_path]["energy"]["fpr95"]["mean"] == pytest.approx(np.mean([p[1] for p in picked]), abs=1e-9)
  assert "OOD detection, symmetric:0.2" in md and f"| generalized_ce (selected on validation) | {ood_path} |" in md
  assert "| loss | accuracy | sce | ece (TS) |" in md and "| generalized_ce (selected on validation) |" in md
  assert "- generalized_ce (selected on validation): seed 0: q=" in md
  assert md.strip() in out.getvalue()
  assert (wd / "ece.png").exists()
  # a rerun reads the finished runs back and selects the same
  with contextlib.redirect_stdout(io.StringIO()):
    assert cli.main(args) == 0
  assert json.load(open(wd / "summary.json"))["selection"]["symmetric:0.2"]["generalized_ce"]["chosen"] == chosen


def test_summary_without_select_is_unchanged():
  grid = {"clean": {"cross_entropy": [run(0, 0.9, 0.1, 0.8), run(1, 0.9, 0.1, 0.6)]}}
  table = markdown_table(summarize(grid), "digits")
  header = "| loss | accuracy | nll | ece | sce | nll (TS) | ece (TS) | sce (TS) | nll (ATS) | ece (ATS) | sce (ATS) |"
  assert header in table and "selected" not in table and "OOD" not in table
  assert "with the configured bins; TS and ATS fitted on the validation split." in table
  only_ts = markdown_table(summarize(grid), "digits", parse_columns(["accuracy", "ece:ts"]))
  assert "with the configured bins; TS fitted on the validation split." in only_ts and "ATS" not in only_ts
  # sample std of (80, 60) = 14.14; 95% t-interval 70 -/+ t(0.975, 1) 14.14 / sqrt(2) = 70 -/+ 127.06
  assert "| cross_entropy (ref) | 70.00 +/- 14.14 [-57.06, 197.06] | 0.50 +/- 0.00 [0.50, 0.50] |" in table
  assert train.load_config(None).ood.datasets == ""


def test_paired_comparison_to_the_reference_matches_scipy():
  from scipy import stats as sps

  acc = {"cross_entropy": [0.80, 0.70, 0.75, 0.90, 0.85, 0.60], "gence": [0.82, 0.74, 0.74, 0.93, 0.88, 0.66]}
  grid = {"clean": {spec: [run(s, 0.9, 0.1, a) for s, a in enumerate(vals)] for spec, vals in acc.items()}}
  cell = summarize(grid, reference="cross_entropy")["clean"]["gence"]["accuracy_raw"]
  a, r = np.array(acc["gence"]), np.array(acc["cross_entropy"])
  d = cell["vs_reference"]
  assert d["mean_diff"] == pytest.approx(np.mean(a - r))
  assert d["t_pvalue"] == pytest.approx(sps.ttest_rel(a, r).pvalue)
  assert d["wilcoxon_pvalue"] == pytest.approx(sps.wilcoxon(a - r).pvalue)
  lo, hi = sps.t.interval(0.95, len(a) - 1, loc=np.mean(a - r), scale=np.std(a - r, ddof=1) / np.sqrt(len(a)))
  assert (d["ci_low"], d["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
  assert cell["std"] == pytest.approx(np.std(a, ddof=1))
  table = markdown_table(summarize(grid, reference="cross_entropy"), "digits", parse_columns(["accuracy"]))
  assert "Paired differences to `cross_entropy`" in table and "| cross_entropy (ref) |" in table
  assert "with the configured bins." in table and "fitted on the validation split" not in table  # raw columns only
  assert ("*" in table.split("| gence |")[1].split("\n")[0]) == (sps.ttest_rel(a, r).pvalue < 0.05)


def test_summarize_only_reads_finished_runs_and_trains_nothing(tmp_path, capsys):
  from gence_jax.train.compare import compare

  config = train.apply_overrides(train.load_config(None), FAST)
  wd = str(tmp_path / "grid")
  with pytest.raises(ValueError, match="no finished run"):
    compare(config, wd, losses=["cross_entropy", "gence"], seeds=[0], train=False)
  compare(config, wd, losses=["cross_entropy"], seeds=[0])  # one cell finished
  summary = compare(config, wd, losses=["cross_entropy", "gence"], seeds=[0], train=False)
  assert list(summary["clean"]) == ["cross_entropy"]
  assert "not finished (left out of the summary): regime=clean loss=gence seed=0" in capsys.readouterr().out
  assert not os.path.exists(os.path.join(wd, "clean", "gence"))
