"""A stateful loss registered from a test file alone trains through `gence-jax train`: the program needs no change to
carry its state, update it every epoch, checkpoint it and resume it."""

from __future__ import annotations

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np

from gence_jax import cli
from gence_jax.losses import StateSpec, cross_entropy, register_loss


def _scaled_ce(logits, labels, *, state, where=None, axis_name=None):
  """Cross-entropy times a per-epoch scale kept in the state."""
  return state["scale"] * cross_entropy(logits, labels, where=where)


def _init(*, start=1.0, **_):
  return {"scale": jnp.asarray(start, jnp.float32), "epochs_seen": jnp.asarray(0, jnp.int32)}


def _update(state, *, epoch, val_probs, val_labels, start=1.0, decay=0.5, **_):
  # uses the validation predictions, as a calibration-driven loss would: scale = decay^epoch * (1 + val accuracy)
  acc = jnp.mean(jnp.argmax(val_probs, -1) == val_labels)
  return {"scale": jnp.asarray(start * decay**epoch * (1 + acc), jnp.float32), "epochs_seen": state["epochs_seen"] + 1}


register_loss("toy_scaled_ce", _scaled_ce, state=StateSpec(_init, _update, hparams=("start", "decay")))


def _train(workdir, *extra):
  args = ["train", "--workdir", str(workdir)]
  for o in ["loss.name=toy_scaled_ce", "loss.hparams.decay=0.25", "train.epochs=3", "train.batch_size=64",
            "train.progress=False", "train.checkpoint_every_steps=20", "calibration.bootstrap_resamples=0",
            "model.kwargs.hidden=(16,)", "calibration.methods=('ts',)", "outputs.reliability_plot=False", *extra]:
    args += ["--set", o]
  assert cli.main(args) == 0


def test_registered_stateful_loss_trains_updates_and_resumes(tmp_path):
  full, part = tmp_path / "full", tmp_path / "part"
  _train(full)
  events = [json.loads(line) for line in open(full / "metrics.jsonl")]
  states = [e for e in events if e["event"] == "toy_scaled_ce"]
  assert [e["step"] for e in states] == [20, 40, 60] and [e["epochs_seen"] for e in states] == [1, 2, 3]
  vals = [e for e in events if e["event"] == "eval" and e["split"] == "val"]
  # the last update read epoch 3's validation predictions (the final eval event holds their accuracy)
  assert abs(states[-1]["scale"] - 0.25**3 * (1 + vals[-1]["accuracy"])) < 1e-6
  # resume from the epoch-2 checkpoint: the state of that epoch is in it and the update is applied once more
  _train(part)
  shutil.rmtree(part / "checkpoints" / "60")
  for name in ("best", "best.json", "results.json"):
    p = part / name
    if p.is_dir():
      shutil.rmtree(p)
    elif p.exists():
      os.remove(p)
  _train(part)
  import orbax.checkpoint as ocp

  with ocp.StandardCheckpointer() as c:
    a = c.restore(str(full / "checkpoints" / "60" / "default"))
    b = c.restore(str(part / "checkpoints" / "60" / "default"))
  assert int(a["loss_state"]["epochs_seen"]) == int(b["loss_state"]["epochs_seen"]) == 3
  assert np.array_equal(a["loss_state"]["scale"], b["loss_state"]["scale"])
  for x, y in zip(jax_leaves(a["params"]), jax_leaves(b["params"])):
    assert np.array_equal(x, y)


def jax_leaves(tree):
  import jax

  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]
