"""Dataset names: one parser for every name the loaders accept, cheap existence checks, and data fingerprints.

Every place that reads a dataset name (:func:`gence_jax.data.load_dataset`, the OOD loader, config validation)
goes through :func:`parse_dataset_spec`, so the rules live here only. Keywords are case-insensitive:

* ``digits`` -> kind ``digits``: scikit-learn's bundled digits;
* ``cifar10``, ``cifar100``, ``svhn_cropped``, ``fashion_mnist``, ``mnist`` (:data:`TFDS_DATASETS`) -> ``tfds``;
* ``cifar10_n/<label set>`` (``worst``, ``aggregate``, ``random1``, ``random2``, ``random3``) and
  ``cifar100_n/<label set>`` (``noisy_fine``, ``noisy_coarse``) -> ``tfds``: a CIFAR-N human label set (the aliases
  of :func:`gence_jax.data.load_cifar_n` are accepted; ``tfds_name`` holds the canonical set; ``:<version>`` may
  follow); an unknown label set is a ValueError;
* ``tfds:<name>`` -> ``tfds``: any TFDS name (its case kept; ``tfds:<name>:<version>`` pins a version);
* ``tiny_imagenet:<folder>`` or ``tiny-imagenet:<folder>`` -> ``tiny_imagenet``: that folder;
* ``tiny_imagenet``, ``tiny-imagenet``, ``tiny_imagenet_200``, ``tiny-imagenet-200`` -> ``tiny_imagenet``: the
  folder given as ``data_dir``;
* ``<path>.npz`` -> ``npz``: an ``.npz`` file;
* ``webvision_mini:<root>`` -> ``webvision_mini`` and ``clothing1m:<root>`` -> ``clothing1m``: a release folder,
  streamed from disk (:mod:`gence_jax.data.stream`); ``imagenet_val:<folder>`` -> ``imagenet_val`` (a second test
  split only, ``dataset.extra_test``);
* ``medmnist:<name>:<file.npz>`` -> ``medmnist``: a MedMNIST v2 2-D set (``tfds_name`` holds the set's name);
* anything else -> ``folder``: a local folder (the Tiny-ImageNet layout, with ``wnids.txt``).

A Tiny-ImageNet folder may be the extracted ``tiny-imagenet-200`` folder itself or the folder that contains it.
Parsing does no I/O; :func:`check_dataset_spec` then checks, cheaply, that a file or folder exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import numpy as np

from gence_jax.data.sources import _CIFAR_N_ALIASES, CIFAR_N_LABEL_SETS, TFDS_DATASETS

__all__ = [
  "KINDS",
  "DatasetSpec",
  "check_dataset_name",
  "check_dataset_spec",
  "data_fingerprint",
  "file_sha256",
  "parse_dataset_spec",
  "tiny_imagenet_folder",
]

KINDS = ("digits", "tfds", "tiny_imagenet", "npz", "folder", "webvision_mini", "clothing1m", "imagenet_val", "medmnist")
#: Kinds read from image files on disk by the streaming pipeline (never into memory whole).
STREAM_KINDS = ("webvision_mini", "clothing1m")
TINY_IMAGENET_NAMES = ("tiny_imagenet", "tiny-imagenet", "tiny_imagenet_200", "tiny-imagenet-200")
TINY_IMAGENET_PREFIXES = ("tiny_imagenet:", "tiny-imagenet:")
TINY_IMAGENET_SUBFOLDER = "tiny-imagenet-200"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A parsed dataset name (see the module docstring).

  ``kind``: one of :data:`KINDS`; ``name``: the name as given; ``tfds_name``: the TFDS name (``tfds`` only);
  ``path``: the file or folder (``npz``, ``folder``, ``tiny_imagenet``; for a bare ``tiny_imagenet`` it is
  ``data_dir``, None when that is not given); ``data_dir``: the data directory given with the name (None for none).
  """

  kind: str
  name: str
  tfds_name: str | None = None
  path: str | None = None
  data_dir: str | None = None

  @property
  def from_data_dir(self) -> bool:
    """True for a bare Tiny-ImageNet name, whose folder is ``data_dir``."""
    return self.kind == "tiny_imagenet" and self.name.lower() in TINY_IMAGENET_NAMES

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def parse_dataset_spec(name: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> DatasetSpec:
  """Classify a dataset name without touching the file system (table in the module docstring).

  ``data_dir`` (``""`` counts as none) is kept on the spec: TFDS reads it, and a bare ``tiny_imagenet`` takes it as
  its folder. Raises TypeError for a name that is not a string or path, ValueError for an empty name, ``tfds:``
  with nothing after it, or ``cifar10_n/``/``cifar100_n/`` followed by an unknown label set; every other string
  parses (an unknown word is a ``folder``, which
  :func:`check_dataset_spec` then reports as an unknown dataset if no such folder exists).
  """
  if isinstance(name, os.PathLike):
    name = os.fspath(name)
  if not isinstance(name, str):
    raise TypeError(f"parse_dataset_spec: `name` must be a string or a path, got {type(name).__name__}")
  if not name.strip():
    raise ValueError("parse_dataset_spec: `name` is empty")
  ddir = os.fspath(data_dir) if data_dir else None
  low = name.lower()
  if low == "digits":
    return DatasetSpec("digits", name, data_dir=ddir)
  if low in TFDS_DATASETS:
    return DatasetSpec("tfds", name, tfds_name=low, data_dir=ddir)
  base, slash, rest = low.partition("/")
  if slash and base in CIFAR_N_LABEL_SETS:
    return DatasetSpec("tfds", name, tfds_name=_cifar_n_name(name, base, rest), data_dir=ddir)
  if low.startswith("tfds:"):
    if not name[5:].strip():
      raise ValueError(f"parse_dataset_spec: `name` {name!r} has no TFDS dataset name after 'tfds:'")
    return DatasetSpec("tfds", name, tfds_name=name[5:], data_dir=ddir)
  for kind in ("webvision_mini", "clothing1m", "imagenet_val"):
    if low.startswith(kind + ":"):
      return DatasetSpec(kind, name, path=name[len(kind) + 1 :], data_dir=ddir)
  if low.startswith("medmnist:"):
    sub, colon, path = name[len("medmnist:") :].partition(":")
    if not colon or not sub or not path:
      raise ValueError(f"parse_dataset_spec: `name` {name!r}: expected 'medmnist:<name>:<file.npz>'")
    return DatasetSpec("medmnist", name, tfds_name=sub.lower(), path=path, data_dir=ddir)
  for prefix in TINY_IMAGENET_PREFIXES:
    if low.startswith(prefix):
      return DatasetSpec("tiny_imagenet", name, path=name[len(prefix) :], data_dir=ddir)
  if low in TINY_IMAGENET_NAMES:
    return DatasetSpec("tiny_imagenet", name, path=ddir, data_dir=ddir)
  if low.endswith(".npz"):
    return DatasetSpec("npz", name, path=name, data_dir=ddir)
  return DatasetSpec("folder", name, path=name, data_dir=ddir)


def _cifar_n_name(name: str, base: str, rest: str) -> str:
  """``<base>/<canonical label set>[:<version>]`` from the lower-cased text after ``<base>/``."""
  label_set, colon, version = rest.partition(":")
  sets = CIFAR_N_LABEL_SETS[base]
  canonical = _CIFAR_N_ALIASES.get(label_set, label_set)
  if canonical not in sets:
    raise ValueError(f"parse_dataset_spec: `name` {name!r}: the label set of {base} must be one of {list(sets)}")
  if colon and not version:
    raise ValueError(f"parse_dataset_spec: `name` {name!r} has no version after ':'")
  return f"{base}/{canonical}" + (f":{version}" if version else "")


def tiny_imagenet_folder(path: str) -> str:
  """``path/tiny-imagenet-200`` when that folder exists (``path`` holds the extracted archive), else ``path``."""
  sub = os.path.join(path, TINY_IMAGENET_SUBFOLDER)
  return sub if os.path.isdir(sub) else path


def _unknown(name: str, key: str) -> ValueError:
  return ValueError(
    f"config key {key!r}: unknown dataset {name!r}; expected 'digits', one of "
    f"{sorted(TFDS_DATASETS)}, 'tfds:<name>', 'tiny_imagenet:<folder>', a folder or a .npz file"
  )


def check_dataset_spec(spec: DatasetSpec, *, key: str = "dataset.name") -> None:
  """Cheap checks that ``spec`` can be loaded, with errors that name the config key ``key``.

  * ``tiny_imagenet:<folder>``: the folder exists (FileNotFoundError);
  * bare ``tiny_imagenet``: a ``data_dir`` is given (ValueError naming ``'dataset.data_dir'``, or
    ``'ood.data_dir' (or 'dataset.data_dir')`` when ``key == "ood.datasets"``);
  * ``npz``: the file exists (FileNotFoundError);
  * ``folder``: the folder exists, else ValueError "unknown dataset" listing the accepted names.

  TFDS names and digits are not checked (nothing is downloaded or imported).
  """
  if spec.kind in ("digits", "tfds"):
    return
  if spec.kind == "tiny_imagenet":
    if spec.from_data_dir:
      if not spec.data_dir:
        dir_key = "'ood.data_dir' (or 'dataset.data_dir')" if key == "ood.datasets" else "'dataset.data_dir'"
        raise ValueError(f"config key {dir_key} must name the Tiny-ImageNet folder for dataset {spec.name!r} ({key!r})")
      return
    if not os.path.isdir(spec.path):
      raise FileNotFoundError(f"config key {key!r}: Tiny-ImageNet folder not found: {spec.path!r}")
    return
  if spec.kind in ("npz", "medmnist"):
    if not os.path.isfile(spec.path):
      raise FileNotFoundError(f"config key {key!r}: file not found: {spec.path!r}")
    return
  if spec.kind in ("webvision_mini", "clothing1m", "imagenet_val"):
    if not os.path.isdir(spec.path):
      raise FileNotFoundError(f"config key {key!r}: {spec.kind} folder not found: {spec.path!r}")
    return
  if spec.kind == "folder" and os.path.isdir(spec.path):
    return
  raise _unknown(spec.name, key)


def check_dataset_name(name: str, data_dir: str | None, key: str = "dataset.name") -> None:
  """The dataset names :func:`gence_jax.data.load_dataset` accepts, checked without loading anything; errors name
  the config key ``key`` (for config validation: ``dataset.name`` with ``dataset.data_dir``, or ``ood.datasets``)."""
  try:
    spec = parse_dataset_spec(name, data_dir)
  except (TypeError, ValueError):
    raise _unknown(name, key) from None
  check_dataset_spec(spec, key=key)


# ---------------------------------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
  """SHA-256 of a file's bytes (hex), read in chunks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk), b""):
      h.update(block)
  return h.hexdigest()


def _package_version(dist: str) -> str | None:
  from importlib import metadata

  try:
    return metadata.version(dist)
  except metadata.PackageNotFoundError:
    return None


def _tfds_version(tfds_name: str) -> tuple[str | None, str]:
  """The version TFDS would load for ``tfds_name`` (no download: the registered builder class's default version)."""
  base, _, pinned = tfds_name.partition(":")
  if pinned:
    return pinned, "pinned in the name"
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    return None, "unknown: tensorflow-datasets is not installed"
  try:
    cls = tfds.builder_cls(base.split("/")[0])
    return str(cls.VERSION), f"default version of the installed builder (tensorflow-datasets {tfds.__version__})"
  except Exception as e:  # noqa: BLE001 - not a registered builder, or one this tfds cannot import
    return None, f"unknown: {type(e).__name__} looking up builder {base!r}; the requested name is recorded instead"


def _folder_source(folder: str | None) -> dict[str, Any]:
  if not folder:
    return {"folder": None}
  root = tiny_imagenet_folder(folder)
  out: dict[str, Any] = {"folder": root, "hashed": ["wnids.txt", "val/val_annotations.txt"], "images_hashed": False}
  for key, rel in (
    ("wnids_sha256", "wnids.txt"),
    ("val_annotations_sha256", os.path.join("val", "val_annotations.txt")),
  ):
    p = os.path.join(root, rel)
    out[key] = file_sha256(p) if os.path.isfile(p) else None
  return out


def _release_source(spec: DatasetSpec) -> dict[str, Any]:
  """A release folder's identity: the size and SHA-256 of each of its list files (the images are not hashed)."""
  from gence_jax.data import releases

  if spec.kind == "webvision_mini":
    folder = os.path.join(spec.path, "info")
    names = ("train_filelist_google.txt", "val_filelist.txt")
  else:
    folder = releases.clothing1m_list_dir(spec.path)
    names = releases.CLOTHING1M_FILES
  out: dict[str, Any] = {"folder": os.path.abspath(spec.path), "images_hashed": False}
  for name in names:
    p = os.path.join(folder, name)
    out[name] = {"size": os.path.getsize(p), "sha256": file_sha256(p)} if os.path.isfile(p) else None
  return out


def data_fingerprint(
  name: str | os.PathLike,
  *,
  data_dir: str | None = None,
  regimes: Any = "",
  seed: int = 0,
  val_fraction: float = 0.1,
  as_images: bool = False,
  test_fraction: float = 0.2,
  test_seed: int = 0,
) -> dict[str, Any]:
  """A JSON-able record of which data a run trains on, for run identity; nothing is loaded but the bytes of an
  ``.npz`` (hashed) and, for a Tiny-ImageNet folder, its two small index files.

  ``{"spec": DatasetSpec.to_dict(), "source": {...}, "regimes": <canonical spec>, "seed", "val_fraction"}`` where
  ``source`` identifies the content:

  * ``npz``: ``size`` (bytes) and ``sha256`` of the file (independent of its name and folder), and the
    ``test_fraction``/``test_seed`` used when the file has no test split;
  * ``tfds``: ``tfds_name``, ``version`` (pinned in the name, else the default version of the installed builder,
    read without downloading; None when it cannot be determined, with ``version_source`` saying why) and
    ``splits`` (``{"train": "train", "test": "test"}``; validation is held out of train);
  * ``digits``: ``sklearn_version``, ``as_images``, ``test_fraction``, ``test_seed``;
  * ``tiny_imagenet``/``folder``: the folder and the SHA-256 of ``wnids.txt`` and ``val/val_annotations.txt`` (the
    images are not hashed).

  ``regimes`` is canonicalised through :func:`gence_jax.data.parse_regimes` (``"symmetric:0.40"`` and
  ``"symmetric:0.4"`` give the same string). Two runs on the same data have equal ``source``, ``regimes``, ``seed``
  and ``val_fraction``; ``spec`` also records where the data was read from. A missing ``.npz`` raises
  FileNotFoundError.
  """
  from gence_jax.data.regimes import parse_regimes

  spec = parse_dataset_spec(name, data_dir)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise TypeError(f"data_fingerprint: `seed` must be an int, got {seed!r}")
  if not 0.0 <= float(val_fraction) < 1.0:
    raise ValueError(f"data_fingerprint: `val_fraction` must lie in [0, 1), got {val_fraction!r}")
  regs = parse_regimes(regimes or None)
  source: dict[str, Any]
  if spec.kind in ("webvision_mini", "clothing1m"):
    source = _release_source(spec)
  elif spec.kind in ("npz", "medmnist"):
    if not os.path.isfile(spec.path):
      raise FileNotFoundError(f"data_fingerprint: `name`: file not found: {spec.path!r}")
    source = {
      "size": os.path.getsize(spec.path),
      "sha256": file_sha256(spec.path),
      "test_fraction": float(test_fraction),
      "test_seed": int(test_seed),
    }
  elif spec.kind == "tfds":
    version, how = _tfds_version(spec.tfds_name)
    source = {
      "tfds_name": spec.tfds_name,
      "version": version,
      "version_source": how,
      "splits": {"train": "train", "test": "test"},
    }
  elif spec.kind == "digits":
    source = {
      "sklearn_version": _package_version("scikit-learn"),
      "as_images": bool(as_images),
      "test_fraction": float(test_fraction),
      "test_seed": int(test_seed),
    }
  else:
    source = _folder_source(spec.path)
  return {
    "spec": spec.to_dict(),
    "source": source,
    "regimes": ",".join(r.spec() for r in regs),
    "seed": int(seed),
    "val_fraction": float(val_fraction),
  }
