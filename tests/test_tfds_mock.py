"""Every supported TFDS dataset through the full pipeline, with ``tfds.testing.mock_data`` (no download)."""

import json

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

import gence_jax.data as D  # noqa: E402

N = 60  # mock examples per split

CASES = {
  # name: (num_classes, input_shape, regimes, default augmentation)
  "cifar10": (10, (32, 32, 3), "asym10:0.4", "crop_flip"),
  "cifar100": (100, (32, 32, 3), "asym100:0.3", "crop_flip"),
  "svhn_cropped": (10, (32, 32, 3), "symmetric:0.4", "crop"),
  "fashion_mnist": (10, (28, 28, 1), "pairflip:0.2", "crop_flip"),
  "mnist": (10, (28, 28, 1), "symmetric_tm:0.3", "none"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_tfds_mock_full_pipeline(name, tmp_path):
  k, shape, regimes, aug = CASES[name]
  with tfds.testing.mock_data(num_examples=N):
    raw = D.load_tfds(name, data_dir=str(tmp_path))
    ds = D.load_dataset(name, seed=0, data_dir=str(tmp_path), regimes=regimes)
    ds_again = D.load_dataset(name, seed=0, data_dir=str(tmp_path), regimes=regimes)
  assert raw.x_train.shape == (N, *shape) and raw.x_train.dtype == np.uint8
  assert ds.num_classes == k and ds.input_shape == shape and ds.default_augment == aug
  assert ds.info["source"] == {**ds.info["source"], "kind": "tfds", "tfds_name": name}
  assert ds.info["num_examples"] == {"train": N - round(0.1 * N), "val": round(0.1 * N), "test": N}
  # the split loses / duplicates nothing (ids index into the TFDS train split)
  np.testing.assert_array_equal(np.sort(np.concatenate([ds.ids_train, ds.ids_val])), np.arange(N))
  np.testing.assert_array_equal(ds.x_train, raw.x_train[ds.ids_train])
  np.testing.assert_array_equal(ds.y_train_clean, raw.y_train[ds.ids_train])
  # regimes on train and val, never on test
  np.testing.assert_array_equal(ds.x_test, raw.x_test)
  np.testing.assert_array_equal(ds.y_test, raw.y_test)
  rec = ds.info["regimes"][0]
  assert rec["spec"] == regimes and set(rec) >= {"train", "val"}
  assert rec["train"]["num_flipped"] == int((ds.y_train != ds.y_train_clean).sum())
  json.dumps(ds.info)
  np.testing.assert_array_equal(ds.y_train, ds_again.y_train)
  # train statistics
  np.testing.assert_allclose(ds.normalizer.mean, ds.x_train.reshape(-1, shape[-1]).mean(0), rtol=1e-10)
  # full pipeline: augmented, normalised training batches and padded evaluation batches
  batches = list(ds.train_batches(16, num_epochs=1, with_index=True))
  assert len(batches) == (N - round(0.1 * N)) // 16
  for b in batches:
    assert b["image"].shape == (16, *shape) and b["image"].dtype == np.float32
    assert b["label"].dtype == np.int32 and b["mask"].all()
  np.testing.assert_array_equal(batches[0]["label"], ds.y_train[batches[0]["index"]])
  ev = list(ds.eval_batches("test", 16, with_index=True))
  assert len(ev) == -(-N // 16)
  np.testing.assert_array_equal(np.concatenate([b["index"][b["mask"]] for b in ev]), np.arange(N))
  dev = D.to_device(batches[0])
  assert dev["image"].shape == (16, *shape)


def test_tfds_long_tail_and_small_data_on_mock(tmp_path):
  with tfds.testing.mock_data(num_examples=400):
    ds = D.load_dataset("cifar10", seed=1, data_dir=str(tmp_path), regimes="small:20")
    lt = D.load_dataset("cifar10", seed=1, data_dir=str(tmp_path), regimes="longtail:exp:10")
  assert np.bincount(ds.y_train, minlength=10).tolist() == [20] * 10
  counts = lt.info["regimes"][0]["train"]["class_counts_after"]
  n_max = lt.info["regimes"][0]["train"]["params"]["n_max"]
  assert counts == [max(1, int(np.floor(n_max * 10 ** (-c / 9)))) for c in range(10)]
  assert np.bincount(lt.y_train, minlength=10).tolist() == counts
