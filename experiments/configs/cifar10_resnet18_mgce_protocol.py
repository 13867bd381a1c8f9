"""CIFAR-10 with ResNet-18 in the MGCE paper's protocol (Bondugula et al., AISTATS 2026): SGD momentum 0.9, lr 0.01,
batch 128, 150 epochs, gradient-norm clip 5.0, 10% of train held out for validation; label noise on train and
validation with ``--set dataset.regimes=symmetric:0.2``. Needs the TFDS cifar10 data (``dataset.data_dir``) and a GPU.

    gence-jax train --config experiments/configs/cifar10_resnet18_mgce_protocol.py --workdir runs/c10 \
        --set loss.name=mgce --set loss.hparams.beta=2.0 --set seed=0
"""

from gence_jax.train import default_config


def get_config():
  config = default_config()
  config.dataset.name = "cifar10"
  config.dataset.val_fraction = 0.1
  config.model.name = "resnet18"
  config.model.kwargs = {}
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.9
  config.optimizer.grad_clip_norm = 5.0
  config.train.epochs = 150
  config.train.batch_size = 128
  config.train.eval_every_epochs = 10
  config.train.checkpoint_every_steps = 1000
  return config
