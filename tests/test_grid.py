"""Grids at scale: cells claimed through their locks by any number of processes, each cell trained once.

One tiny digits grid (MLP 16, 2 epochs, cross-entropy and GenCE x seeds 0, 1) trained sequentially in this process is
the reference; the same grid trained by ``--jobs 2`` and a second plain ``compare`` started together, by two shards,
and through submitit's local executor must give bit-identical cells and the same summary. Also: a job killed
mid-grid and the command rerun (the cell resumes from its checkpoint, ``metrics.jsonl`` without duplicates), a
diverging cell recorded as failed while the others finish, a held cell skipped and taken over once its lease lapses,
leases of other hosts, ``gence-jax status``, TensorBoard events read back with TensorBoard's reader, Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import types

import jax.numpy as jnp
import numpy as np
import pytest

from gence_jax import cli, train
from gence_jax.train import compare as compare_lib
from gence_jax.train import grid, identity
from gence_jax.train.errors import RunIdentityError, RunLockedError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 180
TINY = [
  "train.epochs=2",
  "train.batch_size=64",
  "train.eval_batch_size=512",
  "train.progress=False",
  "train.eval_every_epochs=1",
  "train.checkpoint_every_steps=1000",
  "train.log_every_steps=6",
  "model.kwargs.hidden=(16,)",
  "calibration.bootstrap_resamples=0",
  "calibration.methods=('ts',)",
]
LOSSES = ["cross_entropy", "gence"]
SEEDS = [0, 1]


def config(*extra):
  return train.apply_overrides(train.load_config(None), [*TINY, *extra])


def sets(overrides):
  return [a for o in overrides for a in ("--set", o)]


def compare_argv(workdir, *extra, losses=LOSSES, seeds=SEEDS, overrides=TINY):
  return ["compare", "--workdir", str(workdir), "--losses", *losses, "--seeds", *map(str, seeds), "--regimes", "clean",
          *sets(overrides), *extra]


def cli_process(argv, log):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
  return subprocess.Popen([sys.executable, "-m", "gence_jax.cli", *argv], cwd=REPO, env=env, stdout=open(log, "w"),
                          stderr=subprocess.STDOUT)


def events(run_dir, name=None):
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return [r for r in records if name is None or r["event"] == name]


def cell_dirs(workdir, losses=LOSSES, seeds=SEEDS):
  return {(loss, seed): os.path.join(workdir, "clean", loss, f"seed{seed}") for loss in losses for seed in seeds}


def assert_same_cell(a, b):
  """Bit-identical predictions and test metrics of two runs of one cell."""
  with np.load(os.path.join(a, "predictions.npz")) as x, np.load(os.path.join(b, "predictions.npz")) as y:
    for key in x.files:
      assert np.array_equal(x[key], y[key]), (a, key)
  ra, rb = (json.load(open(os.path.join(d, "results.json"))) for d in (a, b))
  assert ra["test"] == rb["test"] and ra["selected"] == rb["selected"]


def summary_of(workdir):
  return json.load(open(os.path.join(workdir, "summary.json")))["summary"], open(os.path.join(workdir, "summary.md")).read()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The grid trained sequentially by one plain `compare` in this process."""
  wd = str(tmp_path_factory.mktemp("grid") / "sequential")
  assert cli.main(compare_argv(wd)) == 0
  return wd


@pytest.mark.slow
def test_jobs_and_a_second_process_share_one_grid(reference, tmp_path, capsys):
  # `--jobs 2` (here, in this process) and a plain `compare` (another process) started together on one work
  # directory: both exit 0, every cell trains once (one start event), the cells are bit-identical to the sequential
  # grid and both write its summary
  wd = tmp_path / "shared"
  plain = cli_process(compare_argv(wd), tmp_path / "plain.log")
  assert cli.main(compare_argv(wd, "--jobs", "2", "--set", "train.progress=True")) == 0
  assert plain.wait(timeout=TIMEOUT) == 0, (tmp_path / "plain.log").read_text()[-3000:]
  ref = cell_dirs(reference)
  trained_by_jobs = 0
  for key, run_dir in cell_dirs(wd).items():
    (start,) = events(run_dir, "start")
    assert_same_cell(ref[key], run_dir)
    if start["pid"] != plain.pid:  # a job's cell: its output in the cell's train.log, plain progress lines only
      trained_by_jobs += 1
      log = open(os.path.join(run_dir, grid.LOG_FILE)).read()
      assert re.search(r"step (\d+)/\1 \(100%\)", log) and "\r" not in log
  assert trained_by_jobs >= 1
  assert "grid: 4/4 finished, 0 running, 0 failed, 0 pending" in capsys.readouterr().out
  assert summary_of(wd) == summary_of(reference)


@pytest.mark.slow
def test_shards_then_summarize_only_give_the_one_process_summary(reference, tmp_path, capsys):
  wd = str(tmp_path / "sharded")
  assert cli.main(compare_argv(wd, "--shard", "0/2")) == 0
  assert "2 of 4 cells of the grid are not finished" in capsys.readouterr().out
  assert not os.path.exists(os.path.join(wd, "summary.json"))  # a partial process writes no summary
  trained = {k for k, d in cell_dirs(wd).items() if os.path.exists(os.path.join(d, "results.json"))}
  assert len(trained) == 2 and trained == {k for k, _ in sorted(cell_dirs(wd).items())[::2]}  # stable slice
  assert cli.main(["status", "--workdir", wd]) == 0
  table = capsys.readouterr().out
  assert table.count("| finished | test accuracy") == 2 and table.count("| pending |") == 2
  assert "4 cells: 2 finished, 0 running, 0 failed, 2 pending" in table
  assert cli.main(compare_argv(wd, "--summarize-only")) == 0  # at any time, listing what is missing
  partial = json.load(open(os.path.join(wd, "summary.json")))
  assert len(partial["missing"]) == 2 and "Not finished" in open(os.path.join(wd, "summary.md")).read()
  assert cli.main(compare_argv(wd, "--shard", "1/2")) == 0  # completes the grid: writes the summary
  assert summary_of(wd) == summary_of(reference)
  assert cli.main(compare_argv(wd, "--summarize-only")) == 0
  assert summary_of(wd) == summary_of(reference)
  for key, run_dir in cell_dirs(wd).items():
    assert len(events(run_dir, "start")) == 1
    assert_same_cell(cell_dirs(reference)[key], run_dir)
  # a grid of another config is refused before anything changes (finished cells are never mixed)
  before = sorted(os.path.join(d, f) for d, _, fs in os.walk(wd) for f in fs)
  with pytest.raises(RunIdentityError, match=r"train\.epochs: 2 -> 3"):
    compare_lib.compare(config("train.epochs=3"), wd, losses=LOSSES, seeds=SEEDS)
  assert sorted(os.path.join(d, f) for d, _, fs in os.walk(wd) for f in fs) == before


@pytest.mark.extended
@pytest.mark.slow
def test_submitit_local_launcher(reference, tmp_path, capsys, monkeypatch):
  # submitit's logging handlers would hold on to this test's captured streams (closed after it)
  monkeypatch.setenv("SUBMITIT_LOG_LEVEL", "NOCONFIG")
  pytest.importorskip("submitit")
  wd = str(tmp_path / "submitit")
  summary = compare_lib.compare(config(), wd, losses=["cross_entropy"], seeds=SEEDS, launcher="submitit-local")
  assert summary is not None and "submitted 2 cells as local jobs" in capsys.readouterr().out
  for key, run_dir in cell_dirs(wd, losses=["cross_entropy"]).items():
    assert len(events(run_dir, "start")) == 1 and os.path.exists(os.path.join(run_dir, grid.LOG_FILE))
    assert_same_cell(cell_dirs(reference)[key], run_dir)


def test_tensorboard_events_hold_each_evaluation(reference):
  if "tensorflow" not in sys.modules:  # TensorBoard's own stub of the TF API (its no-TensorFlow build's switch)
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

  run_dir = cell_dirs(reference)[("gence", 1)]
  acc = EventAccumulator(run_dir)
  acc.Reload()
  val = [(e.step, e.value) for e in acc.Scalars("val/accuracy")]
  want = [(r["step"], r["accuracy"]) for r in events(run_dir, "eval") if r["split"] == "val"]
  assert len(want) == 2 and [s for s, _ in val] == [s for s, _ in want]
  np.testing.assert_allclose([v for _, v in val], [v for _, v in want], rtol=1e-6)
  assert [e.step for e in acc.Scalars("train/loss")] == [6, 12, 18, 24, 30, 36, 40]
  assert acc.Scalars("train/learning_rate")[0].value == pytest.approx(1e-3)
  final = json.load(open(os.path.join(run_dir, "results.json")))["test"]
  for stage in ("raw", "ts"):
    assert acc.Scalars(f"final/test/{stage}/ece")[0].value == pytest.approx(final[stage]["ece"], rel=1e-6)


def _diverging(logits, labels, *, where=None, axis_name=None, scale=1.0):
  """Cross-entropy times `scale`: scale = 1e39 is infinite in float32, so the first step diverges."""
  del where, axis_name
  return -scale * jnp.take_along_axis(jax_log_softmax(logits), labels[..., None], axis=-1)[..., 0]


def jax_log_softmax(z):
  import jax

  return jax.nn.log_softmax(z, axis=-1)


@pytest.mark.slow
def test_failed_cells_are_recorded_held_cells_taken_over_and_failures_retried(tmp_path, capsys, monkeypatch):
  from gence_jax.losses import available_losses, register_loss

  if "test_diverging" not in available_losses():
    register_loss("test_diverging", _diverging)
  losses = ["cross_entropy", "test_diverging:scale=1e39"]
  wd = tmp_path / "failing"
  held = wd / "clean" / "cross_entropy" / "seed0"
  held.mkdir(parents=True)
  # a live process of another host holds one cell: skipped (not an error), taken over once its lease lapses
  monkeypatch.setattr(identity, "LEASE_SECONDS", 3.0)
  (held / identity.LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "node-elsewhere", "heartbeat": time.time()}))
  argv = compare_argv(wd, losses=losses)
  assert cli.main(argv) == 8
  captured = capsys.readouterr()
  err = captured.err
  assert err.count("\n") == 1 and err.startswith("gence-jax: error: 2 of 4 cells failed:")
  for seed in SEEDS:
    assert f"regime=clean loss=test_diverging:scale=1e39 seed={seed} (divergence: training diverged" in err
  dirs = cell_dirs(wd, losses=["cross_entropy", "test_diverging_scale1e39"])
  for seed in SEEDS:
    failure = json.load(open(os.path.join(dirs[("test_diverging_scale1e39", seed)], grid.FAILED_FILE)))
    assert failure["kind"] == "divergence" and failure["exit_status"] == 6 and "--overwrite" in failure["message"]
    assert len(events(dirs[("cross_entropy", seed)], "start")) == 1  # the other cells finished
  assert not os.path.exists(wd / "summary.json")
  table = grid.status_table(str(wd))
  assert table.count("| failed | divergence: training diverged") == 2 and table.count("| finished |") == 2
  # a fresh lock of another host shows as running; a rerun retries the failed cells only
  (held / identity.LOCK_FILE).write_text(
    json.dumps({"pid": 7, "host": "node-elsewhere", "heartbeat": time.time(), "step": 5, "total_steps": 36})
  )
  assert "| running | node-elsewhere pid 7, step 5 of 36" in grid.status_table(str(wd))
  (held / identity.LOCK_FILE).unlink()
  first = json.load(open(os.path.join(dirs[("test_diverging_scale1e39", 0)], grid.FAILED_FILE)))["time"]
  assert cli.main(argv) == 8
  assert json.load(open(os.path.join(dirs[("test_diverging_scale1e39", 0)], grid.FAILED_FILE)))["time"] > first
  assert all(len(events(dirs[("cross_entropy", s)], "start")) == 1 for s in SEEDS)


def test_leases_of_this_and_other_hosts(tmp_path):
  lock_path = tmp_path / identity.LOCK_FILE
  # this host: a live process's lock is refused, a gone process's taken over at once
  lock_path.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
  with pytest.raises(RunLockedError, match="in use by process"):
    train.train_and_evaluate(config(), str(tmp_path))
  gone = subprocess.Popen([sys.executable, "-c", "pass"])
  gone.wait()
  lock_path.write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(), "heartbeat": time.time()}))
  lock = identity.WorkdirLock(str(tmp_path))
  with pytest.warns(UserWarning, match=r"stale lock of process \d+ on '.*' \(gone\)"):
    assert lock.try_acquire()
  lock.release()
  assert not lock_path.exists()
  # another host: judged by its heartbeat (a lease)
  lock_path.write_text(json.dumps({"pid": 1, "host": "node-elsewhere", "heartbeat": time.time()}))
  with pytest.raises(RunLockedError, match="in use by process 1 on 'node-elsewhere'"):
    identity.WorkdirLock(str(tmp_path)).acquire()
  # no heartbeat for longer than the lease (old format: the file's age): taken over
  lock_path.write_text(json.dumps({"pid": 1, "host": "node-elsewhere"}))
  old = time.time() - identity.LEASE_SECONDS - 5
  os.utime(lock_path, (old, old))
  lock = identity.WorkdirLock(str(tmp_path))
  with pytest.warns(UserWarning, match=r"stale lock of process 1 on 'node-elsewhere' \(no heartbeat for \d+ s\)"):
    assert lock.try_acquire()
  mine = json.loads(lock_path.read_text())
  assert mine["host"] == socket.gethostname() and mine["pid"] == os.getpid()
  assert not identity.WorkdirLock(str(tmp_path)).try_acquire()  # held by this process: not taken twice
  lock.step, lock.total = 3, 10
  lock.heartbeat()
  assert json.loads(lock_path.read_text())["step"] == 3
  lock.release()
  assert not lock_path.exists()


@pytest.mark.extended
@pytest.mark.slow
def test_killed_grid_resumes_on_rerun(tmp_path, capsys):
  # the command killed (kill -9) mid-cell; rerun, it finishes the grid, the killed cell resumed from its checkpoint
  long = [*TINY, "train.epochs=6", "train.checkpoint_every_steps=20", "train.log_every_steps=4",
          "train.steps_per_dispatch=1", "train.eval_every_epochs=3"]
  wd = tmp_path / "killed"
  argv = compare_argv(wd, losses=["cross_entropy"], overrides=long)
  proc = cli_process(argv, tmp_path / "killed.log")
  first = wd / "clean" / "cross_entropy" / "seed0"
  deadline = time.time() + TIMEOUT
  while not (first / "checkpoints" / "20").exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (first / "results.json").exists(), "the cell finished before the kill"
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  results = json.load(open(first / "results.json"))
  assert results["resumed_from_step"] >= 20 and f"resuming from step {results['resumed_from_step']} of 120" in out
  records = events(str(first))
  keys = [(r["event"], r["step"], r.get("split")) for r in records if r["event"] != "start"]
  assert len(keys) == len(set(keys))  # no record twice after the resume
  assert [r["step"] for r in records if r["event"] == "start"] == [0, results["resumed_from_step"]]
  assert os.path.exists(wd / "summary.json")


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(train, "train_and_evaluate", interrupted)
  assert cli.main(["train", "--workdir", str(tmp_path / "w")]) == 130
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "interrupted" in err and "Traceback" not in err
