"""The in-memory :class:`Dataset` and the :func:`load_dataset` entry point."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from gence_jax.data import pipeline as _pl
from gence_jax.data import sources as _src
from gence_jax.data.regimes import Regime, derive_seed, parse_regimes

__all__ = ["Dataset", "load_dataset", "from_arrays", "build_dataset", "apply_regimes"]


@dataclasses.dataclass
class Dataset:
  """NumPy splits plus what was realised building them.

  ``x_*`` keep the source dtype (uint8 images, float32 features); normalisation (``normalizer``, TRAIN statistics)
  and augmentation are applied per batch by :meth:`train_batches` / :meth:`eval_batches`.
  ``y_train``/``y_val`` are the labels after the regimes (possibly noisy); ``y_train_clean``/``y_val_clean`` the
  labels before any label noise. ``ids_train``/``ids_val`` are the row indices of each example in the source's
  training set (or, for a source with its own validation split, in that split), so examples can be traced through
  the split and the regimes.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  input_shape: tuple[int, ...]
  name: str
  info: dict[str, Any]
  normalizer: _pl.Normalizer
  y_train_clean: np.ndarray | None = None
  y_val_clean: np.ndarray | None = None
  ids_train: np.ndarray | None = None
  ids_val: np.ndarray | None = None
  class_names: tuple[str, ...] | None = None
  default_augment: str = "none"

  # -- access --------------------------------------------------------------------------------------------------
  def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of ``"train"``, ``"val"`` or ``"test"``."""
    if name not in ("train", "val", "test"):
      raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
    return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

  @property
  def input_key(self) -> str:
    """Batch key of the inputs: ``"image"`` or ``"x"``."""
    return "image" if self.x_train.ndim >= 3 else "x"

  def steps_per_epoch(self, batch_size: int, drop_remainder: bool = True) -> int:
    return _pl.steps_per_epoch(len(self.y_train), batch_size, drop_remainder)

  # -- iterators -----------------------------------------------------------------------------------------------
  def train_batches(
    self,
    batch_size: int,
    *,
    seed: int | None = None,
    num_epochs: int | None = None,
    start_step: int = 0,
    drop_remainder: bool = True,
    augment: Any = "default",
    normalize: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    with_index: bool = False,
    num_workers: int = 0,
  ) -> Iterator[dict[str, np.ndarray]]:
    """Shuffled, augmented, normalised training batches; see :func:`gence_jax.data.train_batches`.

    ``seed`` defaults to the dataset seed; ``augment="default"`` uses :attr:`default_augment` (``"crop_flip"``
    for CIFAR-like 32x32 colour images and Tiny-ImageNet, ``"none"`` for tabular data and MNIST).
    ``normalize=False`` keeps the source dtype (uint8 images): then normalise on the device with
    ``self.normalizer.apply_jax`` inside the jitted step. ``num_workers``: threads preparing batches ahead.
    """
    aug = self.default_augment if augment == "default" else augment
    return _pl.train_batches(
      self.x_train,
      self.y_train,
      batch_size=batch_size,
      seed=self.info["seed"] if seed is None else seed,
      num_epochs=num_epochs,
      start_step=start_step,
      drop_remainder=drop_remainder,
      augment=aug,
      normalizer=self.normalizer if normalize else None,
      process_index=process_index,
      process_count=process_count,
      with_index=with_index,
      num_workers=num_workers,
    )

  def eval_batches(
    self,
    split: str,
    batch_size: int,
    *,
    normalize: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    with_index: bool = False,
    num_workers: int = 0,
  ) -> Iterator[dict[str, np.ndarray]]:
    """All examples of ``split`` in order, last batch padded, with ``mask``; see
    :func:`gence_jax.data.eval_batches`."""
    x, y = self.split(split)
    return _pl.eval_batches(
      x,
      y,
      batch_size=batch_size,
      normalizer=self.normalizer if normalize else None,
      process_index=process_index,
      process_count=process_count,
      with_index=with_index,
      num_workers=num_workers,
    )


# ---------------------------------------------------------------------------------------------------------------
# Regimes over splits
# ---------------------------------------------------------------------------------------------------------------


def _scale_for_val(regime: Regime, frac: float) -> Regime:
  """The validation split is ~``frac/(1-frac)`` the size of the training split: scale per-class sizes of subset
  regimes accordingly (small data: ``n_per_class``; long tail: an explicit ``n_max``)."""
  p = regime.kwargs
  scale = frac / (1.0 - frac) if frac < 1 else 1.0
  if regime.name == "small":
    return Regime.make("small", n_per_class=max(1, int(round(p["n_per_class"] * scale))))
  if regime.name == "longtail" and p.get("n_max") is not None:
    return Regime.make("longtail", **{**p, "n_max": max(1, int(round(p["n_max"] * scale)))})
  return regime


def apply_regimes(
  splits: dict[str, dict[str, np.ndarray]],
  regimes: Sequence[Regime],
  num_classes: int,
  *,
  seed: int,
  val_scale_fraction: float | None = None,
) -> list[dict[str, Any]]:
  """Apply ``regimes`` in order to each split in ``splits`` (``{"train": {"x", "y", "y_clean", "ids"}, ...}``),
  in place, and return one record per regime: ``{"regime", "spec", "<split>": record, ...}``.

  Regime ``i`` on split ``s`` is seeded with ``derive_seed(seed, "regime", i, s)`` (the record holds it). Label
  noise replaces ``y`` (``y_clean`` keeps the clean labels); subset regimes select rows of every array of the split.
  On ``"val"``, subset sizes given per class are scaled by the val/train size ratio (``val_scale_fraction`` is
  the validation fraction of the pool), so the validation split mirrors the training regime.
  """
  records = []
  for i, reg in enumerate(regimes):
    entry: dict[str, Any] = {"regime": reg.name, "spec": reg.spec()}
    for sname, arrs in splits.items():
      r = reg
      if sname == "val" and val_scale_fraction is not None:
        r = _scale_for_val(reg, val_scale_fraction)
      s = derive_seed(seed, "regime", i, sname)
      out, rec = r.indices_or_labels(arrs["y"], num_classes, seed=s)
      if r.kind == "labels":
        arrs["y"] = out
      else:
        for k in list(arrs):
          arrs[k] = arrs[k][out]
      entry[sname] = rec
    records.append(entry)
  return records


def _coerce_regimes(regimes: Any) -> list[Regime]:
  if regimes is None or regimes == ():
    return []
  return parse_regimes(regimes)


# ---------------------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------------------


def build_dataset(
  raw: _src.RawData,
  *,
  seed: int,
  val_fraction: float = 0.1,
  regimes: Any = (),
  regimes_on_val: bool = True,
  stratify: bool = True,
) -> Dataset:
  """Validation split, regimes and train statistics for a :class:`~gence_jax.data.sources.RawData`.

  1. Unless the source has its own validation split, ``round(val_fraction * n)`` training examples are held out
     (stratified by label by default), seeded by ``derive_seed(seed, "val_split")``.
  2. ``regimes`` (spec string or :class:`Regime` list) are applied in order to train and, if ``regimes_on_val``,
     validation (see :func:`apply_regimes`); never to test.
  3. Per-channel (images) / per-feature (tabular) mean and std over the final TRAIN split.
  """
  if not isinstance(seed, (int, np.integer)):
    raise ValueError(f"seed must be an integer, got {seed!r}")
  seed = int(seed)
  regs = _coerce_regimes(regimes)
  k = int(raw.num_classes)
  y_full = _src._labels(raw.y_train, "y_train")
  for arr, nm in ((y_full, "y_train"), (_src._labels(raw.y_test, "y_test"), "y_test")):
    if arr.size and (arr.min() < 0 or arr.max() >= k):
      raise ValueError(f"{nm} out of range [0, {k}): min {int(arr.min())}, max {int(arr.max())}")
  x_full = np.asarray(raw.x_train)

  split_seed = derive_seed(seed, "val_split")
  if raw.x_val is not None:
    x_tr, y_tr, ids_tr = x_full, y_full, np.arange(len(y_full))
    x_va, y_va = np.asarray(raw.x_val), _src._labels(raw.y_val, "y_val")
    ids_va = np.arange(len(y_va))
    val_info: dict[str, Any] = {"source": "given"}
  else:
    if not (0.0 <= float(val_fraction) < 1.0):
      raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction!r}")
    if stratify:
      ids_tr, ids_va = _pl.stratified_split(y_full, val_fraction, seed=split_seed)
    else:
      ids_tr, ids_va = _pl.random_split(len(y_full), val_fraction, seed=split_seed)
    x_tr, y_tr, x_va, y_va = x_full[ids_tr], y_full[ids_tr], x_full[ids_va], y_full[ids_va]
    val_info = {
      "source": "held_out",
      "val_fraction": float(val_fraction),
      "stratified": bool(stratify),
      "seed": int(split_seed),
    }

  splits = {"train": {"x": x_tr, "y": y_tr, "y_clean": y_tr.copy(), "ids": ids_tr}}
  on_val = regimes_on_val and len(y_va) > 0
  if on_val:
    splits["val"] = {"x": x_va, "y": y_va, "y_clean": y_va.copy(), "ids": ids_va}
  pool = len(y_tr) + len(y_va)
  records = apply_regimes(splits, regs, k, seed=seed, val_scale_fraction=(len(y_va) / pool) if pool else None)
  tr = splits["train"]
  va = splits.get("val", {"x": x_va, "y": y_va, "y_clean": y_va.copy(), "ids": ids_va})

  if len(tr["y"]) == 0:
    raise ValueError("the training split is empty")
  normalizer = _pl.compute_normalizer(tr["x"])
  x_te, y_te = np.asarray(raw.x_test), _src._labels(raw.y_test, "y_test")

  def counts(y: np.ndarray) -> list[int]:
    return [int(c) for c in np.bincount(y, minlength=k)]

  def noise(y: np.ndarray, yc: np.ndarray) -> float:
    return float(np.mean(y != yc)) if len(y) else 0.0

  input_shape = tuple(int(s) for s in x_full.shape[1:])
  info: dict[str, Any] = {
    "name": raw.name,
    "source": _jsonable(raw.source),
    "seed": seed,
    "num_classes": k,
    "input_shape": list(input_shape),
    "input_key": "image" if x_full.ndim >= 3 else "x",
    "dtype": str(x_full.dtype),
    "validation": val_info,
    "num_examples": {"train": int(len(tr["y"])), "val": int(len(va["y"])), "test": int(len(y_te))},
    "class_counts": {"train": counts(tr["y"]), "val": counts(va["y"]), "test": counts(y_te)},
    "class_counts_clean": {"train": counts(tr["y_clean"]), "val": counts(va["y_clean"])},
    "label_noise": {"train": noise(tr["y"], tr["y_clean"]), "val": noise(va["y"], va["y_clean"])},
    "regimes": records,
    "regimes_on_val": bool(on_val),
    "normalization": {**normalizer.to_dict(), "statistics_of": "train"},
    "default_augment": raw.default_augment,
    "class_names": list(raw.class_names) if raw.class_names is not None else None,
  }
  return Dataset(
    x_train=tr["x"],
    y_train=tr["y"],
    x_val=va["x"],
    y_val=va["y"],
    x_test=x_te,
    y_test=y_te,
    num_classes=k,
    input_shape=input_shape,
    name=raw.name,
    info=info,
    normalizer=normalizer,
    y_train_clean=tr["y_clean"],
    y_val_clean=va["y_clean"],
    ids_train=tr["ids"],
    ids_val=va["ids"],
    class_names=raw.class_names,
    default_augment=raw.default_augment,
  )


def _jsonable(obj: Any) -> Any:
  if isinstance(obj, Mapping):
    return {str(k): _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_jsonable(v) for v in obj]
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, (str, int, float, bool)) or obj is None:
    return obj
  return str(obj)


def from_arrays(
  x_train: Any,
  y_train: Any,
  x_test: Any = None,
  y_test: Any = None,
  *,
  seed: int,
  num_classes: int | None = None,
  name: str = "arrays",
  val_fraction: float = 0.1,
  regimes: Any = (),
  regimes_on_val: bool = True,
  test_fraction: float = 0.2,
  test_seed: int = 0,
  x_val: Any = None,
  y_val: Any = None,
) -> Dataset:
  """A :class:`Dataset` from in-memory NumPy arrays (test split held out with ``test_seed`` if not given)."""
  raw = _src.raw_from_arrays(
    x_train,
    y_train,
    x_test,
    y_test,
    num_classes=num_classes,
    name=name,
    test_fraction=test_fraction,
    test_seed=test_seed,
    x_val=x_val,
    y_val=y_val,
  )
  return build_dataset(raw, seed=seed, val_fraction=val_fraction, regimes=regimes, regimes_on_val=regimes_on_val)


_KNOWN = ["digits", *_src.TFDS_DATASETS, "tfds:<name>", "tiny_imagenet:<folder>", "<folder>", "<file>.npz"]


def _resolve_raw(
  name_or_path: Any,
  *,
  data_dir: str | None,
  download: bool,
  as_images: bool,
  test_fraction: float,
  test_seed: int,
  num_classes: int | None,
  cache_path: str | None,
) -> _src.RawData:
  if isinstance(name_or_path, Mapping):
    return _src.raw_from_mapping(
      name_or_path, num_classes=num_classes, test_fraction=test_fraction, test_seed=test_seed
    )
  if not isinstance(name_or_path, (str, os.PathLike)):
    raise ValueError(f"unknown dataset {name_or_path!r}; expected a name, a path or a mapping of arrays")
  spec = os.fspath(name_or_path)
  low = spec.lower()
  if low == "digits":
    return _src.load_digits(as_images=as_images, test_fraction=test_fraction, test_seed=test_seed)
  if low in _src.TFDS_DATASETS:
    return _src.load_tfds(low, data_dir=data_dir, download=download)
  if low.startswith("tfds:"):
    return _src.load_tfds(spec[5:], data_dir=data_dir, download=download)
  for prefix in ("tiny_imagenet:", "tiny-imagenet:"):
    if low.startswith(prefix):
      return _src.load_tiny_imagenet(spec[len(prefix) :], cache_path=cache_path)
  if low in ("tiny_imagenet", "tiny-imagenet", "tiny_imagenet_200", "tiny-imagenet-200"):
    if data_dir is None:
      raise ValueError(f"dataset {spec!r} needs data_dir (the Tiny-ImageNet folder) or 'tiny_imagenet:<folder>'")
    sub = os.path.join(data_dir, "tiny-imagenet-200")
    return _src.load_tiny_imagenet(sub if os.path.isdir(sub) else data_dir, cache_path=cache_path)
  if os.path.isdir(spec):
    if os.path.isfile(os.path.join(spec, "wnids.txt")):
      return _src.load_tiny_imagenet(spec, cache_path=cache_path)
    raise ValueError(f"folder {spec!r} is not a known dataset layout (Tiny-ImageNet needs wnids.txt)")
  if os.path.isfile(spec):
    if low.endswith(".npz"):
      return _src.load_npz(spec, num_classes=num_classes, test_fraction=test_fraction, test_seed=test_seed)
    raise ValueError(f"file {spec!r}: only .npz files are supported")
  if low.endswith(".npz") or os.sep in spec or "/" in spec:
    raise FileNotFoundError(f"dataset file or folder not found: {spec!r}")
  raise ValueError(f"unknown dataset {spec!r}; known: {_KNOWN}")


def load_dataset(
  name_or_path: Any,
  *,
  seed: int,
  val_fraction: float = 0.1,
  data_dir: str | None = None,
  regimes: Any = (),
  regimes_on_val: bool = True,
  download: bool = True,
  as_images: bool = False,
  test_fraction: float = 0.2,
  test_seed: int = 0,
  num_classes: int | None = None,
  cache_path: str | None = None,
) -> Dataset:
  """Load a dataset, hold out a seeded validation split, apply ``regimes`` and compute train statistics.

  ``name_or_path``:

  * ``"digits"``: scikit-learn's bundled digits (64 features; ``as_images=True`` for 8x8x1), stratified
    ``test_fraction`` test split with ``test_seed``;
  * ``"cifar10"``, ``"cifar100"``, ``"svhn_cropped"``, ``"fashion_mnist"``, ``"mnist"`` (or ``"tfds:<name>"``):
    TFDS with ``data_dir``/``download`` (TensorFlow imported only now);
  * ``"tiny_imagenet:<folder>"``, a Tiny-ImageNet folder, or ``"tiny_imagenet"`` with ``data_dir``
    (``cache_path``: optional ``.npz`` cache of the decoded images);
  * a path to an ``.npz`` file (``x_train, y_train, x_test, y_test`` [``x_val, y_val``] or ``x, y``);
  * a mapping of NumPy arrays with the same keys.

  ``regimes``: spec string (``"symmetric:0.4,longtail:exp:100"``) or list of :class:`Regime`, applied in order to
  train and validation (not test). Unknown names raise ValueError, missing files FileNotFoundError.

  ``Dataset.info`` (JSON-serialisable) holds: ``name``, ``source``, ``seed``, ``num_classes``, ``input_shape``,
  ``input_key``, ``dtype``, ``validation`` (how the val split was made), ``num_examples`` and ``class_counts``
  per split (observed labels), ``class_counts_clean`` and realised ``label_noise`` for train/val, ``regimes``
  (one entry per regime: its spec and the record of each split it touched), ``normalization`` (train mean/std),
  ``default_augment`` and ``class_names``.
  """
  raw = _resolve_raw(
    name_or_path,
    data_dir=data_dir,
    download=download,
    as_images=as_images,
    test_fraction=test_fraction,
    test_seed=test_seed,
    num_classes=num_classes,
    cache_path=cache_path,
  )
  return build_dataset(raw, seed=seed, val_fraction=val_fraction, regimes=regimes, regimes_on_val=regimes_on_val)
