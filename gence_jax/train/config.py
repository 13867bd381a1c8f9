"""Experiment configuration: an `ml_collections.ConfigDict` with a fixed schema, validated before training.

Config files are Python files with ``get_config()`` (see ``experiments/configs/``); ``--set key=value`` overrides any
field (values are parsed as Python literals, else kept as strings). Unknown keys, wrong types and unknown
loss/model/dataset names fail here, naming the key, before anything is trained.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Iterable

import ml_collections

from gence_jax.train.specs import parse_assignment

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step", "exponential")
DTYPES = ("float32", "bfloat16")
MODES = ("jit", "pmap")
#: The program's defaults of ``model.kwargs`` per built-in model (Linen or ``nnx:``), under the entries a config
#: gives: they belong to the model chosen, so ``--set model.name=resnet18`` does not inherit the MLP's ``hidden``.
MODEL_DEFAULTS = {"mlp": {"hidden": (256,)}}


def default_config() -> ml_collections.ConfigDict:
  """Every field the training program reads, with defaults (a small, fast run on the bundled digits data)."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "digits"  # a registered name, "tfds:<name>", a .npz path, or "tiny_imagenet:<folder>"
  c.dataset.data_dir = ""  # TFDS / Tiny-ImageNet data directory ("" = default)
  c.dataset.val_fraction = 0.1
  c.dataset.regimes = ""  # e.g. "symmetric:0.4" or "longtail:exp:100,small:20"; see gence_jax.data.parse_regimes
  c.dataset.as_images = False  # digits as 8x8x1 images (for CNNs) instead of 64 features
  c.dataset.augment = "default"  # "default", "none", "crop_flip", "crop", "flip"; streamed: "rrc,shift,crop,jitter,flip"
  c.dataset.image_size = 224  # streamed datasets (webvision_mini:, clothing1m:): the side of the square inputs
  c.dataset.resize = 0  # streamed: shorter side before the centre/random crop; 0 = round(image_size * 256 / 224)
  c.dataset.extra_test = ""  # streamed: further test splits reported beside the test split ("imagenet_val:<folder>")
  c.dataset.skip_unreadable = False  # streamed: skip (and count) unreadable images instead of stopping (exit 3)

  c.model = ml_collections.ConfigDict()
  # a registry name (mlp, cnn, resnet18, ...), "nnx:<name>" (the NNX version), or a user's factory:
  # "<module>:<factory>" or "<path/to/file.py>:<factory>" (see gence_jax.models.factory)
  c.model.name = "mlp"
  # passed to the model constructor or factory, on top of the chosen model's defaults (MODEL_DEFAULTS)
  c.model.kwargs = ml_collections.ConfigDict()
  c.model.pretrained = ""  # a torchvision ResNet state dict (.pth, .safetensors, .npz): gence_jax.models.pretrained

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "cross_entropy"
  c.loss.hparams = ml_collections.ConfigDict()  # e.g. beta for mgce, q for generalized_ce, gamma for focal
  c.loss.l1 = -1.0  # lambda * ||params||_1; < 0 means the loss's default (1e-5 for mgce, 0 otherwise)

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.momentum = 0.9  # sgd
  c.optimizer.nesterov = False
  c.optimizer.weight_decay = 0.0  # coupled L2 for sgd/adam, decoupled for adamw
  c.optimizer.schedule = "constant"
  c.optimizer.warmup_epochs = 0.0
  c.optimizer.step_epochs = (0.5, 0.75)  # fractions of training (or epochs if > 1) for the "step" schedule
  c.optimizer.step_factor = 0.1
  c.optimizer.decay_rate = 0.97  # the "exponential" schedule: the rate is multiplied by this after every epoch
  c.optimizer.grad_clip_norm = 0.0  # 0 = no clipping; the papers use 5.0

  c.train = ml_collections.ConfigDict()
  c.train.epochs = 20
  c.train.batch_size = 128
  c.train.mode = "jit"  # "jit" (NamedSharding over a Mesh) or "pmap"
  c.train.dtype = "float32"  # compute dtype of the model: "float32" or "bfloat16"
  c.train.eval_every_epochs = 5
  c.train.eval_batch_size = 512
  c.train.checkpoint_every_steps = 200
  c.train.keep_checkpoints = 3
  c.train.log_every_steps = 20
  c.train.progress = True
  c.train.data_workers = 0  # > 0: threads preparing training batches ahead (same batches; keeps a fast GPU fed)
  c.train.mix = "none"  # "mixup" (Zhang et al. 2018) or "cutmix" (Yun et al. 2019; images): mixed in the step
  c.train.mix_alpha = 1.0  # lambda ~ Beta(alpha, alpha)
  c.train.cutmix_prob = 0.5  # CutMix is applied to a batch with this probability (Yun et al.'s CIFAR recipe: 0.5)
  c.train.steps_per_dispatch = 0  # steps per device dispatch (lax.scan); 0 = up to the next log/checkpoint/epoch

  c.calibration = ml_collections.ConfigDict()
  c.calibration.num_bins = 15
  c.calibration.methods = ("ts", "ats")  # post-hoc calibrators fitted on validation (gence_jax.calibration.fit)
  c.calibration.ats_pieces = 3
  c.calibration.ats_min_count = 30
  c.calibration.bootstrap_resamples = 200  # Poisson-bootstrap intervals of the test metrics (0 = none)
  c.calibration.bootstrap_seed = 0  # the same resamples for every model and seed

  c.longtail = ml_collections.ConfigDict()  # shot groups of the long-tail metrics (Liu et al. 2019)
  c.longtail.many_threshold = 100  # many-shot: more than this many training examples
  c.longtail.few_threshold = 20  # few-shot: fewer than this many; medium: in between

  c.outputs = ml_collections.ConfigDict()
  c.outputs.reliability_plot = True  # reliability.png per run (compare draws one per regime instead)
  c.outputs.tensorboard = True  # TensorBoard event files next to metrics.jsonl (when tensorboardX is installed)

  c.ood = ml_collections.ConfigDict()  # out-of-distribution detection with the selected model (gence_jax.train.ood)
  c.ood.datasets = ""  # comma-separated dataset names as for dataset.name (e.g. "tfds:svhn_cropped"); "" = none
  c.ood.data_dir = ""  # TFDS / Tiny-ImageNet data directory of the OOD sets ("" = dataset.data_dir)
  c.ood.max_examples = 0  # > 0: a fixed random subset (seed 0) of each OOD test split; 0 = all of it

  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ""  # "" = single process, or read from the environment
  c.distributed.num_processes = 0
  c.distributed.process_id = -1
  return c


def load_config(path: str | None) -> ml_collections.ConfigDict:
  """Loads ``get_config()`` from a Python config file and checks it against the schema of `default_config`."""
  base = default_config()
  if not path:
    base.lock()
    return base
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file not found: {path!r}")
  spec = importlib.util.spec_from_file_location("_gence_jax_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path!r} has no get_config()")
  loaded = module.get_config()
  _merge_into(base, loaded, prefix="")
  base.lock()
  return base


_FREE_FORM = ("model.kwargs", "loss.hparams")  # checked against the model / loss signature instead


def _merge_into(base, new, prefix):
  for key, value in new.items():
    path = f"{prefix}{key}"
    if path in _FREE_FORM:
      base[key] = ml_collections.ConfigDict(dict(value))
      continue
    if key not in base:
      raise ValueError(f"unknown config key {path!r}; known keys under {prefix or 'the root'}: {sorted(base.keys())}")
    if isinstance(base[key], ml_collections.ConfigDict):
      _merge_into(base[key], value, prefix=path + ".")
    else:
      _assign(base, key, value, path)


def _assign(node, key, value, path):
  try:
    node[key] = value
  except (TypeError, ValueError) as e:
    raise TypeError(f"config key {path!r}: expected {type(node[key]).__name__}, got {value!r} ({e})") from None


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
  """Applies ``key.sub=value`` strings; unknown keys and values of the wrong type raise, naming the key."""
  for item in overrides:
    path, value = parse_assignment(item)
    node, parts = config, path.split(".")
    for i, part in enumerate(parts[:-1]):
      prefix = ".".join(parts[: i + 1])
      if part not in node:
        raise ValueError(f"unknown config key {prefix!r}")
      node = node[part]
    leaf = parts[-1]
    parent = ".".join(parts[:-1])
    if parent in _FREE_FORM:  # free-form: replace the entry whatever its old type (checked by `validate`)
      with node.unlocked():
        if leaf in node:
          del node[leaf]
        node[leaf] = value
      continue
    if leaf not in node:
      raise ValueError(f"unknown config key {path!r}; known keys: {sorted(node.keys())}")
    if isinstance(node[leaf], (tuple, list)) and not isinstance(value, (tuple, list)):
      value = (value,)
    _assign(node, leaf, value, path)
  return config


def _choice(config, path, allowed):
  value = config
  for part in path.split("."):
    value = value[part]
  if value not in allowed:
    raise ValueError(f"config key {path!r} must be one of {list(allowed)}, got {value!r}")


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Fills ``model.kwargs`` with the chosen model's defaults (:data:`MODEL_DEFAULTS`) under the given entries (in
  place; idempotent) and returns `config`: the resolved config that runs, is printed and is recorded."""
  from gence_jax import models

  name = config.model.name
  base = models.builtin_name(name) if isinstance(name, str) else None
  defaults = MODEL_DEFAULTS.get(base, {})
  if defaults:
    config.model.kwargs = ml_collections.ConfigDict({**defaults, **dict(config.model.kwargs)})
  return config


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks names, ranges and that the loss, model and dataset exist, before any data is loaded or training starts.
  Resolves the config first (`resolve`: the model's default kwargs)."""
  from gence_jax import losses
  from gence_jax.data import parse_regimes
  from gence_jax.data.spec import check_dataset_name

  resolve(config)

  _choice(config, "optimizer.name", OPTIMIZERS)
  _choice(config, "optimizer.schedule", SCHEDULES)
  _choice(config, "train.dtype", DTYPES)
  _choice(config, "train.mode", MODES)
  _choice(config, "train.mix", ("none", "mixup", "cutmix"))
  if not 0.0 < config.train.cutmix_prob <= 1.0:
    raise ValueError(f"config key 'train.cutmix_prob' must be in (0, 1], got {config.train.cutmix_prob!r}")
  if not config.train.mix_alpha > 0:
    raise ValueError(f"config key 'train.mix_alpha' must be > 0, got {config.train.mix_alpha!r}")
  positive = {
    "train.epochs": config.train.epochs,
    "train.batch_size": config.train.batch_size,
    "train.eval_batch_size": config.train.eval_batch_size,
    "train.checkpoint_every_steps": config.train.checkpoint_every_steps,
    "train.log_every_steps": config.train.log_every_steps,
    "train.keep_checkpoints": config.train.keep_checkpoints,
    "train.eval_every_epochs": config.train.eval_every_epochs,
    "optimizer.learning_rate": config.optimizer.learning_rate,
    "calibration.num_bins": config.calibration.num_bins,
    "calibration.ats_pieces": config.calibration.ats_pieces,
  }
  for key, value in positive.items():
    if not value > 0:
      raise ValueError(f"config key {key!r} must be > 0, got {value!r}")
  if not 0.0 <= config.dataset.val_fraction < 1.0:
    raise ValueError(f"config key 'dataset.val_fraction' must be in [0, 1), got {config.dataset.val_fraction}")
  if config.dataset.val_fraction == 0.0:
    raise ValueError("config key 'dataset.val_fraction' must be > 0: calibration and model selection need it")
  from gence_jax import calibration

  unknown = [m for m in config.calibration.methods if m not in calibration.available_methods()]
  if unknown or not config.calibration.methods:
    raise ValueError(
      f"config key 'calibration.methods' {tuple(config.calibration.methods)}: each must be one of "
      f"{list(calibration.available_methods())} (at least one)"
    )
  if config.calibration.bootstrap_resamples < 0:
    raise ValueError(f"config key 'calibration.bootstrap_resamples' must be >= 0, got {config.calibration.bootstrap_resamples!r}")
  if config.train.steps_per_dispatch < 0:
    raise ValueError(f"config key 'train.steps_per_dispatch' must be >= 0, got {config.train.steps_per_dispatch!r}")
  if config.train.data_workers < 0:
    raise ValueError(f"config key 'train.data_workers' must be >= 0, got {config.train.data_workers!r}")
  if config.optimizer.grad_clip_norm < 0 or config.optimizer.weight_decay < 0:
    raise ValueError("config keys 'optimizer.grad_clip_norm' and 'optimizer.weight_decay' must be >= 0")

  try:
    losses.get_loss(config.loss.name)
  except (ValueError, TypeError) as e:
    raise ValueError(f"config key 'loss.name': {e}") from None
  try:
    losses.get_loss(config.loss.name, **dict(config.loss.hparams))
  except (ValueError, TypeError) as e:
    raise ValueError(f"config key 'loss.hparams' ({dict(config.loss.hparams)}): {e}") from None
  _validate_model(config)
  try:
    parse_regimes(config.dataset.regimes or None)
  except ValueError as e:
    raise ValueError(f"config key 'dataset.regimes': {e}") from None
  check_dataset_name(config.dataset.name, config.dataset.data_dir)
  _validate_stream(config)
  if "ood" in config:  # configs built by hand without the block have no OOD sets
    _validate_ood(config)


def _probe_shape(config) -> tuple[int, tuple[int, ...]]:
  """(number of classes, one example's shape) to try a user's factory on before the data loads: exact for digits,
  a CIFAR-like guess otherwise (a factory that fails on the guess is judged once the data is loaded)."""
  if str(config.dataset.name).lower() == "digits":
    return 10, (8, 8, 1) if config.dataset.as_images else (64,)
  return 10, (32, 32, 3)


def _validate_model(config) -> None:
  """``model.name`` names a built-in (Linen or ``nnx:``) or an importable factory; ``model.kwargs`` fit it."""
  from gence_jax import models
  from gence_jax.models import factory

  name, kwargs = config.model.name, dict(config.model.kwargs)
  if not isinstance(name, str) or not name:
    raise ValueError(f"config key 'model.name' must be a model name or a <module>:<factory> reference, got {name!r}")
  if models.is_reference(name):
    try:
      fn = factory.load_factory(name)
    except ValueError as e:
      raise ValueError(f"config key 'model.name': {e}") from None
    try:
      factory.check_factory_kwargs(fn, name, kwargs)
    except ValueError as e:
      raise ValueError(f"config key 'model.kwargs': {e}") from None
    num_classes, shape = _probe_shape(config)
    try:
      factory.probe_factory(fn, name, num_classes=num_classes, input_shape=shape, kwargs=kwargs)
    except ValueError as e:
      raise ValueError(f"config key 'model.name': {e}") from None
    return
  base = models.builtin_name(name)
  if base not in models.available_models():
    raise ValueError(
      f"config key 'model.name': unknown model {name!r}; expected one of {models.available_models()}, "
      "'nnx:<one of them>', or a user's factory '<module>:<factory>' / '<path/to/file.py>:<factory>'"
    )
  try:  # flax modules are dataclasses: an unknown keyword is a TypeError at construction, before any tracing
    models.get_model(base, num_classes=2, **kwargs)  # the NNX built-ins take the same keywords
  except TypeError as e:
    raise ValueError(f"config key 'model.kwargs': {e}") from None


def _validate_stream(config) -> None:
  """The keys of streamed datasets: ``image_size``, ``resize``, ``extra_test`` (only with a streamed dataset) and
  ``model.pretrained`` (an existing file)."""
  from gence_jax.data.spec import STREAM_KINDS, check_dataset_name, parse_dataset_spec

  d = config.dataset
  if "image_size" not in d:  # configs built by hand without the keys
    return
  if d.image_size < 8 or d.resize < 0 or (d.resize and d.resize < d.image_size):
    raise ValueError(f"config keys 'dataset.image_size' ({d.image_size}) must be >= 8 and 'dataset.resize' ({d.resize}) 0 or >= it")
  extras = [e.strip() for e in d.extra_test.split(",") if e.strip()]
  if extras and parse_dataset_spec(d.name).kind not in STREAM_KINDS:
    raise ValueError(f"config key 'dataset.extra_test' needs a streamed dataset (webvision_mini:, clothing1m:), not {d.name!r}")
  for extra in extras:
    if parse_dataset_spec(extra).kind != "imagenet_val":
      raise ValueError(f"config key 'dataset.extra_test': {extra!r} is not 'imagenet_val:<folder>'")
    check_dataset_name(extra, None, key="dataset.extra_test")
  pretrained = config.model.get("pretrained", "")
  if pretrained and not os.path.isfile(pretrained):
    raise FileNotFoundError(f"config key 'model.pretrained': file not found: {pretrained!r}")


def _validate_ood(config) -> None:
  """The ``ood`` block: every OOD dataset name is one the loader accepts (checked without loading anything)."""
  from gence_jax.data.spec import check_dataset_name
  from gence_jax.data.ood import parse_ood_datasets

  if config.ood.max_examples < 0:
    raise ValueError(f"config key 'ood.max_examples' must be >= 0 (0 = all), got {config.ood.max_examples!r}")
  try:
    names = parse_ood_datasets(config.ood.datasets)
  except ValueError as e:
    raise ValueError(f"config key 'ood.datasets': {e}") from None
  for name in names:
    check_dataset_name(name, config.ood.data_dir or config.dataset.data_dir, key="ood.datasets")
