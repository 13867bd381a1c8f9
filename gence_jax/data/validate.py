"""Checks on the arrays of a dataset, run when it is loaded (before anything is compiled or trained).

Every failed check raises :class:`DataError` (a ``ValueError``) with one line that names the dataset, the array and,
where there is one, the first bad row, e.g. ``dataset 'x.npz': x_train has NaN/Inf at row 17``. A command line can
catch :class:`DataError` to give bad data its own exit status. Features (tabular) or channels (images) that are
constant over the training split are not an error: :func:`warn_zero_variance` emits a :class:`DataWarning`, and the
normaliser leaves them at 0 after centring (see :func:`gence_jax.data.compute_normalizer`).

What is checked, per split (``train``, ``val``, ``test``, or ``x``/``y`` of a file that holds one pool):

* ``x`` is numeric with a leading example axis and at least one more axis, every split has the same example shape,
  and floating-point inputs are finite (first row with a NaN or an Inf is named);
* ``y`` is 1-D, as long as ``x``, and holds integer class ids: an integer (or bool) dtype, or floats that are all
  whole numbers (the first row that is not is named); every id lies in ``[0, num_classes)`` (first row outside named);
* after the validation split and the regimes, every class has at least one training example
  (:func:`check_class_coverage`; an error or a warning, as the caller chooses).
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
  "DataError",
  "DataWarning",
  "check_class_coverage",
  "check_features",
  "check_labels",
  "read_npz",
  "validate_arrays",
  "validate_splits",
  "warn_zero_variance",
]

_BLOCK_ELEMENTS = 1 << 22  # elements per block when scanning a large array for NaN/Inf (about 16 MB of float32)


class DataError(ValueError):
  """Bad data in a dataset: a file that is not an ``.npz``, NaN/Inf inputs, bad labels, mismatched lengths, a class
  with no training example. A ``ValueError``, so code that catches ``ValueError`` still catches it."""


class DataWarning(UserWarning):
  """Data that can be trained on but is probably not what was meant (e.g. constant features)."""


def read_npz(path: str | os.PathLike, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
  """The arrays of an ``.npz`` file (only those named in ``keys`` that it holds, when given), read eagerly, no pickle.

  Raises FileNotFoundError for a missing file and :class:`DataError` for a file that is not a zip archive
  (``dataset 'foo.npz': not an .npz (zip) file``), one that holds object arrays (they would need pickle) or one
  whose members cannot be read.
  """
  p = os.fspath(path)
  if not os.path.isfile(p):
    raise FileNotFoundError(f"npz file not found: {p!r}")
  if not zipfile.is_zipfile(p):
    raise DataError(f"dataset {p!r}: not an .npz (zip) file")
  try:
    with np.load(p, allow_pickle=False) as f:
      return {k: f[k] for k in f.files if keys is None or k in keys}
  except ValueError as e:
    if "pickle" in str(e).lower():
      raise DataError(f"dataset {p!r}: holds object arrays, which need pickle; save numeric arrays") from None
    raise DataError(f"dataset {p!r}: cannot read the .npz file ({_one_line(e)})") from None
  except (OSError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(f"dataset {p!r}: cannot read the .npz file ({type(e).__name__}: {_one_line(e)})") from None


def _one_line(e: BaseException) -> str:
  lines = str(e).strip().splitlines()
  return lines[0] if lines else type(e).__name__


def _first(mask: np.ndarray) -> int:
  return int(np.argmax(mask))


def check_features(x: Any, *, split: str, what: str) -> np.ndarray:
  """``x`` as an array after checking that it is numeric, ``(N, ...)`` with at least 2 axes, and finite.

  The scan for NaN/Inf runs block by block over rows (no float copy of the whole array); integer inputs (uint8
  images) cannot hold NaN and are not scanned. Raises :class:`DataError` naming ``split`` and the first bad row.
  """
  x = np.asarray(x)
  if x.dtype.kind not in "biuf":
    raise DataError(f"dataset {what!r}: {split} must be numeric, got dtype {x.dtype}")
  if x.ndim < 2:
    raise DataError(f"dataset {what!r}: {split} must have shape (N, features...) with at least 2 axes, got {x.shape}")
  if x.dtype.kind == "f" and x.size:
    n = x.shape[0]
    per_row = max(1, x.size // n)
    rows = max(1, _BLOCK_ELEMENTS // per_row)
    for start in range(0, n, rows):
      block = x[start : start + rows].reshape(min(rows, n - start), -1)
      ok = np.isfinite(block).all(axis=1)
      if not ok.all():
        raise DataError(f"dataset {what!r}: {split} has NaN/Inf at row {start + _first(~ok)}")
  return x


def check_labels(y: Any, *, split: str, what: str, num_classes: int | None = None) -> np.ndarray:
  """``y`` as int64 class ids after checking them; raises :class:`DataError` naming ``split`` and the first bad row.

  Accepted: a 1-D array of an integer or bool dtype, or of floats that are all whole numbers (labels saved as float).
  With ``num_classes``, every id must lie in ``[0, num_classes)``; without it, only negative ids are rejected.
  """
  y = np.asarray(y)
  if y.ndim != 1:
    raise DataError(f"dataset {what!r}: {split} must be 1-D class ids, got shape {y.shape}")
  kind = y.dtype.kind
  if kind == "f":
    bad = ~(np.isfinite(y) & (np.floor(y) == y))
    if bad.any():
      i = _first(bad)
      raise DataError(
        f"dataset {what!r}: {split} must hold integer class ids, got dtype {y.dtype} with {y[i].item()!r} at row {i}"
      )
  elif kind not in "biu":
    at = " at row 0" if y.size else ""
    raise DataError(f"dataset {what!r}: {split} must hold integer class ids, got dtype {y.dtype}{at}")
  ids = y.astype(np.int64)
  if ids.size:
    out = ids < 0 if num_classes is None else (ids < 0) | (ids >= int(num_classes))
    if out.any():
      i = _first(out)
      if num_classes is None:
        raise DataError(f"dataset {what!r}: {split} has a negative label {int(ids[i])} at row {i}")
      raise DataError(f"dataset {what!r}: {split} has label {int(ids[i])} at row {i}, outside [0, {int(num_classes)})")
  return ids


def _pair(x: Any, y: Any, xname: str, yname: str, *, what: str, num_classes: int | None) -> tuple[int, ...]:
  x = check_features(x, split=xname, what=what)
  y = np.asarray(y)
  if y.ndim >= 1 and len(x) != len(y):
    raise DataError(f"dataset {what!r}: {xname} has {len(x)} rows but {yname} has {len(y)}")
  check_labels(y, split=yname, what=what, num_classes=num_classes)
  return tuple(int(s) for s in x.shape[1:])


def validate_splits(
  splits: Sequence[tuple[str, Any, Any]] | Mapping[str, tuple[Any, Any]],
  *,
  what: str,
  num_classes: int | None = None,
) -> None:
  """Check ``(name, x, y)`` splits (or ``{name: (x, y)}``): each pair as in the module docstring, and every split
  with the same example shape. ``name`` is the split's suffix (``"train"`` checks ``x_train``/``y_train``; ``""``
  checks a pool ``x``/``y`` that is split into train and test afterwards). Raises :class:`DataError`."""
  items = [(k, *v) for k, v in splits.items()] if isinstance(splits, Mapping) else list(splits)
  bad_k = isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, (int, np.integer))
  if num_classes is not None and (bad_k or num_classes < 1):
    raise DataError(f"dataset {what!r}: num_classes must be a positive integer, got {num_classes!r}")
  shapes: dict[str, tuple[int, ...]] = {}
  for name, x, y in items:
    if name:
      xname, yname = f"x_{name}", f"y_{name}"
    else:  # one pool, split into train and test after the checks
      xname, yname = "x (split into x_train/x_test)", "y (split into y_train/y_test)"
    shapes[xname] = _pair(x, y, xname, yname, what=what, num_classes=num_classes)
  if len(set(shapes.values())) > 1:
    (first, s0), *rest = shapes.items()
    other, s1 = next((k, s) for k, s in rest if s != s0)
    raise DataError(f"dataset {what!r}: {other} has examples of shape {s1} but {first} has {s0}")


def validate_arrays(arrays: Mapping[str, Any], *, what: str, num_classes: int | None = None) -> None:
  """Check a mapping of arrays as an ``.npz`` file holds them: ``x_train, y_train[, x_test, y_test][, x_val, y_val]``
  or ``x, y`` (other keys are ignored; an array ``num_classes``, if present, bounds the labels unless
  ``num_classes`` is given). Raises :class:`DataError` for a missing or unpaired array and for every check of
  :func:`validate_splits`."""
  keys = set(arrays)
  if {"x_train", "y_train"} <= keys:
    names = ["train"]
    for s in ("val", "test"):
      if (f"x_{s}" in keys) != (f"y_{s}" in keys):
        raise DataError(f"dataset {what!r}: has only one of x_{s}/y_{s}")
      if f"x_{s}" in keys:
        names.append(s)
  elif {"x", "y"} <= keys:
    names = [""]
  else:
    raise DataError(
      f"dataset {what!r}: expected arrays x_train, y_train, x_test, y_test (or x, y); found {sorted(keys)}"
    )
  if num_classes is None and "num_classes" in keys:
    k = np.asarray(arrays["num_classes"])
    if k.size != 1 or k.dtype.kind not in "iuf" or not np.isfinite(k).all() or float(k.reshape(())) % 1:
      raise DataError(f"dataset {what!r}: the array num_classes must hold one integer, got {k.tolist()!r}")
    num_classes = int(k.reshape(()))
  pairs = [(s, arrays[f"x_{s}" if s else "x"], arrays[f"y_{s}" if s else "y"]) for s in names]
  validate_splits(pairs, what=what, num_classes=num_classes)


def check_class_coverage(
  y_train: Any,
  num_classes: int,
  *,
  what: str,
  class_names: Sequence[str] | None = None,
  after: str = "",
  action: str = "error",
) -> list[int]:
  """The classes with no example in ``y_train``; when there are any, raise :class:`DataError` (``action="error"``)
  or warn with a :class:`DataWarning` (``"warn"``) naming the first of them and how many there are (``"ignore"``:
  neither). ``after`` says what was applied before (e.g. ``"the regimes 'longtail:exp:100'"``), for the message."""
  if action not in ("error", "warn", "ignore"):
    raise ValueError(f"check_class_coverage: `action` must be 'error', 'warn' or 'ignore', got {action!r}")
  counts = np.bincount(np.asarray(y_train, np.int64), minlength=int(num_classes))
  empty = [int(c) for c in np.flatnonzero(counts[: int(num_classes)] == 0)]
  if empty and action != "ignore":
    c = empty[0]
    label = f"class {c}" + (f" ({class_names[c]!r})" if class_names is not None and c < len(class_names) else "")
    more = f" ({len(empty)} of {int(num_classes)} classes have none)" if len(empty) > 1 else ""
    when = f" after {after}" if after else ""
    msg = f"dataset {what!r}: {label} has no training example{when}{more}"
    if action == "error":
      raise DataError(msg)
    warnings.warn(DataWarning(msg), stacklevel=3)
  return empty


def warn_zero_variance(std: Any, *, what: str, images: bool, eps: float) -> list[int]:
  """Warn (:class:`DataWarning`) about the features/channels whose training standard deviation is ``<= eps``;
  returns their indices. The normaliser maps them to 0 (centred, not scaled)."""
  idx = [int(i) for i in np.flatnonzero(np.ravel(np.asarray(std)) <= eps)]
  if idx:
    unit = "channels" if images else "features"
    shown = idx if len(idx) <= 10 else [*idx[:10], "..."]
    warnings.warn(
      DataWarning(
        f"dataset {what!r}: {len(idx)} {unit} {shown} are constant over the training split; they are centred to 0 "
        "and not scaled"
      ),
      stacklevel=3,
    )
  return idx
