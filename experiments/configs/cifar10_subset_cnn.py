"""Small-data CIFAR-10 on CPU: ``../shared/data/cifar10_subset.npz`` (about 500 training images per class, the
official test images 0-1016) with the small CNN (conv 32 -> conv 64 -> dense 128, BatchNorm), Adam 1e-3 with a cosine
schedule, 15 epochs of batch 128, standard crop + flip augmentation, 10% of train held out for validation (TS / ATS
are fitted there), 20-bin ECE as in the GenCE paper. About 70 seconds a run on 2 idle CPU cores.

    gence-jax compare --config experiments/configs/cifar10_subset_cnn.py --workdir runs/cifar10_subset \
        --losses cross_entropy generalized_ce:q=0.7 focal:gamma=3.0 flsd53 gence mgce:beta=2.0 \
        --seeds 0 1 2 --regimes clean symmetric:0.4 --set dataset.name=../shared/data/cifar10_subset.npz
"""

from gence_jax.train import default_config


def get_config():
  config = default_config()
  config.dataset.name = "../shared/data/cifar10_subset.npz"
  config.dataset.val_fraction = 0.1
  config.dataset.augment = "crop_flip"
  config.model.name = "cnn"
  config.model.kwargs = {"features": (32, 64), "hidden": 128}
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "cosine"
  config.train.epochs = 15
  config.train.batch_size = 128
  config.train.eval_every_epochs = 5
  config.train.progress = False
  config.calibration.num_bins = 20
  return config
