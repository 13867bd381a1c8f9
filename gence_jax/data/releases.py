"""Release layouts of the real-world noisy-label benchmarks, read into image lists (paths and labels, no pixels).

* WebVision 1.0 (Li, Wang, Li, Agustsson, Van Gool 2017), "mini" setting (Jiang et al. 2018, MentorNet): the Google
  subset's ``info/train_filelist_google.txt`` (``<relative path> <label>`` per line, paths relative to the root),
  labels < 50 kept; the clean validation list ``info/val_filelist.txt`` (``<file> <label>``) with the images in
  ``val_images_256/``, used as the test split. The same reading as the public loaders of Li et al. 2020
  (DivideMix, ``dataloader_webvision.py``) and Ma et al. 2020 (Active-Passive-Losses).
* ILSVRC2012 validation images of the same 50 classes, one folder per class index (``<folder>/<k>/*``, as DivideMix
  reads ``imagenet/val/<k>``).
* Clothing-1M (Xiao, Xia, Yang, Huang, Wang 2015): ``noisy_label_kv.txt`` and ``clean_label_kv.txt``
  (``<key> <label>``, keys ``images/<a>/<bc>/<name>.jpg``), ``noisy_train_key_list.txt``, ``clean_val_key_list.txt``,
  ``clean_test_key_list.txt`` (one key per line), ``category_names_eng.txt``; the lists at the root or in
  ``<root>/annotations/``. A key names ``<root>/<key>`` when ``<root>/images/`` exists, else (DivideMix's layout, the
  lists beside the image folders) ``<root>/<key without 'images/'>``.

Every bad input is a :class:`~gence_jax.data.DataError` of one line naming the file and the line: a missing list
file, a line that is not ``<path> <label>``, a label that is not an integer in range, a key without a label.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import numpy as np

from gence_jax.data.validate import DataError

__all__ = [
  "CLOTHING1M_CLASSES",
  "CLOTHING1M_NUM_CLASSES",
  "WEBVISION_NUM_CLASSES",
  "ImageList",
  "read_clothing1m",
  "read_imagenet_val",
  "read_webvision",
]

#: Classes of the full WebVision 1.0 / ILSVRC2012 label space; the mini setting keeps the first 50.
WEBVISION_NUM_CLASSES = 1000
CLOTHING1M_NUM_CLASSES = 14
#: Clothing-1M's class names in label order (the release's ``category_names_eng.txt``).
CLOTHING1M_CLASSES = (
  "T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket", "Downcoat", "Suit",
  "Shawl", "Dress", "Vest", "Underwear",
)  # fmt: skip
_IMG_EXT = (".jpeg", ".jpg", ".png")


@dataclasses.dataclass(frozen=True)
class ImageList:
  """Image files of one split: ``paths`` (str array), ``labels`` (int64), and where each row was listed
  (``list_file`` and 1-based ``lines``; for a folder layout ``list_file`` is the folder and ``lines`` count files)."""

  paths: np.ndarray
  labels: np.ndarray
  list_file: str
  lines: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)

  def where(self, i: int) -> str:
    """``<list file>:<line>`` of row ``i``, for error messages."""
    return f"{self.list_file}:{int(self.lines[i])}"

  def take(self, idx: np.ndarray) -> ImageList:
    """The rows ``idx`` (a subset or reordering), with their list lines kept."""
    return ImageList(self.paths[idx], self.labels[idx], self.list_file, self.lines[idx])

  def with_labels(self, labels: np.ndarray) -> ImageList:
    return ImageList(self.paths, np.asarray(labels, np.int64), self.list_file, self.lines)


def _image_list(paths: list[str], labels: list[int], list_file: str, lines: list[int]) -> ImageList:
  return ImageList(np.asarray(paths, dtype=object), np.asarray(labels, np.int64), list_file, np.asarray(lines, np.int64))


def _lines(path: str, what: str) -> Iterator[tuple[int, list[str]]]:
  """``(line number, whitespace-split fields)`` of the non-blank lines of a list file; a missing file is a
  DataError naming it."""
  if not os.path.isfile(path):
    raise DataError(f"{what}: list file not found: {path!r}")
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      fields = line.split()
      if fields:
        yield number, fields


def _label(text: str, num_classes: int, path: str, number: int, what: str) -> int:
  """An integer class id in ``[0, num_classes)`` read from line ``number`` of ``path``, else a DataError."""
  try:
    value = int(text)
  except ValueError:
    raise DataError(f"{what}: {path}:{number}: label {text!r} is not an integer") from None
  if not 0 <= value < num_classes:
    raise DataError(f"{what}: {path}:{number}: label {value} out of range [0, {num_classes})")
  return value


def _path_label_list(path: str, image_root: str, num_classes: int, keep_below: int, what: str) -> ImageList:
  """A ``<relative path> <label>`` list; rows with label >= ``keep_below`` are dropped (the mini setting)."""
  paths, labels, lines = [], [], []
  for number, fields in _lines(path, what):
    if len(fields) != 2:
      raise DataError(f"{what}: {path}:{number}: expected '<image path> <label>', got {len(fields)} fields")
    label = _label(fields[1], num_classes, path, number, what)
    if label < keep_below:
      paths.append(os.path.join(image_root, fields[0]))
      labels.append(label)
      lines.append(number)
  return _image_list(paths, labels, path, lines)


def read_webvision(root: str, num_classes: int = 50) -> dict[str, ImageList]:
  """WebVision 1.0's Google subset (``train``) and clean validation set (``test``), classes ``< num_classes``
  (50: the mini setting); see the module docstring for the layout."""
  if not os.path.isdir(root):
    raise DataError(f"webvision_mini: folder not found: {root!r}")
  what = f"webvision_mini {root!r}"
  info = os.path.join(root, "info")
  train = _path_label_list(
    os.path.join(info, "train_filelist_google.txt"), root, WEBVISION_NUM_CLASSES, num_classes, what
  )
  test = _path_label_list(
    os.path.join(info, "val_filelist.txt"), os.path.join(root, "val_images_256"), WEBVISION_NUM_CLASSES, num_classes,
    what,
  )
  return {"train": train, "test": test}


def read_imagenet_val(folder: str, num_classes: int = 50) -> ImageList:
  """ILSVRC2012 validation images of classes ``0 .. num_classes - 1``, one folder per class index
  (``<folder>/<k>/*.JPEG``), files in sorted order; a missing class folder is a DataError naming it."""
  what = f"imagenet_val {folder!r}"
  if not os.path.isdir(folder):
    raise DataError(f"{what}: folder not found")
  paths, labels, lines = [], [], []
  for k in range(num_classes):
    sub = os.path.join(folder, str(k))
    if not os.path.isdir(sub):
      raise DataError(f"{what}: class folder not found: {sub!r} (one folder per class index 0..{num_classes - 1})")
    for name in sorted(n for n in os.listdir(sub) if n.lower().endswith(_IMG_EXT)):
      paths.append(os.path.join(sub, name))
      labels.append(k)
      lines.append(len(lines) + 1)
  return _image_list(paths, labels, folder, lines)


CLOTHING1M_FILES = (
  "noisy_label_kv.txt",
  "noisy_train_key_list.txt",
  "clean_label_kv.txt",
  "clean_val_key_list.txt",
  "clean_test_key_list.txt",
)


def clothing1m_list_dir(root: str) -> str:
  """Where Clothing-1M's lists are: ``<root>`` or ``<root>/annotations`` (the folder holding ``noisy_label_kv.txt``;
  ``<root>`` when neither does, so the error names the file there)."""
  sub = os.path.join(root, "annotations")
  if not os.path.isfile(os.path.join(root, "noisy_label_kv.txt")) and os.path.isdir(sub):
    return sub
  return root


def _key_labels(path: str, what: str) -> dict[str, int]:
  table = {}
  for number, fields in _lines(path, what):
    if len(fields) != 2:
      raise DataError(f"{what}: {path}:{number}: expected '<image key> <label>', got {len(fields)} fields")
    table[fields[0]] = _label(fields[1], CLOTHING1M_NUM_CLASSES, path, number, what)
  return table


def _key_list(path: str, labels: dict[str, int], label_file: str, image_path, what: str) -> ImageList:
  paths, out, lines = [], [], []
  for number, fields in _lines(path, what):
    if len(fields) != 1:
      raise DataError(f"{what}: {path}:{number}: expected one image key, got {len(fields)} fields")
    key = fields[0]
    if key not in labels:
      raise DataError(f"{what}: {path}:{number}: key {key!r} has no label in {label_file}")
    paths.append(image_path(key))
    out.append(labels[key])
    lines.append(number)
  return _image_list(paths, out, path, lines)


def read_clothing1m(root: str) -> dict[str, ImageList]:
  """Clothing-1M's noisy training list (``train``, noisy labels), clean validation (``val``) and clean test
  (``test``) lists; see the module docstring for the layout."""
  if not os.path.isdir(root):
    raise DataError(f"clothing1m: folder not found: {root!r}")
  what = f"clothing1m {root!r}"
  lists = clothing1m_list_dir(root)
  with_images = os.path.isdir(os.path.join(root, "images"))

  def image_path(key: str) -> str:
    if not with_images and key.startswith("images/"):
      key = key[len("images/") :]
    return os.path.join(root, key)

  noisy_kv, clean_kv = (os.path.join(lists, f) for f in ("noisy_label_kv.txt", "clean_label_kv.txt"))
  noisy, clean = _key_labels(noisy_kv, what), _key_labels(clean_kv, what)
  return {
    "train": _key_list(os.path.join(lists, "noisy_train_key_list.txt"), noisy, noisy_kv, image_path, what),
    "val": _key_list(os.path.join(lists, "clean_val_key_list.txt"), clean, clean_kv, image_path, what),
    "test": _key_list(os.path.join(lists, "clean_test_key_list.txt"), clean, clean_kv, image_path, what),
  }


def clothing1m_class_names(root: str) -> tuple[str, ...]:
  """The names in ``category_names_eng.txt`` when the release has it, else :data:`CLOTHING1M_CLASSES`."""
  path = os.path.join(clothing1m_list_dir(root), "category_names_eng.txt")
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      names = tuple(line.strip() for line in f if line.strip())
    if len(names) == CLOTHING1M_NUM_CLASSES:
      return names
  return CLOTHING1M_CLASSES
