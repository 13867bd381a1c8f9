"""The in-memory :class:`Dataset` and the :func:`load_dataset` entry point."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from gence_jax.data import pipeline as _pl
from gence_jax.data import sources as _src
from gence_jax.data import validate as _val
from gence_jax.data.regimes import Regime, derive_seed, parse_regimes
from gence_jax.data.spec import parse_dataset_spec, tiny_imagenet_folder

__all__ = ["Dataset", "load_dataset", "from_arrays", "build_dataset", "apply_regimes"]


@dataclasses.dataclass
class Dataset:
  """NumPy splits plus what was realised building them.

  ``x_*`` keep the source dtype (uint8 images, float32 features); normalisation (``normalizer``, TRAIN statistics)
  and augmentation are applied per batch by :meth:`train_batches` / :meth:`eval_batches`.
  ``y_train``/``y_val`` are the labels after the regimes (possibly noisy); ``y_train_clean``/``y_val_clean`` the
  true labels of the same rows: the source's clean labels when it has them (CIFAR-10N/100N, whose training labels
  are human ones), else the labels before any regime. ``ids_train``/``ids_val`` are the row indices of each example
  in the source's training set (or, for a source with its own validation split, in that split), so examples can be
  traced through the split and the regimes.
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
      **self._pipeline_options(normalize, process_index, process_count, with_index, num_workers),
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
    options = self._pipeline_options(normalize, process_index, process_count, with_index, num_workers)
    return _pl.eval_batches(x, y, batch_size=batch_size, **options)

  def _pipeline_options(self, normalize, process_index, process_count, with_index, num_workers) -> dict[str, Any]:
    """The keyword arguments both iterators hand to the pipeline: the TRAIN normaliser unless ``normalize=False``,
    and the process and worker options as given."""
    return {
      "normalizer": self.normalizer if normalize else None,
      "process_index": process_index,
      "process_count": process_count,
      "with_index": with_index,
      "num_workers": num_workers,
    }


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
  Regimes that read the features (:attr:`Regime.needs_x`: ``instance``) get the split's ``x``; unless the regime
  fixes ``weights_seed``, their class weights ``W`` are drawn from ``derive_seed(seed, "regime", i, "weights")``,
  shared by all splits, so train and validation get the same noise process (as a class-level noise matrix is the
  same for both) with their own per-example draws. On ``"val"``, subset sizes given per class are scaled by the
  val/train size ratio (``val_scale_fraction`` is the validation fraction of the pool), so the validation split
  mirrors the training regime.
  """
  records = []
  for i, reg in enumerate(regimes):
    entry: dict[str, Any] = {"regime": reg.name, "spec": reg.spec()}
    for sname, arrs in splits.items():
      r = reg
      if sname == "val" and val_scale_fraction is not None:
        r = _scale_for_val(reg, val_scale_fraction)
      if r.needs_x and r.kwargs.get("weights_seed") is None:
        r = Regime.make(r.name, **{**r.kwargs, "weights_seed": derive_seed(seed, "regime", i, "weights")})
      s = derive_seed(seed, "regime", i, sname)
      try:
        out, rec = r.indices_or_labels(arrs["y"], num_classes, seed=s, x=arrs["x"] if r.needs_x else None)
      except _val.DataError:
        raise
      except ValueError as e:  # e.g. more examples per class than the split has: the data cannot take this regime
        raise _val.DataError(f"regime {reg.spec()!r} cannot be applied to the {sname} split: {e}") from e
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
  empty_classes: str = "warn",
) -> Dataset:
  """Validation split, regimes and train statistics for a :class:`~gence_jax.data.sources.RawData`.

  0. The arrays are checked first (:func:`gence_jax.data.validate.validate_splits`): NaN/Inf inputs, labels that
     are not integer ids in ``[0, num_classes)``, ``x``/``y`` of different lengths and splits of different example
     shapes raise :class:`~gence_jax.data.DataError` naming the dataset, the array and the first bad row.
  1. Unless the source has its own validation split, ``round(val_fraction * n)`` training examples are held out
     (stratified by label by default), seeded by ``derive_seed(seed, "val_split")``.
  2. ``regimes`` (spec string or :class:`Regime` list) are applied in order to train and, if ``regimes_on_val``,
     validation (see :func:`apply_regimes`); never to test. Then every class should keep at least one training
     example: ``empty_classes="warn"`` (default) warns with a :class:`~gence_jax.data.DataWarning` naming the first
     class that has none, ``"error"`` raises :class:`~gence_jax.data.DataError` with that message, ``"ignore"``
     does neither; ``info["empty_classes"]`` lists them either way.
     The clean labels (``Dataset.y_train_clean``/``y_val_clean``, ``info["class_counts_clean"]``) and
     ``info["label_noise"]`` (the fraction of rows whose label differs from them) use ``raw.y_train_clean[ids]``
     when the source carries true labels beside noisy ones (CIFAR-10N/100N: the noise is then the human noise plus
     what the regimes add), else the labels before the regimes; ``info["clean_labels"]`` says which (``"source"``
     or ``"before_regimes"``). A validation split the source gives itself counts its own labels as clean.
  3. Per-channel (images) / per-feature (tabular) mean and std over the final TRAIN split. A channel/feature whose
     std is ``<= 1e-8`` (constant, e.g. digit pixels that are always 0) is centred and not scaled (std set to 1),
     so it is 0 after normalisation instead of a division by zero; a :class:`~gence_jax.data.DataWarning` names
     them and ``info["zero_variance"]`` lists their indices.
  """
  if not isinstance(seed, (int, np.integer)):
    raise ValueError(f"seed must be an integer, got {seed!r}")
  seed = int(seed)
  _check_empty_classes_arg("build_dataset", empty_classes)
  regs = _coerce_regimes(regimes)
  what = _describe(raw)
  splits_in = [("train", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)]
  if raw.x_val is not None or raw.y_val is not None:
    if raw.x_val is None or raw.y_val is None:
      raise _val.DataError(f"dataset {what!r}: has only one of x_val/y_val")
    splits_in.insert(1, ("val", raw.x_val, raw.y_val))
  _val.validate_splits(splits_in, what=what, num_classes=raw.num_classes)
  k = int(raw.num_classes)
  y_full = _src._labels(raw.y_train, "y_train")
  x_full = np.asarray(raw.x_train)
  has_clean = raw.y_train_clean is not None
  yc_full = y_full
  if has_clean:
    yc_full = _val.check_labels(raw.y_train_clean, split="y_train_clean", what=what, num_classes=k)
    if len(yc_full) != len(y_full):
      raise _val.DataError(f"dataset {what!r}: y_train_clean has {len(yc_full)} rows but y_train has {len(y_full)}")

  split_seed = derive_seed(seed, "val_split")
  if raw.x_val is not None:
    x_tr, y_tr, ids_tr = x_full, y_full, np.arange(len(y_full))
    x_va, y_va = np.asarray(raw.x_val), _src._labels(raw.y_val, "y_val")
    ids_va = np.arange(len(y_va))
    yc_tr, yc_va = yc_full, y_va
    val_info: dict[str, Any] = {"source": "given"}
  else:
    if not (0.0 <= float(val_fraction) < 1.0):
      raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction!r}")
    if stratify:
      ids_tr, ids_va = _pl.stratified_split(y_full, val_fraction, seed=split_seed)
    else:
      ids_tr, ids_va = _pl.random_split(len(y_full), val_fraction, seed=split_seed)
    x_tr, y_tr, x_va, y_va = x_full[ids_tr], y_full[ids_tr], x_full[ids_va], y_full[ids_va]
    yc_tr, yc_va = yc_full[ids_tr], yc_full[ids_va]
    val_info = {
      "source": "held_out",
      "val_fraction": float(val_fraction),
      "stratified": bool(stratify),
      "seed": int(split_seed),
    }

  splits = {"train": {"x": x_tr, "y": y_tr, "y_clean": yc_tr.copy(), "ids": ids_tr}}
  on_val = regimes_on_val and len(y_va) > 0
  if on_val:
    splits["val"] = {"x": x_va, "y": y_va, "y_clean": yc_va.copy(), "ids": ids_va}
  pool = len(y_tr) + len(y_va)
  records = apply_regimes(splits, regs, k, seed=seed, val_scale_fraction=(len(y_va) / pool) if pool else None)
  tr = splits["train"]
  va = splits.get("val", {"x": x_va, "y": y_va, "y_clean": yc_va.copy(), "ids": ids_va})

  if len(tr["y"]) == 0:
    raise _val.DataError(f"dataset {what!r}: the training split is empty")
  after = f"the regimes {','.join(r.spec() for r in regs)!r}" if regs else ""
  empty = _val.check_class_coverage(
    tr["y"], k, what=what, class_names=raw.class_names, after=after, action=empty_classes
  )
  moments = _pl.compute_normalizer(tr["x"], eps=-1.0)  # raw statistics: std 0 stays 0 here
  zero_variance = _val.warn_zero_variance(moments.std, what=what, images=x_full.ndim >= 3, eps=ZERO_VARIANCE_EPS)
  normalizer = _pl.Normalizer(mean=moments.mean, std=np.where(moments.std > ZERO_VARIANCE_EPS, moments.std, 1.0))
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
    "dtype": str(x_full.dtype),
    "validation": val_info,
    "num_examples": {"train": int(len(tr["y"])), "val": int(len(va["y"])), "test": int(len(y_te))},
    "class_counts": {"train": counts(tr["y"]), "val": counts(va["y"]), "test": counts(y_te)},
    "class_counts_clean": {"train": counts(tr["y_clean"]), "val": counts(va["y_clean"])},
    "label_noise": {"train": noise(tr["y"], tr["y_clean"]), "val": noise(va["y"], va["y_clean"])},
    "clean_labels": "source" if has_clean else "before_regimes",
    "regimes": records,
    "regimes_on_val": bool(on_val),
    "normalization": {**normalizer.to_dict(), "statistics_of": "train"},
    "zero_variance": zero_variance,
    "empty_classes": empty,
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


#: Training std at or below which a feature/channel counts as constant (the same threshold as compute_normalizer).
ZERO_VARIANCE_EPS = 1e-8


def _check_empty_classes_arg(fn: str, value: Any) -> None:
  if value not in ("error", "warn", "ignore"):
    raise ValueError(f"{fn}: `empty_classes` must be 'error', 'warn' or 'ignore', got {value!r}")


def _describe(raw: _src.RawData) -> str:
  """How error messages name a dataset: the file or folder it was read from, else its name."""
  src = raw.source if isinstance(raw.source, Mapping) else {}
  return str(src.get("path") or src.get("folder") or raw.name)


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
  empty_classes: str = "warn",
) -> Dataset:
  """A :class:`Dataset` from in-memory NumPy arrays (test split held out with ``test_seed`` if not given).

  The arrays are checked as in :func:`build_dataset` (:class:`~gence_jax.data.DataError` naming ``name``)."""
  given = (("train", x_train, y_train), ("val", x_val, y_val), ("test", x_test, y_test))
  _val.validate_splits([t for t in given if t[1] is not None and t[2] is not None], what=name, num_classes=num_classes)
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
  return build_dataset(
    raw,
    seed=seed,
    val_fraction=val_fraction,
    regimes=regimes,
    regimes_on_val=regimes_on_val,
    empty_classes=empty_classes,
  )


_KNOWN = [
  "digits",
  *_src.TFDS_DATASETS,
  "cifar10_n/<label set>",
  "cifar100_n/<label set>",
  "tfds:<name>",
  "tiny_imagenet:<folder>",
  "medmnist:<name>:<file.npz>",
  "<folder>",
  "<file>.npz",
]


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
    _val.validate_arrays(name_or_path, what="arrays", num_classes=num_classes)
    return _src.raw_from_mapping(
      name_or_path, num_classes=num_classes, test_fraction=test_fraction, test_seed=test_seed
    )
  if not isinstance(name_or_path, (str, os.PathLike)):
    raise ValueError(f"unknown dataset {name_or_path!r}; expected a name, a path or a mapping of arrays")
  try:
    spec = parse_dataset_spec(name_or_path, data_dir)
  except ValueError as e:
    raise ValueError(f"unknown dataset {os.fspath(name_or_path)!r} ({e}); known: {_KNOWN}") from None
  if spec.kind == "digits":
    return _src.load_digits(as_images=as_images, test_fraction=test_fraction, test_seed=test_seed)
  if spec.kind == "tfds":
    return _src.load_tfds(spec.tfds_name, data_dir=spec.data_dir, download=download)
  if spec.kind == "tiny_imagenet":
    if spec.path is None:
      raise ValueError(f"dataset {spec.name!r} needs data_dir (the Tiny-ImageNet folder) or 'tiny_imagenet:<folder>'")
    return _src.load_tiny_imagenet(tiny_imagenet_folder(spec.path), cache_path=cache_path)
  if spec.kind == "medmnist":
    return _src.load_medmnist(spec.tfds_name, spec.path)
  if spec.kind in ("webvision_mini", "clothing1m", "imagenet_val"):
    raise ValueError(f"dataset {spec.name!r} is streamed from disk: load it with gence_jax.data.load_stream_dataset")
  path = spec.path
  if spec.kind == "npz" and os.path.isfile(path):
    return _src.load_npz(path, num_classes=num_classes, test_fraction=test_fraction, test_seed=test_seed)
  if spec.kind == "folder" and os.path.isdir(path):
    folder = tiny_imagenet_folder(path)
    if os.path.isfile(os.path.join(folder, "wnids.txt")):
      return _src.load_tiny_imagenet(folder, cache_path=cache_path)
    raise ValueError(f"folder {path!r} is not a known dataset layout (Tiny-ImageNet needs wnids.txt)")
  if spec.kind == "folder" and os.path.isfile(path):
    raise ValueError(f"file {path!r}: only .npz files are supported")
  if spec.kind == "npz" or os.sep in path or "/" in path:
    raise FileNotFoundError(f"dataset file or folder not found: {path!r}")
  raise ValueError(f"unknown dataset {path!r}; known: {_KNOWN}")


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
  empty_classes: str = "warn",
) -> Dataset:
  """Load a dataset, hold out a seeded validation split, apply ``regimes`` and compute train statistics.

  ``name_or_path``:

  * ``"digits"``: scikit-learn's bundled digits (64 features; ``as_images=True`` for 8x8x1), stratified
    ``test_fraction`` test split with ``test_seed``;
  * ``"cifar10"``, ``"cifar100"``, ``"svhn_cropped"``, ``"fashion_mnist"``, ``"mnist"`` (or ``"tfds:<name>"``):
    TFDS with ``data_dir``/``download`` (TensorFlow imported only now);
  * ``"cifar10_n/<label set>"``, ``"cifar100_n/<label set>"`` (or bare ``"cifar10_n"``/``"cifar100_n"`` for the
    default set): the human-labelled CIFAR-N training sets through TFDS (:func:`gence_jax.data.load_cifar_n`);
    their true labels are kept as the clean labels;
  * ``"tiny_imagenet:<folder>"``, a Tiny-ImageNet folder, or ``"tiny_imagenet"`` with ``data_dir``
    (``cache_path``: optional ``.npz`` cache of the decoded images);
  * ``"medmnist:<name>:<file.npz>"``: a MedMNIST v2 2-D set, its validation split kept
    (:func:`gence_jax.data.load_medmnist`);
  * a path to an ``.npz`` file (``x_train, y_train, x_test, y_test`` [``x_val, y_val``] or ``x, y``);
  * a mapping of NumPy arrays with the same keys.

  Names are parsed by :func:`gence_jax.data.parse_dataset_spec` (every alias is listed there).

  ``regimes``: spec string (``"symmetric:0.4,longtail:exp:100"``) or list of :class:`Regime`, applied in order to
  train and validation (not test). Unknown names raise ValueError, missing files FileNotFoundError.

  The data is checked as it is loaded, before anything is compiled (see :func:`build_dataset`): a file that is not
  an ``.npz``, NaN/Inf inputs, labels that are not integer ids in ``[0, num_classes)``, mismatched ``x``/``y``
  lengths raise :class:`~gence_jax.data.DataError` (a ValueError) with one line naming the dataset, the array and
  the first bad row. A class with no training example after the regimes warns (:class:`~gence_jax.data.DataWarning`)
  or, with ``empty_classes="error"``, raises DataError naming the class; constant features/channels only warn and
  are normalised to 0.

  ``Dataset.info`` (JSON-serialisable) holds: ``name``, ``source``, ``seed``, ``num_classes``, ``input_shape``,
  ``dtype``, ``validation`` (how the val split was made), ``num_examples`` and ``class_counts`` per split
  (observed labels), ``class_counts_clean`` and realised ``label_noise`` for train/val, ``clean_labels``
  (what they are measured against: ``"source"`` or ``"before_regimes"``, see :func:`build_dataset`), ``regimes``
  (one entry per regime: its spec and the record of each split it touched), ``normalization`` (train mean/std),
  ``default_augment``, ``class_names``, ``zero_variance`` (indices of constant features/channels) and
  ``empty_classes`` (classes with no training example).
  """
  _check_empty_classes_arg("load_dataset", empty_classes)
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
  return build_dataset(
    raw,
    seed=seed,
    val_fraction=val_fraction,
    regimes=regimes,
    regimes_on_val=regimes_on_val,
    empty_classes=empty_classes,
  )
