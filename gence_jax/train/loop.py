"""`train_and_evaluate(config, workdir)`: the training program.

Data -> model -> jitted (or pmapped) train step over the global batch -> periodic evaluation through the loss's own
probability link -> best-on-validation selection (validation accuracy, ties by NLL; the best state is kept in an
orbax checkpoint under ``best/`` so a resumed run keeps it) -> post-hoc temperature scaling and ATS fitted on validation and
reported on test -> with ``ood.datasets`` set, OOD detection of the selected model (``gence_jax.train.ood``: AUROC,
AUPR, FPR at 95% TPR of the max-probability, entropy and energy scores against the in-distribution test split) ->
``results.json``, ``metrics.jsonl``, ``predictions.npz`` (validation and test logits, test probabilities through the
loss's link), ``ood_scores.npz`` (with OOD sets) and ``reliability.png`` in the work directory. Checkpoints
(orbax) every ``train.checkpoint_every_steps`` and at the end; a restarted run resumes from the newest readable one
and, because batches, augmentation and per-step keys are functions of (seed, step), reproduces the uninterrupted
run's parameters bit for bit.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from gence_jax import calibration, losses, metrics, models
from gence_jax.data import eval_batches, load_dataset, to_device
from gence_jax.train import distributed, ood
from gence_jax.train.checkpoint import Checkpointer
from gence_jax.train.config import validate
from gence_jax.train.optim import make_optimizer
from gence_jax.train.step import TrainState, create_state, make_predict, make_train_step

REPORTED = ("accuracy", "nll", "brier", "ece", "classwise_ece", "sce", "mce")


class TrainingDivergedError(RuntimeError):
  """The loss or a gradient became NaN/Inf; ``step`` is the failing step, ``last_checkpoint`` the newest saved one."""

  def __init__(self, message: str, *, step: int | None = None, last_checkpoint: int | None = None):
    super().__init__(message)
    self.step = step
    self.last_checkpoint = last_checkpoint


def _jsonable(x):
  """Plain JSON values; NaN/Inf become null so every line stays strict JSON."""
  if isinstance(x, dict):
    return {k: _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.generic, np.ndarray, jax.Array)):
    x = np.asarray(x)
    return _jsonable(x.item() if x.ndim == 0 else x.tolist())
  if isinstance(x, float) and not np.isfinite(x):
    return None
  return x


class MetricsWriter:
  """Appends one JSON object per line to ``metrics.jsonl`` (process 0 only)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.enabled = jax.process_index() == 0

  def write(self, record: dict) -> None:
    if self.enabled:
      with open(self.path, "a") as f:
        f.write(json.dumps(_jsonable(record), allow_nan=False) + "\n")


def build_loss(config) -> losses.Loss:
  """The configured loss; AdaFocal (stateful: its gammas live in the train state) reads predictions via softmax."""
  if config.loss.name == "adafocal":
    return losses.Loss(name="adafocal", hparams={}, fn=losses.adafocal, link=losses.softmax_probs)
  return losses.get_loss(config.loss.name, **dict(config.loss.hparams))


def initial_loss_state(config):
  """AdaFocal's initial per-bin gammas (Ghosh et al. 2022); an empty dict for the stateless losses."""
  if config.loss.name != "adafocal":
    return {}
  return losses.adafocal_init(config.adafocal.num_bins, config.adafocal.gamma_init)


def update_loss_state(config, loss_state, val_probs, val_labels):
  """AdaFocal's per-epoch update of the gammas from the validation calibration gap of each bin."""
  a = config.adafocal
  return losses.adafocal_update(
    loss_state,
    val_probs,
    val_labels,
    lam=a.lam,
    gamma_max=a.gamma_max,
    gamma_min=a.gamma_min,
    switch_threshold=a.switch_threshold,
  )


def l1_lambda(config) -> float:
  """The uncertainty-set radius lambda: `loss.l1` if >= 0, else MRCpy's default 1e-5 for MGCE and 0 otherwise."""
  if config.loss.l1 >= 0:
    return float(config.loss.l1)
  return 1e-5 if config.loss.name == "mgce" else 0.0


def build_model(config, num_classes: int, *, bn_axis_name=None):
  kwargs = dict(config.model.kwargs)
  kwargs["dtype"] = jnp.bfloat16 if config.train.dtype == "bfloat16" else jnp.float32
  model = models.get_model(config.model.name, num_classes=num_classes, **kwargs)
  if bn_axis_name is not None and "bn_axis_name" in type(model).__dataclass_fields__:
    model = model.clone(bn_axis_name=bn_axis_name)  # pmap: BatchNorm statistics over the global batch
  return model


class Runner:
  """Places data and state on devices and runs the step for the configured mode (jit over a mesh, or pmap).

  Batches are the data pipeline's dicts (inputs under ``input_key``: ``"x"`` or ``"image"``, plus ``label`` and
  ``mask``): this process's rows of the global batch.
  """

  def __init__(self, config, model, loss, tx, l1, *, input_key: str = "x"):
    self.mode = config.train.mode
    self.input_key = input_key
    self.devices = jax.devices()
    if self.mode == "jit":
      self.mesh = jax.make_mesh(
        (len(self.devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=self.devices
      )
      self.replicated = NamedSharding(self.mesh, P())
      self.batch_sharding = NamedSharding(self.mesh, P("data"))
      step = make_train_step(model, loss, tx, l1=l1)
      self._step = jax.jit(
        step,
        in_shardings=(self.replicated, self.batch_sharding, self.replicated),
        out_shardings=(self.replicated, self.replicated),
        donate_argnums=0,
      )
      self._predict = jax.jit(
        make_predict(model), in_shardings=(self.replicated, self.batch_sharding), out_shardings=self.batch_sharding
      )
    else:
      if jax.process_count() > 1:
        raise ValueError("config key 'train.mode': the pmap path runs on one host; use 'jit' for multi-host runs")
      step = make_train_step(model, loss, tx, l1=l1, axis_name="data")
      self._step = jax.pmap(step, axis_name="data", donate_argnums=0, in_axes=(0, 0, None))
      self._predict = jax.pmap(make_predict(model), axis_name="data")

  def restore_template(self, state) -> TrainState:
    """The state with the shardings a checkpoint is restored to: replicated over the mesh under jit."""
    return self.place_state(state) if self.mode == "jit" else state

  def place_state(self, state):
    if self.mode == "jit":
      return jax.device_put(jax.device_get(state), self.replicated)
    # one copy per local device along a new leading axis (what pmap maps over; jax.device_put_replicated is gone)
    devices = jax.local_devices()
    stacked = NamedSharding(jax.sharding.Mesh(np.asarray(devices), ("data",)), P("data"))
    state = jax.device_get(state)
    return jax.tree_util.tree_map(
      lambda x: jax.device_put(np.broadcast_to(np.asarray(x)[None], (len(devices), *np.shape(x))), stacked), state
    )

  def place_key(self, key):
    return jax.device_put(key, self.replicated) if self.mode == "jit" else key

  def host_state(self, state) -> TrainState:
    """The state as NumPy arrays (identical on every process)."""
    if self.mode == "pmap":
      state = jax.tree_util.tree_map(lambda x: x[0], state)
    return jax.device_get(state)

  def _shard(self, batch):
    if self.mode == "jit":
      return to_device(batch, self.batch_sharding)
    n = jax.local_device_count()
    return {k: v.reshape(n, -1, *v.shape[1:]) for k, v in batch.items()}

  def step(self, state, batch, key):
    batch = {"x": batch[self.input_key], "label": batch["label"], "mask": batch["mask"]}
    return self._step(state, self._shard(batch), key)

  def predict(self, state, batch):
    logits = self._predict(state, self._shard({"x": batch[self.input_key]})["x"])
    if self.mode == "pmap":
      logits = logits.reshape(-1, logits.shape[-1])
    return logits

  def unreplicate_metrics(self, m):
    return jax.tree_util.tree_map(lambda x: x[0], m) if self.mode == "pmap" else m


def predict_split(runner, state, data, split: str, batch_size: int):
  """float32 logits and labels of every example of `split` (this process's rows; padding dropped)."""
  x, y = data.split(split)
  return predict_arrays(runner, state, x, y, data.normalizer, batch_size)


def predict_arrays(runner, state, x, y, normalizer, batch_size: int):
  """float32 logits and labels of every row of `x` (normalised with `normalizer`, no augmentation), in order.

  Every process holds all of `x` and predicts its rows of each global batch; the logits are gathered from all
  processes."""
  logits, labels = [], []
  for batch in eval_batches(
    x,
    y,
    batch_size=batch_size,
    normalizer=normalizer,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  ):
    out = runner.predict(state, batch)
    out = np.asarray(
      jax.experimental.multihost_utils.process_allgather(out, tiled=True) if jax.process_count() > 1 else out
    )
    if jax.process_count() > 1:
      mask = np.asarray(jax.experimental.multihost_utils.process_allgather(batch["mask"], tiled=True))
      lab = np.asarray(jax.experimental.multihost_utils.process_allgather(batch["label"], tiled=True))
    else:
      mask, lab = batch["mask"], batch["label"]
    logits.append(out[mask])
    labels.append(lab[mask])
  return np.concatenate(logits), np.concatenate(labels)


def score(probs, labels, num_bins: int) -> dict:
  stats = metrics.compute_eval_stats(metrics.eval_stats(probs, labels, num_bins=num_bins))
  out = {k: float(stats[k]) for k in REPORTED}
  out["adaptive_ece"] = float(metrics.adaptive_ece(probs, labels, num_bins=num_bins))
  return out


def calibrate_and_score(loss, val, test, cfg) -> dict:
  """Test metrics through the loss's link: raw, after TS and after ATS, both fitted on validation."""
  (val_logits, val_labels), (test_logits, test_labels) = val, test
  ts = calibration.fit_temperature(val_logits, val_labels, link=loss.probs)
  ats = calibration.fit_ats(
    val_logits, val_labels, link=loss.probs, num_pieces=cfg.ats_pieces, min_count=cfg.ats_min_count
  )
  out = {
    "raw": score(loss.probs(test_logits), test_labels, cfg.num_bins),
    "ts": score(calibration.calibrated_probs(ts, test_logits), test_labels, cfg.num_bins),
    "ats": score(calibration.calibrated_probs(ats, test_logits), test_labels, cfg.num_bins),
    "temperature": float(ts.temperature),
    "ats_temperatures": np.asarray(ats.temperatures).tolist(),
  }
  out["val_raw"] = score(loss.probs(val_logits), val_labels, cfg.num_bins)
  return out


def _has_ood(config) -> bool:
  return "ood" in config and bool(ood.parse_ood_datasets(config.ood.datasets))


def check_devices(config) -> None:
  """The global batch sizes must split evenly over the devices (and the processes): checked before any data loads."""
  devices, processes = jax.device_count(), jax.process_count()
  for key in ("batch_size", "eval_batch_size"):
    size = config.train[key]
    if size % devices or size % processes:
      raise ValueError(
        f"config key 'train.{key}' ({size}) must be divisible by the number of devices ({devices}) "
        f"and of processes ({processes})"
      )


def _improves(scores: dict, best: dict | None) -> bool:
  """Higher validation accuracy, ties broken by lower validation NLL."""
  if best is None:
    return True
  return (scores["accuracy"], -scores["nll"]) > (best["accuracy"], -best["nll"])


def mgce_error_bound(loss, train, params, lam: float, *, test_error: float) -> dict:
  r"""The MGCE training objective, which upper-bounds the classification error (Bondugula et al. 2026, Remark 1).

  objective = (1/n) sum_i [-z_y_i - nu(z_i)] over the training split (its labels as trained on, without
  augmentation) + lambda * ||params||_1, reported next to the observed test error of the same model.
  """
  logits, labels = train
  mean_loss = float(jnp.mean(loss.per_example(logits, labels)))
  l1 = float(losses.mgce_l1_penalty(params, lam)) if lam > 0 else 0.0
  return {
    "objective": mean_loss + l1,
    "train_mean_loss": mean_loss,
    "l1_term": l1,
    "lambda": lam,
    "test_error": test_error,
  }


def _ood_summary(results) -> dict:
  """The OOD metrics of results.json without the per-dataset source records (for the ``end`` event)."""
  if "ood" not in results:
    return {}
  return {
    "ood": {
      name: {k: v for k, v in entry.items() if k != "source"} for name, entry in results["ood"]["datasets"].items()
    }
  }


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs the configured experiment in `workdir` (resuming if it has checkpoints) and returns the results.

  Raises ValueError/TypeError naming the config key for a bad config (before anything is trained),
  `CheckpointError` when checkpoints exist but none is readable, and `TrainingDivergedError` when the loss or a
  gradient becomes NaN/Inf.
  """
  validate(config)
  distributed.initialize(config.distributed)
  check_devices(config)
  os.makedirs(workdir, exist_ok=True)
  t0 = time.time()
  data = load_dataset(
    config.dataset.name,
    seed=config.seed,
    val_fraction=config.dataset.val_fraction,
    data_dir=config.dataset.data_dir or None,
    regimes=config.dataset.regimes or (),
    as_images=config.dataset.as_images,
  )
  # OOD sets are loaded (and their shapes checked) before training, so a bad one fails now, not after the run
  ood_sets = ood.prepare_ood_sets(config, data.input_shape, data.x_test.dtype, data.name) if _has_ood(config) else {}
  loss = build_loss(config)
  model = build_model(config, data.num_classes, bn_axis_name="data" if config.train.mode == "pmap" else None)
  cfg_t = config.train
  steps_per_epoch = data.steps_per_epoch(cfg_t.batch_size)
  if steps_per_epoch < 1:
    raise ValueError(
      f"config key 'train.batch_size' ({cfg_t.batch_size}) is larger than the training split "
      f"({len(data.y_train)} examples)"
    )
  total_steps = steps_per_epoch * cfg_t.epochs
  tx = make_optimizer(config.optimizer, total_steps, steps_per_epoch)
  key = jax.random.PRNGKey(config.seed)
  init_key, step_key = jax.random.split(key)
  runner = Runner(config, model, loss, tx, l1_lambda(config), input_key=data.input_key)
  sample = jnp.zeros((1, *data.input_shape), jnp.float32)
  try:
    state = runner.restore_template(create_state(model, tx, init_key, sample, initial_loss_state(config)))
  except (TypeError, ValueError) as e:
    raise ValueError(
      f"config key 'model.kwargs': cannot build {config.model.name!r} with "
      f"{dict(config.model.kwargs)} on inputs of shape {data.input_shape}: {type(e).__name__}: {e}"
    ) from e

  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=cfg_t.keep_checkpoints)
  best_ckpt = Checkpointer(os.path.join(workdir, "best"), max_to_keep=1)
  best_path = os.path.join(workdir, "best.json")
  best = None
  if os.path.exists(best_path):  # a resumed run keeps the best-so-far of the interrupted one
    with open(best_path) as f:
      best = json.load(f)
  try:  # on any exit, finish the checkpoint saves in flight: the last good checkpoint is then on disk
    restored, start_step = ckpt.restore_latest(state)
    if restored is not None:
      state = restored
    if start_step > total_steps:
      raise ValueError(
        f"the checkpoint in {ckpt.directory} is at step {start_step}, beyond this config's "
        f"{total_steps} steps: use a new work directory"
      )
    writer = MetricsWriter(workdir)
    writer.write(
      {
        "event": "start",
        "step": start_step,
        "total_steps": total_steps,
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "config": config.to_dict(),
      }
    )
    state = runner.place_state(state)
    step_key = runner.place_key(step_key)

    batches = data.train_batches(
      cfg_t.batch_size,
      seed=config.seed,
      num_epochs=cfg_t.epochs,
      start_step=start_step,
      augment=config.dataset.augment,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      num_workers=cfg_t.data_workers,
    )
    bar = tqdm(
      total=total_steps,
      initial=start_step,
      disable=not cfg_t.progress or jax.process_index() != 0,
      desc=f"{config.loss.name}/{config.model.name}",
      dynamic_ncols=True,
    )
    last_good = ckpt.all_steps()[-1] if ckpt.all_steps() else None
    pending = []
    train_time = 0.0
    for step in range(start_step, total_steps):
      ts = time.time()
      state, m = runner.step(state, next(batches), step_key)
      pending.append((step, m))
      done = step + 1
      if done % cfg_t.log_every_steps == 0 or done == total_steps or done % cfg_t.checkpoint_every_steps == 0:
        # checked before every save, so a checkpoint never holds a state past a non-finite step
        for s, mm in pending:
          mm = jax.device_get(runner.unreplicate_metrics(mm))
          if bool(mm["nonfinite"]):
            where = "none (the run started from scratch)" if last_good is None else f"step {last_good}"
            raise TrainingDivergedError(
              f"training diverged: non-finite loss or gradient at step {s} (loss={float(mm['loss'])}, "
              f"grad_norm={float(mm['grad_norm'])}); that update was not applied. Last good checkpoint: {where} "
              f"in {ckpt.directory}.",
              step=s,
              last_checkpoint=last_good,
            )
        last = {k: float(v) for k, v in mm.items() if k != "nonfinite"}
        writer.write({"event": "train", "step": done, "epoch": done / steps_per_epoch, **last})
        bar.set_postfix(loss=f"{last['loss']:.4f}", acc=f"{last['accuracy']:.3f}")
        pending = []
      bar.update(1)
      train_time += time.time() - ts
      if config.loss.name == "adafocal" and done % steps_per_epoch == 0:
        # before the checkpoint of this step, so a resumed run never applies (or skips) an epoch's update twice
        val = predict_split(runner, state, data, "val", cfg_t.eval_batch_size)
        host = runner.host_state(state)
        new_loss_state = update_loss_state(config, host.loss_state, loss.probs(val[0]), val[1])
        state = runner.place_state(host.replace(loss_state=new_loss_state))
        writer.write({"event": "adafocal", "step": done, "gammas": np.asarray(new_loss_state.gammas).tolist()})
      if done % cfg_t.checkpoint_every_steps == 0 or done == total_steps:
        ckpt.save(done, runner.host_state(state), force=done == total_steps)
        last_good = done
      if done % steps_per_epoch == 0 and (
        (done // steps_per_epoch) % cfg_t.eval_every_epochs == 0 or done == total_steps
      ):
        val = predict_split(runner, state, data, "val", cfg_t.eval_batch_size)
        val_scores = score(loss.probs(val[0]), val[1], config.calibration.num_bins)
        writer.write({"event": "eval", "step": done, "epoch": done // steps_per_epoch, "split": "val", **val_scores})
        test_now = predict_split(runner, state, data, "test", cfg_t.eval_batch_size)
        test_now_scores = score(loss.probs(test_now[0]), test_now[1], config.calibration.num_bins)
        writer.write(
          {"event": "eval", "step": done, "epoch": done // steps_per_epoch, "split": "test", **test_now_scores}
        )
        if _improves(val_scores, best):
          best = {
            "step": done,
            "epoch": done // steps_per_epoch,
            "accuracy": val_scores["accuracy"],
            "nll": val_scores["nll"],
          }
          best_ckpt.save(done, runner.host_state(state), force=True)
          best_ckpt.wait()
          if jax.process_index() == 0:
            with open(best_path, "w") as f:
              json.dump(best, f)
    bar.close()
    ckpt.wait()

    # best-on-validation selection: evaluate, calibrate and report the state with the best validation accuracy
    if best is not None and best["step"] != total_steps:
      restored_best, _ = best_ckpt.restore_latest(state)
      state = runner.place_state(restored_best)
    val = predict_split(runner, state, data, "val", cfg_t.eval_batch_size)
    test = predict_split(runner, state, data, "test", cfg_t.eval_batch_size)
    test_scores = calibrate_and_score(loss, val, test, config.calibration)
    results = {
      "config": config.to_dict(),
      "seed": config.seed,
      "data": data.info,
      "steps": total_steps,
      "resumed_from_step": start_step,
      "devices": jax.device_count(),
      "processes": jax.process_count(),
      "train_seconds": train_time,
      "seconds": time.time() - t0,
      "selected": {"by": "validation accuracy (ties: lower validation NLL)", **(best or {})},
      "test": test_scores,
    }
    if config.loss.name == "mgce":
      results["mgce_bound"] = mgce_error_bound(
        loss,
        predict_split(runner, state, data, "train", cfg_t.eval_batch_size),
        runner.host_state(state).params,
        l1_lambda(config),
        test_error=1.0 - test_scores["raw"]["accuracy"],
      )
    ood_arrays = None
    if ood_sets:
      ood_logits = {
        name: predict_arrays(runner, state, x, np.zeros(len(x), np.int64), data.normalizer, cfg_t.eval_batch_size)[0]
        for name, (x, _) in ood_sets.items()
      }
      results["ood"], ood_arrays = ood.evaluate_ood(
        loss, test[0], ood_logits, {name: info for name, (_, info) in ood_sets.items()}
      )
      results["ood"]["scores_file"] = "ood_scores.npz"
      for name, entry in results["ood"]["datasets"].items():
        writer.write(
          {
            "event": "ood",
            "step": total_steps,
            "selected_step": (best or {}).get("step"),
            "dataset": name,
            **{k: v for k, v in entry.items() if k != "source"},
          }
        )
    if jax.process_index() == 0:
      if ood_arrays is not None:
        np.savez_compressed(os.path.join(workdir, "ood_scores.npz"), **ood_arrays)
      with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(_jsonable(results), f, indent=2, allow_nan=False)
      test_probs = np.asarray(loss.probs(test[0]))
      np.savez_compressed(
        os.path.join(workdir, "predictions.npz"),
        test_logits=test[0],
        test_probs=test_probs,
        test_labels=test[1],
        val_logits=val[0],
        val_labels=val[1],
      )
      from gence_jax import plots

      plots.reliability_diagram(
        {config.loss.name: (test_probs, test[1])},
        num_bins=config.calibration.num_bins,
        path=os.path.join(workdir, "reliability.png"),
        title=f"{data.name} test, {config.loss.name}",
      )
    writer.write({"event": "end", "step": total_steps, "test": results["test"], **_ood_summary(results)})
  finally:
    ckpt.close()
    best_ckpt.close()
  return results
