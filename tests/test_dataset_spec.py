"""The one dataset-name parser, its config-key checks (drop-in for the old config check), OOD loading in
gence_jax.data, and data fingerprints."""

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gence_jax.data as D
from gence_jax.data import DatasetSpec, check_dataset_name, data_fingerprint, parse_dataset_spec
from gence_jax.data.ood import SUBSET_SEED, load_ood_inputs, load_ood_sets, parse_ood_datasets, subset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "name, data_dir, want",
  [
    ("digits", None, DatasetSpec("digits", "digits")),
    ("DiGiTs", "", DatasetSpec("digits", "DiGiTs")),
    ("cifar10", "/d", DatasetSpec("tfds", "cifar10", tfds_name="cifar10", data_dir="/d")),
    ("CIFAR100", None, DatasetSpec("tfds", "CIFAR100", tfds_name="cifar100")),
    ("svhn_cropped", None, DatasetSpec("tfds", "svhn_cropped", tfds_name="svhn_cropped")),
    ("fashion_mnist", None, DatasetSpec("tfds", "fashion_mnist", tfds_name="fashion_mnist")),
    ("mnist", None, DatasetSpec("tfds", "mnist", tfds_name="mnist")),
    ("tfds:Cars196", None, DatasetSpec("tfds", "tfds:Cars196", tfds_name="Cars196")),
    ("TFDS:cifar10:3.0.1", "", DatasetSpec("tfds", "TFDS:cifar10:3.0.1", tfds_name="cifar10:3.0.1")),
    ("tiny_imagenet:/a/B", None, DatasetSpec("tiny_imagenet", "tiny_imagenet:/a/B", path="/a/B")),
    ("Tiny-ImageNet:rel", "/d", DatasetSpec("tiny_imagenet", "Tiny-ImageNet:rel", path="rel", data_dir="/d")),
    ("tiny_imagenet", "/d", DatasetSpec("tiny_imagenet", "tiny_imagenet", path="/d", data_dir="/d")),
    ("tiny-imagenet", None, DatasetSpec("tiny_imagenet", "tiny-imagenet")),
    ("TINY_IMAGENET_200", "", DatasetSpec("tiny_imagenet", "TINY_IMAGENET_200")),
    ("tiny-imagenet-200", "/x", DatasetSpec("tiny_imagenet", "tiny-imagenet-200", path="/x", data_dir="/x")),
    ("../data/My.NPZ", None, DatasetSpec("npz", "../data/My.NPZ", path="../data/My.NPZ")),
    ("some/folder", None, DatasetSpec("folder", "some/folder", path="some/folder")),
    ("imagenet22k", None, DatasetSpec("folder", "imagenet22k", path="imagenet22k")),
  ],
)
def test_parse_table(name, data_dir, want):
  assert parse_dataset_spec(name, data_dir) == want


def test_parse_is_frozen_jsonable_and_does_no_io(monkeypatch):
  def no_io(*a, **k):
    raise AssertionError("parse_dataset_spec touched the file system")

  for fn in ("stat", "lstat", "listdir", "scandir", "open"):
    monkeypatch.setattr(os, fn, no_io)
  monkeypatch.setattr("builtins.open", no_io)
  names = ["digits", "cifar10", "tfds:x", "tiny_imagenet:f", "tiny_imagenet", "a.npz", "folder", "/abs/folder"]
  specs = [parse_dataset_spec(n, "/data") for n in names]
  monkeypatch.undo()
  assert [s.kind for s in specs] == ["digits", "tfds", "tfds", "tiny_imagenet", "tiny_imagenet", "npz", "folder"] + [
    "folder"
  ]
  with pytest.raises(dataclasses.FrozenInstanceError):
    specs[0].kind = "npz"
  assert json.loads(json.dumps(specs[5].to_dict())) == {
    "kind": "npz",
    "name": "a.npz",
    "tfds_name": None,
    "path": "a.npz",
    "data_dir": "/data",
  }


def test_parse_errors():
  with pytest.raises(ValueError, match="parse_dataset_spec: `name` is empty"):
    parse_dataset_spec("  ")
  with pytest.raises(ValueError, match=r"parse_dataset_spec: `name` 'tfds:' has no TFDS dataset name"):
    parse_dataset_spec("tfds:")
  with pytest.raises(TypeError, match="parse_dataset_spec: `name` must be a string or a path, got int"):
    parse_dataset_spec(3)
  assert parse_dataset_spec(__import__("pathlib").Path("d/x.npz")).kind == "npz"


# ----------------------------------------------------------------------------------------------------------------
# check_dataset_name: a drop-in for the config check it replaces
# ----------------------------------------------------------------------------------------------------------------


def _reference_check(name, data_dir, key="dataset.name"):
  """The config check as it was before the parser (train/config.py::_check_dataset_name), kept verbatim as the
  reference for the drop-in."""
  from gence_jax.data.sources import TFDS_DATASETS

  low = name.lower()
  if low == "digits" or low in TFDS_DATASETS or (low.startswith("tfds:") and len(low) > 5):
    return
  for prefix in ("tiny_imagenet:", "tiny-imagenet:"):
    if low.startswith(prefix):
      if not os.path.isdir(name[len(prefix) :]):
        raise FileNotFoundError(f"config key {key!r}: Tiny-ImageNet folder not found: {name[len(prefix) :]!r}")
      return
  if low in ("tiny_imagenet", "tiny-imagenet", "tiny_imagenet_200", "tiny-imagenet-200"):
    if not data_dir:
      dir_key = "'ood.data_dir' (or 'dataset.data_dir')" if key == "ood.datasets" else "'dataset.data_dir'"
      raise ValueError(f"config key {dir_key} must name the Tiny-ImageNet folder for dataset {name!r} ({key!r})")
    return
  if low.endswith(".npz"):
    if not os.path.isfile(name):
      raise FileNotFoundError(f"config key {key!r}: file not found: {name!r}")
    return
  if os.path.isdir(name):
    return
  raise ValueError(
    f"config key {key!r}: unknown dataset {name!r}; expected 'digits', one of "
    f"{sorted(TFDS_DATASETS)}, 'tfds:<name>', 'tiny_imagenet:<folder>', a folder or a .npz file"
  )


def _outcome(fn, *args, **kwargs):
  try:
    fn(*args, **kwargs)
  except Exception as e:  # noqa: BLE001 - the outcome (type, message) is what is compared
    return type(e), str(e)
  return None


def test_check_dataset_name_matches_the_old_config_check(tmp_path):
  (tmp_path / "folder").mkdir()
  np.savez(tmp_path / "d.npz", x=np.zeros((2, 2)), y=np.zeros(2, int))
  (tmp_path / "data.csv").write_text("1,2\n")
  t = str(tmp_path)
  names = [
    "digits",
    "DIGITS",
    "cifar10",
    "Fashion_MNIST",
    "tfds:foo",
    "TFDS:Bar",
    "tfds:",
    "",
    "imagenet22k",
    "digits ",
    f"tiny_imagenet:{t}/folder",
    f"tiny-imagenet:{t}/missing",
    "tiny_imagenet:",
    "tiny_imagenet",
    "Tiny-ImageNet-200",
    f"{t}/d.npz",
    f"{t}/missing.NPZ",
    f"{t}/folder",
    f"{t}/nofolder",
    f"{t}/data.csv",
  ]
  seen = set()
  for name in names:
    for data_dir in ("", t):
      for key in ("dataset.name", "ood.datasets"):
        want = _outcome(_reference_check, name, data_dir, key=key)
        got = _outcome(check_dataset_name, name, data_dir, key=key)
        assert got == want, (name, data_dir, key)
        seen.add(want[0] if want else None)
  assert seen == {None, ValueError, FileNotFoundError}  # every branch was exercised


def test_check_dataset_spec_messages_name_the_key(tmp_path):
  spec = parse_dataset_spec("tiny_imagenet", "")
  with pytest.raises(ValueError, match=re.escape("config key 'dataset.data_dir' must name the Tiny-ImageNet folder")):
    D.check_dataset_spec(spec)
  with pytest.raises(ValueError, match=re.escape("config key 'ood.data_dir' (or 'dataset.data_dir') must name")):
    D.check_dataset_spec(spec, key="ood.datasets")
  with pytest.raises(
    FileNotFoundError, match=re.escape(f"config key 'ood.datasets': file not found: '{tmp_path}/a.npz'")
  ):
    D.check_dataset_spec(parse_dataset_spec(f"{tmp_path}/a.npz"), key="ood.datasets")


# ----------------------------------------------------------------------------------------------------------------
# load_dataset resolves names through the parser
# ----------------------------------------------------------------------------------------------------------------


def _make_tiny_imagenet(root, wnids=("n02", "n01"), n=3, size=8):
  from PIL import Image

  os.makedirs(root / "val" / "images")
  (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
  lines = []
  for c, w in enumerate(sorted(wnids)):
    d = root / "train" / w / "images"
    os.makedirs(d)
    for j in range(n):
      Image.new("RGB", (size, size), (40 * c + j,) * 3).save(d / f"{w}_{j}.JPEG")
    Image.new("RGB", (size, size), (40 * c,) * 3).save(root / "val" / "images" / f"val_{c}.JPEG")
    lines.append(f"val_{c}.JPEG\t{w}\t0\t0\t{size}\t{size}")
  (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_load_dataset_names_through_the_parser(tmp_path):
  _make_tiny_imagenet(tmp_path / "tiny-imagenet-200")
  a = D.load_dataset(f"tiny_imagenet:{tmp_path / 'tiny-imagenet-200'}", seed=0, val_fraction=0.34)
  # the folder holding the extracted archive works too, for every spelling
  for name, ddir in ((str(tmp_path), None), (f"Tiny-ImageNet:{tmp_path}", None), ("TINY_IMAGENET", str(tmp_path))):
    b = D.load_dataset(name, seed=0, val_fraction=0.34, data_dir=ddir)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
  assert a.num_classes == 2 and a.x_test.shape == (2, 8, 8, 3)
  (tmp_path / "plain").mkdir()
  with pytest.raises(ValueError, match="is not a known dataset layout"):
    D.load_dataset(str(tmp_path / "plain"), seed=0)
  (tmp_path / "f.csv").write_text("1\n")
  with pytest.raises(ValueError, match="only .npz files are supported"):
    D.load_dataset(str(tmp_path / "f.csv"), seed=0)
  with pytest.raises(ValueError, match=r"unknown dataset 'tfds:'"):
    D.load_dataset("tfds:", seed=0)
  with pytest.raises(ValueError, match="needs data_dir"):
    D.load_dataset("tiny-imagenet", seed=0)
  with pytest.raises(FileNotFoundError, match="dataset file or folder not found"):
    D.load_dataset(str(tmp_path / "nothing" / "here"), seed=0)


# ----------------------------------------------------------------------------------------------------------------
# OOD loading
# ----------------------------------------------------------------------------------------------------------------


def test_ood_inputs_from_every_kind(tmp_path):
  x = np.arange(30 * 4, dtype=np.float32).reshape(30, 4)
  np.savez(tmp_path / "t.npz", x_train=x[:20], y_train=np.zeros(20, int), x_test=x[20:], y_test=np.zeros(10, int))
  np.savez(tmp_path / "p.npz", x=x, y=np.zeros(30, int))
  np.savez(tmp_path / "n.npz", a=x)
  got, info = load_ood_inputs(str(tmp_path / "t.npz"))
  np.testing.assert_array_equal(got, x[20:])
  assert info == {"kind": "npz", "path": str(tmp_path / "t.npz"), "array": "x_test"}
  got, info = load_ood_inputs(str(tmp_path / "p.npz"))
  np.testing.assert_array_equal(got, x)
  assert info["array"] == "x"
  with pytest.raises(ValueError, match=re.escape("expected an array x_test (or x); found ['a']")):
    load_ood_inputs(str(tmp_path / "n.npz"))
  with pytest.raises(FileNotFoundError, match="OOD dataset file not found: .*missing.npz"):
    load_ood_inputs(str(tmp_path / "missing.npz"))
  with pytest.raises(ValueError, match="unknown OOD dataset 'nope'"):
    load_ood_inputs("nope")
  with pytest.raises(ValueError, match=re.escape("needs ood.data_dir (or dataset.data_dir)")):
    load_ood_inputs("tiny_imagenet")
  bad = x.copy()
  bad[4, 1] = np.inf
  np.savez(tmp_path / "bad.npz", x_test=bad)
  with pytest.raises(D.DataError, match=r"x_test has NaN/Inf at row 4"):
    load_ood_inputs(str(tmp_path / "bad.npz"))
  digits, info = load_ood_inputs("digits", as_images=True)
  assert digits.shape[1:] == (8, 8, 1) and info == {"kind": "sklearn_digits", "split": "test"}
  np.testing.assert_array_equal(digits, D.load_digits(as_images=True).x_test)
  _make_tiny_imagenet(tmp_path / "ti" / "tiny-imagenet-200")
  for name, ddir in (("tiny_imagenet", str(tmp_path / "ti")), (str(tmp_path / "ti"), None)):
    got, info = load_ood_inputs(name, data_dir=ddir)
    assert got.shape == (2, 8, 8, 3) and info["folder"] == str(tmp_path / "ti" / "tiny-imagenet-200")


def test_ood_names_and_subset():
  assert parse_ood_datasets(" a.npz ,tfds:svhn_cropped,") == ["a.npz", "tfds:svhn_cropped"]
  assert parse_ood_datasets(None) == [] and parse_ood_datasets("") == []
  with pytest.raises(ValueError, match=re.escape("dataset(s) ['a'] listed twice")):
    parse_ood_datasets("a, b, a")
  x = np.arange(50)[:, None]
  kept, idx = subset(x, 12)
  # the same rows on every call (fixed seed 0), sorted, distinct: NumPy's Generator with seed 0, drawn the same way
  ref = np.sort(np.random.default_rng(SUBSET_SEED).choice(50, size=12, replace=False))
  np.testing.assert_array_equal(idx, ref)
  np.testing.assert_array_equal(kept[:, 0], ref)
  assert subset(x, 0)[1] is None and subset(x, 50)[1] is None


def test_load_ood_sets_checks_shapes_and_records(tmp_path):
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "img.npz", x_test=np.zeros((10, 8, 8, 1), np.float32))
  np.savez(tmp_path / "flat.npz", x_test=rng.uniform(size=(40, 64)).astype(np.float32))
  np.savez(tmp_path / "u8.npz", x_test=np.zeros((5, 64), np.uint8))
  np.savez(tmp_path / "empty.npz", x_test=np.zeros((0, 64), np.float32))
  common = {"input_shape": (64,), "in_dtype": np.float32, "in_name": "digits"}
  with pytest.raises(ValueError, match=r"config key 'ood\.datasets': OOD dataset .*img.npz.*\(8, 8, 1\).*\(64,\)"):
    load_ood_sets([str(tmp_path / "img.npz")], **common)
  with pytest.raises(ValueError, match=r"config key 'my\.key': OOD dataset .* has no test examples"):
    load_ood_sets(str(tmp_path / "empty.npz"), key="my.key", **common)
  with pytest.warns(UserWarning, match="has dtype uint8"):
    load_ood_sets([str(tmp_path / "u8.npz")], **common)
  out = load_ood_sets(f"{tmp_path / 'flat.npz'}, digits", max_examples=25, **common)
  assert list(out) == [str(tmp_path / "flat.npz"), "digits"]
  x, info = out[str(tmp_path / "flat.npz")]
  assert x.shape == (25, 64) and info["num_available"] == 40 and info["num_examples"] == 25
  assert info["subset_seed"] == SUBSET_SEED and info["input_shape"] == [64] and info["dtype"] == "float32"
  assert "subset_seed" in out["digits"][1] and out["digits"][0].shape == (25, 64)


# ----------------------------------------------------------------------------------------------------------------
# Fingerprints
# ----------------------------------------------------------------------------------------------------------------


def _sha(path):
  return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_npz_fingerprint_hashes_content_not_name(tmp_path):
  rng = np.random.default_rng(0)
  p = tmp_path / "a.npz"
  np.savez(p, x=rng.normal(size=(50, 3)).astype(np.float32), y=np.arange(50) % 2)
  f1 = data_fingerprint(str(p), regimes="symmetric:0.40", seed=3, val_fraction=0.2)
  f2 = data_fingerprint(str(p), regimes="symmetric:0.4", seed=3, val_fraction=0.2)
  assert f1 == f2  # same file, same (canonical) regimes
  assert f1["source"]["sha256"] == _sha(p) and f1["source"]["size"] == os.path.getsize(p)
  assert f1["regimes"] == "symmetric:0.4" and f1["seed"] == 3 and f1["val_fraction"] == 0.2
  assert f1["spec"] == {"kind": "npz", "name": str(p), "tfds_name": None, "path": str(p), "data_dir": None}
  assert json.loads(json.dumps(f1)) == f1
  # one changed byte: another hash, same size
  data = bytearray(p.read_bytes())
  data[len(data) // 2] ^= 0x01
  q = tmp_path / "b.npz"
  q.write_bytes(bytes(data))
  g = data_fingerprint(str(q), regimes="symmetric:0.4", seed=3, val_fraction=0.2)
  assert g["source"]["sha256"] != f1["source"]["sha256"] and g["source"]["size"] == f1["source"]["size"]
  # renamed (and moved): the content identity does not change, the recorded path does
  (tmp_path / "sub").mkdir()
  r = tmp_path / "sub" / "renamed.npz"
  os.rename(p, r)
  h = data_fingerprint(str(r), regimes="symmetric:0.4", seed=3, val_fraction=0.2)
  assert h["source"] == f1["source"] and h["spec"]["path"] == str(r)
  assert data_fingerprint(str(r), seed=4)["seed"] == 4 and data_fingerprint(str(r))["regimes"] == ""
  with pytest.raises(FileNotFoundError, match="data_fingerprint"):
    data_fingerprint(str(p))


def test_fingerprint_of_digits_tfds_and_folders(tmp_path):
  import sklearn

  f = data_fingerprint("digits", as_images=True)
  assert f["source"] == {
    "sklearn_version": sklearn.__version__,
    "as_images": True,
    "test_fraction": 0.2,
    "test_seed": 0,
  }
  assert data_fingerprint("digits") != f
  pinned = data_fingerprint("tfds:cifar10:3.0.1", data_dir="/nowhere")
  assert pinned["source"]["version"] == "3.0.1" and pinned["source"]["version_source"] == "pinned in the name"
  assert pinned["source"]["splits"] == {"train": "train", "test": "test"} and pinned["spec"]["data_dir"] == "/nowhere"
  unknown = data_fingerprint("tfds:no_such_builder_xyz")
  assert unknown["source"]["version"] is None and unknown["source"]["version_source"].startswith("unknown")
  assert unknown["source"]["tfds_name"] == "no_such_builder_xyz"
  root = tmp_path / "tiny-imagenet-200"
  _make_tiny_imagenet(root)
  t = data_fingerprint("tiny_imagenet", data_dir=str(tmp_path))
  assert t["source"]["folder"] == str(root) and t["source"]["wnids_sha256"] == _sha(root / "wnids.txt")
  assert t["source"]["val_annotations_sha256"] == _sha(root / "val" / "val_annotations.txt")
  assert data_fingerprint(str(root))["source"] == t["source"]
  json.dumps([f, pinned, unknown, t])


def test_tfds_fingerprint_reads_the_builder_version_without_tensorflow():
  pytest.importorskip("tensorflow_datasets")
  code = """
    import sys
    from gence_jax.data import data_fingerprint
    f = data_fingerprint("cifar10", data_dir="/nonexistent")
    print(f["source"]["version"], "tensorflow" in sys.modules)
  """
  env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
  out = subprocess.run(
    [sys.executable, "-c", textwrap.dedent(code)],
    capture_output=True,
    text=True,
    env=env,
    cwd=ROOT,
    timeout=120,
    check=False,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  version, tf_imported = out.stdout.split()
  assert re.fullmatch(r"\d+\.\d+\.\d+", version) and tf_imported == "False"
