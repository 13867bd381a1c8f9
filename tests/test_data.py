"""Tests of gence_jax.data: sources, splits, normalisation, augmentation, batching, sharding, device placement."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gence_jax.data as D

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_py(code: str, env_extra=None) -> str:
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env.update(env_extra or {})
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  out = subprocess.run(
    [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
  )
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


# ----------------------------------------------------------------------------------------------------------------
# Lazy imports
# ----------------------------------------------------------------------------------------------------------------


def test_import_does_not_import_tensorflow():
  out = _run_py("""
        import sys
        import gence_jax.data as D
        ds = D.load_dataset("digits", seed=0, regimes="symmetric:0.2")
        next(ds.train_batches(32)); list(ds.eval_batches("test", 64))
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets", "tf_keras"))
        print("BAD", bad)
    """)
  assert "BAD []" in out


# ----------------------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,k,frac", [(1000, 10, 0.1), (997, 7, 0.13), (55, 10, 0.2), (30, 3, 0.0)])
def test_stratified_split_partitions(n, k, frac):
  y = np.random.default_rng(0).integers(0, k, n)
  keep, held = D.stratified_split(y, frac, seed=1)
  assert len(held) == round(frac * n)
  assert len(np.intersect1d(keep, held)) == 0
  np.testing.assert_array_equal(np.sort(np.concatenate([keep, held])), np.arange(n))
  counts, held_counts = np.bincount(y, minlength=k), np.bincount(y[held], minlength=k)
  assert np.all(np.abs(held_counts - frac * counts) < 1 + 1e-9)
  keep2, held2 = D.stratified_split(y, frac, seed=1)
  np.testing.assert_array_equal(held, held2)
  if held.size:
    assert not np.array_equal(held, D.stratified_split(y, frac, seed=2)[1])


def test_dataset_split_tracks_every_example():
  n, k = 503, 7
  rng = np.random.default_rng(0)
  y = rng.integers(0, k, n)
  x = np.arange(n, dtype=np.float32)[:, None] + 0.5
  ds = D.from_arrays(x, y, x[:5], y[:5], seed=11)
  ids = np.concatenate([ds.ids_train, ds.ids_val])
  np.testing.assert_array_equal(np.sort(ids), np.arange(n))
  np.testing.assert_array_equal(ds.x_train[:, 0] - 0.5, ds.ids_train)
  np.testing.assert_array_equal(ds.x_val[:, 0] - 0.5, ds.ids_val)
  np.testing.assert_array_equal(ds.y_train, y[ds.ids_train])
  assert len(ds.ids_val) == round(0.1 * n)
  assert ds.info["num_examples"] == {"train": n - round(0.1 * n), "val": round(0.1 * n), "test": 5}
  json.dumps(ds.info)


def test_load_dataset_deterministic():
  a = D.load_dataset("digits", seed=5, regimes="pairflip:0.3")
  b = D.load_dataset("digits", seed=5, regimes="pairflip:0.3")
  c = D.load_dataset("digits", seed=6, regimes="pairflip:0.3")
  for f in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
    np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
  assert a.info == b.info
  assert not np.array_equal(a.ids_val, c.ids_val)
  np.testing.assert_array_equal(a.x_test, c.x_test)  # fixed test_seed: the test set does not move with seed


# ----------------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------------


def test_digits_source():
  ds = D.load_dataset("digits", seed=0)
  total = len(ds.y_train) + len(ds.y_val) + len(ds.y_test)
  assert total == 1797 and ds.num_classes == 10 and ds.input_shape == (64,)
  assert len(ds.y_test) == round(0.2 * 1797)
  assert len(ds.y_val) == round(0.1 * (1797 - 359))
  assert sorted(next(ds.train_batches(32))) == ["label", "mask", "x"]
  img = D.load_dataset("digits", seed=0, as_images=True)
  assert img.input_shape == (8, 8, 1) and img.x_train.dtype == np.float32
  np.testing.assert_array_equal(img.x_train.reshape(len(img.x_train), -1), ds.x_train)
  b = next(img.train_batches(32))
  assert b["x"].shape == (32, 8, 8, 1)


def _write_npz(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def test_npz_sources(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (120, 32, 32, 3), dtype=np.uint8)
  y = np.repeat(np.arange(4), 30)
  p1 = _write_npz(tmp_path / "full.npz", x_train=x[:100], y_train=y[:100], x_test=x[100:], y_test=y[100:])
  ds = D.load_dataset(p1, seed=0)
  assert ds.num_classes == 4 and ds.input_shape == (32, 32, 3) and ds.default_augment == "crop_flip"
  np.testing.assert_array_equal(ds.x_test, x[100:])
  assert ds.info["source"]["kind"] == "npz"
  p2 = _write_npz(tmp_path / "xy.npz", x=x, y=y)
  ds2 = D.load_dataset(p2, seed=0, test_fraction=0.25)
  assert len(ds2.y_test) == 30 and sorted(np.bincount(ds2.y_test).tolist()) == [7, 7, 8, 8]
  assert len(ds2.y_train) + len(ds2.y_val) == 90
  p3 = _write_npz(
    tmp_path / "withval.npz",
    x_train=x[:80],
    y_train=y[:80],
    x_val=x[80:100],
    y_val=y[80:100],
    x_test=x[100:],
    y_test=y[100:],
  )
  ds3 = D.load_dataset(p3, seed=0)
  np.testing.assert_array_equal(ds3.x_val, x[80:100])
  assert ds3.info["validation"]["source"] == "given"
  p4 = _write_npz(tmp_path / "bad.npz", a=x)
  with pytest.raises(ValueError, match="x_train"):
    D.load_dataset(p4, seed=0)
  p5 = _write_npz(tmp_path / "range.npz", x=x, y=y, num_classes=np.array(3))
  with pytest.raises(ValueError, match="y_train"):
    D.load_dataset(p5, seed=0)


def test_mapping_source():
  x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
  y = np.arange(40) % 4
  ds = D.load_dataset({"x": x, "y": y}, seed=0)
  assert ds.num_classes == 4 and sorted(next(ds.eval_batches("test", 8))) == ["label", "mask", "x"]


def test_unknown_and_missing(tmp_path):
  with pytest.raises(ValueError, match="imagenet22k"):
    D.load_dataset("imagenet22k", seed=0)
  missing = str(tmp_path / "nope.npz")
  with pytest.raises(FileNotFoundError, match="nope.npz"):
    D.load_dataset(missing, seed=0)
  with pytest.raises(FileNotFoundError, match="nofolder"):
    D.load_dataset("tiny_imagenet:" + str(tmp_path / "nofolder"), seed=0)
  with pytest.raises(ValueError, match="val_fraction"):
    D.load_dataset("digits", seed=0, val_fraction=1.0)
  with pytest.raises(ValueError, match="rate"):
    D.load_dataset("digits", seed=0, regimes="symmetric:1.0")
  with pytest.raises(ValueError, match="n_per_class"):
    D.load_dataset("digits", seed=0, regimes="small:1000")
  with pytest.raises(ValueError, match="labels|y_train"):
    D.from_arrays(np.zeros((4, 2)), np.array([0, 1, 2, 5]), seed=0, num_classes=3)


def _make_tiny_imagenet(root, wnids, n_train=4, n_val=2, size=16):
  from PIL import Image

  os.makedirs(root / "val" / "images")
  (root / "wnids.txt").write_text("\n".join(wnids) + "\n")  # deliberately unsorted order
  (root / "words.txt").write_text("".join(f"{w}\tname of {w}\n" for w in wnids))
  order = sorted(wnids)
  value = lambda w, j: 30 * order.index(w) + 5 * j + 10  # noqa: E731 - constant pixel value encodes (class, j)
  for w in wnids:
    d = root / "train" / w / "images"
    os.makedirs(d)
    (root / "train" / w / f"{w}_boxes.txt").write_text("")
    for j in range(n_train):
      mode = "L" if j == 1 else "RGB"  # one greyscale JPEG per class, as in the real archive
      im = Image.new(mode, (size, size), value(w, j) if mode == "L" else (value(w, j),) * 3)
      im.save(d / f"{w}_{j}.JPEG", format="JPEG", quality=95)
  lines = []
  k = 0
  for w in wnids:
    for j in range(n_val):
      Image.new("RGB", (size, size), (value(w, j),) * 3).save(
        root / "val" / "images" / f"val_{k}.JPEG", format="JPEG", quality=95
      )
      lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t{size}\t{size}")
      k += 1
  (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
  return value


def test_tiny_imagenet_folder(tmp_path):
  root = tmp_path / "tiny-imagenet-200"
  wnids = ["n03", "n01", "n02"]
  _make_tiny_imagenet(root, wnids)
  raw = D.load_tiny_imagenet(root)
  assert raw.x_train.shape == (12, 16, 16, 3) and raw.x_test.shape == (6, 16, 16, 3)
  assert raw.num_classes == 3 and raw.class_names == ("name of n01", "name of n02", "name of n03")
  # label of each image equals its sorted-wnid index, decoded from the pixel value
  for x, y in [(raw.x_train, raw.y_train), (raw.x_test, raw.y_test)]:
    decoded = np.rint((x.reshape(len(x), -1).mean(1) - 10) / 30 - 0.1).astype(int)
    np.testing.assert_array_equal(decoded, y)
  assert np.bincount(raw.y_train).tolist() == [4, 4, 4] and np.bincount(raw.y_test).tolist() == [2, 2, 2]
  ds = D.load_dataset(f"tiny_imagenet:{root}", seed=0, val_fraction=0.25)
  assert ds.info["num_examples"] == {"train": 9, "val": 3, "test": 6} and ds.default_augment == "crop_flip"
  ds2 = D.load_dataset(str(root), seed=0, val_fraction=0.25)
  np.testing.assert_array_equal(ds.x_train, ds2.x_train)
  ds3 = D.load_dataset("tiny_imagenet", data_dir=str(tmp_path), seed=0, val_fraction=0.25)
  np.testing.assert_array_equal(ds.x_test, ds3.x_test)
  cache = tmp_path / "cache.npz"
  D.load_tiny_imagenet(root, cache_path=cache)
  again = D.load_tiny_imagenet(root, cache_path=cache)
  np.testing.assert_array_equal(again.x_train, raw.x_train)
  np.testing.assert_array_equal(again.y_test, raw.y_test)
  with pytest.raises(FileNotFoundError, match="wnids"):
    os.remove(root / "wnids.txt")
    D.load_tiny_imagenet(root)


# ----------------------------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------------------------


def test_normalisation_uses_train_statistics_only():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 100, (200, 8, 8, 3), dtype=np.uint8)
  x[:, :, :, 1] += 50
  y = np.arange(200) % 4
  x_test = np.full((20, 8, 8, 3), 255, np.uint8)  # wildly different: must not move the statistics
  ds = D.from_arrays(x, y, x_test, y[:20], seed=0)
  xt = ds.x_train.astype(np.float64)
  mean = np.array([xt[..., c].mean() for c in range(3)])
  std = np.array([xt[..., c].std() for c in range(3)])
  np.testing.assert_allclose(ds.normalizer.mean, mean, rtol=1e-12)
  np.testing.assert_allclose(ds.normalizer.std, std, rtol=1e-12)
  assert ds.info["normalization"]["mean"] == pytest.approx(mean.tolist())
  full = np.concatenate([ds.x_train, ds.x_val]).astype(np.float64)
  assert not np.allclose(ds.normalizer.mean, full.reshape(-1, 3).mean(0), rtol=1e-9)
  # normalised train data has zero mean / unit std per channel
  z = np.concatenate([b["x"][b["mask"]] for b in ds.eval_batches("train", 64)]).astype(np.float64)
  np.testing.assert_allclose(z.reshape(-1, 3).mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(z.reshape(-1, 3).std(0), 1, atol=1e-5)


def test_normalizer_uint8_lookup_equals_arithmetic():
  x = np.random.default_rng(2).integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
  norm = D.compute_normalizer(x)
  fast = norm(x)  # uint8: table lookup
  slow = norm(x.astype(np.float32))  # float: arithmetic
  np.testing.assert_array_equal(fast, slow)
  ref = (x.astype(np.float64) - norm.mean) / norm.std
  np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-5)
  assert fast.dtype == np.float32


def test_normalizer_chunks_and_constant_features():
  x = np.random.default_rng(1).normal(3, 2, (101, 5))
  x[:, 2] = 7.0
  a = D.compute_normalizer(x, chunk=7)
  np.testing.assert_allclose(a.mean, x.mean(0), rtol=1e-12)
  np.testing.assert_allclose(a.std[[0, 1, 3, 4]], x.std(0)[[0, 1, 3, 4]], rtol=1e-10)
  assert a.std[2] == 1.0
  z = a(x)
  assert z.dtype == np.float32 and np.all(z[:, 2] == 0)


# ----------------------------------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------------------------------


def _reference_crop_flip(images, dy, dx, flip, pad=4):
  out = np.empty_like(images)
  n, h, w, _ = images.shape
  for i in range(n):
    padded = np.zeros((h + 2 * pad, w + 2 * pad, images.shape[3]), images.dtype)
    padded[pad : pad + h, pad : pad + w] = images[i]
    crop = padded[dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    out[i] = crop[:, ::-1] if flip[i] else crop
  return out


def test_crop_flip_matches_loop_reference():
  rng = np.random.default_rng(0)
  imgs = rng.integers(1, 256, (64, 32, 32, 3), dtype=np.uint8)
  dy, dx, f = D.crop_flip_params(np.random.default_rng(5), 64)
  got = D.apply_crop_flip(imgs, dy, dx, f)
  np.testing.assert_array_equal(got, _reference_crop_flip(imgs, dy, dx, f))
  assert got.dtype == np.uint8
  assert set(dy.tolist()) == set(range(9)) and set(dx.tolist()) == set(range(9))
  # true shift: offset (4, 4) without flip is the identity; with flip, a mirror; (0, 0) shifts down-right
  n = len(imgs)
  four, zero, no, yes = np.full(n, 4), np.zeros(n, int), np.zeros(n, bool), np.ones(n, bool)
  np.testing.assert_array_equal(D.apply_crop_flip(imgs, four, four, no), imgs)
  np.testing.assert_array_equal(D.apply_crop_flip(imgs, four, four, yes), imgs[:, :, ::-1])
  shifted = D.apply_crop_flip(imgs, zero, zero, no)
  np.testing.assert_array_equal(shifted[:, 4:, 4:], imgs[:, :-4, :-4])
  assert np.all(shifted[:, :4] == 0) and np.all(shifted[:, :, :4] == 0)


def test_random_crop_flip_seeded():
  imgs = np.random.default_rng(0).integers(0, 256, (128, 32, 32, 3), dtype=np.uint8)
  a = D.random_crop_flip(imgs, 3)
  b = D.random_crop_flip(imgs, 3)
  c = D.random_crop_flip(imgs, 4)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  dy, dx, f = D.crop_flip_params(np.random.default_rng(3), 128)
  np.testing.assert_array_equal(a, _reference_crop_flip(imgs, dy, dx, f))
  _, _, f = D.crop_flip_params(np.random.default_rng(0), 20000)
  assert abs(f.mean() - 0.5) < 0.02


# ----------------------------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------------------------


def _ids_dataset(n=103, k=5):
  y = np.arange(n) % k
  x = np.arange(n, dtype=np.float32)[:, None]
  return x, y


def test_train_epoch_order_and_drop_remainder():
  x, y = _ids_dataset(103)
  it = D.train_batches(x, y, batch_size=10, seed=0, num_epochs=2, with_index=True)
  batches = list(it)
  assert len(batches) == 20 and all(b["x"].shape == (10, 1) for b in batches)
  for e in range(2):
    ids = np.concatenate([b["index"] for b in batches[10 * e : 10 * (e + 1)]])
    assert len(np.unique(ids)) == 100  # no duplicate within an epoch, 3 dropped
    np.testing.assert_array_equal(np.concatenate([b["x"][:, 0] for b in batches[10 * e : 10 * e + 10]]), ids)
    perm = np.random.default_rng(D.derive_seed(0, "shuffle", e)).permutation(103)
    np.testing.assert_array_equal(ids, perm[:100])
  assert not np.array_equal(batches[0]["index"], batches[10]["index"])  # reshuffled each epoch
  assert all(b["mask"].all() and b["label"].dtype == np.int32 for b in batches)
  again = list(D.train_batches(x, y, batch_size=10, seed=0, num_epochs=2, with_index=True))
  assert all(np.array_equal(a["index"], b["index"]) for a, b in zip(batches, again))
  other = next(D.train_batches(x, y, batch_size=10, seed=1, with_index=True))
  assert not np.array_equal(other["index"], batches[0]["index"])


def test_train_keep_remainder_pads_with_mask():
  x, y = _ids_dataset(103)
  batches = list(D.train_batches(x, y, batch_size=10, seed=0, num_epochs=1, drop_remainder=False, with_index=True))
  assert len(batches) == 11 and batches[-1]["x"].shape == (10, 1)
  assert batches[-1]["mask"].sum() == 3
  ids = np.concatenate([b["index"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(np.sort(ids), np.arange(103))
  assert np.all(batches[-1]["index"][~batches[-1]["mask"]] == -1)


def test_train_resume_from_step_and_augmentation_deterministic():
  imgs = np.random.default_rng(0).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
  y = np.arange(50) % 10
  norm = D.compute_normalizer(imgs)
  kw = dict(batch_size=8, seed=3, augment="crop_flip", normalizer=norm, with_index=True)
  full = list(D.train_batches(imgs, y, num_epochs=3, **kw))
  resumed = list(D.train_batches(imgs, y, num_epochs=3, start_step=7, **kw))
  assert len(full) == 18 and len(resumed) == 11
  for a, b in zip(full[7:], resumed):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  # each training batch is exactly the seeded crop/flip of its rows, then normalised
  b0 = full[4]
  epoch, step = divmod(4, 6)
  dy, dx, f = D.crop_flip_params(np.random.default_rng(D.derive_seed(3, "augment", epoch, step)), 8)
  ref = norm(_reference_crop_flip(imgs[b0["index"]], dy, dx, f))
  np.testing.assert_allclose(b0["x"], ref, rtol=0, atol=1e-6)
  assert b0["x"].dtype == np.float32


def test_threaded_batches_identical():
  imgs = np.random.default_rng(0).integers(0, 256, (90, 32, 32, 3), dtype=np.uint8)
  y = np.arange(90) % 10
  norm = D.compute_normalizer(imgs)
  kw = dict(batch_size=8, seed=2, augment="crop_flip", normalizer=norm, with_index=True, num_epochs=2)
  plain = list(D.train_batches(imgs, y, **kw))
  threaded = list(D.train_batches(imgs, y, num_workers=3, **kw))
  assert len(plain) == len(threaded) == 22
  for a, b in zip(plain, threaded):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  ev = list(D.eval_batches(imgs, y, batch_size=16, num_workers=2, with_index=True))
  np.testing.assert_array_equal(np.concatenate([b["index"][b["mask"]] for b in ev]), np.arange(90))
  it = D.train_batches(imgs, y, num_workers=2, batch_size=8, seed=0)  # infinite; closing must not hang
  next(it)
  it.close()


def test_normalizer_apply_jax_matches_numpy():
  x = np.random.default_rng(3).integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
  norm = D.compute_normalizer(x)
  np.testing.assert_allclose(np.asarray(norm.apply_jax(x)), norm(x), rtol=1e-6, atol=1e-6)


def test_eval_never_drops():
  x, y = _ids_dataset(103)
  batches = list(D.eval_batches(x, y, batch_size=16, with_index=True))
  assert len(batches) == 7 and all(b["x"].shape == (16, 1) for b in batches)
  m = batches[-1]["mask"]
  assert m.sum() == 103 - 96 and m[:7].all() and not m[7:].any()
  ids = np.concatenate([b["index"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(ids, np.arange(103))
  np.testing.assert_array_equal(np.concatenate([b["x"][b["mask"], 0] for b in batches]), np.arange(103))
  np.testing.assert_array_equal(np.concatenate([b["label"][b["mask"]] for b in batches]), y)
  assert np.all(batches[-1]["x"][~m] == 0)


@pytest.mark.parametrize("pc", [2, 4, 8])
def test_multihost_shards_union_is_global_batch(pc):
  imgs = np.random.default_rng(0).integers(0, 256, (77, 32, 32, 3), dtype=np.uint8)
  y = np.arange(77) % 10
  norm = D.compute_normalizer(imgs)
  kw = dict(batch_size=16, seed=1, augment="crop_flip", normalizer=norm, with_index=True, num_epochs=2)
  single = list(D.train_batches(imgs, y, process_index=0, process_count=1, **kw))
  per_proc = [list(D.train_batches(imgs, y, process_index=p, process_count=pc, **kw)) for p in range(pc)]
  assert all(len(pp) == len(single) for pp in per_proc)
  for t, g in enumerate(single):
    locs = [pp[t] for pp in per_proc]
    assert all(lb["x"].shape[0] == 16 // pc for lb in locs)
    idx = [lb["index"] for lb in locs]
    assert len(np.unique(np.concatenate(idx))) == 16  # no overlap between processes
    for k in g:
      np.testing.assert_array_equal(np.concatenate([lb[k] for lb in locs]), g[k])  # union == global batch
  ev_single = list(D.eval_batches(imgs, y, batch_size=16, process_index=0, process_count=1, with_index=True))
  ev = [
    list(D.eval_batches(imgs, y, batch_size=16, process_index=p, process_count=pc, with_index=True)) for p in range(pc)
  ]
  assert all(len(e) == len(ev_single) == 5 for e in ev)
  seen = np.concatenate([b["index"][b["mask"]] for e in ev for b in e])
  np.testing.assert_array_equal(np.sort(seen), np.arange(77))
  for t, g in enumerate(ev_single):
    np.testing.assert_array_equal(np.concatenate([e[t]["mask"] for e in ev]), g["mask"])


def test_multihost_bad_arguments():
  x, y = _ids_dataset(40)
  with pytest.raises(ValueError, match="batch_size"):
    next(D.train_batches(x, y, batch_size=10, seed=0, process_index=0, process_count=4))
  with pytest.raises(ValueError, match="process_index"):
    next(D.eval_batches(x, y, batch_size=8, process_index=4, process_count=4))
  assert D.local_batch_slice(32, 3, 4) == slice(24, 32)


def test_dataset_iterators():
  ds = D.load_dataset("digits", seed=0)
  assert ds.steps_per_epoch(64) == len(ds.y_train) // 64
  n = sum(b["mask"].sum() for b in ds.eval_batches("val", 50))
  assert n == len(ds.y_val)
  b = next(ds.train_batches(32, normalize=False))
  assert b["x"].dtype == np.float32 and b["x"].max() > 1  # raw 0..16 pixel counts
  with pytest.raises(ValueError, match="split"):
    ds.eval_batches("holdout", 8)


# ----------------------------------------------------------------------------------------------------------------
# Device placement
# ----------------------------------------------------------------------------------------------------------------


def test_to_device_and_prefetch_single_device():
  import jax

  x, y = _ids_dataset(40)
  batches = list(D.eval_batches(x, y, batch_size=8))
  sh = D.batch_sharding()
  out = list(D.prefetch_to_device(iter(batches), size=2, sharding=sh))
  assert len(out) == 5
  for a, b in zip(out, batches):
    assert isinstance(a["x"], jax.Array) and a["x"].sharding == sh
    for k in b:
      np.testing.assert_array_equal(np.asarray(a[k]), b[k])


def test_to_device_sharded_over_fake_devices():
  out = _run_py(
    """
        import numpy as np, jax
        import gence_jax.data as D
        assert jax.device_count() == 4
        x = np.arange(64, dtype=np.float32).reshape(16, 4)
        y = np.arange(16) % 3
        b = next(D.eval_batches(x, y, batch_size=16, with_index=True))
        sh = D.batch_sharding()
        g = D.to_device(b, sh)
        assert g["x"].shape == (16, 4) and g["x"].sharding == sh
        for s in g["x"].addressable_shards:
            np.testing.assert_array_equal(np.asarray(s.data), x[s.index])
            assert s.data.shape == (4, 4)
        np.testing.assert_array_equal(np.asarray(g["index"]), np.arange(16))
        f = jax.jit(lambda bb: (bb["x"].sum(), bb["mask"].sum()))
        s, m = f(g)
        assert float(s) == x.sum() and int(m) == 16
        print("OK")
    """,
    env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"},
  )
  assert "OK" in out


# ----------------------------------------------------------------------------------------------------------------
# CIFAR-N label sets by name, without the tfds: prefix
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "name, tfds_name",
  [
    ("cifar10_n/worst", "cifar10_n/worst"),
    ("cifar10_n/aggregate", "cifar10_n/aggregate"),
    ("cifar10_n/random1", "cifar10_n/random1"),
    ("cifar10_n/random2", "cifar10_n/random2"),
    ("cifar10_n/random3", "cifar10_n/random3"),
    ("cifar100_n/noisy_fine", "cifar100_n/noisy_fine"),
    ("cifar100_n/noisy_coarse", "cifar100_n/noisy_coarse"),
    ("CIFAR10_N/Aggre", "cifar10_n/aggregate"),
    ("cifar100_n/coarse", "cifar100_n/noisy_coarse"),
    ("cifar10_n/random_label2:1.0.4", "cifar10_n/random2:1.0.4"),
    ("cifar10_n", "cifar10_n"),
  ],
)
def test_parse_cifar_n_names_without_prefix(name, tfds_name):
  spec = D.parse_dataset_spec(name, "/d")
  assert spec == D.DatasetSpec("tfds", name, tfds_name=tfds_name, data_dir="/d")
  D.check_dataset_spec(spec)  # accepted by the config check, nothing loaded
  # the same name as the tfds: form gives (canonical label set aside)
  assert D.parse_dataset_spec(f"tfds:{tfds_name}").tfds_name == tfds_name


def test_parse_cifar_n_unknown_label_set():
  with pytest.raises(ValueError, match=r"^parse_dataset_spec: `name` 'cifar10_n/noisy_fine': the label set of cifar10"):
    D.parse_dataset_spec("cifar10_n/noisy_fine")
  with pytest.raises(ValueError, match=r"^parse_dataset_spec: `name` 'cifar100_n/': .*\['noisy_fine', 'noisy_coa"):
    D.parse_dataset_spec("cifar100_n/")
  with pytest.raises(ValueError, match=r"^parse_dataset_spec: `name` 'cifar10_n/worst:' has no version"):
    D.parse_dataset_spec("cifar10_n/worst:")
  # load_dataset fails on the name before importing TensorFlow, naming the label sets
  with pytest.raises(ValueError, match=r"^unknown dataset 'cifar10_n/best' \(.*'worst', 'aggregate'"):
    D.load_dataset("cifar10_n/best", seed=0)
  with pytest.raises(ValueError, match=r"config key 'dataset.name': unknown dataset 'cifar10_n/best'"):
    D.check_dataset_name("cifar10_n/best", None)


def test_grayscale_npz_images_get_one_channel_and_one_mean(tmp_path):
  """[N, H, W] uint8 images (MNIST's layout) are grayscale: one channel, normalised with the training split's single
  mean and std over all pixels (not per image column)."""
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, size=(60, 6, 5), dtype=np.uint8)
  y = np.arange(60) % 3
  path = tmp_path / "gray.npz"
  np.savez(path, x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
  raw = D.load_npz(path)
  assert raw.x_train.shape == (40, 6, 5, 1) and raw.x_test.shape == (20, 6, 5, 1)
  ds = D.build_dataset(raw, seed=0, val_fraction=0.25)
  train_pixels = ds.x_train.astype(np.float64)
  assert ds.info["normalization"]["mean"] == pytest.approx([train_pixels.mean()], rel=1e-6)
  assert ds.info["normalization"]["std"] == pytest.approx([train_pixels.std()], rel=1e-6)
