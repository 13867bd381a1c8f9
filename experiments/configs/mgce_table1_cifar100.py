"""MGCE paper, Table 1, CIFAR-100 (Bondugula, Mazuelas, Perez & Liu, AISTATS 2026): ResNet-34, SGD momentum
0.9, lr 0.01 (constant), batch 128, 150 epochs, gradient-norm clip 5.0, 10% of train held out for validation,
symmetric label noise 0 / 0.2 / 0.4 on train AND validation (never test), 5 seeds; metrics accuracy and SCE.
MGCE's beta is selected on validation accuracy (ties: NLL) over 8 values in [1, 11]: 1, 1.43, 2, 3, 4, 6, 8, 11
(`--select mgce`), against generalized CE (q = 0.7), cross-entropy and MAE. MGCE trains with lambda ||theta||_1,
lambda = 1e-5 (`loss.l1 = -1`: the loss's default; 0 for the other losses). Needs the TFDS `cifar100` data (in
~/tensorflow_datasets, or add `--set dataset.data_dir=DIR`; TFDS downloads it if missing) and a GPU; runs and
expected time: experiments/PROTOCOLS.md.

    gence-jax compare --config experiments/configs/mgce_table1_cifar100.py --workdir runs/mgce_table1/cifar100 \
        --losses mgce:beta=1 mgce:beta=1.43 mgce:beta=2 mgce:beta=3 mgce:beta=4 mgce:beta=6 mgce:beta=8 mgce:beta=11 \
            generalized_ce:q=0.7 cross_entropy mae \
        --regimes clean symmetric:0.2 symmetric:0.4 --seeds 0 1 2 3 4 --select mgce \
        --columns accuracy sce nll ece

165 runs (11 loss specs x 3 regimes x 5 seeds).
One run of the grid:

    gence-jax train --config experiments/configs/mgce_table1_cifar100.py --workdir runs/one \
        --set loss.name=mgce --set loss.hparams.beta=2.0 --set dataset.regimes=symmetric:0.2 --set seed=0

Assumptions where the paper is silent: constant learning rate, no weight decay, the dataset's default augmentation
(see gence_jax.data.TFDS_DATASETS), model selection on validation every 5 epochs, float32.
"""

from gence_jax.train import default_config


def get_config():
  config = default_config()
  config.dataset.name = "cifar100"
  config.dataset.val_fraction = 0.1
  config.model.name = "resnet34"
  config.model.kwargs = {}
  config.loss.name = "cross_entropy"  # `compare --losses` sets the loss of each run
  config.loss.hparams = {}  # empty: a spec without hyper-parameters (cross_entropy, mae) must not inherit any
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.9
  config.optimizer.schedule = "constant"
  config.optimizer.grad_clip_norm = 5.0
  config.train.epochs = 150
  config.train.batch_size = 128
  config.train.eval_every_epochs = 5
  config.train.checkpoint_every_steps = 2000
  config.train.log_every_steps = 100
  config.train.data_workers = 4  # host threads preparing batches ahead: the input pipeline must keep up with the GPU
  config.calibration.num_bins = 15
  return config
