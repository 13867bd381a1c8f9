"""Out-of-distribution (OOD) inputs: which datasets, their test-split inputs, and their shape check.

An OOD set is named like any dataset (:func:`gence_jax.data.parse_dataset_spec`); only its inputs are read, from
what counts as its "test split": TFDS ``test``; digits' held-out test fraction (as for training); Tiny-ImageNet's
official val set; an ``.npz`` file's ``x_test``, or all of ``x`` when it has no ``x_test`` (OOD labels are never
used). ``max_examples > 0`` keeps a random subset of that size drawn with a FIXED seed (:data:`SUBSET_SEED`), so
every run of a grid is scored on the same OOD examples. The inputs go through the in-distribution test
preprocessing, so their example shape must equal the in-distribution one (:func:`load_ood_sets` checks it, with both
shapes in the error, before anything is trained).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from gence_jax.data import sources
from gence_jax.data.spec import parse_dataset_spec, tiny_imagenet_folder
from gence_jax.data.validate import DataError, check_features, read_npz

__all__ = ["SUBSET_SEED", "load_ood_inputs", "load_ood_sets", "parse_ood_datasets", "subset"]

SUBSET_SEED = 0


def parse_ood_datasets(spec: str | None) -> list[str]:
  """``"tfds:svhn_cropped, my.npz"`` -> ``["tfds:svhn_cropped", "my.npz"]``; ``""`` -> ``[]``. Duplicates raise."""
  if spec is None:
    return []
  if not isinstance(spec, str):
    raise ValueError(f"expected a comma-separated string of dataset names, got {spec!r}")
  names = [s.strip() for s in spec.split(",") if s.strip()]
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise ValueError(f"dataset(s) {dup} listed twice")
  return names


def load_ood_inputs(name: str, *, data_dir: str | None = None, as_images: bool = False) -> tuple[np.ndarray, dict]:
  """The inputs of the test split of OOD dataset ``name`` (any name :func:`gence_jax.data.load_dataset` accepts) and
  a record of where they came from. TensorFlow is imported only for TFDS names (and then only the TFDS test split is
  read in full: the train split is asked for as ``train[:1]``). ``.npz`` inputs are checked for NaN/Inf
  (:class:`~gence_jax.data.DataError`)."""
  try:
    spec = parse_dataset_spec(name, data_dir)
  except (TypeError, ValueError):
    raise ValueError(f"unknown OOD dataset {name!r}") from None
  if spec.kind == "digits":
    return sources.load_digits(as_images=as_images).x_test, {"kind": "sklearn_digits", "split": "test"}
  if spec.kind == "tfds":
    raw = sources.load_tfds(spec.tfds_name, data_dir=spec.data_dir, train_split="train[:1]")
    info = {"kind": "tfds", "tfds_name": spec.tfds_name, "split": "test", "version": raw.source.get("version")}
    return raw.x_test, info
  if spec.kind == "tiny_imagenet" or (spec.kind == "folder" and os.path.isdir(spec.path)):
    if not spec.path:
      raise ValueError(f"OOD dataset {name!r} needs ood.data_dir (or dataset.data_dir): the Tiny-ImageNet folder")
    folder = tiny_imagenet_folder(spec.path)
    return sources.load_tiny_imagenet(folder).x_test, {"kind": "tiny_imagenet", "folder": folder, "split": "val"}
  if spec.kind == "npz":
    if not os.path.isfile(spec.path):
      raise FileNotFoundError(f"OOD dataset file not found: {name!r}")
    arrays = read_npz(spec.path, keys=("x_test", "x"))
    for key in ("x_test", "x"):
      if key in arrays:
        x = check_features(arrays[key], split=key, what=name)
        return x, {"kind": "npz", "path": spec.path, "array": key}
    raise DataError(f"OOD dataset {name!r}: expected an array x_test (or x); found {_npz_names(spec.path)}")
  raise ValueError(f"unknown OOD dataset {name!r}")


def _npz_names(path: str) -> list[str]:
  with np.load(path, allow_pickle=False) as f:
    return sorted(f.files)


def subset(x: np.ndarray, max_examples: int) -> tuple[np.ndarray, np.ndarray | None]:
  """At most ``max_examples`` rows of ``x`` (a sorted random subset, seed :data:`SUBSET_SEED`), and their indices
  (None when every row is kept)."""
  if max_examples <= 0 or len(x) <= max_examples:
    return x, None
  idx = np.sort(np.random.default_rng(SUBSET_SEED).choice(len(x), size=max_examples, replace=False))
  return x[idx], idx


def load_ood_sets(
  names: str | Sequence[str],
  *,
  input_shape: Sequence[int],
  in_dtype: Any,
  in_name: str,
  data_dir: str | None = None,
  as_images: bool = False,
  max_examples: int = 0,
  key: str = "ood.datasets",
) -> dict[str, tuple[np.ndarray, dict]]:
  """Load every OOD set in ``names`` (a list, or a comma-separated string for :func:`parse_ood_datasets`) and check
  its example shape against the in-distribution ``input_shape``.

  Returns ``{name: (x, info)}`` in the listed order, ``x`` cut to ``max_examples`` rows by :func:`subset` and
  ``info`` the record of :func:`load_ood_inputs` plus ``num_available``, ``num_examples``, ``input_shape``,
  ``dtype`` (and ``subset_seed`` when subsampled). Raises ValueError naming the config key ``key`` and both shapes
  on a mismatch, or an empty test split; warns when the dtypes differ (uint8 images next to float inputs usually
  means different value ranges).
  """
  out = {}
  for name in parse_ood_datasets(names) if isinstance(names, str) else list(names):
    x, info = load_ood_inputs(name, data_dir=data_dir, as_images=as_images)
    x = np.asarray(x)
    shape = tuple(int(s) for s in x.shape[1:])
    if shape != tuple(input_shape):
      raise ValueError(
        f"config key {key!r}: OOD dataset {name!r} has inputs of shape {shape}, but the in-distribution "
        f"dataset {in_name!r} has {tuple(input_shape)}; they must match (OOD inputs get the in-distribution "
        "preprocessing)"
      )
    if len(x) == 0:
      raise ValueError(f"config key {key!r}: OOD dataset {name!r} has no test examples")
    if np.dtype(x.dtype) != np.dtype(in_dtype):
      warnings.warn(
        f"OOD dataset {name!r} has dtype {x.dtype}, the in-distribution inputs {in_dtype}: both are normalised with "
        "the in-distribution training statistics, so their value ranges should agree",
        stacklevel=2,
      )
    total = len(x)
    x, idx = subset(x, max_examples)
    info = {**info, "num_available": int(total), "num_examples": int(len(x)), "input_shape": list(shape)}
    info["dtype"] = str(x.dtype)
    if idx is not None:
      info["subset_seed"] = SUBSET_SEED
    out[name] = (x, info)
  return out
