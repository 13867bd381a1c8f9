"""`train_and_evaluate(config, workdir)`: the training program, in four phases.

1. `setup`: validate the config, load the data (regimes applied), build the loss, model, optimizer and executor
   (`gence_jax.train.executor`), restore the newest readable checkpoint.
2. `train_steps`: run the steps in chunks (one dispatch per chunk, ``lax.scan``), each chunk ending at the next log,
   checkpoint or epoch boundary; at the end of an epoch, update a stateful loss's state (``loss.update_state``),
   checkpoint, and every ``train.eval_every_epochs`` evaluate on validation and test and keep the best states
   (`gence_jax.train.selection`).
3. `finalize`: for each checkpoint choice (best on validation, last, and with noisy validation labels the best on
   the clean ones), test metrics through the loss's link, raw and after the configured post-hoc calibrators fitted
   on validation; the loss's own report (MGCE: its training objective); OOD detection.
4. `write_run_outputs`: ``results.json``, ``predictions.npz``, ``ood_scores.npz``, ``reliability.png``.

Batches, augmentation and per-step keys are functions of (seed, step) and chunks end at absolute step boundaries,
so a run resumed from a checkpoint reproduces the uninterrupted run bit for bit.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from gence_jax import losses, models
from gence_jax.data import load_dataset, load_stream_dataset
from gence_jax.data.spec import STREAM_KINDS, parse_dataset_spec
from gence_jax.data.mixing import get_mix
from gence_jax.train import distributed, identity, ood
from gence_jax.train.checkpoint import Checkpointer
from gence_jax.train.config import validate
from gence_jax.train.errors import ConfigError, RunIdentityError, WorkdirError
from gence_jax.train.evaluate import (
  REPORTED,
  calibrate_and_score,
  longtail_scores,
  predict_arrays,
  predict_split,
  score,
)
from gence_jax.train.executor import Executor, make_executor
from gence_jax.train.optim import make_optimizer, make_schedule
from gence_jax.train.outputs import MetricsWriter, write_run_outputs
from gence_jax.train.selection import BestKeeper, selection_keepers
from gence_jax.train.step import TrainState, create_state

__all__ = ["REPORTED", "TrainingDivergedError", "train_and_evaluate"]

#: Upper bound on the bytes of one dispatched chunk of training batches (``train.steps_per_dispatch = 0``).
CHUNK_BYTES = 256 << 20
#: The same bound for a streamed dataset: host memory stays bounded by the pipeline's buffers, not the chunk.
STREAM_CHUNK_BYTES = 32 << 20


class TrainingDivergedError(RuntimeError):
  """The loss or a gradient became NaN/Inf; ``step`` is the failing step, ``last_checkpoint`` the newest saved one."""

  def __init__(self, message: str, *, step: int | None = None, last_checkpoint: int | None = None):
    super().__init__(message)
    self.step = step
    self.last_checkpoint = last_checkpoint


@dataclasses.dataclass
class Run:
  """Everything `setup` builds for the other phases."""

  config: Any
  workdir: str
  data: Any
  loss: losses.Loss
  model: Any
  executor: Executor
  l1: float
  steps_per_epoch: int
  total_steps: int
  start_step: int
  state: TrainState
  step_key: jax.Array
  ckpt: Checkpointer
  keepers: dict[str, BestKeeper]
  writer: MetricsWriter
  ood_sets: dict
  t0: float
  train_seconds: float = 0.0
  lock: Any = None  # the work directory's lease (`identity.WorkdirLock`): its heartbeat carries the step
  schedule: Any = None  # the learning rate at a step (logged with the training metrics)
  pretrained: dict | None = None

  def close(self) -> None:
    try:
      self.ckpt.close()
      for keeper in self.keepers.values():
        keeper.close()
    finally:
      self.writer.close()


# ------------------------------------------------------------------------------------------------------ set-up
def build_loss(config, data=None) -> losses.Loss:
  """The configured loss, with the hyper-parameters it takes from the realised training split (class counts)."""
  context = None
  if data is not None:
    context = {"class_counts": tuple(int(c) for c in np.bincount(data.y_train, minlength=data.num_classes))}
  return losses.get_loss(config.loss.name, data=context, **dict(config.loss.hparams))


def l1_lambda(config, loss: losses.Loss) -> float:
  """The lambda of ``lambda * ||params||_1``: ``loss.l1`` if >= 0, else the loss's default (MGCE: 1e-5)."""
  return float(config.loss.l1) if config.loss.l1 >= 0 else float(loss.default_l1)


def build_model(config, num_classes: int, input_shape=None, *, key=None, bn_axis_name=None):
  """The configured model behind the train step's interface (`gence_jax.models.build_model`): a built-in (Linen or
  ``nnx:``) with ``train.dtype`` as its compute dtype, or a user's factory (``module:factory`` / ``file.py:factory``)
  called with `num_classes`, `input_shape` (one example's shape), ``model.kwargs`` and, for NNX, ``rngs`` from `key`.
  ``bn_axis_name`` (pmap) makes BatchNorm statistics global. A factory that fails or returns something other than a
  Linen or NNX module is a `ConfigError` naming ``model.name``."""
  key = jax.random.PRNGKey(config.seed) if key is None else key
  name = config.model.name
  user = models.is_reference(name)
  dtype = None if user else (jnp.bfloat16 if config.train.dtype == "bfloat16" else jnp.float32)
  try:
    adapter = models.build_model(
      name, num_classes, input_shape, key=key, kwargs=dict(config.model.kwargs), dtype=dtype,
      bn_axis_name=bn_axis_name,
    )
  except (TypeError, ValueError) as e:
    if not user:
      raise ConfigError(f"config key 'model.kwargs': cannot build {name!r}: {type(e).__name__}: {e}") from e
    raise ConfigError(f"config key 'model.name': {e}") from e
  if user and bn_axis_name is not None and not models.has_global_batch_norm(getattr(adapter, "module", None)):
    warnings.warn(
      f"model {name!r} is a Linen module without a 'bn_axis_name' field: under train.mode=pmap its BatchNorm "
      "statistics (if any) are per device; use train.mode=jit, or give the module that field",
      RuntimeWarning,
      stacklevel=2,
    )
  return adapter


def check_devices(config) -> None:
  """The global batch sizes must split evenly over the devices (and the processes): checked before any data loads."""
  devices, processes = jax.device_count(), jax.process_count()
  for key in ("batch_size", "eval_batch_size"):
    size = config.train[key]
    if size % devices or size % processes:
      raise ConfigError(
        f"config key 'train.{key}' ({size}) must be divisible by the number of devices ({devices}) "
        f"and of processes ({processes})"
      )


def load_data(config):
  """The configured dataset, regimes applied (what every run trains and evaluates on): a release layout
  (``webvision_mini:``, ``clothing1m:``) streamed from disk, anything else in memory."""
  d = config.dataset
  if parse_dataset_spec(d.name).kind in STREAM_KINDS:
    return load_stream_dataset(
      d.name,
      seed=config.seed,
      val_fraction=d.val_fraction,
      regimes=d.regimes or (),
      image_size=d.image_size,
      resize=d.resize,
      augment=d.augment,
      extra_test=[e.strip() for e in d.extra_test.split(",") if e.strip()],
      skip_unreadable=d.skip_unreadable,
    )
  return load_dataset(
    config.dataset.name,
    seed=config.seed,
    val_fraction=config.dataset.val_fraction,
    data_dir=config.dataset.data_dir or None,
    regimes=config.dataset.regimes or (),
    as_images=config.dataset.as_images,
  )


def _initial_state(config, model, tx, loss, data, executor, key) -> tuple[TrainState, dict | None]:
  """The initial state (with ``model.pretrained``'s weights, the head re-initialised) and what was loaded."""
  sample = jnp.zeros((1, *data.input_shape), jnp.float32)
  try:
    state = create_state(model, tx, key, sample, loss.init_state())
    if models.is_reference(config.model.name):
      _check_logits(config, model, state, sample, data.num_classes)
  except (TypeError, ValueError) as e:
    if isinstance(e, ConfigError):
      raise
    raise ConfigError(
      f"config key 'model.kwargs': cannot build {config.model.name!r} with "
      f"{dict(config.model.kwargs)} on inputs of shape {data.input_shape}: {type(e).__name__}: {e}"
    ) from e
  record = None
  if config.model.get("pretrained", ""):
    from gence_jax.models.pretrained import apply_pretrained

    try:
      params, stats, record = apply_pretrained(state.params, state.batch_stats, config.model.pretrained)
    except (KeyError, ValueError) as e:
      raise ConfigError(f"config key 'model.pretrained' ({config.model.name!r}): {type(e).__name__}: {e}") from None
    params, stats = jax.tree_util.tree_map(jnp.asarray, (params, stats))
    state = state.replace(params=params, batch_stats=stats, opt_state=tx.init(params))
  return executor.restore_template(state), record


def _check_logits(config, model, state, sample, num_classes: int) -> None:
  """A user's model must map ``[1, *input_shape]`` to logits ``[1, num_classes]`` (checked abstractly)."""
  out = jax.eval_shape(lambda p, s: model.apply(p, s, sample, train=False)[0], state.params, state.batch_stats)
  if tuple(out.shape) != (1, num_classes):
    raise ConfigError(
      f"config key 'model.name': {config.model.name!r} gives outputs of shape {tuple(out.shape)} on a batch of "
      f"shape {tuple(sample.shape)}; expected logits of shape (1, {num_classes})"
    )


def setup(config, workdir: str) -> Run:
  """Phase 1: data, loss, model, optimizer, executor, checkpoints; the state restored from the newest checkpoint."""
  os.makedirs(workdir, exist_ok=True)
  t0 = time.time()
  data = load_data(config)
  # OOD sets are loaded (and their shapes checked) before training, so a bad one fails now, not after the run
  dtype = data.x_dtype if getattr(data, "streamed", False) else data.x_test.dtype
  ood_sets = ood.prepare_ood_sets(config, data.input_shape, dtype, data.name) if ood.has_ood(config) else {}
  loss = build_loss(config, data)
  init_key, step_key = jax.random.split(jax.random.PRNGKey(config.seed))
  bn_axis = "data" if config.train.mode == "pmap" else None
  model = build_model(config, data.num_classes, data.input_shape, key=init_key, bn_axis_name=bn_axis)
  steps_per_epoch = data.steps_per_epoch(config.train.batch_size)
  if steps_per_epoch < 1:
    raise ConfigError(
      f"config key 'train.batch_size' ({config.train.batch_size}) is larger than the training split "
      f"({len(data.y_train)} examples)"
    )
  total_steps = steps_per_epoch * config.train.epochs
  tx = make_optimizer(config.optimizer, total_steps, steps_per_epoch)
  l1 = l1_lambda(config, loss)
  if config.train.mix == "cutmix" and len(data.input_shape) != 3:
    raise ConfigError(f"config key 'train.mix': cutmix needs images [H, W, C], got inputs of shape {data.input_shape}")
  mix = get_mix(config.train.mix, config.train.mix_alpha, config.train.cutmix_prob)
  cache_key = (
    repr(sorted(loss.hparams.items())),
    loss.name,
    repr(config.optimizer.to_dict()),
    total_steps,
    steps_per_epoch,
    (config.train.mix, config.train.mix_alpha, config.train.cutmix_prob),
  )
  executor = make_executor(config.train.mode, model, loss, tx, l1=l1, mix=mix, cache_key=cache_key)
  state, pretrained = _initial_state(config, model, tx, loss, data, executor, init_key)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.train.keep_checkpoints)
  restored, start_step = ckpt.restore_latest(state)
  if start_step > total_steps:
    ckpt.close()
    raise RunIdentityError(
      f"the checkpoint in {ckpt.directory} is at step {start_step}, beyond this config's "
      f"{total_steps} steps: use a new work directory"
    )
  writer = MetricsWriter(workdir, tensorboard=config.outputs.tensorboard, resume_step=start_step)
  run = Run(
    config, workdir, data, loss, model, executor, l1, steps_per_epoch, total_steps, start_step, state, step_key,
    ckpt, selection_keepers(workdir, data), writer, ood_sets, t0, pretrained=pretrained,
  )
  run.schedule = make_schedule(config.optimizer, total_steps, steps_per_epoch)
  if restored is not None:
    run.state = restored
  if start_step and jax.process_index() == 0:
    print(f"resuming from step {start_step} of {total_steps} (checkpoint in {ckpt.directory})", flush=True)
  run.state, run.step_key = executor.place_state(run.state), executor.place_key(step_key)
  return run


# --------------------------------------------------------------------------------------------------- step loop
def chunk_length(step: int, run: Run) -> int:
  """Steps in the chunk starting at `step`: up to the next checkpoint or epoch boundary (absolute step multiples, so
  a resumed run cuts the same chunks; logging reads the per-step metrics of a chunk and does not cut it), at most ``train.steps_per_dispatch`` (0: as many as fit in
  :data:`CHUNK_BYTES` of batches; 1 for a convolutional model on a CPU). Every chunk runs the same step body, so how
  steps are grouped does not change the numbers (tested: log frequency and steps per dispatch give bit-identical
  parameters)."""
  cfg = run.config.train
  limit = cfg.steps_per_dispatch
  if limit == 0 and _conv_on_cpu(run.state):
    limit = 1  # XLA's CPU backend compiles a convolution's weight gradient inside a loop badly (jax-ml/jax#12868)
  if limit == 0:
    row_bytes = int(np.prod(run.data.input_shape)) * 4 + 8
    budget = STREAM_CHUNK_BYTES if getattr(run.data, "streamed", False) else CHUNK_BYTES
    limit = max(1, budget // (row_bytes * cfg.batch_size))
  ends = [run.total_steps]
  for every in (cfg.checkpoint_every_steps, run.steps_per_epoch):
    ends.append((step // every + 1) * every)
  return max(1, min(limit, min(ends) - step))


def _conv_on_cpu(state: TrainState) -> bool:
  """Whether the model has convolutions (a parameter with 4 or more axes) and runs on a CPU."""
  return jax.default_backend() == "cpu" and any(np.ndim(p) >= 4 for p in jax.tree_util.tree_leaves(state.params))


def _stack(batches: list[dict]) -> dict:
  """Per-step pipeline batches -> one ``{"x", "label", "mask"}`` chunk with a leading step axis."""
  return {name: np.stack([b[name] for b in batches]) for name in ("x", "label", "mask")}


class PlainProgress:
  """Progress as plain lines (for log files, where a bar's carriage returns pile up): one at every tenth of the
  steps, at most one a second, at least one a minute."""

  def __init__(self, total: int, start: int, desc: str):
    self.total, self.desc, self.t0, self.start = total, desc, time.time(), start
    self.last_tenth, self.last_time = start * 10 // max(total, 1), self.t0

  def update(self, step: int, metrics: dict | None) -> None:
    now, tenth = time.time(), step * 10 // max(self.total, 1)
    due = (tenth > self.last_tenth and now - self.last_time >= 1.0) or now - self.last_time >= 60 or step == self.total
    if not due:
      return
    self.last_tenth, self.last_time = tenth, now
    rate = (step - self.start) / max(now - self.t0, 1e-9)
    fields = f" loss {metrics['loss']:.4f} acc {metrics['accuracy']:.3f}" if metrics else ""
    print(f"{self.desc}: step {step}/{self.total} ({100 * step / self.total:.0f}%){fields}, {rate:.1f} steps/s",
          flush=True)


def _check_finite(run: Run, pending: list, last_good: int | None) -> list[tuple[int, dict]]:
  """Raises `TrainingDivergedError` naming the first non-finite step of the `pending` chunks; returns
  ``(step, metrics)`` of every step in them (step = the number of steps done after it), on the host."""
  out = []
  for start, metrics in pending:
    metrics = jax.device_get(metrics)
    bad = np.flatnonzero(np.asarray(metrics["nonfinite"]))
    if bad.size:
      i = int(bad[0])
      where = "none (the run started from scratch)" if last_good is None else f"step {last_good}"
      raise TrainingDivergedError(
        f"training diverged: non-finite loss or gradient at step {start + i} (loss={float(metrics['loss'][i])}, "
        f"grad_norm={float(metrics['grad_norm'][i])}); that update was not applied. Last good checkpoint: {where} "
        f"in {run.ckpt.directory}. To try other settings (e.g. a lower optimizer.learning_rate), rerun in a new "
        "--workdir, or add --overwrite to move this run aside.",
        step=start + i,
        last_checkpoint=last_good,
      )
    for i in range(len(metrics["loss"])):
      out.append((start + i + 1, {k: float(v[i]) for k, v in metrics.items() if k != "nonfinite"}))
  return out


def _end_of_epoch(run: Run, state: TrainState, done: int) -> TrainState:
  """A stateful loss's update from this epoch (before this step's checkpoint, so a resumed run never applies or
  skips an update twice)."""
  epoch = done // run.steps_per_epoch
  val_probs = val_labels = None
  if run.loss.needs_validation:
    logits, val_labels = predict_split(run.executor, state, run.data, "val", run.config.train.eval_batch_size)
    val_probs = run.loss.probs(logits)
  host = run.executor.host_state(state)
  new = run.loss.update_state(host.loss_state, epoch=epoch, val_probs=val_probs, val_labels=val_labels)
  run.writer.write({"event": run.loss.name, "step": done, **_state_summary(new)})  # e.g. AdaFocal's gammas
  return run.executor.place_state(host.replace(loss_state=new))


def _state_summary(state) -> dict:
  """The small arrays (<= 64 entries) of a loss state by field name, for a ``metrics.jsonl`` event."""
  items = state._asdict().items() if hasattr(state, "_asdict") else dict(state).items()
  return {k: np.asarray(v).tolist() for k, v in items if np.size(v) <= 64}


def evaluate_epoch(run: Run, state: TrainState, done: int) -> None:
  """Validation and test metrics of the current state (``eval`` events), offered to the best-state keepers."""
  bs, bins, epoch = run.config.train.eval_batch_size, run.config.calibration.num_bins, done // run.steps_per_epoch
  val_logits, _ = predict_split(run.executor, state, run.data, "val", bs)
  test_logits, test_labels = predict_split(run.executor, state, run.data, "test", bs)
  val_probs = run.loss.probs(val_logits)
  test_probs = run.loss.probs(test_logits)
  quick = dict(estimators=False)  # the final evaluation (finalize) reports every estimator
  splits = {"val": score(val_probs, run.data.y_val, bins, **quick), "test": score(test_probs, test_labels, bins, **quick)}
  for split, scores in splits.items():
    run.writer.write({"event": "eval", "step": done, "epoch": epoch, "split": split, **scores})
  if "clean_val" in run.keepers:  # an oracle: the validation labels before the noise
    splits["val_clean"] = score(val_probs, run.data.y_val_clean, bins, estimators=False)
    run.writer.write({"event": "eval_clean", "step": done, "epoch": epoch, "split": "val", **splits["val_clean"]})
  for name, keeper in run.keepers.items():
    scores = splits["val_clean" if name == "clean_val" else "val"]
    keeper.offer(scores, done, epoch, lambda: run.executor.host_state(state))


def train_steps(run: Run) -> TrainState:
  """Phase 2: the step loop from ``run.start_step`` to the end, with logging, checkpoints, the loss's per-epoch
  update, periodic evaluation and best-state selection."""
  cfg, spe, state = run.config.train, run.steps_per_epoch, run.state
  batches = run.data.train_batches(
    cfg.batch_size,
    seed=run.config.seed,
    num_epochs=cfg.epochs,
    start_step=run.start_step,
    augment=run.config.dataset.augment,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    num_workers=cfg.data_workers,
  )
  desc = f"{run.loss.name}/{run.config.model.name}"
  show = cfg.progress and jax.process_index() == 0
  bar = tqdm(total=run.total_steps, initial=run.start_step, desc=desc, dynamic_ncols=True,
             disable=not show or not sys.stderr.isatty())
  plain = PlainProgress(run.total_steps, run.start_step, desc) if show and not sys.stderr.isatty() else None
  m = None
  last_good = run.ckpt.all_steps()[-1] if run.ckpt.all_steps() else None
  pending, step = [], run.start_step
  while step < run.total_steps:
    t = time.time()
    n = chunk_length(step, run)
    state, metrics = run.executor.run(state, _stack([next(batches) for _ in range(n)]), run.step_key)
    pending.append((step, metrics))
    step += n
    epoch_end, due_ckpt = step % spe == 0, step % cfg.checkpoint_every_steps == 0 or step == run.total_steps
    if step // cfg.log_every_steps > (step - n) // cfg.log_every_steps or due_ckpt:
      # before every save: a checkpoint never holds a diverged state
      for done, m in _check_finite(run, pending, last_good):
        if done % cfg.log_every_steps == 0 or (done == step and due_ckpt):
          lr = float(run.schedule(done - 1))  # the rate of the update that ended at `done`
          run.writer.write({"event": "train", "step": done, "epoch": done / spe, **m, "learning_rate": lr})
      bar.set_postfix(loss=f"{m['loss']:.4f}", acc=f"{m['accuracy']:.3f}")
      pending = []
    bar.update(n)
    if plain is not None:
      plain.update(step, m)
    if run.lock is not None:
      run.lock.step, run.lock.total = step, run.total_steps
    if epoch_end and run.loss.stateful:
      state = _end_of_epoch(run, state, step)
    if epoch_end and ((step // spe) % cfg.eval_every_epochs == 0 or step == run.total_steps):
      t_eval = time.time()
      evaluate_epoch(run, state, step)
      t += time.time() - t_eval  # train_seconds counts training, not evaluation
    if due_ckpt:  # the best states first: a run resumed from this checkpoint must know them
      for keeper in run.keepers.values():
        keeper.flush()
      run.ckpt.save(step, run.executor.host_state(state), force=step == run.total_steps)
      last_good = step
    run.train_seconds += time.time() - t
  bar.close()
  run.ckpt.wait()
  return state


# -------------------------------------------------------------------------------------------------- final phase
def _choice_states(run: Run, last: TrainState) -> dict[str, tuple[TrainState, dict]]:
  """``{choice: (placed state, record)}`` for the best-on-validation state, the last one and (with corrupted
  validation labels) the best on the clean validation labels."""
  out = {}
  for name, keeper in run.keepers.items():
    state = last
    if keeper.best is not None and keeper.best["step"] != run.total_steps:
      state = run.executor.place_state(keeper.restore(last))
    out[name] = (state, dict(keeper.best or {}))
  out["last"] = (last, {"step": run.total_steps, "epoch": run.config.train.epochs})
  return out


def finalize(run: Run, last: TrainState) -> tuple[dict, dict]:
  """Phase 3: test metrics of every checkpoint choice (raw and calibrated), the loss's report, OOD detection.

  Returns ``(results, arrays)`` with the predictions of the reported (best-on-validation) state in ``arrays``."""
  cfg, bs = run.config, run.config.train.eval_batch_size
  results = {
    "config": cfg.to_dict(),
    "seed": cfg.seed,
    "data": run.data.info,
    "steps": run.total_steps,
    "resumed_from_step": run.start_step,
    "devices": jax.device_count(),
    "processes": jax.process_count(),
    "checkpoints": {},
  }
  arrays, done = {}, {}
  for name, (state, record) in _choice_states(run, last).items():
    if record.get("step") in done and name != "val":  # the same state as an earlier choice: the same numbers
      results["checkpoints"][name] = {**record, "test": results["checkpoints"][done[record["step"]]]["test"]}
      continue
    val = predict_split(run.executor, state, run.data, "val", bs)
    test = predict_split(run.executor, state, run.data, "test", bs)
    # bootstrap intervals for the reported (best-on-validation) choice only
    scores = calibrate_and_score(run.loss, val, test, cfg.calibration, bootstrap=name == "val")
    results["checkpoints"][name] = {**record, "test": scores}
    done.setdefault(record.get("step"), name)
    if name == "val":
      arrays = {"state": state, "val": val, "test": test}
  counts = np.bincount(run.data.y_train, minlength=run.data.num_classes)
  probs = run.loss.probs(arrays["test"][0])
  results["checkpoints"]["val"]["test"]["raw"].update(longtail_scores(probs, arrays["test"][1], counts, cfg.longtail))
  results["train_class_counts"] = counts.tolist()
  for extra in getattr(run.data, "extra_splits", []):  # e.g. ILSVRC2012 val beside WebVision's: the selected state
    logits = predict_split(run.executor, arrays["state"], run.data, extra, bs)
    scores = calibrate_and_score(run.loss, arrays["val"], logits, cfg.calibration, bootstrap=False)
    results.setdefault("extra_test", {})[extra] = scores
    results["checkpoints"]["val"].setdefault("extra_test", {})[extra] = scores
  if run.pretrained is not None:
    results["pretrained"] = run.pretrained
  chosen = results["checkpoints"]["val"]
  results["selected"] = {"by": "validation accuracy (ties: lower validation NLL)", **{k: v for k, v in chosen.items() if k != "test"}}
  results["test"] = chosen["test"]
  if run.loss.report is not None:
    train = predict_split(run.executor, arrays["state"], run.data, "train", bs)
    params = run.executor.host_state(arrays["state"]).params
    results["loss_report"] = run.loss.report(run.loss, *train, params, run.l1)
  if run.ood_sets:
    results["ood"], arrays["ood"] = _evaluate_ood(run, arrays["state"], arrays["test"][0])
  results["train_seconds"] = run.train_seconds
  results["seconds"] = time.time() - run.t0
  return results, arrays


def _evaluate_ood(run: Run, state, test_logits) -> tuple[dict, dict]:
  bs = run.config.train.eval_batch_size
  ood_logits = {
    name: predict_arrays(run.executor, state, x, np.zeros(len(x), np.int64), run.data.normalizer, bs)[0]
    for name, (x, _) in run.ood_sets.items()
  }
  info = {name: info for name, (_, info) in run.ood_sets.items()}
  report, ood_arrays = ood.evaluate_ood(run.loss, test_logits, ood_logits, info)
  report["scores_file"] = "ood_scores.npz"
  selected = (run.keepers["val"].best or {}).get("step")
  for name, entry in report["datasets"].items():
    fields = {k: v for k, v in entry.items() if k != "source"}
    run.writer.write({"event": "ood", "step": run.total_steps, "selected_step": selected, "dataset": name, **fields})
  return report, ood_arrays


# ------------------------------------------------------------------------------------------------------ program
def train_and_evaluate(config, workdir: str, *, overwrite: bool = False, lock: identity.WorkdirLock | None = None) -> dict:
  """Runs the configured experiment in `workdir` (resuming if it has checkpoints) and returns the results.

  Raises ValueError/TypeError naming the config key for a bad config (before anything is trained),
  `RunIdentityError` when `workdir` holds a run of another config or data (``overwrite=True`` moves it aside),
  `RunLockedError` when another process writes `workdir`, `CheckpointError` when checkpoints exist but none is
  readable, and `TrainingDivergedError` when the loss or a gradient becomes NaN/Inf. ``lock``: the work directory's
  lock, already held by the caller (a grid claims a cell by its lock before it checks the cell's identity).
  """
  validate(config)
  distributed.initialize(config.distributed)
  check_devices(config)
  ident = identity.check_workdir(config, workdir, overwrite=overwrite and lock is None)
  os.makedirs(workdir, exist_ok=True)
  own = lock is None
  if own:
    lock = identity.WorkdirLock(workdir).acquire()
  try:
    results = _run(config, workdir, ident, lock)
  finally:
    if own:
      lock.release()
  return results


def _run(config, workdir: str, ident: dict, lock=None) -> dict:
  run = setup(config, workdir)
  run.lock = lock
  try:
    identity.write_identity(workdir, ident)  # once set-up succeeded: a run that failed to start binds nothing  # on any exit, finish the checkpoint saves in flight: the last good checkpoint is then on disk
    run.writer.write(
      {
        "event": "start",
        "step": run.start_step,
        "total_steps": run.total_steps,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "config": config.to_dict(),
      }
    )
    last = train_steps(run)
    results, arrays = finalize(run, last)
    write_run_outputs(
      workdir,
      results,
      loss=run.loss,
      val=arrays["val"],
      test=arrays["test"],
      title=f"{run.data.name} test, {run.loss.name}",
      num_bins=config.calibration.num_bins,
      ood_arrays=arrays.get("ood"),
      plot=config.outputs.reliability_plot,
    )
    end = {"event": "end", "step": run.total_steps, "test": results["test"]}
    if "ood" in results:
      end["ood"] = {n: {k: v for k, v in e.items() if k != "source"} for n, e in results["ood"]["datasets"].items()}
    run.writer.write(end)
  except OSError as e:  # read-only work directory, disk full, ...: say where the run can resume from
    steps = _finished_steps(run.ckpt)
    last = f"step {steps[-1]} in {run.ckpt.directory}" if steps else "none (rerunning starts from scratch)"
    raise WorkdirError(
      f"cannot write to work directory {workdir!r} ({type(e).__name__}: {e}); last good checkpoint: {last}. "
      "Fix the cause and rerun the same command to resume from it."
    ) from e
  finally:
    run.close()
  return results


def _finished_steps(ckpt: Checkpointer) -> list[int]:
  try:
    ckpt.wait()
  except Exception:  # noqa: BLE001 - the save that failed; the finished ones are listed below
    pass
  return ckpt.all_steps()
