"""The train step: one pure function, run under `jax.jit` over a device mesh or under `jax.pmap`.

`train_step(state, batch, key) -> (state, metrics)`:

* the objective is the mean of the loss over the *global* batch's valid examples (``batch["mask"]``) plus the
  L1 penalty; under ``jit`` the batch is one global array sharded over the mesh's ``data`` axis, under ``pmap`` each
  device holds a slice and ``axis_name`` makes the example count, GenCE's class sums, BatchNorm statistics (when the
  model is built with ``bn_axis_name``) and the gradients global, so both paths compute the same update;
* the model is a Flax Linen or NNX module behind one small interface (`gence_jax.models.adapter`: params and
  BatchNorm statistics as plain pytrees, ``apply(params, batch_stats, x, train=..., key=...)``), so both kinds of
  model run this one step;
* the per-step key is ``fold_in(key, state.step)`` (under pmap also folded with the device's ``axis_index``, so
  the devices draw independent dropout masks; jit draws one mask for the global batch, so with dropout the two paths
  agree in distribution, not bit for bit);
* a non-finite objective or gradient leaves the state unchanged and is reported in ``metrics["nonfinite"]``, so the
  host can stop the run naming the step (see `gence_jax.train.loop`).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from gence_jax.data.mixing import mixed_loss
from gence_jax.losses import Loss, mgce_l1_penalty
from gence_jax.models.adapter import as_adapter


@flax.struct.dataclass
class TrainState:
  """step, params, BatchNorm statistics, optimizer state, and the state of a stateful loss (``loss.init_state()``,
  e.g. AdaFocal's per-bin gammas; an empty dict otherwise). All of it is checkpointed."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  loss_state: Any = flax.struct.field(default_factory=dict)


def per_example_loss(loss: Loss, logits, labels, mask, loss_state, axis_name):
  """The loss of each example; a stateful loss reads its state from `loss_state`."""
  return loss.per_example(
    logits, labels, where=mask, axis_name=axis_name, state=loss_state if loss.stateful else None
  )


def create_state(model, tx: optax.GradientTransformation, key, sample_input, loss_state=None) -> TrainState:
  """The initial state: the model's params and BatchNorm statistics (a Linen module: ``model.init`` on
  `sample_input` in eval mode, compiled; an NNX module or adapter: its own, see `gence_jax.models.adapter`) and
  ``tx.init`` of the params."""
  params, batch_stats = as_adapter(model).init(key, sample_input)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_state=tx.init(params),
    loss_state={} if loss_state is None else loss_state,
  )


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def make_train_step(
  model,
  loss: Loss,
  tx: optax.GradientTransformation,
  *,
  l1: float = 0.0,
  axis_name: str | None = None,
  mix: Callable | None = None,
) -> Callable:
  """Returns ``train_step(state, batch, key)``; pass ``axis_name`` for the pmap / shard_map path. `model` is a Linen
  or NNX module or its adapter (`gence_jax.models.adapter.as_adapter`): one step for both.

  ``mix(key, x) -> (x, perm, lambda)`` (`gence_jax.data.mixing.get_mix`: mixup or CutMix) mixes each batch with a
  key folded from the step's key, and the loss becomes lambda l(z, y) + (1 - lambda) l(z, y[perm]) (under pmap
  each device mixes its own rows)."""

  adapter = as_adapter(model).computation()  # no initial arrays kept alive by the compiled step

  def psum(x):
    return x if axis_name is None else jax.lax.psum(x, axis_name)

  def train_step(state: TrainState, batch, key):
    step_key = jax.random.fold_in(key, state.step)
    if axis_name is not None:  # pmap: each device draws dropout for its own rows, not a copy of device 0's masks
      step_key = jax.random.fold_in(step_key, jax.lax.axis_index(axis_name))
    x, labels, mask = batch["x"], batch["label"], batch["mask"]
    if mix is not None:
      x, perm, lam = mix(jax.random.fold_in(step_key, 1), x)
    count = jnp.maximum(psum(jnp.sum(mask, dtype=jnp.float32)), 1.0)

    def objective(params):
      logits, new_stats = adapter.apply(params, state.batch_stats, x, train=True, key=step_key)

      def per_example(y):
        return per_example_loss(loss, logits, y, mask, state.loss_state, axis_name)

      per_example = per_example(labels) if mix is None else mixed_loss(per_example, labels, perm, lam)
      # this device's share of the global mean; the psum of the shares is the global objective
      value = jnp.sum(per_example) / count
      if l1 > 0:
        value = value + mgce_l1_penalty(params, l1) / (1.0 if axis_name is None else jax.lax.psum(1, axis_name))
      return value, (logits, new_stats)

    (value, (logits, new_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    value, grads = psum(value), psum(grads)
    finite = jnp.isfinite(value) & _all_finite(grads)
    param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, param_updates),
      batch_stats=new_stats,
      opt_state=opt_state,
    )
    # a non-finite step changes nothing but the step counter
    new_state = jax.tree_util.tree_map(
      lambda new, old: jnp.where(finite, new, old), new_state, state.replace(step=state.step + 1)
    )
    correct = psum(jnp.sum((jnp.argmax(logits, -1) == labels) & mask, dtype=jnp.float32))
    metrics = {"loss": value, "accuracy": correct / count, "grad_norm": optax.tree.norm(grads), "nonfinite": ~finite}
    return new_state, metrics

  return train_step


def make_multi_step(train_step: Callable) -> Callable:
  """``multi_step(state, batches, key) -> (state, metrics)``: `train_step` over the leading axis of `batches`
  (``lax.scan``), so one dispatch runs several steps; every metric gets a leading step axis."""

  def multi_step(state: TrainState, batches, key):
    return jax.lax.scan(lambda s, batch: train_step(s, batch, key), state, batches)

  return multi_step


def make_predict(model) -> Callable:
  """``predict(state, x) -> float32 logits`` in eval mode (BatchNorm running averages)."""
  adapter = as_adapter(model).computation()

  def predict(state: TrainState, x):
    return adapter.apply(state.params, state.batch_stats, x, train=False)[0]

  return predict
