"""OOD detection in the training program (the config's ``ood`` block), on offline data.

One ``gence-jax train`` run on digits (MLP, cross-entropy, 3 epochs) with three OOD sets written here:

* ``blend.npz``: each image the mean of 10 random digits test images (ambiguous digits: low confidence);
* ``far.npz`` (array ``x``, no ``x_test``): uniform noise scaled to [0, 1000], far outside the data (pixel range
  0..16). A ReLU network is MORE confident there, not less (Hein, Andriushchenko & Bitterwolf, CVPR 2019), so every
  score ranks these above the test set: AUROC near 0;
* ``digits`` itself: the OOD "test split" is the in-distribution test set, so the OOD logits must equal the test
  logits bit for bit (same preprocessing) and every AUROC is exactly 0.5.

Reported AUROC / AUPR / FPR95 are checked against scikit-learn (``roc_auc_score``, ``average_precision_score``,
``roc_curve``) on scores recomputed here in float64 NumPy from the saved logits, never from the library's scores.
"""

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from gence_jax import cli, train
from gence_jax.data import load_digits
from gence_jax.losses import get_loss
from gence_jax.data.ood import parse_ood_datasets
from gence_jax.train.ood import evaluate_ood, ood_scores

FAST = [
  "train.epochs=3",
  "train.batch_size=64",
  "train.eval_batch_size=256",
  "train.progress=False",
  "train.eval_every_epochs=1",
  "train.checkpoint_every_steps=1000",
  "train.log_every_steps=10",
  "calibration.bootstrap_resamples=0",  # intervals are tested in test_train / test_bootstrap
  "calibration.methods=('ts',)",  # every calibrator and the plot: test_train's config-file run, test_calibrators
  "outputs.reliability_plot=False",
]


def softmax64(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def logsumexp64(z):
  z = np.asarray(z, np.float64)
  m = z.max(-1)
  return m + np.log(np.exp(z - m[:, None]).sum(-1))


def neg_entropy64(p):
  return np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), -1)


def sklearn_metrics(s_in, s_out):
  y = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
  s = np.r_[s_in, s_out]
  fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
  return {
    "auroc": roc_auc_score(y, s),
    "aupr_in": average_precision_score(y, s),
    "aupr_out": average_precision_score(1 - y, -s),
    "fpr95": fpr[np.argmax(tpr >= 0.95)],
  }


@pytest.fixture(scope="module")
def ood_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("ood")
  raw = load_digits()
  rng = np.random.default_rng(1)
  blend = np.stack([raw.x_test[rng.choice(len(raw.x_test), 10, replace=False)].mean(0) for _ in range(300)])
  np.savez(tmp / "blend.npz", x_test=blend.astype(np.float32))
  np.savez(tmp / "far.npz", x=(1000 * rng.uniform(size=(200, 64))).astype(np.float32), y=np.zeros(200, np.int64))
  names = [str(tmp / "blend.npz"), str(tmp / "far.npz"), "digits"]
  wd = tmp / "run"
  args = ["train", "--workdir", str(wd), *sum([["--set", o] for o in FAST], [])]
  args += ["--set", "ood.datasets=" + ", ".join(names), "--set", "seed=0"]
  return wd, names, args


@pytest.fixture(scope="module")
def ood_results(ood_run):
  wd, names, args = ood_run
  import contextlib
  import io

  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert cli.main(args) == 0
  return wd, names, json.load(open(wd / "results.json")), out.getvalue()


@pytest.mark.slow
def test_ood_metrics_match_sklearn_on_recomputed_scores(ood_results):
  wd, names, results, _ = ood_results
  report = results["ood"]
  assert list(report["datasets"]) == names and report["scores"] == ["max_prob", "entropy", "energy"]
  pred = np.load(wd / "predictions.npz")
  saved = np.load(wd / "ood_scores.npz")
  assert saved["names"].tolist() == names
  n_test = len(pred["test_labels"])
  assert report["in_distribution"] == {"split": "test", "num_examples": n_test}
  z_in = pred["test_logits"]
  p_in = softmax64(z_in)
  ref_in = {"max_prob": p_in.max(-1), "entropy": neg_entropy64(p_in), "energy": logsumexp64(z_in)}
  for i, name in enumerate(names):
    z_out = saved[f"ood{i}_logits"]
    p_out = softmax64(z_out)
    ref_out = {"max_prob": p_out.max(-1), "entropy": neg_entropy64(p_out), "energy": logsumexp64(z_out)}
    entry = report["datasets"][name]
    assert entry["num_examples"] == len(z_out)
    for score in report["scores"]:
      np.testing.assert_allclose(saved[f"in_{score}"], ref_in[score], rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(saved[f"ood{i}_{score}"], ref_out[score], rtol=1e-5, atol=1e-6)
      # on the saved scores themselves: sklearn's numbers to rounding
      exact = sklearn_metrics(saved[f"in_{score}"], saved[f"ood{i}_{score}"])
      for metric, value in exact.items():
        assert entry[score][metric] == pytest.approx(value, abs=1e-12), (name, score, metric)
      if name != names[1]:  # on the far-noise set the float32 scores tie at 1 / 0 where float64 ones do not
        want = sklearn_metrics(ref_in[score], ref_out[score])
        for metric, value in want.items():
          assert entry[score][metric] == pytest.approx(value, abs=2e-3), (name, score, metric)


def test_ood_separation_and_same_preprocessing(ood_results):
  wd, names, results, _ = ood_results
  blend, far, same = (results["ood"]["datasets"][n] for n in names)
  assert blend["num_examples"] == 300 and far["num_examples"] == 200
  assert far["source"]["array"] == "x"  # an .npz without x_test: all of x
  # ambiguous blends are detected by the max probability; far-away noise is confidently misclassified (ReLU)
  assert blend["max_prob"]["auroc"] > 0.9 and blend["entropy"]["auroc"] > 0.9
  assert far["max_prob"]["auroc"] < 0.2 and far["energy"]["auroc"] < 0.2
  # the in-distribution test set as "OOD": the same inputs through the same normalisation give the same logits
  saved = np.load(wd / "ood_scores.npz")
  pred = np.load(wd / "predictions.npz")
  np.testing.assert_array_equal(saved["ood2_logits"], pred["test_logits"])
  for score in ("max_prob", "entropy", "energy"):
    assert same[score]["auroc"] == 0.5
    assert same[score]["fpr95"] >= 0.95


def test_ood_reported_in_metrics_jsonl_and_cli(ood_results):
  wd, names, results, stdout = ood_results
  records = [json.loads(line) for line in open(wd / "metrics.jsonl")]
  events = {r["dataset"]: r for r in records if r["event"] == "ood"}
  assert list(events) == names
  for name in names:
    assert events[name]["max_prob"] == results["ood"]["datasets"][name]["max_prob"]
    assert events[name]["selected_step"] == results["selected"]["step"]
  assert records[-1]["event"] == "end" and set(records[-1]["ood"]) == set(names)
  lines = [line for line in stdout.splitlines() if line.startswith("ood [")]
  assert len(lines) == 3 * len(names)
  auroc = 100 * results["ood"]["datasets"][names[0]]["max_prob"]["auroc"]
  assert f"max_prob auroc {auroc:.2f}%" in lines[0]


def test_ood_uses_the_loss_link_and_energy_on_logits():
  # MGCE's link is not softmax: the independent float64 bisection below solves sum relu((z + nu)/beta + 1)^beta = 1.
  beta = 2.0
  rng = np.random.default_rng(0)
  z = rng.normal(size=(40, 5)) * 3
  z_ood = rng.normal(size=(30, 5))

  def mgce_link(z):
    k = z.shape[-1]
    b = beta * ((1.0 / k) ** (1.0 / beta) - 1.0)
    lo, hi = b - z.max(-1), b - z.min(-1)
    for _ in range(200):
      mid = 0.5 * (lo + hi)
      f = (np.maximum((z + mid[:, None]) / beta + 1.0, 0.0) ** beta).sum(-1) - 1.0
      lo, hi = np.where(f < 0, mid, lo), np.where(f < 0, hi, mid)
    return np.maximum((z + lo[:, None]) / beta + 1.0, 0.0) ** beta

  loss = get_loss("mgce", beta=beta)
  s = ood_scores(loss, z)
  p = mgce_link(z)
  np.testing.assert_allclose(s["max_prob"], p.max(-1), atol=1e-5)
  np.testing.assert_allclose(s["entropy"], neg_entropy64(p), atol=1e-4)
  np.testing.assert_allclose(s["energy"], logsumexp64(z), rtol=1e-6)
  assert not np.allclose(s["max_prob"], softmax64(z).max(-1), atol=1e-2)  # really not the softmax
  z = z / 3  # no saturated (max prob exactly 1) rows below: float32 ties would decide the AUROC
  assert mgce_link(z).max() < 0.999
  report, arrays = evaluate_ood(loss, z, {"a": z_ood})
  want = roc_auc_score(np.r_[np.ones(40), np.zeros(30)], np.r_[mgce_link(z).max(-1), mgce_link(z_ood).max(-1)])
  assert report["datasets"]["a"]["max_prob"]["auroc"] == pytest.approx(want, abs=1e-9)
  assert arrays["names"].tolist() == ["a"] and arrays["ood0_max_prob"].shape == (30,)


def test_shape_mismatch_fails_before_training_naming_both_shapes(tmp_path):
  np.savez(tmp_path / "images.npz", x_test=np.zeros((10, 8, 8, 1), np.float32))
  config = train.apply_overrides(train.load_config(None), [*FAST, f"ood.datasets={tmp_path / 'images.npz'}"])
  with pytest.raises(ValueError, match=r"ood\.datasets.*\(8, 8, 1\).*\(64,\)"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_ood_config_validation(tmp_path):
  base = train.load_config(None)
  assert base.ood.datasets == "" and base.ood.max_examples == 0  # the default: no OOD evaluation
  with pytest.raises(ValueError, match="'ood.datasets'.*unknown dataset 'nope'"):
    train.validate(train.apply_overrides(train.load_config(None), ["ood.datasets=digits,nope"]))
  with pytest.raises(FileNotFoundError, match="'ood.datasets'.*missing.npz"):
    train.validate(train.apply_overrides(train.load_config(None), [f"ood.datasets={tmp_path / 'missing.npz'}"]))
  with pytest.raises(ValueError, match="'ood.datasets'.*twice"):
    train.validate(train.apply_overrides(train.load_config(None), ["ood.datasets=digits, digits"]))
  with pytest.raises(ValueError, match="'ood.max_examples'"):
    train.validate(train.apply_overrides(train.load_config(None), ["ood.max_examples=-1"]))
  train.validate(train.apply_overrides(train.load_config(None), ["ood.datasets=tfds:svhn_cropped,cifar10"]))
  assert parse_ood_datasets(" a.npz ,tfds:svhn_cropped,") == ["a.npz", "tfds:svhn_cropped"]


def test_max_examples_takes_a_fixed_subset(tmp_path):
  from gence_jax.train.ood import prepare_ood_sets

  x = np.arange(100 * 64, dtype=np.float32).reshape(100, 64)
  np.savez(tmp_path / "o.npz", x_test=x)
  config = train.apply_overrides(train.load_config(None), [f"ood.datasets={tmp_path / 'o.npz'}", "ood.max_examples=30"])
  (got, info), (again, _) = (
    prepare_ood_sets(config, (64,), np.float32, "digits")[str(tmp_path / "o.npz")] for _ in "ab"
  )
  assert got.shape == (30, 64) and info["num_examples"] == 30 and info["num_available"] == 100
  rows = got[:, 0] / 64
  assert np.all(np.diff(rows) > 0) and len(set(rows)) == 30  # distinct rows of x, in order
  np.testing.assert_array_equal(got, again)  # the same subset for every run


def test_tfds_ood_set_reads_the_test_split():
  tfds = pytest.importorskip("tensorflow_datasets")
  from gence_jax.data.ood import load_ood_inputs

  with tfds.testing.mock_data(num_examples=12):
    x, info = load_ood_inputs("tfds:svhn_cropped")
  assert x.shape == (12, 32, 32, 3) and x.dtype == np.uint8
  assert info["kind"] == "tfds" and info["tfds_name"] == "svhn_cropped" and info["split"] == "test"
