"""Data checked at load: each bad file gives DataError with one line naming the dataset, the array and the first bad
row; constant features warn and are normalised to exactly 0; classes with no training example are reported."""

import json
import re
import warnings

import numpy as np
import pytest

import gence_jax.data as D
from gence_jax.data import DataError, DataWarning


def _good(n=40, k=4, d=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = np.arange(n) % k
  return x, y


def _raises_exactly(msg, fn, *args, **kwargs):
  """`fn` raises DataError whose whole message is `msg` (one line)."""
  with pytest.raises(DataError) as info:
    fn(*args, **kwargs)
  text = str(info.value)
  assert "\n" not in text
  assert text == msg
  assert isinstance(info.value, ValueError)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # relative file names: messages read exactly as a user types the name
  return tmp_path


def test_nan_in_x_train_names_split_and_first_row(in_tmp):
  x, y = _good()
  x[17, 1] = np.nan
  x[30, 0] = np.nan
  np.savez("x.npz", x_train=x, y_train=y, x_test=x[:8] * 0, y_test=y[:8])
  _raises_exactly("dataset 'x.npz': x_train has NaN/Inf at row 17", D.load_dataset, "x.npz", seed=0)


def test_inf_in_x_test_and_x_val(in_tmp):
  x, y = _good()
  xt = x[:10].copy()
  xt[3, 2] = -np.inf
  np.savez("t.npz", x_train=x, y_train=y, x_test=xt, y_test=y[:10])
  _raises_exactly("dataset 't.npz': x_test has NaN/Inf at row 3", D.load_dataset, "t.npz", seed=0)
  xv = x[:6].copy()
  xv[5] = np.inf
  np.savez("v.npz", x_train=x, y_train=y, x_val=xv, y_val=y[:6], x_test=x[:4], y_test=y[:4])
  _raises_exactly("dataset 'v.npz': x_val has NaN/Inf at row 5", D.load_dataset, "v.npz", seed=0)


def test_nan_in_image_rows_found_across_blocks(in_tmp, monkeypatch):
  # the scan runs in blocks of rows: a NaN in a later block is still named by its global row
  from gence_jax.data import validate

  monkeypatch.setattr(validate, "_BLOCK_ELEMENTS", 64)  # 64 elements = 1 image of 4x4x4 per block
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(30, 4, 4, 4)).astype(np.float32)
  x[23, 2, 1, 3] = np.nan
  y = np.arange(30) % 3
  np.savez("img.npz", x=x, y=y)
  _raises_exactly(
    "dataset 'img.npz': x (split into x_train/x_test) has NaN/Inf at row 23", D.load_dataset, "img.npz", seed=0
  )


def test_label_out_of_range_names_split_and_row(in_tmp):
  x, y = _good()
  y = y.copy()
  y[7] = 5
  y[9] = 6
  np.savez("r.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:4].repeat(2), num_classes=np.array(5))
  _raises_exactly("dataset 'r.npz': y_train has label 5 at row 7, outside [0, 5)", D.load_dataset, "r.npz", seed=0)
  # num_classes given to the loader overrides the file's
  yt = np.array([0, 1, 2, -1, 0, 1, 2, 3])
  np.savez("neg.npz", x_train=x, y_train=np.arange(40) % 4, x_test=x[:8], y_test=yt)
  _raises_exactly("dataset 'neg.npz': y_test has a negative label -1 at row 3", D.load_dataset, "neg.npz", seed=0)
  _raises_exactly(
    "dataset 'neg.npz': y_test has label -1 at row 3, outside [0, 4)", D.load_dataset, "neg.npz", seed=0, num_classes=4
  )


def test_non_integer_labels(in_tmp):
  x, y = _good()
  yf = y.astype(np.float32)
  yf[4] = 1.5
  np.savez("f.npz", x=x, y=yf)
  _raises_exactly(
    "dataset 'f.npz': y (split into y_train/y_test) must hold integer class ids, got dtype float32 with 1.5 at row 4",
    D.load_dataset,
    "f.npz",
    seed=0,
  )
  ys = np.array(["cat", "dog"] * 20)
  np.savez("s.npz", x_train=x, y_train=ys, x_test=x[:2], y_test=np.array([0, 1]))
  _raises_exactly(
    "dataset 's.npz': y_train must hold integer class ids, got dtype <U3 at row 0", D.load_dataset, "s.npz", seed=0
  )
  # whole-number floats are accepted (labels saved as float), and become int64
  np.savez("ok.npz", x=x, y=y.astype(np.float64))
  ds = D.load_dataset("ok.npz", seed=0)
  assert ds.y_train.dtype == np.int64 and ds.num_classes == 4


def test_length_mismatch(in_tmp):
  x, y = _good()
  np.savez("l.npz", x_train=x, y_train=y[:39], x_test=x[:5], y_test=y[:5])
  _raises_exactly("dataset 'l.npz': x_train has 40 rows but y_train has 39", D.load_dataset, "l.npz", seed=0)
  _raises_exactly("dataset 'arrays': x_test has 5 rows but y_test has 4", D.from_arrays, x, y, x[:5], y[:4], seed=0)
  _raises_exactly(
    "dataset 'arrays': x_train has 40 rows but y_train has 39",
    D.load_dataset,
    {"x_train": x, "y_train": y[:39]},
    seed=0,
  )


def test_example_shape_mismatch_between_splits(in_tmp):
  x, y = _good()
  np.savez("sh.npz", x_train=x, y_train=y, x_test=np.zeros((4, 5), np.float32), y_test=y[:4])
  _raises_exactly(
    "dataset 'sh.npz': x_test has examples of shape (5,) but x_train has (3,)", D.load_dataset, "sh.npz", seed=0
  )


def test_not_an_npz_file(in_tmp):
  with open("foo.npz", "wb") as f:
    f.write(b"this is not a zip archive\n" * 10)
  _raises_exactly("dataset 'foo.npz': not an .npz (zip) file", D.load_dataset, "foo.npz", seed=0)
  with open("arr.npz", "wb") as f:  # a .npy saved under an .npz name
    np.save(f, np.zeros((4, 3)))
  _raises_exactly("dataset 'arr.npz': not an .npz (zip) file", D.load_npz, "arr.npz")
  open("empty.npz", "wb").close()
  _raises_exactly("dataset 'empty.npz': not an .npz (zip) file", D.load_dataset, "empty.npz", seed=0)
  x, y = _good()
  np.savez("obj.npz", x=np.array([x[0], "a"], dtype=object), y=y[:2])
  _raises_exactly(
    "dataset 'obj.npz': holds object arrays, which need pickle; save numeric arrays", D.load_dataset, "obj.npz", seed=0
  )


def test_missing_arrays_is_a_data_error(in_tmp):
  x, _ = _good()
  np.savez("keys.npz", a=x)
  _raises_exactly(
    "dataset 'keys.npz': expected arrays x_train, y_train, x_test, y_test (or x, y); found ['a']",
    D.load_dataset,
    "keys.npz",
    seed=0,
  )
  np.savez("half.npz", x_train=x, y_train=np.arange(40) % 4, x_test=x)
  _raises_exactly("dataset 'half.npz': has only one of x_test/y_test", D.load_dataset, "half.npz", seed=0)


def test_class_with_no_training_example(in_tmp):
  x, y = _good(n=60, k=3)
  # class 3 exists (num_classes from the file) but has no example anywhere in the training split
  np.savez("gap.npz", x_train=x, y_train=y, x_test=x[:8], y_test=np.array([0, 1, 2, 3] * 2), num_classes=np.array(5))
  _raises_exactly(
    "dataset 'gap.npz': class 3 has no training example (2 of 5 classes have none)",
    D.load_dataset,
    "gap.npz",
    seed=0,
    empty_classes="error",
  )
  with pytest.warns(DataWarning, match=re.escape("dataset 'gap.npz': class 3 has no training example (2 of 5")):
    ds = D.load_dataset("gap.npz", seed=0)  # the default only warns
  assert ds.info["empty_classes"] == [3, 4]
  with warnings.catch_warnings():
    warnings.simplefilter("error", DataWarning)
    ds = D.load_dataset("gap.npz", seed=0, empty_classes="ignore")
  assert ds.info["empty_classes"] == [3, 4]
  with pytest.raises(ValueError, match="load_dataset: `empty_classes` must be"):
    D.load_dataset("gap.npz", seed=0, empty_classes="raise")


def test_class_emptied_by_the_regimes_is_named_with_them():
  # CIFAR-10 asymmetric noise sends every flipped truck (class 9) to automobile and nothing to truck: with one truck
  # in the training split and rate 0.9, round(0.9 * 1) = 1 truck flips and class 9 is empty AFTER the regimes.
  rng = np.random.default_rng(0)
  y = np.r_[np.repeat(np.arange(9), 5), 9]
  x = rng.normal(size=(len(y), 2)).astype(np.float32)
  kw = {"x_val": x[:10], "y_val": np.arange(10), "seed": 0, "num_classes": 10, "empty_classes": "error"}
  ds = D.from_arrays(x, y, x[:10], np.arange(10), **kw)  # clean: every class has a training example
  assert ds.info["empty_classes"] == []
  raw = D.raw_from_arrays(x, y, x[:10], np.arange(10), x_val=x[:10], y_val=np.arange(10), num_classes=10)
  raw.class_names = D.CIFAR10_CLASS_NAMES
  _raises_exactly(
    "dataset 'arrays': class 9 ('truck') has no training example after the regimes 'asym10:0.9'",
    D.build_dataset,
    raw,
    seed=0,
    regimes="asym10:0.9",
    empty_classes="error",
  )


def test_zero_variance_features_warn_and_are_zero_after_normalisation(in_tmp):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(50, 4)).astype(np.float32) * 3 + 1
  x[:, 2] = 7.25  # constant over the whole pool
  y = np.arange(50) % 2
  np.savez("c.npz", x=x, y=y)
  with pytest.warns(DataWarning) as rec:
    ds = D.load_dataset("c.npz", seed=0)
  msgs = [str(w.message) for w in rec if issubclass(w.category, DataWarning)]
  assert msgs == [
    "dataset 'c.npz': 1 features [2] are constant over the training split; they are centred to 0 and not scaled"
  ]
  assert ds.info["zero_variance"] == [2]
  z = ds.normalizer(ds.x_train)
  assert np.all(z[:, 2] == 0.0)  # exactly 0: centred, not divided by a zero std
  # the other features are standardised with the float64 train statistics (reference: numpy's mean and std)
  xt = ds.x_train.astype(np.float64)
  ref = (xt - xt.mean(0)) / np.where(xt.std(0) > 0, xt.std(0), 1.0)
  np.testing.assert_allclose(z, ref, atol=1e-5)
  batch = next(ds.train_batches(16, num_epochs=1))
  assert np.all(batch["x"][:, 2] == 0.0) and np.isfinite(batch["x"]).all()
  json.dumps(ds.info)


def test_constant_image_channel_warns_as_channel():
  x = np.zeros((40, 4, 4, 3), np.uint8)
  x[..., 0] = np.arange(40)[:, None, None] % 7
  x[..., 2] = np.arange(40)[:, None, None] % 5
  y = np.arange(40) % 4
  with pytest.warns(DataWarning, match=re.escape("dataset 'imgs': 1 channels [1] are constant")):
    ds = D.from_arrays(x, y, x[:8], y[:8], seed=0, name="imgs")
  assert np.all(ds.normalizer(ds.x_train)[..., 1] == 0.0)


def test_good_files_pass_and_loader_checks_other_sources(in_tmp):
  x, y = _good()
  np.savez("good.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
  ds = D.load_dataset("good.npz", seed=0)
  assert ds.info["zero_variance"] == [] and ds.info["empty_classes"] == []
  # a RawData built by hand goes through the same checks in build_dataset
  raw = D.RawData(x, y, x[:8], y[:8], 4, "handmade")
  raw.x_test = raw.x_test.copy()
  raw.x_test[6, 0] = np.nan
  _raises_exactly("dataset 'handmade': x_test has NaN/Inf at row 6", D.build_dataset, raw, seed=0)
  raw = D.RawData(x, y, x[:8], y[:8], 3, "handmade")
  _raises_exactly("dataset 'handmade': y_train has label 3 at row 3, outside [0, 3)", D.build_dataset, raw, seed=0)
  raw = D.RawData(x[:, 0], y, x[:8, 0], y[:8], 4, "flat")
  with pytest.raises(DataError, match=r"dataset 'flat': x_train must have shape \(N, features...\)"):
    D.build_dataset(raw, seed=0)


def test_validate_arrays_directly():
  x, y = _good()
  D.validate_arrays({"x": x, "y": y, "feature_names": np.array(["a", "b", "c"])}, what="m")  # extra keys ignored
  _raises_exactly(
    "dataset 'm': the array num_classes must hold one integer, got [2, 3]",
    D.validate_arrays,
    {"x": x, "y": y, "num_classes": np.array([2, 3])},
    what="m",
  )
  _raises_exactly(
    "dataset 'm': y_train must be 1-D class ids, got shape (40, 1)",
    D.validate_splits,
    [("train", x, y[:, None])],
    what="m",
  )
