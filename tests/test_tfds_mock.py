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
  "cifar100": (100, (32, 32, 3), "asym100_blocks:0.3", "crop_flip"),
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
  assert ds.info["clean_labels"] == "before_regimes"
  json.dumps(ds.info)
  np.testing.assert_array_equal(ds.y_train, ds_again.y_train)
  # train statistics
  np.testing.assert_allclose(ds.normalizer.mean, ds.x_train.reshape(-1, shape[-1]).mean(0), rtol=1e-10)
  # full pipeline: augmented, normalised training batches and padded evaluation batches
  batches = list(ds.train_batches(16, num_epochs=1, with_index=True))
  assert len(batches) == (N - round(0.1 * N)) // 16
  for b in batches:
    assert b["x"].shape == (16, *shape) and b["x"].dtype == np.float32
    assert b["label"].dtype == np.int32 and b["mask"].all()
  np.testing.assert_array_equal(batches[0]["label"], ds.y_train[batches[0]["index"]])
  ev = list(ds.eval_batches("test", 16, with_index=True))
  assert len(ev) == -(-N // 16)
  np.testing.assert_array_equal(np.concatenate([b["index"][b["mask"]] for b in ev]), np.arange(N))
  dev = D.to_device(batches[0])
  assert dev["x"].shape == (16, *shape)


def test_tfds_long_tail_and_small_data_on_mock(tmp_path):
  with tfds.testing.mock_data(num_examples=400):
    ds = D.load_dataset("cifar10", seed=1, data_dir=str(tmp_path), regimes="small:20")
    lt = D.load_dataset("cifar10", seed=1, data_dir=str(tmp_path), regimes="longtail:exp:10")
  assert np.bincount(ds.y_train, minlength=10).tolist() == [20] * 10
  counts = lt.info["regimes"][0]["train"]["class_counts_after"]
  n_max = lt.info["regimes"][0]["train"]["params"]["n_max"]
  assert counts == [max(1, int(np.floor(n_max * 10 ** (-c / 9)))) for c in range(10)]
  assert np.bincount(lt.y_train, minlength=10).tolist() == counts


# ----------------------------------------------------------------------------------------------------------------
# CIFAR-10N / CIFAR-100N (real human label noise) through their TFDS builders
# ----------------------------------------------------------------------------------------------------------------

CIFAR_N_FEATURES = {
  # (builder, label set): (TFDS feature of the noisy labels, of the clean labels, number of classes)
  ("cifar10_n", "worst"): ("worse_label", "label", 10),
  ("cifar10_n", "aggregate"): ("aggre_label", "label", 10),
  ("cifar10_n", "random1"): ("random_label1", "label", 10),
  ("cifar10_n", "random2"): ("random_label2", "label", 10),
  ("cifar10_n", "random3"): ("random_label3", "label", 10),
  ("cifar100_n", "noisy_fine"): ("noise_label", "label", 100),
  ("cifar100_n", "noisy_coarse"): ("noise_label", "coarse_label", 20),
}


def _tfds_features(name, split, data_dir):
  """The builder's own examples, read straight from TFDS (the reference)."""
  ds = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
  rows = list(tfds.as_numpy(ds))
  return {k: np.stack([r[k] for r in rows]) for k in rows[0] if k != "id"}


@pytest.mark.parametrize("name", ["cifar10_n", "cifar100_n"])
def test_cifar_n_label_sets_on_mock(name, tmp_path):
  from test_regimes import COARSE_OF_FINE

  n = 40
  with tfds.testing.mock_data(num_examples=n):
    ref_tr = _tfds_features(name, "train", str(tmp_path))
    ref_te = _tfds_features(name, "test", str(tmp_path))
    raws = {ls: D.load_tfds(f"{name}/{ls}", data_dir=str(tmp_path)) for (b, ls) in CIFAR_N_FEATURES if b == name}
    default = D.load_tfds(name, data_dir=str(tmp_path))
  for ls, raw in raws.items():
    noisy_key, clean_key, k = CIFAR_N_FEATURES[(name, ls)]
    noisy = ref_tr[noisy_key].astype(int)
    if ls == "noisy_coarse":
      noisy = np.asarray(COARSE_OF_FINE)[noisy]
    clean = ref_tr[clean_key].astype(int)
    assert raw.num_classes == k and raw.name == f"{name}/{ls}"
    np.testing.assert_array_equal(raw.x_train, ref_tr["image"])
    np.testing.assert_array_equal(raw.y_train, noisy)
    np.testing.assert_array_equal(raw.y_train_clean, clean)
    np.testing.assert_array_equal(raw.y_test, ref_te[clean_key])
    np.testing.assert_array_equal(raw.x_test, ref_te["image"])
    src = raw.source
    assert src["tfds_name"] == name and src["label_set"] == ls and src["clean_label_feature"] == clean_key
    assert src["noise_rate"] == pytest.approx(np.mean(noisy != clean))
    assert src["num_noisy"] == int(np.sum(noisy != clean))
    counts = np.zeros((k, k), int)
    np.add.at(counts, (clean, noisy), 1)
    np.testing.assert_array_equal(src["transition_counts"], counts)
    json.dumps(src)
  first = next(iter(D.CIFAR_N_LABEL_SETS[name]))
  assert default.source["label_set"] == first == ("worst" if name == "cifar10_n" else "noisy_fine")
  np.testing.assert_array_equal(default.y_train, raws[first].y_train)


def test_cifar10_n_through_load_dataset_keeps_clean_labels(tmp_path):
  n = 200
  with tfds.testing.mock_data(num_examples=n):
    raw = D.load_cifar_n("cifar10_n", label_set="aggre", data_dir=str(tmp_path))
    ds = D.load_dataset("tfds:cifar10_n/aggregate", seed=0, data_dir=str(tmp_path), regimes="symmetric:0.2")
    ds_default = D.load_dataset("cifar10_n", seed=0, data_dir=str(tmp_path))
  assert ds.num_classes == 10 and ds.default_augment == "crop_flip"
  assert ds.info["source"]["label_set"] == "aggregate"
  assert ds.info["source"]["noise_rate"] == pytest.approx(np.mean(raw.y_train != raw.y_train_clean))
  # the human labels are the starting labels of the regimes; the clean labels are the true ones of the same rows
  np.testing.assert_array_equal(ds.y_train_clean, raw.y_train_clean[ds.ids_train])
  true_train = raw.y_train_clean[ds.ids_train]
  assert 0 < np.mean(true_train != ds.y_train)
  # the regime flips exactly 20% of the human labels it starts from
  assert (ds.y_train != raw.y_train[ds.ids_train]).sum() == round(0.2 * len(ds.y_train))
  assert ds.info["regimes"][0]["train"]["num_flipped"] == round(0.2 * len(ds.y_train))
  np.testing.assert_array_equal(ds.y_test, raw.y_test)
  assert ds_default.info["source"]["label_set"] == "worst"
  json.dumps(ds.info)


@pytest.mark.parametrize("name, label_set", [("cifar10_n", "aggregate"), ("cifar100_n", "noisy_coarse")])
def test_cifar_n_noise_is_measured_against_the_true_labels(name, label_set, tmp_path):
  from test_regimes import COARSE_OF_FINE

  n = 200
  noisy_key, clean_key, k = CIFAR_N_FEATURES[(name, label_set)]
  with tfds.testing.mock_data(num_examples=n):
    ref = _tfds_features(name, "train", str(tmp_path))
    ds = D.load_dataset(f"{name}/{label_set}", seed=0, data_dir=str(tmp_path))
    sym = D.load_dataset(f"{name}/{label_set}", seed=0, data_dir=str(tmp_path), regimes="symmetric:0.2")
  human = ref[noisy_key].astype(int)
  if label_set == "noisy_coarse":
    human = np.asarray(COARSE_OF_FINE)[human]
  true = ref[clean_key].astype(int)
  assert ds.num_classes == k and ds.info["source"]["label_set"] == label_set
  assert ds.info["clean_labels"] == sym.info["clean_labels"] == "source"
  np.testing.assert_array_equal(np.sort(np.concatenate([ds.ids_train, ds.ids_val])), np.arange(n))
  for split in ("train", "val"):
    ids = getattr(ds, f"ids_{split}")
    # no regime: the labels are the human ones, the clean ones the builder's clean feature
    np.testing.assert_array_equal(getattr(ds, f"y_{split}"), human[ids])
    np.testing.assert_array_equal(getattr(ds, f"y_{split}_clean"), true[ids])
    rate = float(np.mean(human[ids] != true[ids]))
    assert 0 < rate < 1
    assert ds.info["label_noise"][split] == pytest.approx(rate, abs=1e-12)
    assert ds.info["class_counts_clean"][split] == np.bincount(true[ids], minlength=k).tolist()
    # symmetric:0.2 flips exactly 20% of the human labels; the recorded noise counts human and added noise
    ids_s = getattr(sym, f"ids_{split}")
    y_s = getattr(sym, f"y_{split}")
    np.testing.assert_array_equal(getattr(sym, f"y_{split}_clean"), true[ids_s])
    assert int(np.sum(y_s != human[ids_s])) == round(0.2 * len(ids_s))
    assert sym.info["regimes"][0][split]["num_flipped"] == round(0.2 * len(ids_s))
    assert sym.info["label_noise"][split] == pytest.approx(float(np.mean(y_s != true[ids_s])), abs=1e-12)
  json.dumps(sym.info)


def test_cifar_n_unknown_label_set():
  with pytest.raises(ValueError, match=r"^load_cifar_n: `label_set` for cifar10_n must be one of"):
    D.load_cifar_n("cifar10_n", label_set="noisy_fine")
  with pytest.raises(ValueError, match=r"^load_cifar_n: `name`"):
    D.load_cifar_n("cifar10")
