"""Tests of gence_jax.data.regimes against independent computations."""

import json
import math

import numpy as np
import pytest

from gence_jax.data import regimes as R
from gence_jax.data import from_arrays, parse_regimes


def _labels(n, k, seed=0):
  return np.random.default_rng(seed).integers(0, k, size=n)


def _balanced(n_per_class, k, seed=0):
  y = np.repeat(np.arange(k), n_per_class)
  return np.random.default_rng(seed).permutation(y)


# ----------------------------------------------------------------------------------------------------------------
# Symmetric noise
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "n,k,rate", [(1000, 10, 0.4), (997, 10, 0.35), (501, 2, 0.2), (3000, 100, 0.8), (50, 10, 0.0), (7, 3, 0.5)]
)
def test_symmetric_exact_count_and_never_to_self(n, k, rate):
  y = _labels(n, k)
  new, rec = R.symmetric_noise(y, k, rate=rate, seed=3)
  changed = new != y
  assert changed.sum() == round(rate * n)  # exactly round(rate*n), so no chosen example kept its label
  assert rec["num_flipped"] == round(rate * n)
  assert rec["realised_rate"] == pytest.approx(round(rate * n) / n)
  assert new.min() >= 0 and new.max() < k
  assert rec["class_counts_before"] == np.bincount(y, minlength=k).tolist()
  assert rec["class_counts_after"] == np.bincount(new, minlength=k).tolist()
  assert rec["flipped_per_class"] == np.bincount(y[changed], minlength=k).tolist()
  json.dumps(rec)
  np.testing.assert_array_equal(y, _labels(n, k))  # input untouched


def test_symmetric_targets_uniform_over_other_classes():
  k, n = 10, 40000
  y = _labels(n, k, seed=1)
  new, _ = R.symmetric_noise(y, k, rate=0.5, seed=7)
  ch = new != y
  offsets = (new[ch] - y[ch]) % k
  counts = np.bincount(offsets, minlength=k)
  assert counts[0] == 0
  m = ch.sum()
  p = 1 / (k - 1)
  sd = math.sqrt(m * p * (1 - p))
  assert np.all(np.abs(counts[1:] - m * p) < 5 * sd), counts
  # chosen examples are spread over classes in proportion (hypergeometric-ish, loose)
  per_class = np.bincount(y[ch], minlength=k) / np.bincount(y, minlength=k)
  assert np.all(np.abs(per_class - 0.5) < 0.05)


def test_symmetric_determinism():
  y = _labels(500, 10)
  a, ra = R.symmetric_noise(y, 10, rate=0.4, seed=11)
  b, rb = R.symmetric_noise(y, 10, rate=0.4, seed=11)
  c, _ = R.symmetric_noise(y, 10, rate=0.4, seed=12)
  np.testing.assert_array_equal(a, b)
  assert ra == rb
  assert not np.array_equal(a, c)


# ----------------------------------------------------------------------------------------------------------------
# Transition-matrix symmetric noise
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.6])
def test_transition_noise_binomial_rate(rate):
  k, n = 10, 20000
  y = _labels(n, k, seed=2)
  new, rec = R.transition_symmetric_noise(y, k, rate=rate, seed=5)
  ch = new != y
  emp = ch.mean()
  assert rec["realised_rate"] == pytest.approx(emp)
  assert rec["num_flipped"] == ch.sum()
  assert abs(emp - rate) < 4.5 * math.sqrt(rate * (1 - rate) / n)
  offsets = np.bincount((new[ch] - y[ch]) % k, minlength=k)
  assert offsets[0] == 0
  m, p = ch.sum(), 1 / (k - 1)
  assert np.all(np.abs(offsets[1:] - m * p) < 5 * math.sqrt(m * p * (1 - p)))


def test_transition_noise_determinism():
  y = _labels(300, 5)
  a, _ = R.transition_symmetric_noise(y, 5, rate=0.3, seed=1)
  b, _ = R.transition_symmetric_noise(y, 5, rate=0.3, seed=1)
  c, _ = R.transition_symmetric_noise(y, 5, rate=0.3, seed=2)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


# ----------------------------------------------------------------------------------------------------------------
# Pair flip and asymmetric noise
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k,rate", [(10, 0.45), (7, 0.2), (2, 0.3)])
def test_pair_flip_exact_per_class(k, rate):
  y = _labels(1234, k, seed=4)
  new, rec = R.pair_flip_noise(y, k, rate=rate, seed=0)
  ch = new != y
  np.testing.assert_array_equal(new[ch], (y[ch] + 1) % k)
  for c in range(k):
    assert (ch & (y == c)).sum() == round(rate * (y == c).sum())
  assert rec["flipped_per_class"] == [round(rate * (y == c).sum()) for c in range(k)]
  json.dumps(rec)


def test_pair_flip_bernoulli():
  y = _labels(20000, 10, seed=4)
  new, rec = R.pair_flip_noise(y, 10, rate=0.3, seed=0, exact=False)
  ch = new != y
  np.testing.assert_array_equal(new[ch], (y[ch] + 1) % 10)
  assert abs(ch.mean() - 0.3) < 4.5 * math.sqrt(0.3 * 0.7 / 20000)
  assert rec["params"]["exact"] is False


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_cifar10_asymmetric_maps_exactly():
  by_name = {n: i for i, n in enumerate(CIFAR10_NAMES)}
  expected = {
    by_name[s]: by_name[d]
    for s, d in [("truck", "automobile"), ("bird", "airplane"), ("cat", "dog"), ("dog", "cat"), ("deer", "horse")]
  }
  y = _balanced(100, 10, seed=1)
  new, rec = R.cifar10_asymmetric_noise(y, 10, rate=0.4, seed=9)
  ch = new != y
  for c in range(10):
    members = y == c
    if c in expected:
      assert (ch & members).sum() == 40
      assert np.all(new[ch & members] == expected[c])
    else:
      assert not ch[members].any()
  assert rec["num_flipped"] == 5 * 40
  assert rec["realised_rate"] == pytest.approx(0.2)
  with pytest.raises(ValueError, match="num_classes"):
    R.cifar10_asymmetric_noise(y, 11, rate=0.4, seed=0)


# The CIFAR-100 coarse label of each fine label 0..99 (Krizhevsky 2009), written independently of the library's
# superclass table: it must be the inverse of that table.
COARSE_OF_FINE = [
  4,
  1,
  14,
  8,
  0,
  6,
  7,
  7,
  18,
  3,
  3,
  14,
  9,
  18,
  7,
  11,
  3,
  9,
  7,
  11,
  6,
  11,
  5,
  10,
  7,
  6,
  13,
  15,
  3,
  15,
  0,
  11,
  1,
  10,
  12,
  14,
  16,
  9,
  11,
  5,
  5,
  19,
  8,
  8,
  15,
  13,
  14,
  17,
  18,
  10,
  16,
  4,
  17,
  4,
  2,
  0,
  17,
  4,
  18,
  17,
  10,
  3,
  2,
  12,
  12,
  16,
  12,
  1,
  9,
  19,
  2,
  10,
  0,
  1,
  16,
  12,
  9,
  13,
  15,
  13,
  16,
  19,
  2,
  4,
  6,
  19,
  5,
  5,
  8,
  19,
  18,
  1,
  2,
  15,
  6,
  0,
  17,
  8,
  14,
  13,
]


def test_cifar100_superclass_table():
  table = R.CIFAR100_SUPERCLASSES
  assert len(table) == 20 and all(len(r) == 5 for r in table)
  flat = sorted(f for r in table for f in r)
  assert flat == list(range(100))
  assert list(R.CIFAR100_FINE_TO_COARSE) == COARSE_OF_FINE
  from gence_jax.data import CIFAR100_FINE_NAMES

  assert len(set(CIFAR100_FINE_NAMES)) == 100 and list(CIFAR100_FINE_NAMES) == sorted(CIFAR100_FINE_NAMES)
  names = {n: i for i, n in enumerate(CIFAR100_FINE_NAMES)}
  # A few spot checks by name.
  same = lambda *ns: len({COARSE_OF_FINE[names[n]] for n in ns}) == 1  # noqa: E731
  assert same("beaver", "dolphin", "otter", "seal", "whale")
  assert same("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree")
  assert same("lawn_mower", "rocket", "streetcar", "tank", "tractor")
  assert same("bicycle", "bus", "motorcycle", "pickup_truck", "train")


def test_cifar100_asymmetric_next_within_superclass():
  m = R.cifar100_asymmetric_map()
  assert sorted(m) == list(range(100)) and sorted(m.values()) == list(range(100))
  for c in range(100):
    members = sorted(f for f in range(100) if COARSE_OF_FINE[f] == COARSE_OF_FINE[c])
    assert m[c] == members[(members.index(c) + 1) % 5]
  y = _balanced(20, 100, seed=2)
  new, rec = R.cifar100_asymmetric_noise(y, 100, rate=0.25, seed=1)
  ch = new != y
  assert ch.sum() == 100 * 5
  assert all(m[a] == b for a, b in zip(y[ch], new[ch]))
  assert all(COARSE_OF_FINE[a] == COARSE_OF_FINE[b] for a, b in zip(y[ch], new[ch]))
  json.dumps(rec)


# ----------------------------------------------------------------------------------------------------------------
# Long tail and small data
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [10, 50, 100])
@pytest.mark.parametrize("k", [10, 100])
def test_long_tail_exp_counts(ratio, k):
  n_max = 500 if k == 10 else 60
  y = _balanced(n_max, k, seed=3)
  x = np.arange(y.size)
  (x2, y2), rec = R.long_tail((x, y), k, ratio=ratio, seed=0)
  expected = [max(1, math.floor(n_max * ratio ** (-c / (k - 1)))) for c in range(k)]
  assert np.bincount(y2, minlength=k).tolist() == expected
  assert rec["class_counts_after"] == expected == rec["target_counts"]
  assert expected[0] == n_max and expected[-1] == max(1, math.floor(n_max / ratio))
  # kept rows are distinct original rows with their own labels
  assert len(np.unique(x2)) == len(x2)
  np.testing.assert_array_equal(y[x2], y2)
  assert rec["n_after"] == sum(expected)
  json.dumps(rec)


def test_long_tail_step_counts():
  y = _balanced(100, 10)
  idx, rec = R.long_tail_indices(y, 10, ratio=10, profile="step", seed=1)
  assert np.bincount(y[idx], minlength=10).tolist() == [100] * 5 + [10] * 5
  idx, _ = R.long_tail_indices(_balanced(100, 5), 5, ratio=4, profile="step", seed=1)
  assert len(idx) == 2 * 100 + 3 * 25


def test_long_tail_default_n_max_and_errors():
  y = np.concatenate([np.full(30, 0), np.full(20, 1), np.full(25, 2)])
  idx, rec = R.long_tail_indices(y, 3, ratio=4, seed=0)
  assert rec["params"]["n_max"] == 20
  assert np.bincount(y[idx], minlength=3).tolist() == [20, 10, 5]
  with pytest.raises(ValueError, match="ratio"):
    R.long_tail_indices(y, 3, ratio=0.5, seed=0)
  with pytest.raises(ValueError, match="n_max"):
    R.long_tail_indices(y, 3, ratio=2, seed=0, n_max=30)  # class 1 needs 21 but has 20
  with pytest.raises(ValueError, match="profile"):
    R.long_tail_indices(y, 3, ratio=2, seed=0, profile="linear")


def test_long_tail_determinism():
  y = _balanced(50, 10)
  a, _ = R.long_tail_indices(y, 10, ratio=10, seed=0)
  b, _ = R.long_tail_indices(y, 10, ratio=10, seed=0)
  c, _ = R.long_tail_indices(y, 10, ratio=10, seed=1)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_small_data():
  y = _labels(2000, 10, seed=5)
  x = np.arange(2000) * 3
  (x2, y2), rec = R.small_data((x, y), 10, n_per_class=17, seed=4)
  assert np.bincount(y2, minlength=10).tolist() == [17] * 10
  assert len(np.unique(x2)) == 170
  np.testing.assert_array_equal(y[x2 // 3], y2)
  (x3, _), _ = R.small_data((x, y), 10, n_per_class=17, seed=4)
  (x4, _), _ = R.small_data((x, y), 10, n_per_class=17, seed=5)
  np.testing.assert_array_equal(x2, x3)
  assert not np.array_equal(x2, x4)
  with pytest.raises(ValueError, match="n_per_class"):
    R.small_data((x, y), 10, n_per_class=int(np.bincount(y).min()) + 1, seed=0)
  with pytest.raises(ValueError, match="n_per_class"):
    R.small_data_indices(y, 10, n_per_class=0, seed=0)
  json.dumps(rec)


# ----------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [R.symmetric_noise, R.transition_symmetric_noise, R.pair_flip_noise])
@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, float("nan")])
def test_bad_rate(fn, rate):
  with pytest.raises(ValueError, match="rate"):
    fn(np.array([0, 1, 2]), 3, rate=rate, seed=0)


@pytest.mark.parametrize("labels", [[0, 1, 3], [-1, 0, 1], [0.5, 1, 2]])
def test_labels_out_of_range(labels):
  with pytest.raises(ValueError, match="labels"):
    R.symmetric_noise(np.array(labels), 3, rate=0.1, seed=0)
  with pytest.raises(ValueError, match="labels"):
    R.small_data_indices(np.array(labels), 3, n_per_class=1, seed=0)


# ----------------------------------------------------------------------------------------------------------------
# Spec parser and composition
# ----------------------------------------------------------------------------------------------------------------


def test_parse_regimes():
  regs = parse_regimes("symmetric:0.4, longtail:exp:100,small:20")
  assert [r.name for r in regs] == ["symmetric", "longtail", "small"]
  assert regs[0].kwargs == {"rate": 0.4}
  assert regs[1].kwargs == {"ratio": 100.0, "profile": "exp"}
  assert regs[2].kwargs == {"n_per_class": 20}
  assert [r.spec() for r in regs] == ["symmetric:0.4", "longtail:exp:100", "small:20"]
  assert parse_regimes(",".join(r.spec() for r in regs)) == regs
  assert parse_regimes("longtail:50")[0].kwargs == {"ratio": 50.0, "profile": "exp"}
  assert parse_regimes("longtail:step:10:300")[0].kwargs == {"ratio": 10.0, "profile": "step", "n_max": 300}
  assert parse_regimes("pairflip:0.2:bernoulli")[0].kwargs == {"rate": 0.2, "exact": False}
  assert parse_regimes("cifar10_asym:0.4")[0].name == "asym10"
  assert parse_regimes("transition:0.2")[0].name == "symmetric_tm"
  assert parse_regimes("") == [] and parse_regimes(None) == []
  assert parse_regimes(["symmetric:0.2", R.Regime.make("small", n_per_class=3)])[1].name == "small"
  for bad, word in [
    ("gaussian:0.2", "gaussian"),
    ("symmetric:1.2", "rate"),
    ("longtail:exp:0.5", "ratio"),
    ("small:2.5", "n_per_class"),
    ("symmetric:abc", "rate"),
  ]:
    with pytest.raises(ValueError, match=word):
      parse_regimes(bad)
  # A parsed regime is the same pure function.
  y = _labels(200, 10)
  a, _ = regs[0](y, 10, seed=3)
  b, _ = R.symmetric_noise(y, 10, rate=0.4, seed=3)
  np.testing.assert_array_equal(a, b)


def test_regimes_composed_on_train_and_val_not_test():
  k = 10
  y = _balanced(60, k, seed=0)
  x = np.arange(y.size, dtype=np.float32)[:, None]  # the feature is the example id
  yt = _balanced(10, k, seed=1)
  xt = (10000 + np.arange(yt.size, dtype=np.float32))[:, None]
  ds = from_arrays(x, y, xt, yt, seed=3, val_fraction=0.2, regimes="small:40,symmetric:0.5")
  # small:40 on train (48/class available); val (12/class) gets round(40 * 0.2/0.8) = 10 per class
  assert np.bincount(ds.y_train_clean, minlength=k).tolist() == [40] * k
  assert np.bincount(ds.y_val_clean, minlength=k).tolist() == [10] * k
  assert (ds.y_train != ds.y_train_clean).sum() == 200
  assert (ds.y_val != ds.y_val_clean).sum() == 50
  np.testing.assert_array_equal(ds.y_test, yt)
  np.testing.assert_array_equal(ds.x_test, xt)
  # rows still carry their own id and clean label
  np.testing.assert_array_equal(ds.x_train[:, 0].astype(int), ds.ids_train)
  np.testing.assert_array_equal(y[ds.ids_train], ds.y_train_clean)
  np.testing.assert_array_equal(y[ds.ids_val], ds.y_val_clean)
  assert not set(ds.ids_train) & set(ds.ids_val)
  info = ds.info
  assert [r["spec"] for r in info["regimes"]] == ["small:40", "symmetric:0.5"]
  assert info["regimes"][1]["train"]["num_flipped"] == 200
  assert info["regimes"][0]["val"]["params"]["n_per_class"] == 10
  assert info["label_noise"] == {"train": 0.5, "val": 0.5}
  assert info["class_counts"]["train"] == np.bincount(ds.y_train, minlength=k).tolist()
  json.dumps(info)
  ds2 = from_arrays(x, y, xt, yt, seed=3, val_fraction=0.2, regimes="small:40,symmetric:0.5")
  np.testing.assert_array_equal(ds.y_train, ds2.y_train)
  np.testing.assert_array_equal(ds.x_val, ds2.x_val)
  assert ds.info == ds2.info
  ds3 = from_arrays(x, y, xt, yt, seed=4, val_fraction=0.2, regimes="small:40,symmetric:0.5")
  assert not np.array_equal(ds.ids_train, ds3.ids_train)


def test_regimes_only_on_train_when_asked():
  y = _balanced(30, 5)
  ds = from_arrays(np.zeros((y.size, 2), np.float32), y, seed=0, regimes="symmetric:0.4", regimes_on_val=False)
  np.testing.assert_array_equal(ds.y_val, ds.y_val_clean)
  assert "val" not in ds.info["regimes"][0]
  assert (ds.y_train != ds.y_train_clean).sum() == round(0.4 * len(ds.y_train))


# ----------------------------------------------------------------------------------------------------------------
# CIFAR-100 asymmetric noise: true superclasses vs blocks of 5 consecutive ids
# ----------------------------------------------------------------------------------------------------------------


def _ref_superclass_next(c):
  members = sorted(f for f in range(100) if COARSE_OF_FINE[f] == COARSE_OF_FINE[c])
  return members[(members.index(c) + 1) % 5]


def _ref_block_next(c):
  block = list(range(5 * (c // 5), 5 * (c // 5) + 5))
  return block[(block.index(c) + 1) % 5]


def test_cifar100_superclass_and_block_maps_differ_where_they_should():
  sup, blk = R.cifar100_superclass_map(), R.cifar100_block_map()
  assert sup == {c: _ref_superclass_next(c) for c in range(100)}
  assert blk == {c: _ref_block_next(c) for c in range(100)}
  assert sorted(blk.values()) == list(range(100))  # a permutation, as the superclass map
  shared = [c for c in range(100) if _ref_superclass_next(c) == _ref_block_next(c)]
  assert len(shared) == 4
  assert [c for c in range(100) if sup[c] == blk[c]] == shared
  # blocks of consecutive ids are not superclasses: most blocks span several superclasses
  assert sum(len({COARSE_OF_FINE[f] for f in range(b, b + 5)}) > 1 for b in range(0, 100, 5)) >= 15
  assert R.cifar100_asymmetric_map() == sup


def test_cifar100_block_and_superclass_noise():
  y = _balanced(20, 100, seed=3)
  new_b, rec_b = R.cifar100_block_noise(y, 100, rate=0.25, seed=1)
  new_s, rec_s = R.cifar100_superclass_noise(y, 100, rate=0.25, seed=1)
  for new, ref in ((new_b, _ref_block_next), (new_s, _ref_superclass_next)):
    ch = new != y
    assert ch.sum() == 100 * 5  # exactly round(0.25 * 20) per class
    assert all(ref(a) == b for a, b in zip(y[ch], new[ch]))
  assert all(a // 5 == b // 5 for a, b in zip(y[new_b != y], new_b[new_b != y]))
  assert rec_b["regime"] == "asym100_blocks" and "Ma" in rec_b["paper"]
  assert rec_s["regime"] == "asym100_superclass" and "Patrini" in rec_s["paper"]
  # the alias asym100 / cifar100_asymmetric_noise is the superclass variant
  alias, _ = R.cifar100_asymmetric_noise(y, 100, rate=0.25, seed=1)
  np.testing.assert_array_equal(alias, new_s)
  blocks, _ = R.cifar100_asymmetric_noise(y, 100, rate=0.25, seed=1, variant="blocks")
  np.testing.assert_array_equal(blocks, new_b)
  for spec in ("asym100:0.25", "cifar100_asym:0.25", "asym100_superclass:0.25"):
    reg = parse_regimes(spec)[0]
    assert reg.name == "asym100_superclass" and reg.spec() == "asym100_superclass:0.25"
    np.testing.assert_array_equal(reg(y, 100, seed=1)[0], new_s)
  reg = parse_regimes("asym100_blocks:0.25:bernoulli")[0]
  assert reg.kwargs == {"rate": 0.25, "exact": False} and reg.spec() == "asym100_blocks:0.25:bernoulli"
  assert R.Regime("asym100", (("rate", 0.1),)).name == "asym100_superclass"
  with pytest.raises(ValueError, match=r"^cifar100_block_noise: `num_classes` must be 100"):
    R.cifar100_block_noise(y % 10, 10, rate=0.2, seed=0)
  with pytest.raises(ValueError, match="variant"):
    R.cifar100_asymmetric_noise(y, 100, rate=0.2, seed=0, variant="coarse")


def test_parse_new_noise_regimes():
  assert parse_regimes("symmetric_uniform:0.4")[0].kwargs == {"rate": 0.4}
  assert parse_regimes("sym_uniform:0.4:bernoulli")[0].spec() == "symmetric_uniform:0.4:bernoulli"
  with pytest.raises(ValueError, match="bernoulli"):
    parse_regimes("symmetric:0.4:bernoulli")
  with pytest.raises(ValueError, match="matrix"):
    parse_regimes("matrix:")
  with pytest.raises(ValueError, match="instance"):
    parse_regimes("instance:0.1:0.1:1:2")
