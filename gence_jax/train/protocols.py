"""The papers' training protocols as config builders; the files in ``experiments/configs/`` pick a dataset and model.

* `mgce_protocol`: Bondugula, Mazuelas, Perez & Liu, "Minimax Generalized Cross-Entropy", AISTATS 2026, Tables 1
  and 3: SGD momentum 0.9, lr 0.01 (constant), batch 128, 150 epochs, gradient-norm clip 5.0, 10% of train held
  out for validation (label noise, set per run, applies to train and validation), model selection on validation
  every 5 epochs, 15-bin ECE. Where the paper is silent: constant learning rate, no weight decay.
* `mgce_webvision_protocol`, `mgce_clothing1m_protocol`: the same paper's real-world noisy-label benchmarks (Section
  5.3, Appendices G.2 and G.3), ResNet-50 at 224x224 streamed from the release folders (`gence_jax.data.stream`):
  WebVision 1.0 mini (SGD 250 epochs, lr 0.4 multiplied by 0.97 after every epoch, momentum 0.9, batch 512, width /
  height shift + colour jitter + flip; tested on WebVision's validation set and the same 50 classes of ILSVRC2012
  val) and Clothing-1M (from ImageNet weights, SGD 10 epochs, lr 0.002 divided by 10 at the halfway point, momentum
  0.9, batch 512). What the appendices leave open is written in each config's docstring.
* `gence_protocol`: Zhan, Zhou & Shen 2026 (arXiv:2604.06689). The paper's training recipe is not available, so
  this is the one its focal-loss baselines were published with (Mukhoti et al. 2020): SGD momentum 0.9, weight decay
  5e-4, batch 128, lr 0.1 divided by 10 at epochs 150 and 250, 350 epochs, crop + flip, 20-bin ECE, OOD against
  SVHN (the TFDS test split).

Both leave ``loss`` at cross-entropy with no hyper-parameters: ``gence-jax compare --losses`` sets each run's loss.
Run counts and expected GPU time: ``experiments/PROTOCOLS.md``.
"""

from __future__ import annotations

import ml_collections

from gence_jax.train.config import default_config


def _common(config, *, model: str, model_kwargs: dict | None, data_workers: int) -> None:
  config.dataset.val_fraction = 0.1
  config.model.name = model
  config.model.kwargs = dict(model_kwargs or {})
  config.loss.name = "cross_entropy"  # `compare --losses` sets the loss of each run
  config.loss.hparams = {}  # empty: a spec without hyper-parameters (cross_entropy, mae) must not inherit any
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.train.batch_size = 128
  config.train.checkpoint_every_steps = 2000
  config.train.log_every_steps = 100
  config.train.data_workers = data_workers  # host threads preparing batches ahead of a GPU


def mgce_protocol(
  dataset: str,
  model: str,
  *,
  model_kwargs: dict | None = None,
  learning_rate: float = 0.01,
  augment: str = "default",
  data_workers: int = 4,
) -> ml_collections.ConfigDict:
  """The MGCE paper's protocol on `dataset` with `model` (Table 1: ResNets, lr 0.01; Table 3: MLP, lr 0.001)."""
  config = default_config()
  config.dataset.name = dataset
  config.dataset.augment = augment
  _common(config, model=model, model_kwargs=model_kwargs, data_workers=data_workers)
  config.optimizer.learning_rate = learning_rate
  config.optimizer.schedule = "constant"
  config.optimizer.grad_clip_norm = 5.0
  config.train.epochs = 150
  config.train.eval_every_epochs = 5
  config.calibration.num_bins = 15
  return config


def mgce_table3_protocol(dataset: str, *, initializer: str = "torch_default") -> ml_collections.ConfigDict:
  """The MGCE paper's Table 3 (Appendix G.4) on tabular `dataset`: `mgce_protocol` with an MLP of 1024 hidden units
  initialised by `initializer` (PyTorch's nn.Linear default unless told), SGD lr 0.001, no augmentation, batches
  prepared in the training thread, no progress bar (grids run many of these)."""
  config = mgce_protocol(
    dataset,
    "mlp",
    model_kwargs={"hidden": (1024,), "initializer": initializer},
    learning_rate=0.001,
    augment="none",
    data_workers=0,
  )
  config.train.progress = False
  return config


def _mgce_resnet50(config, dataset: str, *, learning_rate: float, epochs: int, data_workers: int) -> None:
  """What the two real-world MGCE protocols share: ResNet-50 with the ImageNet stem (torchvision's layout) at
  224x224, SGD momentum 0.9 (`_common`), batch 512, MGCE's L1 weight (``loss.l1 < 0``: the loss's default, 1e-5 for
  MGCE and 0 for the baselines, as in Tables 1 and 3), 15-bin ECE, ``data_workers`` grain worker processes reading
  the images (benchmarks/stream.py: about 540-590 images/s per worker on a shared 2-core CPU, so 5 feed one A100 at
  its published mixed-precision ResNet-50 rate of 2,470 images/s; 8 leave a margin)."""
  config.dataset.name = dataset
  config.dataset.augment = "default"  # the release's default (gence_jax.data.stream.DEFAULT_AUGMENT)
  config.dataset.image_size = 224
  _common(config, model="resnet50", model_kwargs={"stem": "imagenet"}, data_workers=data_workers)
  config.optimizer.learning_rate = learning_rate
  config.train.batch_size = 512
  config.train.epochs = epochs
  config.train.checkpoint_every_steps = 500
  config.train.log_every_steps = 50
  config.calibration.num_bins = 15


def mgce_webvision_protocol(
  root: str, *, imagenet_val: str = "", data_workers: int = 8
) -> ml_collections.ConfigDict:
  """MGCE Appendix G.2 on WebVision 1.0 mini (``webvision_mini:<root>``), with the 50 ILSVRC2012 validation classes
  (``imagenet_val:<folder>``) as a second test split when given: from scratch, SGD 250 epochs, lr 0.4 multiplied by
  0.97 after every epoch, width/height shift + colour jitter + flip; 10% of the training list held out (noisy) for
  model selection every 10 epochs."""
  config = default_config()
  _mgce_resnet50(config, f"webvision_mini:{root}", learning_rate=0.4, epochs=250, data_workers=data_workers)
  config.dataset.extra_test = f"imagenet_val:{imagenet_val}" if imagenet_val else ""
  config.optimizer.schedule = "exponential"
  config.optimizer.decay_rate = 0.97
  config.train.eval_every_epochs = 10
  return config


def mgce_clothing1m_protocol(root: str, *, pretrained: str, data_workers: int = 8) -> ml_collections.ConfigDict:
  """MGCE Appendix G.3 on Clothing-1M (``clothing1m:<root>``), after Park et al. 2023: ResNet-50 from the ImageNet
  weights at ``pretrained`` (a torchvision state dict, `gence_jax.models.pretrained`), SGD 10 epochs, lr 0.002
  divided by 10 at the halfway point; trained on the noisy list, selected on the clean validation list after every
  epoch, tested on the clean test list."""
  config = default_config()
  _mgce_resnet50(config, f"clothing1m:{root}", learning_rate=0.002, epochs=10, data_workers=data_workers)
  config.model.pretrained = pretrained
  config.optimizer.schedule = "step"
  config.optimizer.step_epochs = (0.5,)  # entries <= 1 are fractions of training
  config.optimizer.step_factor = 0.1
  config.train.eval_every_epochs = 1
  return config


def gence_protocol(dataset: str, model: str = "resnet18", *, ood: str = "svhn_cropped") -> ml_collections.ConfigDict:
  """The GenCE comparison on `dataset` (CE vs GenCE vs focal variants, TS/ATS, 20-bin ECE, OOD against `ood`)."""
  config = default_config()
  config.dataset.name = dataset
  config.dataset.augment = "crop_flip"
  _common(config, model=model, model_kwargs=None, data_workers=4)
  config.optimizer.learning_rate = 0.1
  config.optimizer.weight_decay = 5e-4
  config.optimizer.schedule = "step"
  config.optimizer.step_epochs = (150, 250)  # entries > 1 are epochs
  config.optimizer.step_factor = 0.1
  config.train.epochs = 350
  config.train.eval_every_epochs = 10
  config.calibration.num_bins = 20
  config.ood.datasets = ood
  return config
