"""Streaming input for image files larger than host memory: read, decoded, resized and augmented per batch, with grain.

:func:`load_stream_dataset` reads a release's lists (:mod:`gence_jax.data.releases`: ``webvision_mini:<root>``,
``clothing1m:<root>``) into a :class:`StreamingDataset`: labels in memory, pixels on disk. It offers the same
iterators as the in-memory :class:`~gence_jax.data.Dataset` (``train_batches``, ``eval_batches``, with the same
``{"x", "label", "mask"}`` batches), so the training program runs on it unchanged.

Determinism. Training batch ``b`` of epoch ``e`` holds the examples ``perm_e[b * B : (b + 1) * B]`` with ``perm_e``
drawn from ``derive_seed(seed, "shuffle", e)`` (the rule of :func:`gence_jax.data.train_batches`), and the
augmentation of the example at position ``p`` of epoch ``e`` is drawn from ``default_rng([derive_seed(seed,
"stream_augment", e), p])``. A batch is thus a pure function of ``(seed, step)``: the grain ``MapDataset`` over steps
is indexed, never iterated statefully, so a resumed run starts the dataset at the checkpoint's step and sees exactly
the batches of an uninterrupted run (the grain iterator's own state, ``{"next_index": ...}``, is that step offset).
Each process of a multi-host job reads only its rows (:func:`gence_jax.data.local_batch_slice`) of each global batch.

Memory. One element of the grain dataset is one process-local batch; the reader holds at most ``2`` batches in
flight and ``2`` ready in the main process (grain ``ReadOptions``), and with ``num_workers`` worker processes
(grain ``mp_prefetch``) each worker the same, so host memory is bounded by those buffers times the batch size,
whatever the dataset's size.

Augmentation (per example, on the decoded image; ``dataset.augment`` is ``"default"``, ``"none"`` or a comma list):

* ``rrc``: torchvision's ``RandomResizedCrop`` (area fraction in [0.08, 1], aspect ratio in [3/4, 4/3] log-uniform,
  10 tries then a centre crop), resized to ``size x size``;
* ``crop``: shorter side resized to ``resize`` (256 for 224), then a random ``size x size`` crop (the recipe of
  DivideMix's Clothing-1M loader);
* ``shift``: resized to ``size x size``, then shifted by up to ``0.1`` of the width and height, borders filled with the
  nearest pixel (Keras ``width_shift_range`` / ``height_shift_range`` with ``fill_mode="nearest"``);
* ``jitter``: torchvision's ``ColorJitter(0.4, 0.4, 0.4)``: brightness, contrast and saturation factors uniform in
  [0.6, 1.4], applied in a random order, clipped after each;
* ``flip``: horizontal flip with probability 1/2.

Without a geometric op (and for evaluation): shorter side resized to ``resize``, centre ``size x size`` crop. Then the
ImageNet mean and std normalise each channel (float32). Images are resized with PIL's bilinear filter.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Iterator, Sequence

import numpy as np

from gence_jax.data import releases
from gence_jax.data.pipeline import Normalizer, local_batch_slice, num_eval_batches, steps_per_epoch, stratified_split
from gence_jax.data.regimes import derive_seed, parse_regimes
from gence_jax.data.spec import STREAM_KINDS, parse_dataset_spec
from gence_jax.data.validate import DataError, check_class_coverage

__all__ = [
  "AUGMENT_OPS",
  "DEFAULT_AUGMENT",
  "IMAGENET_MEAN",
  "IMAGENET_STD",
  "StreamingDataset",
  "color_jitter",
  "eval_image",
  "load_stream_dataset",
  "parse_augment",
  "random_resized_crop_box",
  "read_image",
  "train_image",
]

#: ImageNet channel statistics (torchvision's ``Normalize`` values), on the [0, 1] scale.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENT_OPS = ("rrc", "crop", "shift", "jitter", "flip")
#: The protocols' augmentations: WebVision mini (MGCE Appendix G.2: width/height shift, colour jitter, horizontal
#: flip); Clothing-1M (resize 256, random 224 crop, flip, as DivideMix's loader; the MGCE appendix names none).
DEFAULT_AUGMENT = {"webvision_mini": ("shift", "jitter", "flip"), "clothing1m": ("crop", "flip")}
SHIFT_FRACTION = 0.1
JITTER = 0.4
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def parse_augment(spec: Any, default: Sequence[str] = ()) -> tuple[str, ...]:
  """``"default"`` -> ``default``; ``"none"``/``""``/None -> ``()``; a comma list of :data:`AUGMENT_OPS` (one
  geometric op at most among ``rrc``, ``crop``, ``shift``) -> that tuple. ValueError naming ``dataset.augment``."""
  if spec in (None, "", "none", False):
    return ()
  if spec == "default":
    return tuple(default)
  ops = tuple(s.strip() for s in str(spec).split(",") if s.strip())
  bad = [o for o in ops if o not in AUGMENT_OPS]
  if bad:
    raise ValueError(f"config key 'dataset.augment': unknown op {bad[0]!r} for a streamed dataset; use {AUGMENT_OPS}")
  if sum(o in ("rrc", "crop", "shift") for o in ops) > 1:
    raise ValueError(f"config key 'dataset.augment' {spec!r}: at most one of 'rrc', 'crop', 'shift'")
  return ops


# ---------------------------------------------------------------------------------------------------------------
# Per-image transforms (pure functions of the image and a NumPy generator)
# ---------------------------------------------------------------------------------------------------------------


def read_image(path: str, where: str):
  """The image at ``path`` as an RGB PIL image, fully decoded; a missing or unreadable file is a DataError naming
  it and ``where`` (the list file and line)."""
  from PIL import Image, UnidentifiedImageError

  try:
    with Image.open(path) as im:
      return im.convert("RGB")
  except FileNotFoundError:
    raise DataError(f"image {path!r} listed at {where}: file not found") from None
  except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
    raise DataError(f"image {path!r} listed at {where}: unreadable ({type(e).__name__}: {e})") from None


def random_resized_crop_box(
  rng: np.random.Generator, width: int, height: int, scale=RRC_SCALE, ratio=RRC_RATIO
) -> tuple[int, int, int, int]:
  """``(left, top, crop width, crop height)`` as torchvision's ``RandomResizedCrop.get_params`` draws them: up to
  10 tries of an area fraction uniform in ``scale`` and an aspect ratio log-uniform in ``ratio``; then the largest
  centred crop whose aspect ratio lies in ``ratio``."""
  area = width * height
  log_ratio = np.log(ratio)
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(*log_ratio))
    w = int(round(np.sqrt(target * aspect)))
    h = int(round(np.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    w, h = int(round(height * max(ratio))), height
  else:
    w, h = width, height
  return (width - w) // 2, (height - h) // 2, w, h


def _resize_shorter(img, size: int):
  """``img`` with its shorter side resized to ``size`` (bilinear), the aspect ratio kept (torchvision ``Resize``)."""
  from PIL import Image

  w, h = img.size
  if min(w, h) == size:
    return img
  if w <= h:
    return img.resize((size, max(1, int(size * h / w))), Image.BILINEAR)
  return img.resize((max(1, int(size * w / h)), size), Image.BILINEAR)


def eval_image(img, size: int, resize: int) -> np.ndarray:
  """Shorter side resized to ``resize``, centre ``size x size`` crop (torchvision ``Resize`` + ``CenterCrop``);
  uint8 ``[size, size, 3]``."""
  img = _resize_shorter(img, resize)
  w, h = img.size
  left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
  return np.asarray(img.crop((left, top, left + size, top + size)), np.uint8)


def _shift(x: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
  """``x`` moved by up to ``fraction`` of its height and width (uniform integer offsets), edge pixels repeated."""
  h, w = x.shape[:2]
  my, mx = int(fraction * h), int(fraction * w)
  dy, dx = int(rng.integers(-my, my + 1)), int(rng.integers(-mx, mx + 1))
  padded = np.pad(x, ((my, my), (mx, mx), (0, 0)), mode="edge")
  return padded[my - dy : my - dy + h, mx - dx : mx - dx + w]


def color_jitter(x: np.ndarray, rng: np.random.Generator, strength: float = JITTER) -> np.ndarray:
  """torchvision ``ColorJitter(strength, strength, strength)`` on a uint8 RGB image: factors uniform in
  ``[max(0, 1 - s), 1 + s]`` for brightness (scale), contrast (blend with the mean grey level) and saturation (blend
  with the grey image), applied in a random order, each result clipped to [0, 255]; uint8 out."""
  factors = rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength, size=3)
  order = rng.permutation(3)
  y = x.astype(np.float32)
  grey_weights = np.asarray([0.299, 0.587, 0.114], np.float32)
  for op in order:
    f = np.float32(factors[op])
    if op == 0:
      y = y * f
    elif op == 1:
      y = (y - (y @ grey_weights).mean()) * f + (y @ grey_weights).mean()
    else:
      grey = (y @ grey_weights)[..., None]
      y = f * y + (1 - f) * grey
    np.clip(y, 0.0, 255.0, out=y)
  return np.rint(y).astype(np.uint8)


def train_image(img, rng: np.random.Generator, ops: Sequence[str], size: int, resize: int) -> np.ndarray:
  """The training transform ``ops`` (module docstring) of a PIL RGB image; uint8 ``[size, size, 3]``. Draws from
  ``rng`` in the order geometry, flip, jitter."""
  from PIL import Image

  if "rrc" in ops:
    left, top, w, h = random_resized_crop_box(rng, *img.size)
    x = np.asarray(img.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h)), np.uint8)
  elif "crop" in ops:
    img = _resize_shorter(img, resize)
    w, h = img.size
    left, top = int(rng.integers(0, w - size + 1)), int(rng.integers(0, h - size + 1))
    x = np.asarray(img.crop((left, top, left + size, top + size)), np.uint8)
  elif "shift" in ops:
    x = _shift(np.asarray(img.resize((size, size), Image.BILINEAR), np.uint8), rng, SHIFT_FRACTION)
  else:
    x = eval_image(img, size, resize)
  if "flip" in ops and rng.random() < 0.5:
    x = x[:, ::-1]
  if "jitter" in ops:
    x = color_jitter(x, rng)
  return np.ascontiguousarray(x)


# ---------------------------------------------------------------------------------------------------------------
# Batches: pure functions of (seed, step), picklable for grain's worker processes
# ---------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """Epoch ``epoch``'s order, the rule of the in-memory pipeline."""
  return np.random.default_rng(derive_seed(seed, "shuffle", epoch)).permutation(n)


@dataclasses.dataclass(frozen=True)
class _Batches:
  """``self(step)``: this process's rows of global batch ``step`` of ``images``, decoded and transformed.

  ``train``: shuffled per epoch and augmented with ``ops``; else in order (evaluation), the last batch padded."""

  images: releases.ImageList
  batch_size: int
  rows: slice
  seed: int
  train: bool
  ops: tuple[str, ...]
  size: int
  resize: int
  normalizer: Normalizer | None
  skip_unreadable: bool
  drop_remainder: bool = True

  def positions(self, step: int) -> tuple[int, np.ndarray]:
    """``(epoch, positions within the epoch of this process's rows)``."""
    n = len(self.images)
    spe = steps_per_epoch(n, self.batch_size, self.drop_remainder) if self.train else num_eval_batches(n, self.batch_size)
    epoch, b = divmod(step, spe) if self.train else (0, step)
    return epoch, np.arange(b * self.batch_size, (b + 1) * self.batch_size)[self.rows]

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    n = len(self.images)
    epoch, pos = self.positions(int(step))
    valid = pos < n
    rows = _permutation(self.seed, epoch, n)[np.minimum(pos, n - 1)] if self.train else np.minimum(pos, n - 1)
    base = derive_seed(self.seed, "stream_augment", epoch)
    x = np.zeros((len(pos), self.size, self.size, 3), np.uint8)
    for j in np.flatnonzero(valid):
      i = int(rows[j])
      try:
        img = read_image(self.images.paths[i], self.images.where(i))
      except DataError:
        if not self.skip_unreadable:
          raise
        valid[j] = False
        continue
      if self.train:
        x[j] = train_image(img, np.random.default_rng([base, int(pos[j])]), self.ops, self.size, self.resize)
      else:
        x[j] = eval_image(img, self.size, self.resize)
    out = self.normalizer(x) if self.normalizer is not None else x
    out[~valid] = 0
    label = np.where(valid, self.images.labels[rows], 0).astype(np.int32)
    index = np.where(pos < n, rows, -1).astype(np.int64)
    return {"x": out, "label": label, "mask": valid, "index": index}


@dataclasses.dataclass
class StreamingDataset:
  """Image lists of a release (labels in memory, pixels read per batch), with the iterators of
  :class:`gence_jax.data.Dataset`. ``lists`` holds ``"train"``, ``"val"``, ``"test"`` and any extra test split by its
  name; ``info`` is JSON-able (as ``Dataset.info``, plus ``streamed``, ``augment``, ``image_size``, ``resize`` and
  ``unreadable``: images skipped per split when ``skip_unreadable``, counted over the batches this process read)."""

  lists: dict[str, releases.ImageList]
  num_classes: int
  name: str
  info: dict[str, Any]
  normalizer: Normalizer
  image_size: int = 224
  resize: int = 256
  augment: tuple[str, ...] = ()
  skip_unreadable: bool = False
  y_train_clean: np.ndarray | None = None
  y_val_clean: np.ndarray | None = None
  class_names: tuple[str, ...] | None = None
  default_augment: tuple[str, ...] = ()
  read_threads: int = 2
  _skipped: dict = dataclasses.field(default_factory=dict, repr=False)
  streamed = True
  x_dtype = np.dtype(np.uint8)

  @property
  def input_shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, 3)

  @property
  def y_train(self) -> np.ndarray:
    return self.lists["train"].labels

  @property
  def y_val(self) -> np.ndarray:
    return self.lists["val"].labels

  @property
  def y_test(self) -> np.ndarray:
    return self.lists["test"].labels

  @property
  def extra_splits(self) -> list[str]:
    return [k for k in self.lists if k not in ("train", "val", "test")]

  def steps_per_epoch(self, batch_size: int, drop_remainder: bool = True) -> int:
    return steps_per_epoch(len(self.y_train), batch_size, drop_remainder)

  def _rows(self, batch_size: int, process_index: int | None, process_count: int | None) -> slice:
    if process_index is None or process_count is None:
      import jax

      process_index, process_count = jax.process_index(), jax.process_count()
    return local_batch_slice(batch_size, process_index, process_count)

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
    """Shuffled, augmented, normalised training batches (module docstring), from ``start_step`` on; ``augment``
    ``"default"`` is :attr:`augment`; ``num_workers > 0``: that many grain worker processes (same batches)."""
    ops = self.augment if augment == "default" else parse_augment(augment, self.default_augment)
    spe = self.steps_per_epoch(batch_size, drop_remainder)
    if spe == 0:
      raise ValueError(f"batch_size={batch_size} larger than the {len(self.y_train)} training examples")
    make = self._maker("train", batch_size, process_index, process_count, normalize, ops, True, drop_remainder, seed)
    stop = start_step + (1 << 40) if num_epochs is None else num_epochs * spe
    return self._iterate(make, int(start_step), stop, num_workers, "train", with_index)

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
    """Every example of ``split`` once, in list order, resized and centre-cropped; last batch padded (``mask``)."""
    if split not in self.lists:
      raise ValueError(f"split must be one of {list(self.lists)}, got {split!r}")
    make = self._maker(split, batch_size, process_index, process_count, normalize, (), False, True, None)
    return self._iterate(make, 0, num_eval_batches(len(self.lists[split]), batch_size), num_workers, split, with_index)

  def _maker(self, split, batch_size, pi, pc, normalize, ops, train, drop_remainder, seed) -> _Batches:
    return _Batches(
      self.lists[split], batch_size, self._rows(batch_size, pi, pc), self.info["seed"] if seed is None else int(seed),
      train, tuple(ops), self.image_size, self.resize, self.normalizer if normalize else None, self.skip_unreadable,
      drop_remainder,
    )

  def _iterate(self, make: _Batches, start: int, stop: int, num_workers: int, split: str, with_index: bool):
    import grain

    ds = grain.MapDataset.range(start, stop).map(make)
    threads = max(1, int(self.read_threads))
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads))
    if num_workers > 0:
      from absl import flags

      if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; a program without absl.app never parsed them
        flags.FLAGS.mark_as_parsed()
      it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(num_workers), per_worker_buffer_size=1))
    return self._counted(iter(it), split, with_index)

  def _counted(self, it, split: str, with_index: bool) -> Iterator[dict[str, np.ndarray]]:
    """The batches of ``it``; rows skipped as unreadable are counted in ``info["unreadable"][split]`` (distinct
    rows) with up to 10 ``<list file>:<line>`` examples."""
    record = self.info["unreadable"]
    for batch in it:
      bad = batch["index"][(batch["index"] >= 0) & ~batch["mask"]]
      if bad.size:
        seen = self._skipped.setdefault(split, set())
        seen.update(int(r) for r in bad)
        record[split] = len(seen)
        where = {*record.get("examples", []), *(self.lists[split].where(int(r)) for r in bad[:10])}
        record["examples"] = sorted(where)[:10]
      if not with_index:
        batch = {k: v for k, v in batch.items() if k != "index"}
      yield batch


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------


def _held_out_val(train: releases.ImageList, val_fraction: float, seed: int):
  """A stratified validation split of the training list (as :func:`gence_jax.data.build_dataset` holds one out)."""
  if not 0.0 < float(val_fraction) < 1.0:
    raise ValueError(f"val_fraction must lie in (0, 1) for a dataset without a validation list, got {val_fraction!r}")
  split_seed = derive_seed(seed, "val_split")
  keep, held = stratified_split(train.labels, val_fraction, seed=split_seed)
  info = {"source": "held_out", "val_fraction": float(val_fraction), "stratified": True, "seed": int(split_seed)}
  return train.take(keep), train.take(held), info


def _apply_regimes(lists: dict, regimes: Any, num_classes: int, seed: int, on_val: bool) -> tuple[dict, list]:
  """The label regimes on the train (and validation) lists, as :func:`gence_jax.data.apply_regimes` applies them;
  returns the clean labels by split and the records."""
  from gence_jax.data.dataset import apply_regimes

  regs = parse_regimes(regimes or None)
  if any(r.needs_x for r in regs):
    raise ValueError("config key 'dataset.regimes': instance-dependent noise reads the inputs; a streamed dataset has none in memory")
  names = ["train", "val"] if on_val else ["train"]
  splits = {
    s: {"x": np.arange(len(lists[s])), "y": lists[s].labels, "y_clean": lists[s].labels.copy(), "ids": np.arange(len(lists[s]))}
    for s in names
  }
  pool = len(lists["train"]) + len(lists["val"])
  records = apply_regimes(splits, regs, num_classes, seed=seed, val_scale_fraction=len(lists["val"]) / pool)
  clean = {}
  for s in names:
    lists[s] = lists[s].take(splits[s]["x"]).with_labels(splits[s]["y"])
    clean[s] = splits[s]["y_clean"]
  clean.setdefault("val", lists["val"].labels.copy())
  return clean, records


def load_stream_dataset(
  name: str,
  *,
  seed: int,
  val_fraction: float = 0.1,
  regimes: Any = (),
  image_size: int = 224,
  resize: int = 0,
  augment: Any = "default",
  extra_test: Sequence[str] = (),
  skip_unreadable: bool = False,
  empty_classes: str = "warn",
) -> StreamingDataset:
  """A streamed release: ``webvision_mini:<root>`` (train on the Google list's 50 first classes, validation held out
  of it with ``val_fraction`` as for the in-memory sets, test on WebVision's validation list) or
  ``clothing1m:<root>`` (train on the noisy list, validate and test on the clean lists). ``extra_test``:
  ``imagenet_val:<folder>`` names, further test splits. ``resize`` 0: ``round(image_size * 256 / 224)``.
  Bad lists raise :class:`~gence_jax.data.DataError` naming the file and line."""
  spec = parse_dataset_spec(name)
  if spec.kind not in STREAM_KINDS:
    raise ValueError(f"dataset {name!r} is not a streamed dataset; expected one of {[k + ':<root>' for k in STREAM_KINDS]}")
  seed = int(seed)
  root = spec.path
  if spec.kind == "webvision_mini":
    read = releases.read_webvision(root, 50)
    lists = {"test": read["test"]}
    lists["train"], lists["val"], val_info = _held_out_val(read["train"], val_fraction, seed)
    k, class_names, files = 50, None, [os.path.join(root, "info", "train_filelist_google.txt")]
  else:
    lists = releases.read_clothing1m(root)
    val_info = {"source": "given"}
    k, class_names = releases.CLOTHING1M_NUM_CLASSES, releases.clothing1m_class_names(root)
    files = [os.path.join(releases.clothing1m_list_dir(root), f) for f in releases.CLOTHING1M_FILES]
  for s in ("train", "val", "test"):
    if len(lists[s]) == 0:
      raise DataError(f"dataset {name!r}: the {s} split is empty")
  clean, records = _apply_regimes(lists, regimes, k, seed, on_val=True)
  for extra in extra_test:
    espec = parse_dataset_spec(extra)
    if espec.kind != "imagenet_val":
      raise ValueError(f"config key 'dataset.extra_test': {extra!r} is not 'imagenet_val:<folder>'")
    lists[extra] = releases.read_imagenet_val(espec.path, k)
  empty = check_class_coverage(lists["train"].labels, k, what=name, class_names=class_names, action=empty_classes)
  default = DEFAULT_AUGMENT[spec.kind]
  ops = parse_augment(augment, default)
  resize = int(resize) or int(round(image_size * 256 / 224))
  normalizer = Normalizer(mean=np.asarray(IMAGENET_MEAN) * 255.0, std=np.asarray(IMAGENET_STD) * 255.0)

  def counts(y):
    return [int(c) for c in np.bincount(y, minlength=k)]

  info = {
    "name": spec.kind,
    "source": {"kind": spec.kind, "folder": os.path.abspath(root), "lists": files, "images_hashed": False},
    "seed": seed,
    "num_classes": k,
    "input_shape": [image_size, image_size, 3],
    "dtype": "uint8",
    "streamed": True,
    "validation": val_info,
    "num_examples": {s: len(v) for s, v in lists.items()},
    "class_counts": {s: counts(v.labels) for s, v in lists.items()},
    "class_counts_clean": {s: counts(clean[s]) for s in ("train", "val")},
    "label_noise": {s: float(np.mean(lists[s].labels != clean[s])) for s in ("train", "val")},
    "clean_labels": "before_regimes",
    "regimes": records,
    "regimes_on_val": True,
    "normalization": {**normalizer.to_dict(), "statistics_of": "imagenet"},
    "augment": list(ops),
    "image_size": int(image_size),
    "resize": resize,
    "empty_classes": empty,
    "unreadable": {"skip_unreadable": bool(skip_unreadable)},
    "class_names": list(class_names) if class_names else None,
  }
  return StreamingDataset(
    lists, k, spec.kind, info, normalizer, int(image_size), resize, ops, bool(skip_unreadable), clean["train"],
    clean["val"], class_names, default,
  )
