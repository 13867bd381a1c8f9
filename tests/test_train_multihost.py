"""Multi-host training: 2 local CPU processes (jax.distributed, gloo collectives) == 1 process on the same global batch.

Each process has 2 fake CPU devices and feeds its half of every global batch; the reference is one process with 4
devices. The per-process script is tests/_multihost_worker.py (it runs `gence_jax.train.train_and_evaluate`).
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "_multihost_worker.py")
TIMEOUT = 180  # seconds: a hung collective fails the test instead of blocking CI

OVERRIDES = [
  "train.epochs=1",
  "train.batch_size=64",
  "train.eval_batch_size=128",
  "train.progress=False",
  "train.log_every_steps=1",
  "train.checkpoint_every_steps=10",
  "train.eval_every_epochs=1",
  "optimizer.name=sgd",
  "optimizer.learning_rate=0.1",
  "optimizer.momentum=0.9",
  "calibration.bootstrap_resamples=0",
  "calibration.methods=('ts',)",
  "outputs.reliability_plot=False",
  "model.name=cnn",
  "model.kwargs={'features': (4,), 'hidden': 16}",
  "dataset.as_images=True",
  "dataset.augment=crop_flip",
]


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def env_with_devices(devices):
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
  env["JAX_PLATFORMS"] = "cpu"
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  for k in ("GENCE_JAX_COORDINATOR", "GENCE_JAX_NUM_PROCESSES", "GENCE_JAX_PROCESS_ID"):
    env.pop(k, None)
  return env


def launch(out, workdir, num_processes, process_id, port, devices, overrides, log):
  return subprocess.Popen(
    [sys.executable, WORKER, str(out), str(workdir), str(num_processes), str(process_id), str(port), *overrides],
    env=env_with_devices(devices),
    cwd=REPO,
    stdout=log,
    stderr=subprocess.STDOUT,
  )


def train_losses(workdir):
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return np.array([r["loss"] for r in records if r["event"] == "train"]), records


@pytest.mark.parametrize("loss", ["gence"])
@pytest.mark.extended
@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, loss):
  overrides = [*OVERRIDES, f"loss.name={loss}"]
  multi_out, single_out = tmp_path / "multi_out", tmp_path / "single_out"
  multi_out.mkdir()
  single_out.mkdir()
  port = free_port()
  logs, procs = [], []
  try:
    for pid in range(2):
      logs.append(open(tmp_path / f"worker{pid}.log", "w"))
      procs.append(launch(multi_out, tmp_path / "multi", 2, pid, port, 2, overrides, logs[-1]))
    logs.append(open(tmp_path / "single.log", "w"))
    procs.append(launch(single_out, tmp_path / "single", 1, 0, 0, 4, overrides, logs[-1]))
    deadline = time.time() + TIMEOUT
    for p in procs:
      try:
        p.wait(timeout=max(deadline - time.time(), 1))
      except subprocess.TimeoutExpired:
        pytest.fail(f"worker timed out after {TIMEOUT} s")
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    for f in logs:
      f.close()
  for p, name in zip(procs, ["worker0", "worker1", "single"]):
    assert p.returncode == 0, f"{name} failed:\n" + open(tmp_path / f"{name}.log").read()[-5000:]

  infos = [json.load(open(multi_out / f"info_{pid}.json")) for pid in range(2)]
  for pid, info in enumerate(infos):
    assert info == {**info, "process_index": pid, "process_count": 2, "device_count": 4, "local_device_count": 2}
  single_info = json.load(open(single_out / "info_0.json"))
  assert single_info["process_count"] == 1 and single_info["device_count"] == 4

  # each process fed its own half of the global batch
  halves = [np.load(multi_out / f"batch_{pid}.npz") for pid in range(2)]
  full = np.load(single_out / "batch_0.npz")
  assert halves[0]["label"].shape[0] == halves[1]["label"].shape[0] == full["label"].shape[0] // 2 == 32
  for key in ("x", "label", "mask"):
    np.testing.assert_array_equal(np.concatenate([halves[0][key], halves[1][key]]), full[key])

  # the same losses at every step, the same final state
  multi_losses, multi_records = train_losses(tmp_path / "multi")
  single_losses, _ = train_losses(tmp_path / "single")
  assert len(multi_losses) == len(single_losses) == infos[0]["final_step"] > 10
  np.testing.assert_allclose(multi_losses, single_losses, rtol=1e-5, atol=1e-6)
  assert multi_records[0]["processes"] == 2 and multi_records[0]["devices"] == 4

  states = [np.load(multi_out / f"state_{pid}.npz") for pid in range(2)]
  single = np.load(single_out / "state_0.npz")
  assert set(states[0].files) == set(single.files) and any(k.startswith("batch_stats/") for k in single.files)
  for k in single.files:
    np.testing.assert_array_equal(states[0][k], states[1][k], err_msg=k)
    np.testing.assert_allclose(states[0][k], single[k], rtol=1e-5, atol=1e-6, err_msg=k)
