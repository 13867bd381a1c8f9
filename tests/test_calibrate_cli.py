"""`gence-jax calibrate` on predictions made elsewhere: a scikit-learn model's saved logits and probabilities, and
each bad input as a one-line error with the CLI's exit status."""

import json
import os

import numpy as np
import pytest
from scipy import special
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from gence_jax import cli


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A logistic regression on digits, its held-out and test outputs saved as a PyTorch user would save theirs."""
  x, y = load_digits(return_X_y=True)
  idx = np.random.default_rng(0).permutation(len(y))
  tr, va, te = idx[:700], idx[700:1200], idx[1200:]
  model = LogisticRegression(max_iter=3000).fit(x[tr] / 16.0, y[tr])
  d = tmp_path_factory.mktemp("export")
  out = {}
  for kind in ("logits", "probs"):
    f = (lambda a: model.decision_function(a / 16.0)) if kind == "logits" else (lambda a: model.predict_proba(a / 16.0))
    path = str(d / f"{kind}.npz")
    np.savez(path, **{f"val_{kind}": f(x[va]), "val_labels": y[va], f"test_{kind}": f(x[te]), "test_labels": y[te]})
    out[kind] = path
  out["test_labels"] = y[te]
  out["test_probs"] = model.predict_proba(x[te] / 16.0)
  out["dir"] = d
  return out


def test_calibrate_every_method_on_exported_logits(exported, tmp_path, capsys):
  work = str(tmp_path / "cal")
  methods = ["ts", "histogram", "isotonic", "scaling_binning"]  # every calibrator is fitted by tests/test_calibrators.py
  assert cli.main(["calibrate", "--predictions", exported["logits"], "--workdir", work, "--bootstrap", "10",
                   "--methods", *methods]) == 0
  printed = capsys.readouterr().out
  assert "| histogram | " in printed and "n/a (top-label)" in printed
  res = json.load(open(os.path.join(work, "calibration.json")))
  assert set(res["test"]) == {"raw", *methods}
  y, p = exported["test_labels"], exported["test_probs"]
  # The raw row is the model's own softmax (its logits' softmax is predict_proba).
  assert res["test"]["raw"]["accuracy"] == pytest.approx(float(np.mean(p.argmax(1) == y)), abs=1e-6)
  assert res["test"]["raw"]["nll"] == pytest.approx(float(-np.log(p[np.arange(len(y)), y]).mean()), rel=1e-4)
  for method in ("histogram", "isotonic", "scaling_binning", "ts"):  # prediction kept
    assert res["test"][method]["accuracy"] == res["test"]["raw"]["accuracy"], method
  assert res["test"]["histogram"]["nll"] is None and res["calibrators"]["histogram"]["output"] == "top_label"
  for name in ("calibration.md", "reliability_raw.png", "reliability_ts.png", "reliability_histogram.png"):
    assert os.path.getsize(os.path.join(work, name)) > 0, name


def test_calibrate_probabilities_equal_logits(exported, tmp_path):
  runs = {}
  for kind in ("logits", "probs"):
    work = str(tmp_path / kind)
    assert cli.main(["calibrate", "--predictions", exported[kind], "--workdir", work, "--methods", "ts", "isotonic",
                     "--bootstrap", "0"]) == 0
    runs[kind] = json.load(open(os.path.join(work, "calibration.json")))["test"]
  for stage in ("raw", "ts", "isotonic"):
    for metric in ("accuracy", "ece", "adaptive_ece"):
      assert runs["probs"][stage][metric] == pytest.approx(runs["logits"][stage][metric], abs=2e-4), (stage, metric)


def _write(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def test_calibrate_bad_inputs_are_one_line_errors(exported, tmp_path, capsys):
  d = np.load(exported["logits"])
  good = {k: d[k] for k in d.files}
  probs = special.softmax(good["val_logits"], 1)
  nan = dict(good)
  nan["test_logits"] = good["test_logits"].copy()
  nan["test_logits"][5, 2] = np.nan
  cases = {
    "missing key": (3, dict((k, v) for k, v in good.items() if k != "val_labels"), "missing 'val_labels'"),
    "both kinds": (3, {**good, "val_probs": probs}, "exactly one of 'val_logits' or 'val_probs'"),
    "rows": (3, {**good, "val_labels": good["val_labels"][:-3]}, "'val_labels' must be integers of shape"),
    "classes": (3, {**good, "test_logits": good["test_logits"][:, :7]}, "out of range for K = 7"),
    "nan": (3, nan, "'test_logits' has NaN or Inf (first in row 5)"),
    "not summing to 1": (3, {**{k: v for k, v in good.items() if k != "val_logits"}, "val_probs": probs * 1.1},
                         "is not a probability vector"),
    "label range": (3, {**good, "test_labels": np.where(np.arange(len(good["test_labels"])) == 4, 12,
                                                        good["test_labels"])}, "'test_labels'[4] = 12"),
    "bad link": (2, {**good, "link": np.array("sparsest")}, "link 'sparsest'"),
  }
  for name, (status, arrays, text) in cases.items():
    path = _write(tmp_path / f"{name.replace(' ', '_')}.npz", **arrays)
    assert cli.main(["calibrate", "--predictions", path, "--workdir", str(tmp_path / "w")]) == status, name
    err = capsys.readouterr().err.strip()
    assert err.startswith("gence-jax: error: ") and "\n" not in err and text in err, (name, err)
  assert cli.main(["calibrate", "--predictions", str(tmp_path / "absent.npz"), "--workdir", str(tmp_path)]) == 3
  assert "predictions file not found" in capsys.readouterr().err
  assert cli.main(["calibrate", "--predictions", exported["logits"], "--workdir", str(tmp_path), "--methods",
                   "platt"]) == 2
  assert "unknown calibrator(s) ['platt']" in capsys.readouterr().err
