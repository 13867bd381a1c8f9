"""Trust what a run says: run identity, the work-directory lock, one-line CLI errors with their exit statuses, and a
failing writer (disk full) that names the last good checkpoint and resumes bit-exactly once the fault is gone."""

from __future__ import annotations

import errno
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gence_jax import cli, train
from gence_jax.train import identity
from gence_jax.train.checkpoint import Checkpointer
from gence_jax.train.errors import RunIdentityError, RunLockedError, WorkdirError

FAST = [
  "train.epochs=1",
  "train.batch_size=64",
  "train.progress=False",
  "train.eval_every_epochs=100",
  "train.checkpoint_every_steps=1000",
  "train.log_every_steps=5",
  "model.kwargs.hidden=(16,)",
  "calibration.bootstrap_resamples=0",  # intervals are tested in test_train / test_bootstrap
  "calibration.methods=('ts',)",  # every calibrator and the plot: test_train's config-file run, test_calibrators
  "outputs.reliability_plot=False",
]


def make_config(*overrides):
  return train.apply_overrides(train.load_config(None), [*FAST, *overrides])


def events(workdir, name):
  return [e for e in map(json.loads, open(os.path.join(workdir, "metrics.jsonl"))) if e["event"] == name]


@pytest.mark.extended
@pytest.mark.slow
def test_resume_with_another_config_is_refused_before_anything_runs(tmp_path):
  wd = str(tmp_path / "w")
  train.train_and_evaluate(make_config("loss.name=cross_entropy"), wd)
  with pytest.raises(RunIdentityError, match=r"loss\.name: 'cross_entropy' -> 'mgce'.*train\.epochs: 1 -> 2"):
    train.train_and_evaluate(make_config("loss.name=mgce", "train.epochs=2"), wd)
  assert len(events(wd, "start")) == 1  # nothing was appended by the refused run
  assert json.load(open(os.path.join(wd, "results.json")))["config"]["loss"]["name"] == "cross_entropy"
  # keys that cannot change the result may differ: the finished run is reused (no new training step)
  again = train.train_and_evaluate(make_config("loss.name=cross_entropy", "train.log_every_steps=3"), wd)
  assert again["resumed_from_step"] == again["steps"]
  # --overwrite moves the old run aside, never deletes it
  with pytest.warns(UserWarning, match="moved to"):
    train.train_and_evaluate(make_config("loss.name=mgce", "train.epochs=2"), wd, overwrite=True)
  moved = glob.glob(wd + ".replaced-*")
  assert len(moved) == 1 and json.load(open(os.path.join(moved[0], "results.json")))["config"]["loss"]["name"] == "cross_entropy"
  assert len(events(wd, "start")) == 1 and events(wd, "start")[0]["config"]["loss"]["name"] == "mgce"


@pytest.mark.slow
def test_data_fingerprint_binds_the_file_content(tmp_path):
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(300, 5)).astype(np.float32), np.arange(300) % 3
  path = str(tmp_path / "d.npz")
  np.savez(path, x=x, y=y)
  config = make_config(f"dataset.name={path}")
  wd = str(tmp_path / "w")
  train.train_and_evaluate(config, wd)
  x[7, 2] += 1.0  # same name, other content
  np.savez(path, x=x, y=y)
  with pytest.raises(RunIdentityError, match="sha256"):
    train.train_and_evaluate(config, wd)


# compare refusing a grid of another config: tests/test_grid.py (shards test); the work-directory lock, this host's
# and other hosts' leases: tests/test_grid.py::test_leases_of_this_and_other_hosts


def _cli(capsys, *argv):
  status = cli.main(list(argv))
  err = capsys.readouterr().err
  return status, err


@pytest.mark.parametrize(
  "argv, status, message",
  [
    (["--set", "train.epochz=3"], 2, "unknown config key 'train.epochz'"),
    (["--set", "dataset.name=/no/such/file.npz"], 2, "file not found"),
    (["--set", "dataset.regimes=symmetric:1.5"], 2, "dataset.regimes"),
    (["--set", "loss.name=mgce", "--set", "loss.hparams.beta=0.5"], 2, "beta"),
    (["--set", "dataset.regimes=small:5000"], 3, "regime 'small:5000' cannot be applied to the train split"),
  ],
)
def test_cli_user_errors_are_one_line(tmp_path, capsys, argv, status, message):
  got, err = _cli(capsys, "train", "--workdir", str(tmp_path / "w"), *argv)
  assert got == status
  assert err.startswith("gence-jax: error: ") and message in err
  assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_data_and_identity_errors_and_debug(tmp_path, capsys):
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"this is not a zip file")
  status, err = _cli(capsys, "train", "--workdir", str(tmp_path / "a"), "--set", f"dataset.name={bad}")
  assert status == 3 and "not an .npz" in err and err.count("\n") == 1
  wd = str(tmp_path / "b")
  args = ["train", "--workdir", wd, *sum((["--set", o] for o in FAST), [])]
  assert _cli(capsys, *args)[0] == 0
  status, err = _cli(capsys, *args, "--set", "train.epochs=2")
  assert status == 4 and "--overwrite" in err and "Traceback" not in err
  status, err = _cli(capsys, *args, "--set", "train.epochs=2", "--debug")
  assert status == 4 and "Traceback" in err


def _final_params(workdir):
  import orbax.checkpoint as ocp

  d = os.path.join(workdir, "checkpoints")
  step = max(int(n) for n in os.listdir(d) if n.isdigit())
  with ocp.StandardCheckpointer() as c:
    return c.restore(os.path.join(d, str(step), "default"))["params"]


def test_failing_writer_then_resume(tmp_path, monkeypatch):
  common = ["train.epochs=3", "train.checkpoint_every_steps=10"]
  ref = str(tmp_path / "ref")
  train.train_and_evaluate(make_config(*common), ref)
  wd = str(tmp_path / "w")
  save = Checkpointer.save

  def full_disk(self, step, state, **kw):
    if step == 30:
      raise OSError(errno.ENOSPC, "No space left on device")
    return save(self, step, state, **kw)

  monkeypatch.setattr(Checkpointer, "save", full_disk)
  with pytest.raises(WorkdirError, match=r"No space left on device.*last good checkpoint: step 20"):
    train.train_and_evaluate(make_config(*common), wd)
  monkeypatch.setattr(Checkpointer, "save", save)
  train.train_and_evaluate(make_config(*common), wd)  # the fault is gone: resume from step 20
  a, b = _final_params(ref), _final_params(wd)
  import jax

  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert np.array_equal(np.asarray(x), np.asarray(y))


def test_grouping_of_steps_does_not_change_the_numbers(tmp_path):
  # log frequency and steps per dispatch only change how steps are grouped into dispatches (lax.scan chunks): the
  # parameters must be bit-identical, which is why run identity may ignore the log frequency
  common = ["train.epochs=2", "train.checkpoint_every_steps=1000"]
  runs = {
    "one_per_dispatch": ["train.steps_per_dispatch=1", "train.log_every_steps=1000"],
    "chunks_and_logs": ["train.steps_per_dispatch=0", "train.log_every_steps=7"],
    "chunks_of_3": ["train.steps_per_dispatch=3", "train.log_every_steps=1000"],
  }
  params = {}
  for name, extra in runs.items():
    train.train_and_evaluate(make_config(*common, *extra), str(tmp_path / name))
    params[name] = _final_params(str(tmp_path / name))
  import jax

  ref = jax.tree_util.tree_leaves(params["one_per_dispatch"])
  for name in ("chunks_and_logs", "chunks_of_3"):
    for x, y in zip(ref, jax.tree_util.tree_leaves(params[name])):
      assert np.array_equal(np.asarray(x), np.asarray(y)), name


def test_what_a_nan_logit_does_to_each_loss():
  # the README's statement: NaN in its row for every loss but GenCE, every row for GenCE (shared class sums); and
  # `checked` raises on it
  import jax.numpy as jnp

  from gence_jax.losses import LossInputError, available_losses, checked, gence, get_loss

  z = jnp.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 1.0], [0.5, 0.2, 0.1]])
  y = jnp.array([0, 1, 2])
  for name in available_losses():
    loss = get_loss(name, data={"class_counts": (5, 3, 2)})
    out = np.asarray(loss.per_example(z, y, state=loss.init_state() if loss.stateful else None))
    want = [False, True, False] if name != "gence" else [True, True, True]
    assert np.isnan(out).tolist() == want, name
  with pytest.raises(LossInputError):
    checked(gence)(z, y)


def test_every_loss_gives_an_empty_result_on_zero_rows():
  import jax.numpy as jnp

  from gence_jax.losses import available_losses, get_loss

  z, y = jnp.zeros((0, 3)), jnp.zeros((0,), jnp.int32)
  for name in available_losses():
    loss = get_loss(name, data={"class_counts": (5, 3, 2)})
    out = loss.per_example(z, y, state=loss.init_state() if loss.stateful else None)
    assert out.shape == (0,), name


def test_mgce_infinite_beta_is_a_clear_error():
  # beta = inf is refused (its limit is cross-entropy, which the message names), not NaN
  import jax.numpy as jnp

  from gence_jax.losses import get_loss, mgce, mgce_probs, mgce_soft

  z, y = jnp.ones((2, 3)), jnp.array([0, 1])
  for call in (lambda: mgce(z, y, beta=float("inf")), lambda: mgce_probs(z, beta=float("inf")),
               lambda: get_loss("mgce", beta=float("inf"))):
    with pytest.raises(ValueError, match=r"`beta` must be finite.*cross_entropy"):
      call()
  with pytest.raises(ValueError, match="`beta`"):
    mgce_soft(z, jnp.full((2, 3), 1 / 3), beta=float("inf"))
