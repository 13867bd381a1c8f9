"""The main job's base: an MLP on scikit-learn's bundled digits (no download), Adam, 20 epochs.

gence-jax compare --config experiments/configs/digits_mlp.py --workdir runs/compare
"""

from gence_jax.train import default_config


def get_config():
  config = default_config()
  config.dataset.name = "digits"
  config.model.name = "mlp"
  config.model.kwargs = {"hidden": (256,)}
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.train.epochs = 20
  config.train.batch_size = 128
  config.train.eval_every_epochs = 5
  return config
