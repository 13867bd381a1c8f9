"""The training program end to end, on the bundled digits data (small MLP or tiny CNN, 1-3 epochs).

* resume after ``kill -9`` reproduces the uninterrupted run bit for bit (CLI in subprocesses);
* an unreadable newest checkpoint falls back to the previous one with a warning; none readable -> CheckpointError;
* NaN/Inf stops the run with TrainingDivergedError naming the step and the last good checkpoint;
* pmap == jit over 8 devices (cross-entropy, GenCE, BatchNorm) and jit on 8 devices == jit on 1 device;
* bad configs fail before training, naming the key;
* outputs (metrics.jsonl, results.json, reliability.png) and config files given by path.

In-process runs see the 8 fake CPU devices of conftest.py; subprocesses get their device count set explicitly.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gence_jax import cli, train
from gence_jax.data import load_dataset
from gence_jax.train import CheckpointError, Checkpointer, TrainingDivergedError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 180  # seconds for any subprocess: a hang fails the test instead of blocking CI
TINY_CNN = ["model.name=cnn", "model.kwargs={'features': (4,), 'hidden': 16}", "dataset.as_images=True"]
FAST = [
  "train.epochs=1",
  "train.batch_size=64",
  "train.eval_batch_size=512",
  "train.progress=False",
  "train.eval_every_epochs=100",
  "train.checkpoint_every_steps=1000",
  "train.log_every_steps=5",
  "calibration.bootstrap_resamples=0",  # intervals: test_outputs (the config-file run) and test_bootstrap.py
  "calibration.methods=('ts',)",  # every calibrator and the plot: test_train's config-file run, test_calibrators
  "outputs.reliability_plot=False",
]


def make_config(*overrides):
  return train.apply_overrides(train.load_config(None), [*FAST, *overrides])


def ckpt_steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def final_state(workdir):
  """The newest checkpoint of `workdir` as a nested dict of NumPy arrays (no template needed)."""
  step = ckpt_steps(workdir)[-1]
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(os.path.join(workdir, "checkpoints", str(step), "default"))


def leaves(tree):
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def assert_trees_equal(a, b):
  la, lb = leaves(a), leaves(b)
  assert la.keys() == lb.keys()
  assert la, "empty state"
  for k in la:
    assert la[k].dtype == lb[k].dtype and la[k].shape == lb[k].shape, k
    assert np.array_equal(la[k], lb[k]), f"{k}: max |diff| {np.max(np.abs(la[k] - lb[k].astype(la[k].dtype)))}"


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  la, lb = leaves(a), leaves(b)
  assert la.keys() == lb.keys()
  for k in la:
    np.testing.assert_allclose(la[k], lb[k], rtol=rtol, atol=atol, err_msg=k)


def subprocess_env(devices):
  """This environment with exactly `devices` fake CPU devices (other XLA flags kept)."""
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
  env["JAX_PLATFORMS"] = "cpu"
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  return env


def cli_command(workdir, overrides, config=None):
  cmd = [sys.executable, "-m", "gence_jax.cli", "train", "--workdir", str(workdir)]
  if config:
    cmd += ["--config", str(config)]
  for o in overrides:
    cmd += ["--set", o]
  return cmd


def run_cli(workdir, overrides, devices, log):
  with open(log, "w") as f:
    proc = subprocess.run(
      cli_command(workdir, overrides),
      env=subprocess_env(devices),
      cwd=REPO,
      stdout=f,
      stderr=subprocess.STDOUT,
      timeout=TIMEOUT,
    )
  assert proc.returncode == 0, open(log).read()[-4000:]


# --------------------------------------------------------------------------------------------------------------
# 1. kill -9 and resume
# --------------------------------------------------------------------------------------------------------------

RESUME = [
  "train.epochs=2",
  "train.batch_size=32",
  "train.eval_batch_size=512",
  "train.progress=False",
  "train.checkpoint_every_steps=2",
  "train.keep_checkpoints=3",
  "train.log_every_steps=2",
  "train.eval_every_epochs=1",
  "model.name=cnn",
  "dataset.as_images=True",
  "dataset.augment=crop_flip",
  "model.kwargs={'features': (4,), 'hidden': 16, 'dropout_rate': 0.2}",
  "loss.name=gence",
  "calibration.bootstrap_resamples=0",
  "calibration.methods=('ts',)",
  "outputs.reliability_plot=False",
]


@pytest.mark.extended
@pytest.mark.slow
def test_resume_after_sigkill_is_bit_exact(tmp_path):
  """Adam state, BatchNorm statistics, dropout keys (fold_in of the step) and augmentation all resume exactly."""
  devices = 8
  ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
  ref_log = open(tmp_path / "reference.log", "w")
  reference = subprocess.Popen(
    cli_command(ref_dir, RESUME), env=subprocess_env(devices), cwd=REPO, stdout=ref_log, stderr=subprocess.STDOUT
  )
  victim = None
  try:
    with open(tmp_path / "killed.log", "w") as log:
      victim = subprocess.Popen(
        cli_command(run_dir, RESUME), env=subprocess_env(devices), cwd=REPO, stdout=log, stderr=subprocess.STDOUT
      )
      deadline = time.time() + TIMEOUT
      while not any(s >= 6 for s in ckpt_steps(run_dir)):
        if victim.poll() is not None:
          pytest.fail(
            f"the run ended (rc {victim.returncode}) before reaching step 6:\n"
            + open(tmp_path / "killed.log").read()[-3000:]
          )
        if time.time() > deadline:
          pytest.fail("no checkpoint >= 6 within the timeout")
        time.sleep(0.005)
      os.kill(victim.pid, signal.SIGKILL)
      assert victim.wait(timeout=30) == -signal.SIGKILL
    killed_at = ckpt_steps(run_dir)
    total = 2 * load_dataset("digits", seed=0).steps_per_epoch(32)
    assert not (run_dir / "results.json").exists() and max(killed_at) < total, (killed_at, "killed too late")

    run_cli(run_dir, RESUME, devices, tmp_path / "resumed.log")
    assert reference.wait(timeout=TIMEOUT) == 0, open(tmp_path / "reference.log").read()[-4000:]
  finally:
    for p in (reference, victim):
      if p is not None and p.poll() is None:
        p.kill()
        p.wait()
    ref_log.close()

  resumed = json.load(open(run_dir / "results.json"))
  uninterrupted = json.load(open(ref_dir / "results.json"))
  assert resumed["steps"] == uninterrupted["steps"] == total
  assert 6 <= resumed["resumed_from_step"] < total and resumed["resumed_from_step"] in killed_at
  assert uninterrupted["resumed_from_step"] == 0
  assert ckpt_steps(run_dir)[-1] == ckpt_steps(ref_dir)[-1] == total
  a, b = final_state(run_dir), final_state(ref_dir)
  assert set(a) == {"step", "params", "batch_stats", "opt_state", "loss_state"} and leaves(a["batch_stats"])
  assert_trees_equal(a, b)
  assert resumed["test"]["raw"] == uninterrupted["test"]["raw"]


# --------------------------------------------------------------------------------------------------------------
# 2. unreadable checkpoints
# --------------------------------------------------------------------------------------------------------------


def truncate_arrays(step_dir):
  files = [f for f in glob.glob(os.path.join(step_dir, "default", "**", "d", "*"), recursive=True) if os.path.isfile(f)]
  assert files, f"no array data files under {step_dir}"
  for f in files:
    with open(f, "r+b") as fh:
      fh.truncate(os.path.getsize(f) // 2)


# Reading a deliberately damaged checkpoint leaves orbax/tensorstore callbacks that fire on an already closed event
# loop ("Event loop is closed", reported by pytest as an unraisable exception): third-party noise, not a failure.
QUIET_ORBAX = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def settle():
  """Lets the stray callbacks of failed reads run now, inside the test that caused them."""
  import gc

  time.sleep(0.2)
  gc.collect()


@QUIET_ORBAX
def test_checkpointer_falls_back_and_refuses_to_start_over(tmp_path):
  template = {"w": jax.numpy.zeros((4, 3)), "step": jax.numpy.zeros((), jax.numpy.int32)}

  def write(directory):
    c = Checkpointer(str(directory), max_to_keep=5)
    for s in (1, 2, 3):
      c.save(s, {"w": np.full((4, 3), s, np.float32), "step": np.int32(s)})
    c.close()

  def corrupt(step_dir):  # overwritten with zeros: same size, wrong bytes
    for f in glob.glob(os.path.join(step_dir, "default", "**", "d", "*"), recursive=True):
      with open(f, "r+b") as fh:
        fh.write(b"\0" * os.path.getsize(f))

  def remove_item(step_dir):  # an incomplete step: the item folder is missing
    import shutil

    shutil.rmtree(os.path.join(step_dir, "default"))

  for i, damage in enumerate((truncate_arrays, corrupt, remove_item)):
    d = tmp_path / f"c{i}"
    write(d)
    damage(str(d / "3"))
    with pytest.warns(RuntimeWarning, match="step 3 .* could not be read"):
      c = Checkpointer(str(d))
      state, step = c.restore_latest(template)
      c.close()
    assert step == 2 and float(state["w"][0, 0]) == 2.0 and int(state["step"]) == 2
    assert os.listdir(str(d) + ".unreadable")[0].startswith("3-")  # moved aside, so step 3 can be saved again
    c = Checkpointer(str(d))
    assert c.all_steps() == [1, 2]
    c.save(3, {"w": np.full((4, 3), 30, np.float32), "step": np.int32(3)})
    c.close()
    c = Checkpointer(str(d))
    assert c.restore_latest(template)[1] == 3
    c.close()

  d = tmp_path / "all"
  write(d)
  for s in (1, 2, 3):
    truncate_arrays(str(d / str(s)))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    c = Checkpointer(str(d))
    with pytest.raises(CheckpointError, match=r"none of the checkpoints \[1, 2, 3\]"):
      c.restore_latest(template)
    c.close()
  assert sorted(os.listdir(d)) == ["1", "2", "3"]  # nothing moved or deleted when nothing is readable
  c = Checkpointer(str(tmp_path / "empty"))
  assert c.restore_latest(template) == (None, 0)
  c.close()
  settle()


@QUIET_ORBAX
def test_training_resumes_from_previous_checkpoint_when_newest_is_corrupt(tmp_path):
  wd = str(tmp_path / "run")
  config = make_config("train.checkpoint_every_steps=5", "optimizer.name=sgd", "optimizer.learning_rate=0.05")
  first = train.train_and_evaluate(config, wd)
  total = first["steps"]
  assert ckpt_steps(wd) == [total - 10, total - 5, total]
  reference = final_state(wd)

  truncate_arrays(os.path.join(wd, "checkpoints", str(total)))
  with pytest.warns(RuntimeWarning, match=f"step {total} .* could not be read.*falling back"):
    second = train.train_and_evaluate(config, wd)
  assert second["resumed_from_step"] == total - 5
  assert ckpt_steps(wd)[-1] == total
  assert_trees_equal(final_state(wd), reference)  # the retrained last 5 steps give the same state

  os.remove(os.path.join(wd, "results.json"))
  for s in ckpt_steps(wd):
    truncate_arrays(os.path.join(wd, "checkpoints", str(s)))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    with pytest.raises(CheckpointError, match="Refusing to restart from scratch"):
      train.train_and_evaluate(config, wd)
  assert not os.path.exists(os.path.join(wd, "results.json"))
  settle()


# --------------------------------------------------------------------------------------------------------------
# 3. divergence
# --------------------------------------------------------------------------------------------------------------


def test_huge_learning_rate_stops_with_training_diverged_error(tmp_path):
  wd = str(tmp_path / "run")
  config = make_config(
    "optimizer.name=sgd",
    "optimizer.learning_rate=1e30",
    "optimizer.momentum=0.0",
    "train.checkpoint_every_steps=1",
    "train.log_every_steps=1",
  )
  with pytest.raises(TrainingDivergedError) as info:
    train.train_and_evaluate(config, wd)
  err = info.value
  # step 0 applies lr * grad (finite but huge); step 1's loss is then NaN/Inf
  assert err.step == 1 and err.last_checkpoint == 1
  assert "at step 1 " in str(err) and "Last good checkpoint: step 1 in" in str(err)
  assert "new --workdir, or add --overwrite" in str(err)  # advice the program accepts (identity refuses a resume)
  assert ckpt_steps(wd) == [1]  # the last good checkpoint is on disk (its save was finished), nothing after it
  state = final_state(wd)
  assert all(np.all(np.isfinite(v)) for v in leaves(state["params"]).values())
  assert not os.path.exists(os.path.join(wd, "results.json"))


def test_nan_in_data_stops_with_training_diverged_error(tmp_path):
  from sklearn.datasets import load_digits

  x, y = load_digits(return_X_y=True)
  x = x.astype(np.float32)
  x[5, 10] = np.nan
  path = str(tmp_path / "nan_digits.npz")
  np.savez(path, x=x, y=y)
  wd = str(tmp_path / "run")
  # NaN features are refused when the data load, naming the row, before anything compiles or trains
  from gence_jax.data import DataError

  with pytest.raises(DataError, match=r"NaN/Inf at row 5"):
    train.train_and_evaluate(make_config(f"dataset.name={path}", "train.log_every_steps=3"), wd)
  assert ckpt_steps(wd) == []
  # a step size that overflows float32: step 0's update makes the parameters infinite, step 1's loss is NaN
  lr = ["optimizer.name=sgd", "optimizer.learning_rate=1e39", "train.log_every_steps=3"]
  with pytest.raises(TrainingDivergedError, match=r"at step 1 .*Last good checkpoint: none"):
    train.train_and_evaluate(make_config(*lr), str(tmp_path / "run2"))
  assert ckpt_steps(str(tmp_path / "run2")) == []


# --------------------------------------------------------------------------------------------------------------
# 4. pmap == jit, 8 devices == 1 device
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "extra",
  [
    pytest.param([], id="cross_entropy-mlp"),
    # GenCE normalises over the global batch and BatchNorm uses global statistics: both need axis_name under pmap
    pytest.param([*TINY_CNN, "loss.name=gence"], id="gence-cnn-batchnorm"),
  ],
)
@pytest.mark.slow
def test_pmap_matches_jit(tmp_path, extra):
  assert jax.device_count() == 8
  common = ["optimizer.name=sgd", "optimizer.learning_rate=0.1", *extra]
  states = {}
  for mode in ("jit", "pmap"):
    wd = str(tmp_path / mode)
    result = train.train_and_evaluate(make_config(f"train.mode={mode}", *common), wd)
    assert result["devices"] == 8
    states[mode] = final_state(wd)
  assert_trees_close(states["pmap"]["params"], states["jit"]["params"])
  assert_trees_close(states["pmap"]["batch_stats"], states["jit"]["batch_stats"])
  assert_trees_close(states["pmap"]["opt_state"], states["jit"]["opt_state"])
  assert int(states["pmap"]["step"]) == int(states["jit"]["step"]) > 0


@pytest.mark.slow
def test_pmap_devices_draw_independent_dropout_masks():
  """Under pmap each device folds its axis_index into the dropout key: 8 devices holding copies of the same 4 rows
  must not all drop the same units (which would make the step equal to a 1-device step on those rows)."""
  import jax.numpy as jnp
  import optax

  from gence_jax import losses, models
  from gence_jax.train import create_state, make_train_step

  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(4, 8, 8, 1)).astype(np.float32), np.arange(4, dtype=np.int32)

  def one_step(n, rate):
    model = models.get_model("cnn", 10, features=(4,), hidden=16, dropout_rate=rate, bn_axis_name="data")
    tx = optax.sgd(0.5)
    state = create_state(model, tx, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
    step = jax.pmap(
      make_train_step(model, losses.get_loss("cross_entropy"), tx, axis_name="data"),
      axis_name="data",
      in_axes=(0, 0, None),
      devices=jax.devices()[:n],
    )
    copies = lambda a: np.broadcast_to(np.asarray(a)[None], (n, *np.shape(a)))  # noqa: E731
    batch = {"x": copies(x), "label": copies(y), "mask": copies(np.ones(4, bool))}
    new, _ = step(jax.tree_util.tree_map(copies, state), batch, jax.random.PRNGKey(1))
    return jax.tree_util.tree_map(lambda a: np.asarray(a[0]), new.params)

  assert_trees_close(one_step(8, 0.0), one_step(1, 0.0))  # no dropout: 8 copies == 1 device
  with_dropout = leaves(one_step(8, 0.5))["['dense']['kernel']"]
  assert not np.allclose(with_dropout, leaves(one_step(1, 0.5))["['dense']['kernel']"], rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_jit_on_8_devices_matches_1_device(tmp_path):
  """Sharded global batch (GenCE, BatchNorm, dropout) == the same run on one device (a subprocess)."""
  common = [
    "optimizer.name=sgd",
    "optimizer.learning_rate=0.1",
    "loss.name=gence",
    *TINY_CNN,
    "model.kwargs={'features': (4,), 'hidden': 16, 'dropout_rate': 0.2}",
  ]
  one = tmp_path / "one_device"
  run_cli(one, [*FAST, *common], 1, tmp_path / "one.log")
  assert json.load(open(one / "results.json"))["devices"] == 1
  eight = str(tmp_path / "eight_devices")
  assert train.train_and_evaluate(make_config(*common), eight)["devices"] == 8
  a, b = final_state(eight), final_state(one)
  assert_trees_close(a["params"], b["params"])
  assert_trees_close(a["batch_stats"], b["batch_stats"])


# --------------------------------------------------------------------------------------------------------------
# 6. bad configs fail before training, naming the key
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "overrides, error, key",
  [
    (["foo.bar=1"], ValueError, "'foo'"),
    (["train.foo=1"], ValueError, "'train.foo'"),
    (["train.epochs=abc"], TypeError, "'train.epochs'"),
    (["train.batch_size=1.5"], TypeError, "'train.batch_size'"),
    (["loss.name=no_such_loss"], ValueError, "'loss.name'"),
    (["model.name=no_such_model"], ValueError, "'model.name'"),
    (["dataset.name=no_such_dataset"], ValueError, "'dataset.name'"),
    (["dataset.name=/nonexistent/data.npz"], FileNotFoundError, "'dataset.name'"),
    (["loss.name=mgce", "loss.hparams.beta=0.5"], ValueError, "'loss.hparams'"),
    (["loss.hparams.q=0.7"], ValueError, "'loss.hparams'"),
    (["optimizer.name=rmsprop"], ValueError, "'optimizer.name'"),
    (["train.mode=vmap"], ValueError, "'train.mode'"),
    (["model.kwargs.no_such_arg=3"], ValueError, "'model.kwargs'"),
    (["dataset.regimes=no_such_regime:0.1"], ValueError, "'dataset.regimes'"),
    (["train.batch_size=60"], ValueError, "'train.batch_size'"),  # 8 devices
    (["train.eval_batch_size=100"], ValueError, "'train.eval_batch_size'"),
    (["model.name=resnet18", "model.kwargs.hidden=3"], ValueError, "'model.kwargs'"),  # the MLP's keyword
  ],
)
def test_bad_config_fails_before_training(tmp_path, capsys, overrides, error, key):
  if "batch_size=" in overrides[0] and "1.5" not in overrides[0]:
    assert jax.device_count() == 8  # conftest.py: neither 60 nor 100 divides by 8
  wd = tmp_path / "run"
  with pytest.raises(error, match="config key " + key.replace(".", r"\.")):  # the library raises
    train.train_and_evaluate(train.apply_overrides(train.load_config(None), ["train.progress=False", *overrides]), str(wd))
  args = ["train", "--workdir", str(wd)]
  for o in ["train.progress=False", *overrides]:
    args += ["--set", o]
  assert cli.main(args) == 2  # the command line says it in one line, exit status 2
  err = capsys.readouterr().err
  assert err.startswith("gence-jax: error: ") and "config key " + key in err and err.count("\n") == 1
  assert not (wd / "checkpoints").exists() or not os.listdir(wd / "checkpoints")
  assert not (wd / "metrics.jsonl").exists()


def test_bad_config_file_key(tmp_path, capsys):
  path = tmp_path / "bad_config.py"
  path.write_text(
    "import ml_collections\n\ndef get_config():\n  return ml_collections.ConfigDict({'train': {'epochz': 3}})\n"
  )
  with pytest.raises(ValueError, match=r"unknown config key 'train\.epochz'"):
    train.load_config(str(path))
  assert cli.main(["train", "--config", str(path), "--workdir", str(tmp_path / "run")]) == 2
  assert "gence-jax: error: unknown config key 'train.epochz'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------
# 7, 8. outputs, and a config file given by path
# --------------------------------------------------------------------------------------------------------------

CONFIG_FILE = """
import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 3
  c.dataset = {"name": "digits", "regimes": "symmetric:0.4"}
  c.model = {"name": "mlp", "kwargs": {"hidden": (32,)}}
  c.loss = {"name": "mgce", "hparams": {"beta": 2.0}}
  c.optimizer = {"name": "adam", "learning_rate": 3e-3, "schedule": "cosine"}
  c.train = {"epochs": 2, "batch_size": 64, "eval_every_epochs": 1, "log_every_steps": 7, "progress": False,
             "checkpoint_every_steps": 10}
  return c
"""


@pytest.fixture(scope="module")
def file_run(tmp_path_factory):
  """One `gence-jax train --config <file>` run (shared by the tests below when they land on the same worker)."""
  tmp = tmp_path_factory.mktemp("file_run")
  path = tmp / "my_config.py"
  path.write_text(CONFIG_FILE)
  wd = tmp / "run"
  assert cli.main(["train", "--config", str(path), "--workdir", str(wd), "--set", "train.eval_batch_size=256"]) == 0
  return wd


def strict_json(line):
  def reject(constant):
    raise ValueError(f"non-standard JSON constant {constant}")

  return json.loads(line, parse_constant=reject)


@pytest.mark.slow
def test_config_file_from_path(file_run):
  results = json.load(open(file_run / "results.json"))
  c = results["config"]
  assert results["seed"] == c["seed"] == 3
  assert c["loss"] == {"name": "mgce", "hparams": {"beta": 2.0}, "l1": -1.0}
  assert c["model"]["kwargs"] == {"hidden": [32]}
  assert c["optimizer"]["schedule"] == "cosine" and c["optimizer"]["learning_rate"] == 3e-3
  assert c["train"]["epochs"] == 2 and c["train"]["eval_batch_size"] == 256  # file, then --set
  assert c["optimizer"]["momentum"] == 0.9  # untouched defaults stay
  state = final_state(str(file_run))
  assert leaves(state["params"])["['Dense_0']['kernel']"].shape == (64, 32)
  assert results["steps"] == 2 * load_dataset("digits", seed=3).steps_per_epoch(64) == int(state["step"])


def test_outputs(file_run):
  records = [strict_json(line) for line in open(file_run / "metrics.jsonl")]
  events = [r["event"] for r in records]
  assert events[0] == "start" and events[-1] == "end"
  train_records = [r for r in records if r["event"] == "train"]
  eval_records = [r for r in records if r["event"] == "eval"]
  assert [r["step"] for r in train_records][:3] == [7, 10, 14] and train_records[-1]["step"] == 40
  for r in train_records:
    assert np.isfinite(r["loss"]) and 0 <= r["accuracy"] <= 1 and r["grad_norm"] >= 0
  assert [(r["epoch"], r["split"]) for r in eval_records] == [(1, "val"), (1, "test"), (2, "val"), (2, "test")]
  for r in eval_records:
    assert {"accuracy", "nll", "ece", "sce", "brier"} <= set(r)
  assert records[0]["config"]["loss"]["name"] == "mgce"

  results = strict_json(open(file_run / "results.json").read())
  assert {"config", "seed", "data", "test", "steps"} <= set(results)
  boot = results["test"]["raw"]["bootstrap"]  # Poisson-bootstrap intervals of the reported test metrics
  assert boot["resamples"] == 200 and boot["level"] == 0.95
  for m in ("accuracy", "nll", "ece", "adaptive_ece", "classwise_ece", "sce", "mce", "brier"):
    assert boot[m]["low"] <= boot[m]["high"] and boot[m]["std"] >= 0, m
  assert boot["accuracy"]["low"] <= results["test"]["raw"]["accuracy"] <= boot["accuracy"]["high"]
  assert set(results["checkpoints"]) >= {"val", "last"} and results["checkpoints"]["val"]["test"] == results["test"]
  data = results["data"]
  assert data["name"] == "digits" and data["seed"] == 3
  (regime,) = data["regimes"]
  assert regime["spec"] == "symmetric:0.4"
  realised = regime["train"]["realised_rate"]  # the realised noise rate, as flipped on this run's labels
  assert abs(realised - 0.4) < 0.01 and realised == data["label_noise"]["train"]
  assert regime["train"]["num_flipped"] == round(realised * data["num_examples"]["train"])
  for stage in ("raw", "ts", "ats"):
    m = results["test"][stage]
    assert {"accuracy", "nll", "brier", "ece", "classwise_ece", "sce", "mce", "adaptive_ece"} <= set(m)
    assert 0.0 < m["accuracy"] <= 1.0 and m["nll"] > 0
  assert results["test"]["temperature"] > 0

  png = file_run / "reliability.png"
  assert png.exists() and png.stat().st_size > 1000
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_best_on_validation_selection_and_mgce_bound(tmp_path):
  # Evaluate every epoch; the reported model must be the one with the best validation accuracy (ties: lower NLL),
  # checked against the eval events and the saved validation logits.
  from gence_jax.losses import mgce_probs

  config = make_config(
    "loss.name=mgce",
    "loss.hparams.beta=1.43",
    "train.epochs=6",
    "train.eval_every_epochs=1",
    "optimizer.learning_rate=0.02",
  )
  results = train.train_and_evaluate(config, str(tmp_path))
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  evals = [e for e in records if e["event"] == "eval" and e["split"] == "val"]
  assert {e["step"] for e in records if e["event"] == "eval" and e["split"] == "test"} == {e["step"] for e in evals}
  want = max(evals, key=lambda e: (e["accuracy"], -e["nll"]))
  assert results["selected"]["step"] == want["step"]
  pred = np.load(tmp_path / "predictions.npz")
  val_acc = np.mean(np.argmax(np.asarray(mgce_probs(pred["val_logits"], beta=1.43)), -1) == pred["val_labels"])
  np.testing.assert_allclose(val_acc, want["accuracy"], rtol=1e-6)
  bound = results["loss_report"]
  assert bound["objective"] == pytest.approx(bound["train_mean_loss"] + bound["l1_term"])
  assert bound["lambda"] == 1e-5 and bound["l1_term"] > 0
  # what the objective bounds: the randomised rule's error on the training labels, not the argmax test error
  assert 0.0 <= bound["train_randomized_error"] <= bound["train_mean_loss"]


def test_mgce_error_bound_by_hand():
  from gence_jax.losses import get_loss, mgce, mgce_objective_report

  logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.4, 0.0]], np.float32)
  labels = np.array([0, 2])
  params = {"w": np.array([1.0, -2.0], np.float32), "b": np.array([0.5], np.float32)}
  out = mgce_objective_report(get_loss("mgce", beta=2.0), logits, labels, params, 0.1)
  np.testing.assert_allclose(out["l1_term"], 0.35, rtol=1e-6)
  np.testing.assert_allclose(out["train_mean_loss"], float(np.mean(mgce(logits, labels, beta=2.0))), rtol=1e-6)
  np.testing.assert_allclose(out["objective"], out["train_mean_loss"] + 0.35, rtol=1e-6)


def test_adafocal_gammas_update_each_epoch_and_resume_exactly(tmp_path):
  # digits: 1294 train examples, batch 64 -> 20 steps per epoch; checkpoints at each epoch boundary.
  overrides = ["loss.name=adafocal", "train.epochs=3", "train.batch_size=64", "train.checkpoint_every_steps=20"]
  full = tmp_path / "full"
  train.train_and_evaluate(make_config(*overrides), str(full))
  events = [e for e in map(json.loads, open(full / "metrics.jsonl")) if e["event"] == "adafocal"]
  assert [e["step"] for e in events] == [20, 40, 60]
  assert events[0]["gammas"] != [1.0] * 15 and events[1]["gammas"] != events[0]["gammas"]
  # Resume from the epoch-2 boundary checkpoint: the update of that epoch must be in it, applied exactly once.
  part = tmp_path / "part"
  train.train_and_evaluate(make_config(*overrides), str(part))
  import shutil

  shutil.rmtree(part / "checkpoints" / "60")
  shutil.rmtree(part / "best", ignore_errors=True)
  os.remove(part / "best.json")
  train.train_and_evaluate(make_config(*overrides), str(part))
  assert_trees_equal(final_state(str(full)), final_state(str(part)))
