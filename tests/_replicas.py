"""Small replicas of the real-world release layouts (WebVision 1.0, ILSVRC2012 val folders, Clothing-1M, MedMNIST),
written by the tests: the same list files and folders as the releases, a few dozen small JPEGs."""

import io
import os

import numpy as np

#: Settings of every end-to-end run on a replica: small evaluation batches, no bootstrap, one calibrator, no plot.
FAST = (
  "train.progress=False",
  "train.eval_batch_size=16",
  "calibration.bootstrap_resamples=0",
  "calibration.methods=('ts',)",
  "outputs.reliability_plot=False",
)
#: The input and batch shape the runs share (28x28: MedMNIST's size), so XLA compiles each program once per process.
SHAPE = ("train.batch_size=8", "dataset.image_size=28")


def train(workdir, *sets, config=None):
  """``gence-jax train --workdir workdir [--config config] --set ...`` with :data:`FAST` first; the exit status."""
  from gence_jax import cli

  argv = ["train", "--workdir", str(workdir)] + (["--config", str(config)] if config else [])
  for s in (*FAST, *sets):
    argv += ["--set", s]
  return cli.main(argv)


def jpeg_bytes(rng, size=32):
  """A smooth random RGB image (a 4x4 grid upsampled) as JPEG bytes."""
  from PIL import Image

  small = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
  buf = io.BytesIO()
  small.resize((size, size), Image.BILINEAR).save(buf, format="JPEG", quality=90)
  return buf.getvalue()


def _write(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)


def make_webvision(root, *, per_class=2, val_per_class=1, classes=50, size=32, seed=0):
  """``info/train_filelist_google.txt`` with ``per_class`` rows of each class < ``classes`` (images under
  ``google/``) followed by 4 rows of classes 50-53 (the mini setting must drop them); ``info/val_filelist.txt`` with
  ``val_per_class`` rows per class and a last row of class 55, images in ``val_images_256/``. Returns the (path,
  label) rows kept per split."""
  rng = np.random.default_rng(seed)
  kept = {"train": [], "test": []}
  lines = []
  labels = [i % classes for i in range(per_class * classes)] + [50, 51, 52, 53]
  for i, label in enumerate(labels):
    rel = f"google/q{label:04d}/img{i:05d}.jpg"
    _write(os.path.join(root, rel), jpeg_bytes(rng, size))
    lines.append(f"{rel} {label}")
    if label < 50:
      kept["train"].append((rel, label))
  _write(os.path.join(root, "info", "train_filelist_google.txt"), ("\n".join(lines) + "\n").encode())
  lines = []
  for i, label in enumerate([i % classes for i in range(val_per_class * classes)] + [55]):
    name = f"val{i:06d}.jpg"
    _write(os.path.join(root, "val_images_256", name), jpeg_bytes(rng, size))
    lines.append(f"{name} {label}")
    if label < 50:
      kept["test"].append((name, label))
  _write(os.path.join(root, "info", "val_filelist.txt"), ("\n".join(lines) + "\n").encode())
  return kept


def make_imagenet_val(folder, *, classes=50, per_class=1, size=16, seed=1):
  rng = np.random.default_rng(seed)
  for k in range(classes):
    for j in range(per_class):
      _write(os.path.join(folder, str(k), f"ILSVRC2012_val_{k * per_class + j:08d}.JPEG"), jpeg_bytes(rng, size))


def make_clothing1m(root, *, n_train=40, n_val=14, n_test=14, size=32, annotations=False, images_dir=True, seed=0,
                    same_image=False):
  """The release's lists (at ``root`` or ``root/annotations``) and images (``root/images/<a>/<bc>/`` or, without
  ``images_dir``, DivideMix's layout ``root/<a>/<bc>/``). Keys of the noisy and clean sets are disjoint except that
  the clean ones also carry labels. Returns ``{split: [(key, label)]}``. ``same_image``: one encoded image written
  to every file (cheap to write many)."""
  rng = np.random.default_rng(seed)
  lists = os.path.join(root, "annotations") if annotations else root
  blob = jpeg_bytes(rng, size) if same_image else None
  rows = {}
  for split, n, offset in (("train", n_train, 0), ("val", n_val, 10**6), ("test", n_test, 2 * 10**6)):
    rows[split] = []
    for i in range(n):
      key = f"images/{i % 10}/{i % 100:02d}/{offset + i}.jpg"
      label = (i * 5 + (split != "train")) % 14
      target = os.path.join(root, key if images_dir else key[len("images/"):])
      _write(target, blob if same_image else jpeg_bytes(rng, size))
      rows[split].append((key, label))
  text = lambda items: ("\n".join(items) + "\n").encode()  # noqa: E731
  _write(os.path.join(lists, "noisy_label_kv.txt"), text(f"{k} {y}" for k, y in rows["train"]))
  _write(os.path.join(lists, "noisy_train_key_list.txt"), text(k for k, _ in rows["train"]))
  _write(os.path.join(lists, "clean_label_kv.txt"), text(f"{k} {y}" for s in ("val", "test") for k, y in rows[s]))
  _write(os.path.join(lists, "clean_val_key_list.txt"), text(k for k, _ in rows["val"]))
  _write(os.path.join(lists, "clean_test_key_list.txt"), text(k for k, _ in rows["test"]))
  names = ["T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket", "Downcoat",
           "Suit", "Shawl", "Dress", "Vest", "Underwear"]
  _write(os.path.join(lists, "category_names_eng.txt"), text(names))
  return rows


def make_medmnist(path, *, n=(60, 12, 12), size=28, channels=3, classes=9, seed=0, label_columns=1):
  """A MedMNIST-v2-style ``.npz`` (``train_images``, ``train_labels`` [N, 1], ``val_*``, ``test_*``)."""
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, m in zip(("train", "val", "test"), n):
    shape = (m, size, size) if channels == 1 else (m, size, size, channels)
    arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
    arrays[f"{split}_labels"] = (np.arange(m * label_columns).reshape(m, label_columns) % classes).astype(np.uint8)
  np.savez(path, **arrays)
  return arrays
