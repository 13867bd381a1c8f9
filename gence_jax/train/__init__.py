"""The training program: config, optimizer, train step (jit over a mesh, or pmap), checkpoints, loop."""

from gence_jax.train.checkpoint import CheckpointError, Checkpointer
from gence_jax.train.config import apply_overrides, default_config, load_config, validate
from gence_jax.train.loop import TrainingDivergedError, train_and_evaluate
from gence_jax.train.optim import make_optimizer, make_schedule
from gence_jax.train.step import TrainState, create_state, make_predict, make_train_step

__all__ = [
  "CheckpointError",
  "Checkpointer",
  "TrainState",
  "TrainingDivergedError",
  "apply_overrides",
  "create_state",
  "default_config",
  "load_config",
  "make_optimizer",
  "make_predict",
  "make_schedule",
  "make_train_step",
  "train_and_evaluate",
  "validate",
]
