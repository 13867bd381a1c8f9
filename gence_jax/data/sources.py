"""Raw data sources: TFDS, Tiny-ImageNet folders, scikit-learn digits, ``.npz`` files, MedMNIST and in-memory arrays.

Each loader returns a :class:`RawData` (train and test arrays, number of classes, names, provenance; for the
human-noise sets CIFAR-10N/100N also the clean training labels);
:func:`gence_jax.data.load_dataset` turns it into a :class:`gence_jax.data.Dataset` (validation split, regimes,
normalisation). TensorFlow, tensorflow_datasets, scikit-learn and PIL are imported lazily, only inside the loaders
that need them, so ``import gence_jax.data`` works where only jax/flax/optax/numpy are installed.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import numpy as np

from gence_jax.data.pipeline import stratified_split
from gence_jax.data.regimes import CIFAR100_FINE_TO_COARSE, CIFAR100_SUPERCLASS_NAMES

__all__ = [
  "RawData",
  "TFDS_DATASETS",
  "CIFAR10_CLASS_NAMES",
  "CIFAR100_FINE_NAMES",
  "CIFAR_N_LABEL_SETS",
  "load_tfds",
  "load_cifar_n",
  "load_tiny_imagenet",
  "load_digits",
  "load_npz",
  "load_medmnist",
  "MEDMNIST_CLASSES",
  "raw_from_arrays",
  "raw_from_mapping",
]

#: CIFAR-10 class names by id (Krizhevsky 2009).
CIFAR10_CLASS_NAMES: tuple[str, ...] = (
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
)

#: CIFAR-100 fine class names by id (standard alphabetical order, Krizhevsky 2009).
CIFAR100_FINE_NAMES: tuple[str, ...] = (
  "apple",
  "aquarium_fish",
  "baby",
  "bear",
  "beaver",
  "bed",
  "bee",
  "beetle",
  "bicycle",
  "bottle",
  "bowl",
  "boy",
  "bridge",
  "bus",
  "butterfly",
  "camel",
  "can",
  "castle",
  "caterpillar",
  "cattle",
  "chair",
  "chimpanzee",
  "clock",
  "cloud",
  "cockroach",
  "couch",
  "crab",
  "crocodile",
  "cup",
  "dinosaur",
  "dolphin",
  "elephant",
  "flatfish",
  "forest",
  "fox",
  "girl",
  "hamster",
  "house",
  "kangaroo",
  "keyboard",
  "lamp",
  "lawn_mower",
  "leopard",
  "lion",
  "lizard",
  "lobster",
  "man",
  "maple_tree",
  "motorcycle",
  "mountain",
  "mouse",
  "mushroom",
  "oak_tree",
  "orange",
  "orchid",
  "otter",
  "palm_tree",
  "pear",
  "pickup_truck",
  "pine_tree",
  "plain",
  "plate",
  "poppy",
  "porcupine",
  "possum",
  "rabbit",
  "raccoon",
  "ray",
  "road",
  "rocket",
  "rose",
  "sea",
  "seal",
  "shark",
  "shrew",
  "skunk",
  "skyscraper",
  "snail",
  "snake",
  "spider",
  "squirrel",
  "streetcar",
  "sunflower",
  "sweet_pepper",
  "table",
  "tank",
  "telephone",
  "television",
  "tiger",
  "tractor",
  "train",
  "trout",
  "tulip",
  "turtle",
  "wardrobe",
  "whale",
  "willow_tree",
  "wolf",
  "woman",
  "worm",
)

#: Supported TFDS names and their default training augmentation (``"crop_flip"``: CIFAR recipe; ``"crop"``:
#: pad + crop without flip, for digits where mirroring changes the class; ``"none"``).
TFDS_DATASETS: dict[str, str] = {
  "cifar10": "crop_flip",
  "cifar100": "crop_flip",
  "svhn_cropped": "crop",
  "fashion_mnist": "crop_flip",
  "mnist": "none",
  "cifar10_n": "crop_flip",
  "cifar100_n": "crop_flip",
}

#: Label sets of the human-noise CIFAR datasets (Wei et al. 2022, "Learning with Noisy Labels Revisited: A Study Using
#: Real-World Human Annotations", ICLR), by TFDS name: label set -> (TFDS feature of the noisy training labels, TFDS
#: feature of the clean labels, number of classes). The first entry of each is the default. For ``noisy_coarse`` the
#: noisy coarse label is the superclass of the annotator's fine label (TFDS stores only the fine one).
CIFAR_N_LABEL_SETS: dict[str, dict[str, tuple[str, str, int]]] = {
  "cifar10_n": {
    "worst": ("worse_label", "label", 10),
    "aggregate": ("aggre_label", "label", 10),
    "random1": ("random_label1", "label", 10),
    "random2": ("random_label2", "label", 10),
    "random3": ("random_label3", "label", 10),
  },
  "cifar100_n": {
    "noisy_fine": ("noise_label", "label", 100),
    "noisy_coarse": ("noise_label", "coarse_label", 20),
  },
}
_CIFAR_N_ALIASES = {
  "worse": "worst",
  "worse_label": "worst",
  "aggre": "aggregate",
  "aggre_label": "aggregate",
  "rand1": "random1",
  "rand2": "random2",
  "rand3": "random3",
  "random_label1": "random1",
  "random_label2": "random2",
  "random_label3": "random3",
  "noisy": "noisy_fine",
  "fine": "noisy_fine",
  "noisy100": "noisy_fine",
  "noise_label": "noisy_fine",
  "coarse": "noisy_coarse",
}


@dataclasses.dataclass
class RawData:
  """Arrays as a source provides them, before the validation split and regimes."""

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  name: str
  source: dict[str, Any] = dataclasses.field(default_factory=dict)
  class_names: tuple[str, ...] | None = None
  default_augment: str = "none"
  x_val: np.ndarray | None = None
  y_val: np.ndarray | None = None
  #: True labels of the training rows when ``y_train`` holds noisy ones (CIFAR-10N/100N); ``Dataset.ids_train`` and
  #: ``Dataset.ids_val`` index into it: ``raw.y_train_clean[ds.ids_train]``.
  y_train_clean: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------------------------
# TFDS
# ---------------------------------------------------------------------------------------------------------------


def _import_tfds():
  """Import tensorflow + tensorflow_datasets on first use; hide GPUs from TensorFlow so it never competes with
  JAX for accelerator memory."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    import tensorflow as tf
    import tensorflow_datasets as tfds
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
      "TFDS datasets need tensorflow and tensorflow-datasets: pip install 'gence_jax[tfds]' "
      "(tensorflow-cpu>=2.21, tensorflow-datasets>=4.9.10)"
    ) from e
  try:
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):  # already initialised
    pass
  return tf, tfds


def _tfds_split_to_numpy(
  tfds, name: str, split: str, data_dir: str | None, download: bool, chunk: int = 8192
) -> tuple[np.ndarray, np.ndarray, Any]:
  ds, info = tfds.load(
    name, split=split, as_supervised=True, data_dir=data_dir, download=download, shuffle_files=False, with_info=True
  )
  xs, ys = [], []
  for xb, yb in tfds.as_numpy(ds.batch(chunk)):
    xs.append(xb)
    ys.append(yb)
  if not xs:
    raise ValueError(f"TFDS dataset {name!r} split {split!r} is empty")
  return np.concatenate(xs), np.concatenate(ys).astype(np.int64), info


def load_tfds(
  name: str, *, data_dir: str | None = None, download: bool = True, train_split: str = "train", test_split: str = "test"
) -> RawData:
  """Load a TFDS image classification dataset whole into memory as NumPy (uint8 NHWC images, int64 labels).

  ``name`` is one of :data:`TFDS_DATASETS` (``cifar10``, ``cifar100`` (fine labels), ``svhn_cropped``,
  ``fashion_mnist``, ``mnist``); other TFDS names with an ``(image, label)`` supervised pair also work.
  ``data_dir`` is passed to ``tfds.load``; ``download=False`` fails instead of downloading.
  TensorFlow is imported here, not at module import. ``cifar10_n``/``cifar100_n``, optionally with a label set
  in TFDS's config position and a version, ``"cifar10_n/aggregate"``, ``"cifar10_n/aggregate:1.0.4"``, go to
  :func:`load_cifar_n`.
  """
  head, _, version = name.partition(":")
  base, _, label_set = head.partition("/")
  if base in CIFAR_N_LABEL_SETS:
    return load_cifar_n(
      base, label_set=label_set or None, data_dir=data_dir, download=download, version=version or None
    )
  _, tfds = _import_tfds()
  x_tr, y_tr, info = _tfds_split_to_numpy(tfds, name, train_split, data_dir, download)
  x_te, y_te, _ = _tfds_split_to_numpy(tfds, name, test_split, data_dir, download)
  num_classes = int(info.features["label"].num_classes)
  if name == "cifar10":
    names: tuple[str, ...] | None = CIFAR10_CLASS_NAMES
  elif name == "cifar100":
    names = CIFAR100_FINE_NAMES
  else:
    try:
      names = tuple(info.features["label"].names)
    except Exception:  # pragma: no cover
      names = None
  return RawData(
    x_tr,
    y_tr,
    x_te,
    y_te,
    num_classes,
    name,
    source={
      "kind": "tfds",
      "tfds_name": name,
      "data_dir": data_dir,
      "train_split": train_split,
      "test_split": test_split,
      "version": str(getattr(info, "version", "")),
    },
    class_names=names,
    default_augment=TFDS_DATASETS.get(name, "none"),
  )


def _tfds_split_features(
  tfds, name: str, split: str, keys: Sequence[str], data_dir: str | None, download: bool, chunk: int = 8192
) -> tuple[dict[str, np.ndarray], Any]:
  """The features ``keys`` of one TFDS split, in the builder's order (``shuffle_files=False``), as NumPy."""
  ds, info = tfds.load(name, split=split, data_dir=data_dir, download=download, shuffle_files=False, with_info=True)
  keys = tuple(keys)
  ds = ds.map(lambda ex: {k: ex[k] for k in keys})
  parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
  for b in tfds.as_numpy(ds.batch(chunk)):
    for k in keys:
      parts[k].append(b[k])
  if not parts[keys[0]]:
    raise ValueError(f"TFDS dataset {name!r} split {split!r} is empty")
  return {k: np.concatenate(v) for k, v in parts.items()}, info


def load_cifar_n(
  name: str = "cifar10_n",
  *,
  label_set: str | None = None,
  data_dir: str | None = None,
  download: bool = True,
  version: str | None = None,
) -> RawData:
  """CIFAR-10N / CIFAR-100N: the CIFAR training images with real human labels (Wei et al. 2022, ICLR), from the
  TFDS builders ``cifar10_n`` and ``cifar100_n`` (these need the annotation files placed in TFDS's manual
  download folder; see the builders' instructions). ``version`` pins the builder version (e.g. ``"1.0.4"``).
  Through :func:`load_tfds` / ``load_dataset`` the name is ``"tfds:cifar10_n/<label set>[:<version>]"`` (or
  ``"cifar10_n"`` for the default label set).

  ``label_set`` picks the training labels (:data:`CIFAR_N_LABEL_SETS`):

  * ``cifar10_n``: ``"worst"`` (default; TFDS ``worse_label``), ``"aggregate"`` (majority vote, ``aggre_label``),
    ``"random1"``, ``"random2"``, ``"random3"`` (one annotator each, ``random_label1..3``);
  * ``cifar100_n``: ``"noisy_fine"`` (default; 100 classes, ``noise_label``) or ``"noisy_coarse"`` (20
    superclasses: the superclass of the noisy fine label, against the clean ``coarse_label``).

  ``y_train`` holds the chosen noisy labels, ``y_train_clean`` the original CIFAR labels of the same rows (kept for
  evaluation), and the test split has the clean labels. ``source`` records the label set and what it realises
  against the clean labels: ``noise_rate`` (fraction of training labels that differ), ``num_noisy`` and
  ``transition_counts`` (``[i][j]`` = examples of clean class ``i`` labelled ``j``).
  """
  if name not in CIFAR_N_LABEL_SETS:
    raise ValueError(f"load_cifar_n: `name` must be one of {sorted(CIFAR_N_LABEL_SETS)}, got {name!r}")
  sets = CIFAR_N_LABEL_SETS[name]
  chosen = next(iter(sets)) if label_set is None else _CIFAR_N_ALIASES.get(label_set.lower(), label_set.lower())
  if chosen not in sets:
    raise ValueError(f"load_cifar_n: `label_set` for {name} must be one of {list(sets)}, got {label_set!r}")
  noisy_key, clean_key, k = sets[chosen]
  _, tfds = _import_tfds()
  tname = name if version is None else f"{name}:{version}"
  tr, info = _tfds_split_features(tfds, tname, "train", ("image", clean_key, noisy_key), data_dir, download)
  te, _ = _tfds_split_features(tfds, tname, "test", ("image", clean_key), data_dir, download)
  y_clean = tr[clean_key].astype(np.int64)
  y_noisy = tr[noisy_key].astype(np.int64)
  if chosen == "noisy_coarse":
    y_noisy = np.asarray(CIFAR100_FINE_TO_COARSE, np.int64)[y_noisy]
  for arr, what in ((y_noisy, noisy_key), (y_clean, clean_key)):
    if arr.size and (arr.min() < 0 or arr.max() >= k):
      raise ValueError(f"load_cifar_n: {name} feature {what!r} out of range [0, {k}): [{arr.min()}, {arr.max()}]")
  noisy = y_noisy != y_clean
  counts = np.bincount(y_clean * k + y_noisy, minlength=k * k).reshape(k, k)
  if name == "cifar10_n":
    names: tuple[str, ...] = CIFAR10_CLASS_NAMES
  else:
    names = CIFAR100_SUPERCLASS_NAMES if k == 20 else CIFAR100_FINE_NAMES
  return RawData(
    tr["image"],
    y_noisy,
    te["image"],
    te[clean_key].astype(np.int64),
    k,
    f"{name}/{chosen}",
    source={
      "kind": "tfds",
      "tfds_name": name,
      "data_dir": data_dir,
      "train_split": "train",
      "test_split": "test",
      "version": str(getattr(info, "version", "")),
      "label_set": chosen,
      "noisy_label_feature": noisy_key + (" (as superclass)" if chosen == "noisy_coarse" else ""),
      "clean_label_feature": clean_key,
      "paper": "Wei, Zhu, Cheng, Liu, Niu, Liu 2022, 'Learning with Noisy Labels Revisited: A Study Using "
      "Real-World Human Annotations', ICLR",
      "noise_rate": float(noisy.mean()) if noisy.size else 0.0,
      "num_noisy": int(noisy.sum()),
      "transition_counts": counts.tolist(),
    },
    class_names=names,
    default_augment=TFDS_DATASETS[name],
    y_train_clean=y_clean,
  )


# ---------------------------------------------------------------------------------------------------------------
# Tiny-ImageNet
# ---------------------------------------------------------------------------------------------------------------

_IMG_EXT = (".jpeg", ".jpg", ".png")


def _read_images(paths: Sequence[str], num_workers: int) -> np.ndarray:
  from concurrent.futures import ThreadPoolExecutor

  from PIL import Image

  def read(p: str) -> np.ndarray:
    with Image.open(p) as im:
      return np.asarray(im.convert("RGB"), dtype=np.uint8)

  if num_workers > 1 and len(paths) > 64:
    with ThreadPoolExecutor(num_workers) as ex:
      imgs = list(ex.map(read, paths, chunksize=256))
  else:
    imgs = [read(p) for p in paths]
  shapes = {im.shape for im in imgs}
  if len(shapes) > 1:
    raise ValueError(f"images have different shapes {sorted(shapes)[:4]}; expected one size (64x64x3)")
  return np.stack(imgs) if imgs else np.zeros((0, 64, 64, 3), np.uint8)


def load_tiny_imagenet(
  folder: str | os.PathLike, *, cache_path: str | os.PathLike | None = None, num_workers: int = 8
) -> RawData:
  """Tiny-ImageNet (200 classes, 64x64 RGB) from a local folder in its standard layout::

      folder/wnids.txt                        one WordNet id per line (the 200 classes)
      folder/train/<wnid>/images/*.JPEG       500 training images per class
      folder/val/images/*.JPEG                10,000 validation images
      folder/val/val_annotations.txt          "<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>" per line

  Class ids are the positions of the wnids in *sorted* order (independent of the order of wnids.txt). The
  official val set (labelled) is returned as the test split; the test set of the archive has no labels and is
  ignored. Greyscale JPEGs are converted to RGB. ``words.txt``, if present, gives readable class names.
  With ``cache_path``, the decoded arrays are saved there as ``.npz`` on first use and read back afterwards.
  """
  root = os.fspath(folder)
  if cache_path is not None and os.path.exists(cache_path):
    raw = load_npz(cache_path)
    raw.name = "tiny_imagenet"
    raw.source = {"kind": "tiny_imagenet", "folder": root, "cache_path": os.fspath(cache_path)}
    raw.default_augment = "crop_flip"
    return raw
  if not os.path.isdir(root):
    raise FileNotFoundError(f"Tiny-ImageNet folder not found: {root!r}")
  wnids_path = os.path.join(root, "wnids.txt")
  if not os.path.isfile(wnids_path):
    raise FileNotFoundError(f"not a Tiny-ImageNet folder (missing wnids.txt): {wnids_path!r}")
  with open(wnids_path) as f:
    wnids = sorted({line.strip() for line in f if line.strip()})
  cls = {w: i for i, w in enumerate(wnids)}

  train_paths: list[str] = []
  train_labels: list[int] = []
  for w in wnids:
    d = os.path.join(root, "train", w, "images")
    if not os.path.isdir(d):
      raise FileNotFoundError(f"missing Tiny-ImageNet training folder {d!r}")
    files = sorted(p for p in os.listdir(d) if p.lower().endswith(_IMG_EXT))
    train_paths += [os.path.join(d, p) for p in files]
    train_labels += [cls[w]] * len(files)

  ann = os.path.join(root, "val", "val_annotations.txt")
  if not os.path.isfile(ann):
    raise FileNotFoundError(f"missing Tiny-ImageNet validation annotations {ann!r}")
  val_paths: list[str] = []
  val_labels: list[int] = []
  with open(ann) as f:
    rows = sorted(line.rstrip("\n").split("\t")[:2] for line in f if line.strip())
  for fname, w in rows:
    if w not in cls:
      raise ValueError(f"{ann}: wnid {w!r} of {fname!r} not in wnids.txt")
    val_paths.append(os.path.join(root, "val", "images", fname))
    val_labels.append(cls[w])

  names: tuple[str, ...] = tuple(wnids)
  words = os.path.join(root, "words.txt")
  if os.path.isfile(words):
    table = {}
    with open(words) as f:
      for line in f:
        parts = line.rstrip("\n").split("\t", 1)
        if len(parts) == 2:
          table[parts[0]] = parts[1]
    names = tuple(table.get(w, w) for w in wnids)

  x_tr = _read_images(train_paths, num_workers)
  x_te = _read_images(val_paths, num_workers)
  y_tr = np.asarray(train_labels, np.int64)
  y_te = np.asarray(val_labels, np.int64)
  if cache_path is not None:
    np.savez(cache_path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
  return RawData(
    x_tr,
    y_tr,
    x_te,
    y_te,
    len(wnids),
    "tiny_imagenet",
    source={"kind": "tiny_imagenet", "folder": root, "wnids": list(wnids)},
    class_names=names,
    default_augment="crop_flip",
  )


# ---------------------------------------------------------------------------------------------------------------
# Offline sources
# ---------------------------------------------------------------------------------------------------------------


def load_digits(*, as_images: bool = False, test_fraction: float = 0.2, test_seed: int = 0) -> RawData:
  """scikit-learn's bundled digits (UCI optical digits, 8x8 grey images with values 0..16; 1797 examples,
  10 classes); embedded in scikit-learn, no download.

  ``as_images=False``: 64 float32 features ``(N, 64)``; ``True``: images ``(N, 8, 8, 1)`` float32. Digits has no
  official test split: a stratified ``test_fraction`` (default 20%) is held out with ``test_seed`` (fixed by
  default, so the test set does not change with the training seed).
  """
  from sklearn.datasets import load_digits as _sk_load_digits

  d = _sk_load_digits()
  x = (d.images[..., None] if as_images else d.data).astype(np.float32)
  y = d.target.astype(np.int64)
  keep, test = stratified_split(y, test_fraction, seed=test_seed)
  return RawData(
    x[keep],
    y[keep],
    x[test],
    y[test],
    10,
    "digits",
    source={
      "kind": "sklearn_digits",
      "as_images": bool(as_images),
      "test_fraction": test_fraction,
      "test_seed": int(test_seed),
    },
    class_names=tuple(str(i) for i in range(10)),
    default_augment="none",
  )


def raw_from_arrays(
  x_train: Any,
  y_train: Any,
  x_test: Any = None,
  y_test: Any = None,
  *,
  num_classes: int | None = None,
  name: str = "arrays",
  test_fraction: float = 0.2,
  test_seed: int = 0,
  x_val: Any = None,
  y_val: Any = None,
  source: dict | None = None,
) -> RawData:
  """Wrap in-memory arrays. Without a test set, a stratified ``test_fraction`` is held out with ``test_seed``.

  Inputs are ``[N, D]`` features or ``[N, H, W, C]`` images; ``[N, H, W]`` arrays are grayscale images and get a
  channel axis (``[N, H, W, 1]``), so that they are normalised with one mean and std like any image channel.

  ``num_classes`` defaults to ``max(label) + 1`` over all splits. Labels must be integers in
  ``[0, num_classes)`` (ValueError naming the array otherwise).
  """
  x_train = np.asarray(x_train)
  y_train = _labels(y_train, "y_train")
  if len(x_train) != len(y_train):
    raise ValueError(f"x_train and y_train lengths differ: {len(x_train)} vs {len(y_train)}")
  src = {"kind": "arrays"} if source is None else dict(source)
  if (x_test is None) != (y_test is None):
    raise ValueError("pass both x_test and y_test, or neither")
  if x_test is None:
    keep, test = stratified_split(y_train, test_fraction, seed=test_seed)
    x_test, y_test = x_train[test], y_train[test]
    x_train, y_train = x_train[keep], y_train[keep]
    src.update(test_fraction=test_fraction, test_seed=int(test_seed))
  x_test = np.asarray(x_test)
  y_test = _labels(y_test, "y_test")
  if len(x_test) != len(y_test):
    raise ValueError(f"x_test and y_test lengths differ: {len(x_test)} vs {len(y_test)}")
  if (x_val is None) != (y_val is None):
    raise ValueError("pass both x_val and y_val, or neither")
  if x_val is not None:
    x_val = np.asarray(x_val)
    y_val = _labels(y_val, "y_val")
  all_y = [y_train, y_test] + ([y_val] if y_val is not None else [])
  if num_classes is None:
    num_classes = int(max(int(a.max()) for a in all_y if a.size)) + 1
  for arr, nm in zip(all_y, ["y_train", "y_test", "y_val"]):
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
      raise ValueError(f"{nm} out of range [0, {num_classes}): min {int(arr.min())}, max {int(arr.max())}")
  if x_train.ndim == 3:  # [N, H, W]: grayscale images get their one channel (per-channel statistics, as for RGB)
    x_train, x_test = x_train[..., None], x_test[..., None]
    x_val = None if x_val is None else x_val[..., None]
  aug = "crop_flip" if x_train.ndim == 4 and x_train.shape[1:3] == (32, 32) else "none"
  return RawData(
    x_train, y_train, x_test, y_test, int(num_classes), name, source=src, default_augment=aug, x_val=x_val, y_val=y_val
  )


def _labels(y: Any, name: str) -> np.ndarray:
  y = np.asarray(y)
  if y.ndim != 1:
    raise ValueError(f"{name} must be 1-D integer labels, got shape {y.shape}")
  if y.size and not np.issubdtype(y.dtype, np.integer):
    if not np.all(np.mod(y, 1) == 0):
      raise ValueError(f"{name} must be integer labels, got dtype {y.dtype}")
  return y.astype(np.int64)


def load_npz(
  path: str | os.PathLike, *, num_classes: int | None = None, test_fraction: float = 0.2, test_seed: int = 0
) -> RawData:
  """A ``.npz`` file with ``x_train, y_train, x_test, y_test`` (optionally ``x_val, y_val``) or just ``x, y``
  (then a stratified ``test_fraction`` is held out with ``test_seed``). An array ``num_classes`` in the file, if
  present, is used unless ``num_classes`` is given. Example: ``../shared/data/cifar10_subset.npz``.

  The arrays are checked as they are read (:func:`gence_jax.data.validate.validate_arrays`): a file that is not an
  ``.npz``, NaN/Inf inputs, bad labels or mismatched lengths raise :class:`~gence_jax.data.DataError`."""
  from gence_jax.data.validate import read_npz, validate_arrays

  p = os.fspath(path)
  arrays = read_npz(p)
  validate_arrays(arrays, what=p, num_classes=num_classes)
  if num_classes is None and "num_classes" in arrays:
    num_classes = int(arrays["num_classes"])
  name = os.path.splitext(os.path.basename(p))[0]
  return raw_from_mapping(
    arrays,
    what=p,
    name=name,
    source={"kind": "npz", "path": p},
    num_classes=num_classes,
    test_fraction=test_fraction,
    test_seed=test_seed,
  )


def raw_from_mapping(
  arrays: Mapping[str, Any],
  *,
  what: str = "array mapping",
  name: str = "arrays",
  source: dict | None = None,
  num_classes: int | None = None,
  test_fraction: float = 0.2,
  test_seed: int = 0,
) -> RawData:
  """Arrays by name: ``x_train, y_train[, x_test, y_test][, x_val, y_val]`` or ``x, y`` (see `raw_from_arrays`).

  ``what`` names the source in error messages (a file path, or "array mapping")."""
  keys = set(arrays)
  common = dict(num_classes=num_classes, name=name, test_fraction=test_fraction, test_seed=test_seed, source=source)
  if {"x_train", "y_train"} <= keys:
    if ("x_test" in keys) != ("y_test" in keys):
      raise ValueError(f"{what}: has only one of x_test/y_test")
    return raw_from_arrays(
      arrays["x_train"],
      arrays["y_train"],
      arrays.get("x_test"),
      arrays.get("y_test"),
      x_val=arrays.get("x_val"),
      y_val=arrays.get("y_val"),
      **common,
    )
  if {"x", "y"} <= keys:
    return raw_from_arrays(arrays["x"], arrays["y"], **common)
  raise ValueError(f"{what}: expected arrays x_train, y_train, x_test, y_test (or x, y); found {sorted(keys)}")


# ---------------------------------------------------------------------------------------------------------------
# MedMNIST v2
# ---------------------------------------------------------------------------------------------------------------

#: MedMNIST v2 2-D single-label sets and their number of classes (Yang et al. 2023, "MedMNIST v2 - A large-scale
#: lightweight benchmark for 2D and 3D biomedical image classification", Scientific Data, Table 1). ChestMNIST is
#: multi-label (14 binary labels) and refused.
MEDMNIST_CLASSES: dict[str, int] = {
  "pathmnist": 9,
  "dermamnist": 7,
  "octmnist": 4,
  "pneumoniamnist": 2,
  "retinamnist": 5,
  "breastmnist": 2,
  "bloodmnist": 8,
  "tissuemnist": 8,
  "organamnist": 11,
  "organcmnist": 11,
  "organsmnist": 11,
}
MEDMNIST_MULTILABEL = ("chestmnist",)


def load_medmnist(name: str, path: str | os.PathLike) -> RawData:
  """A MedMNIST v2 2-D set from the package's ``.npz`` (``train_images``, ``train_labels`` ``[N, 1]``, ``val_*``,
  ``test_*``; 28x28 or larger, grayscale ``[N, H, W]`` or RGB ``[N, H, W, 3]``), its own validation split kept.

  ``name`` is the set (``pathmnist``, ``dermamnist``, ..., :data:`MEDMNIST_CLASSES`; the number of classes comes from
  that table, an unknown name takes ``max(label) + 1``). ChestMNIST (multi-label) and any file whose labels have
  more than one column are a :class:`~gence_jax.data.DataError`."""
  from gence_jax.data.validate import DataError, read_npz, validate_arrays

  p, key = os.fspath(path), name.lower()
  if key in MEDMNIST_MULTILABEL:
    raise DataError(f"dataset 'medmnist:{name}': {name} is multi-label (14 binary findings); only single-label sets")
  arrays = read_npz(p)
  need = [f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels")]
  missing = [k for k in need if k not in arrays]
  if missing:
    raise DataError(f"dataset {p!r}: not a MedMNIST .npz, missing {missing}")
  out = {}
  for split in ("train", "val", "test"):
    y = np.asarray(arrays[f"{split}_labels"])
    if y.ndim == 2 and y.shape[1] != 1:
      raise DataError(f"dataset {p!r}: {split}_labels has {y.shape[1]} columns: multi-label sets are not supported")
    out[f"x_{split}"], out[f"y_{split}"] = arrays[f"{split}_images"], y.reshape(len(y))
  validate_arrays(out, what=p, num_classes=MEDMNIST_CLASSES.get(key))
  raw = raw_from_mapping(
    out, what=p, name=key, source={"kind": "medmnist", "path": p, "set": key}, num_classes=MEDMNIST_CLASSES.get(key)
  )
  raw.default_augment = "none"
  return raw
