"""Real-world release layouts and the streamed input pipeline (gence_jax.data.releases, gence_jax.data.stream).

On small replicas (tests/_replicas.py): each loader's splits, labels, class count and WebVision's
< 50 filter; the streamed batches are a pure function of (seed, step) and each process reads its rows only; bad input
exits 3 naming the file and the line; the program runs end to end on each layout, resumes a run stopped mid-epoch
bit-exactly, and trains over a replica larger than a memory limit set here. The replicas are the session fixture
``replicas`` (tests/conftest.py); every run uses the same input and batch shape (``R.SHAPE``), so the programs are
compiled once per class count.
"""

import json
import os
import tracemalloc

import numpy as np
import pytest

import _replicas as R
from gence_jax import data
from gence_jax.data import releases, stream

train = R.train  # gence-jax train with the shared fast settings (tests/_replicas.py)


# ---------------------------------------------------------------------------------------------------- loaders
def test_webvision_mini_lists_keep_the_first_50_classes(replicas):
  lists = releases.read_webvision(replicas["webvision"])
  rows = replicas["webvision_rows"]
  assert [os.path.relpath(p, replicas["webvision"]) for p in lists["train"].paths] == [p for p, _ in rows["train"]]
  assert lists["train"].labels.tolist() == [y for _, y in rows["train"]] and lists["train"].labels.max() < 50
  assert len(lists["train"]) == 100 and lists["train"].labels.max() == 49  # 104 listed, classes 50-53 dropped
  assert all(p.startswith(os.path.join(replicas["webvision"], "val_images_256")) for p in lists["test"].paths)
  assert lists["test"].labels.tolist() == [y for _, y in rows["test"]] and len(lists["test"]) == 50  # 51 listed
  assert lists["train"].where(0).endswith("train_filelist_google.txt:1")
  ds = data.load_stream_dataset(f"webvision_mini:{replicas['webvision']}", seed=0, val_fraction=0.5,
                                empty_classes="error", extra_test=[f"imagenet_val:{replicas['imagenet_val']}"])
  assert ds.num_classes == 50 and ds.input_shape == (224, 224, 3)
  assert ds.info["num_examples"] == {"train": 50, "val": 50, "test": 50, f"imagenet_val:{replicas['imagenet_val']}": 50}
  assert sorted(ds.lists["train"].lines.tolist() + ds.lists["val"].lines.tolist()) == sorted(lists["train"].lines.tolist())
  inv = ds.lists[f"imagenet_val:{replicas['imagenet_val']}"]
  assert inv.labels.tolist() == list(range(50)) and ds.info["augment"] == ["shift", "jitter", "flip"]


@pytest.mark.parametrize("annotations, images_dir", [(False, True), (True, False)])
def test_clothing1m_lists_in_both_layouts(tmp_path, annotations, images_dir):
  rows = R.make_clothing1m(str(tmp_path), n_train=6, n_val=3, n_test=4, size=8, annotations=annotations,
                           images_dir=images_dir)
  lists = releases.read_clothing1m(str(tmp_path))
  for split in ("train", "val", "test"):
    assert lists[split].labels.tolist() == [y for _, y in rows[split]]
    assert all(os.path.isfile(p) for p in lists[split].paths)
  ds = data.load_stream_dataset(f"clothing1m:{tmp_path}", seed=0, empty_classes="ignore")
  assert ds.num_classes == 14 and ds.info["validation"] == {"source": "given"}
  assert ds.info["num_examples"] == {"train": 6, "val": 3, "test": 4} and ds.class_names[-1] == "Underwear"


def test_medmnist_npz_keeps_its_splits_and_refuses_multilabel(replicas, tmp_path):
  ds = data.load_dataset(f"medmnist:pathmnist:{replicas['medmnist']}", seed=0)
  assert ds.num_classes == 9 and ds.input_shape == (28, 28, 3)
  assert ds.info["num_examples"] == {"train": 64, "val": 14, "test": 14} and ds.info["validation"]["source"] == "given"
  R.make_medmnist(tmp_path / "chest.npz", classes=2, label_columns=14)
  with pytest.raises(data.DataError, match="multi-label"):
    data.load_dataset(f"medmnist:chestmnist:{tmp_path / 'chest.npz'}", seed=0)
  with pytest.raises(data.DataError, match="14 columns"):
    data.load_dataset(f"medmnist:dermamnist:{tmp_path / 'chest.npz'}", seed=0)


# --------------------------------------------------------------------------------------------------- pipeline
def test_streamed_batches_are_a_function_of_seed_and_step(replicas):
  ds = data.load_stream_dataset(f"clothing1m:{replicas['clothing1m']}", seed=3, image_size=24, augment="rrc,jitter,flip")
  one = dict(process_index=0, process_count=1)
  first = list(ds.train_batches(8, num_epochs=2, **one))
  again = list(ds.train_batches(8, num_epochs=2, start_step=3, **one))
  assert len(first) == 10 and len(again) == 7
  for a, b in zip(first[3:], again):
    np.testing.assert_array_equal(a["x"], b["x"])
    np.testing.assert_array_equal(a["label"], b["label"])
  other = next(iter(ds.train_batches(8, seed=4, **one)))
  assert not np.array_equal(other["x"], first[0]["x"])
  # epoch 2 is another order of the same 40 examples
  epoch = lambda bs: sorted(ds.lists["train"].labels.tolist())  # noqa: E731
  assert sorted(np.concatenate([b["label"] for b in first[5:]]).tolist()) == epoch(first)
  # two processes read complementary halves of each global batch, augmented identically
  halves = [list(ds.train_batches(8, num_epochs=1, process_index=p, process_count=2)) for p in (0, 1)]
  for g, h0, h1 in zip(first, *halves):
    np.testing.assert_array_equal(np.concatenate([h0["x"], h1["x"]]), g["x"])
  # a grain worker process gives the same batches
  workers = list(ds.train_batches(8, num_epochs=1, start_step=1, num_workers=1, **one))
  for a, b in zip(first[1:5], workers):
    np.testing.assert_array_equal(a["x"], b["x"])
  ev = list(ds.eval_batches("test", 8, with_index=True, **one))
  assert [int(b["mask"].sum()) for b in ev] == [8, 6] and ev[1]["index"].tolist()[-2:] == [-1, -1]
  np.testing.assert_array_equal(np.concatenate([b["label"][b["mask"]] for b in ev]), ds.y_test)


def test_augmentations_follow_their_definitions():
  rng = np.random.default_rng(0)
  for w, h in ((300, 200), (64, 64), (40, 400)):
    for _ in range(20):
      left, top, cw, ch = stream.random_resized_crop_box(rng, w, h)
      assert 0 <= left <= w - cw and 0 <= top <= h - ch and cw > 0 and ch > 0
      assert (cw * ch) <= w * h
  x = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
  y = stream.color_jitter(x, np.random.default_rng(2), strength=0.0)
  np.testing.assert_array_equal(y, x)  # factors of exactly 1 change nothing
  grey = np.full((4, 4, 3), 100, np.uint8)
  assert np.all(stream.color_jitter(grey, np.random.default_rng(3)) == stream.color_jitter(grey, np.random.default_rng(3)))
  from PIL import Image

  img = Image.fromarray(np.random.default_rng(4).integers(0, 256, (50, 80, 3), dtype=np.uint8))
  out = stream.eval_image(img, 32, 37)
  assert out.shape == (32, 32, 3)
  with pytest.raises(ValueError, match="dataset.augment"):
    stream.parse_augment("rrc,shift")


# ----------------------------------------------------------------------------------------------- bad input
def _broken_copy(src, dst, edit):
  import shutil

  shutil.copytree(src, dst)
  edit(str(dst))
  return str(dst)


def _rewrite(path, old, new):
  text = open(path).read()
  open(path, "w").write(text.replace(old, new, 1))


@pytest.mark.parametrize(
  "case, edit, expect",
  [
    ("missing list", lambda d: os.remove(os.path.join(d, "clean_val_key_list.txt")), r"clean_val_key_list\.txt"),
    ("label out of range", lambda d: _rewrite(os.path.join(d, "noisy_label_kv.txt"), " 5\n", " 14\n"),
     r"noisy_label_kv\.txt:2: label 14 out of range"),
    ("key without label", lambda d: _rewrite(os.path.join(d, "clean_test_key_list.txt"), "images/", "images/x"),
     r"clean_test_key_list\.txt:1: key 'images/x"),
    ("missing image", lambda d: os.remove(os.path.join(d, "images/1/01/1.jpg")),
     r"1/01/1\.jpg' listed at .*noisy_train_key_list\.txt:2: file not found"),
    ("unreadable image", lambda d: open(os.path.join(d, "images/1/01/1.jpg"), "wb").write(b"not a jpeg"),
     r"1/01/1\.jpg' listed at .*noisy_train_key_list\.txt:2: unreadable"),
  ],
)
def test_bad_release_input_exits_3_naming_file_and_line(replicas, tmp_path, capsys, case, edit, expect):
  root = _broken_copy(replicas["clothing1m"], tmp_path / "c1m", edit)
  rc = train(tmp_path / "w", f"dataset.name=clothing1m:{root}", "train.epochs=1", *R.SHAPE)
  err = capsys.readouterr().err
  assert rc == 3, err
  import re

  assert re.search(expect, err), err


def test_webvision_label_that_is_not_an_integer(tmp_path):
  R.make_webvision(str(tmp_path), per_class=1, classes=3, size=8)
  _rewrite(str(tmp_path / "info" / "val_filelist.txt"), " 1\n", " one\n")
  with pytest.raises(data.DataError, match=r"val_filelist\.txt:2: label 'one' is not an integer"):
    releases.read_webvision(str(tmp_path))


def test_skip_unreadable_counts_in_results(replicas, tmp_path):
  def edit(d):
    open(os.path.join(d, "images/1/01/1.jpg"), "wb").write(b"broken")

  root = _broken_copy(replicas["clothing1m"], tmp_path / "c1m", edit)
  rc = train(tmp_path / "w", f"dataset.name=clothing1m:{root}", "train.epochs=1", *R.SHAPE,
             "dataset.skip_unreadable=True", "train.checkpoint_every_steps=2")
  assert rc == 0
  unreadable = json.load(open(tmp_path / "w" / "results.json"))["data"]["unreadable"]
  assert unreadable["train"] == 1 and unreadable["examples"][0].endswith("noisy_train_key_list.txt:2")


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def clothing_run(replicas, tmp_path_factory):
  """The issue's command on the Clothing-1M replica (default MLP; 28x28 inputs and small evaluation batches to keep
  the test fast)."""
  workdir = tmp_path_factory.mktemp("c1m_run")
  sets = [f"dataset.name=clothing1m:{replicas['clothing1m']}", "train.epochs=1", *R.SHAPE,
          "train.checkpoint_every_steps=2"]
  assert train(workdir, *sets) == 0
  return workdir, sets


def test_clothing1m_webvision_medmnist_run_end_to_end(replicas, clothing_run, tmp_path):
  results = json.load(open(clothing_run[0] / "results.json"))
  assert results["data"]["streamed"] and results["data"]["num_examples"] == {"train": 40, "val": 14, "test": 14}
  assert results["steps"] == 5 and np.isfinite(results["test"]["raw"]["nll"])
  inv = f"imagenet_val:{replicas['imagenet_val']}"
  # half of the training list held out: validation, test and ImageNet splits of 50 images, one metric compilation
  one_step = "train.steps_per_dispatch=1"  # no scan to compile for this class count
  rc = train(tmp_path / "wv", f"dataset.name=webvision_mini:{replicas['webvision']}", "train.epochs=1", *R.SHAPE,
             f"dataset.extra_test={inv}", "dataset.val_fraction=0.5", one_step)
  assert rc == 0
  wv = json.load(open(tmp_path / "wv" / "results.json"))
  assert wv["data"]["num_classes"] == 50 and set(wv["extra_test"]) == {inv} and wv["steps"] == 50 // 8
  assert 0 <= wv["extra_test"][inv]["raw"]["accuracy"] <= 1
  assert train(tmp_path / "med", f"dataset.name=medmnist:pathmnist:{replicas['medmnist']}", "train.epochs=1",
               *R.SHAPE, one_step) == 0
  med = json.load(open(tmp_path / "med" / "results.json"))
  assert med["data"]["num_classes"] == 9 and med["steps"] == 64 // 8


def test_run_stopped_mid_epoch_resumes_bit_exactly(replicas, clothing_run, tmp_path, monkeypatch):
  reference, sets = clothing_run
  real = stream.StreamingDataset.train_batches

  def stops_after_five_batches(self, *args, **kwargs):
    for i, batch in enumerate(real(self, *args, **kwargs)):
      if i == 4 and kwargs.get("start_step", 0) == 0:
        raise KeyboardInterrupt("stopped")  # after step 4's checkpoint, before the last of the epoch's 5 steps
      yield batch

  monkeypatch.setattr(stream.StreamingDataset, "train_batches", stops_after_five_batches)
  assert train(tmp_path / "w", *sets, "train.steps_per_dispatch=1") == 130  # the command line's Ctrl-C exit
  assert not (tmp_path / "w" / "results.json").exists()
  assert train(tmp_path / "w", *sets, "train.steps_per_dispatch=1") == 0
  resumed = json.load(open(tmp_path / "w" / "results.json"))
  first = json.load(open(reference / "results.json"))
  assert resumed["resumed_from_step"] == 4 and first["resumed_from_step"] == 0
  assert resumed["test"]["raw"] == first["test"]["raw"]
  a, b = np.load(reference / "predictions.npz"), np.load(tmp_path / "w" / "predictions.npz")
  for key in a.files:
    np.testing.assert_array_equal(a[key], b[key])


def test_training_over_data_larger_than_a_memory_limit(clothing_run, tmp_path):
  """800 JPEGs at 224x224 decode to 120 MB of uint8 (482 MB as float32); one epoch of training with the default
  MLP (one hidden unit: 150k weights, a cheap step on 8 CPU devices) must allocate less than half of that, 60 MB, of
  NumPy/Python memory at its peak (tracemalloc follows NumPy's buffers), so the images cannot have been held in memory
  together (about 32 MB measured). What it may hold: the reader's batches in flight and ready (2 + 2, 4.8 MB each as
  float32) and the batch on its way to the device, one step per dispatch (``train.steps_per_dispatch=1``; by default
  a dispatch stacks up to 32 MB of batches, which would need a replica twice as large to stay under half its size).
  (After ``clothing_run``: the modules a run imports are loaded before tracing starts, so their objects do not
  count.)"""
  root = str(tmp_path / "c1m")
  R.make_clothing1m(root, n_train=800, size=224, same_image=True)
  decoded = 800 * 224 * 224 * 3
  limit = decoded // 2
  tracemalloc.start()
  try:
    rc = train(tmp_path / "w", f"dataset.name=clothing1m:{root}", "train.epochs=1", "train.batch_size=8",
               "model.kwargs={'hidden': (1,)}", "train.log_every_steps=100", "train.steps_per_dispatch=1",
               "dataset.resize=224", "dataset.augment=flip")  # decode and flip only: no resampling to pay for
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert rc == 0
  results = json.load(open(tmp_path / "w" / "results.json"))
  assert results["steps"] == 100 and results["data"]["num_examples"]["train"] == 800
  assert peak < limit, f"peak traced memory {peak / 2**20:.0f} MB"
