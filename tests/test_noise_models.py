"""Noise models of gence_jax.data.regimes against references written here from the papers' equations.

Acceptance for every model: the realised transition counts are within sampling error of the requested matrix
(binomial bound, a few thousand labels, fixed seeds), exact counts where the model promises them, the record holds
what was realised, and the same seed gives the same labels.
"""

import json
import math

import numpy as np
import pytest
from scipy import special, stats

from gence_jax.data import parse_regimes
from gence_jax.data import regimes as R

Z = 5.0  # two-sided 5-sigma per cell: with <= 10^4 cells, a false alarm has probability < 1%


def _labels(n, k, seed=0):
  return np.random.default_rng(seed).integers(0, k, size=n)


def _counts(y_old, y_new, k):
  c = np.zeros((k, k), np.int64)
  for a, b in zip(y_old.tolist(), y_new.tolist()):
    c[a, b] += 1
  return c


def _assert_binomial(counts, t, z=Z):
  """Each row of ``counts`` ~ Multinomial(n_a, t[a]): every cell within z binomial standard deviations."""
  counts = np.asarray(counts, np.float64)
  n = counts.sum(axis=1, keepdims=True)
  mean = n * t
  sd = np.sqrt(n * t * (1 - t))
  bad = np.abs(counts - mean) > z * sd + 1e-9
  assert not bad.any(), (np.argwhere(bad)[:5], counts[bad][:5], mean[bad][:5], sd[bad][:5])


# Reference transition matrices, from the papers' definitions.
def sym_t(k, r):  # flip to one of the K-1 other classes (Patrini et al. 2017; Ma et al. 2020)
  t = np.full((k, k), r / (k - 1))
  np.fill_diagonal(t, 1 - r)
  return t


def uniform_t(k, r):  # resample uniformly from all K classes (DivideMix, Li et al. 2020)
  return (1 - r) * np.eye(k) + r / k * np.ones((k, k))


def map_t(k, mapping, r):
  t = np.eye(k)
  for s, d in mapping.items():
    t[s, s], t[s, d] = 1 - r, r
  return t


CIFAR10_MAP = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}  # truck->automobile, bird->airplane, cat<->dog, deer->horse
BLOCK_MAP = {c: (c // 5) * 5 + ((c % 5) + 1) % 5 for c in range(100)}


def _superclass_map():
  from test_regimes import COARSE_OF_FINE

  out = {}
  for c in range(100):
    members = sorted(f for f in range(100) if COARSE_OF_FINE[f] == COARSE_OF_FINE[c])
    out[c] = members[(members.index(c) + 1) % 5]
  return out


# ----------------------------------------------------------------------------------------------------------------
# Every noise regime: realised transition counts within sampling error of the requested matrix
# ----------------------------------------------------------------------------------------------------------------

DIRICHLET_T = np.random.default_rng(42).dirichlet(np.full(6, 0.7), size=6)
DIRICHLET_T[2] = [0, 0, 1, 0, 0, 0]  # a row with zeros: those classes must never be drawn
DIRICHLET_T[4, 1] = 0
DIRICHLET_T[4] /= DIRICHLET_T[4].sum()

CASES = [
  # (spec, K, n, reference T)
  ("symmetric:0.4", 10, 6000, sym_t(10, 0.4)),
  ("symmetric_tm:0.3", 10, 6000, sym_t(10, 0.3)),
  ("symmetric_uniform:0.5", 10, 6000, uniform_t(10, 0.5)),
  ("symmetric_uniform:0.5:bernoulli", 4, 4000, uniform_t(4, 0.5)),
  ("pairflip:0.35:bernoulli", 7, 5000, map_t(7, {c: (c + 1) % 7 for c in range(7)}, 0.35)),
  ("pairflip:0.35", 7, 5000, map_t(7, {c: (c + 1) % 7 for c in range(7)}, 0.35)),
  ("asym10:0.4:bernoulli", 10, 6000, map_t(10, CIFAR10_MAP, 0.4)),
  ("asym10:0.4", 10, 6000, map_t(10, CIFAR10_MAP, 0.4)),
  ("asym100_blocks:0.3:bernoulli", 100, 20000, map_t(100, BLOCK_MAP, 0.3)),
  ("asym100_superclass:0.3:bernoulli", 100, 20000, "superclass"),
  ("matrix:inline", 6, 6000, DIRICHLET_T),
]


def _regime(spec):
  if spec == "matrix:inline":
    return R.Regime.make("matrix", matrix=DIRICHLET_T)
  return parse_regimes(spec)[0]


@pytest.mark.parametrize("spec,k,n,t_ref", CASES, ids=[c[0] for c in CASES])
def test_realised_transition_within_binomial_bound(spec, k, n, t_ref):
  if isinstance(t_ref, str):
    t_ref = map_t(100, _superclass_map(), 0.3)
  reg = _regime(spec)
  np.testing.assert_allclose(reg.transition_matrix(k), t_ref, atol=1e-12)
  y = _labels(n, k, seed=1)
  new, rec = reg(y, k, seed=3)
  counts = _counts(y, new, k)
  np.testing.assert_array_equal(np.asarray(rec["transition_counts"]), counts)
  _assert_binomial(counts, t_ref)
  assert np.all(counts[t_ref == 0] == 0)
  # the record: realised rate, class counts, transition counts, all JSON
  assert rec["realised_rate"] == pytest.approx(np.mean(new != y))
  assert rec["num_flipped"] == int(np.sum(new != y))
  assert rec["class_counts_before"] == np.bincount(y, minlength=k).tolist()
  assert rec["class_counts_after"] == np.bincount(new, minlength=k).tolist()
  np.testing.assert_allclose(R.realised_transition_matrix(rec), counts / counts.sum(1, keepdims=True))
  json.dumps(rec, allow_nan=False)
  # seeded and deterministic
  again, rec2 = reg(y, k, seed=3)
  other, _ = reg(y, k, seed=4)
  np.testing.assert_array_equal(new, again)
  assert rec == rec2
  assert not np.array_equal(new, other)


def test_realised_transition_matrix_empty_rows_are_nan():
  y = np.array([0, 0, 2])
  _, rec = R.symmetric_noise(y, 3, rate=0.0, seed=0)
  t = R.realised_transition_matrix(rec)
  np.testing.assert_array_equal(t[0], [1, 0, 0])
  assert np.isnan(t[1]).all()
  with pytest.raises(ValueError, match="transition_counts"):
    R.realised_transition_matrix({"regime": "small"})


# ----------------------------------------------------------------------------------------------------------------
# symmetric_uniform (DivideMix) against symmetric (Ma et al. 2020)
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k,rate", [(10, 0.5), (2, 0.4), (100, 0.8)])
def test_symmetric_uniform_exact_resample_count_and_effective_rate(k, rate):
  n = 5000
  y = _labels(n, k, seed=7)
  new, rec = R.symmetric_uniform_noise(y, k, rate=rate, seed=2)
  m = round(rate * n)
  assert rec["num_resampled"] == m  # exact count resampled ...
  assert rec["params"] == {"rate": rate, "exact": True}
  assert rec["expected_rate"] == pytest.approx(rate * (1 - 1 / k))
  changed = int(np.sum(new != y))
  # ... of which a Binomial(m, 1 - 1/K) number change class: the true class may be kept.
  p = 1 - 1 / k
  assert abs(changed - m * p) <= Z * math.sqrt(m * p * (1 - p))
  assert changed < m
  assert rec["realised_rate"] == pytest.approx(changed / n)
  # symmetric (Ma et al. 2020) changes exactly round(rate * n) labels
  new_s, rec_s = R.symmetric_noise(y, k, rate=rate, seed=2)
  assert int(np.sum(new_s != y)) == m == rec_s["num_flipped"]


def test_symmetric_uniform_bernoulli_resample_count():
  n, k, r = 6000, 5, 0.3
  y = _labels(n, k)
  _, rec = R.symmetric_uniform_noise(y, k, rate=r, seed=0, exact=False)
  assert abs(rec["num_resampled"] - n * r) <= Z * math.sqrt(n * r * (1 - r))
  assert rec["params"]["exact"] is False


def test_symmetric_uniform_bad_input():
  with pytest.raises(ValueError, match=r"^symmetric_uniform_noise: rate"):
    R.symmetric_uniform_noise([0, 1], 2, rate=1.0, seed=0)
  with pytest.raises(ValueError, match=r"^symmetric_uniform_noise: labels"):
    R.symmetric_uniform_noise([0, 3], 2, rate=0.1, seed=0)


# ----------------------------------------------------------------------------------------------------------------
# User-given transition matrix
# ----------------------------------------------------------------------------------------------------------------

T3 = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5]])


def test_matrix_from_npy_csv_spec_and_argument_agree(tmp_path):
  npy, csv = tmp_path / "t.npy", tmp_path / "t.csv"
  np.save(npy, T3)
  csv.write_text("# rows: true class, columns: noisy class\n" + "\n".join(",".join(map(str, r)) for r in T3) + "\n")
  y = _labels(3000, 3, seed=5)
  ref, rec = R.transition_matrix_noise(y, 3, matrix=T3, seed=9)
  for source in (str(npy), str(csv), npy):
    new, rec2 = R.transition_matrix_noise(y, 3, matrix=source, seed=9)
    np.testing.assert_array_equal(new, ref)
    assert rec2["params"]["path"] == str(source)
  for spec in (f"matrix:{npy}", f"matrix:{csv}", "matrix: 0.7 0.2 0.1 ; 0 1 0 ; 0.25 0.25 0.5"):
    reg = parse_regimes(spec)[0]
    assert reg.name == "matrix"
    np.testing.assert_allclose(reg.transition_matrix(3), T3)
    new, _ = reg(y, 3, seed=9)
    np.testing.assert_array_equal(new, ref)
    assert parse_regimes(reg.spec()) == [reg]  # spec round trip (path or inline)
  assert parse_regimes(f"matrix:{npy}")[0].spec() == f"matrix:{npy}"
  np.testing.assert_allclose(rec["params"]["matrix"], T3)
  assert rec["expected_rate"] == pytest.approx(np.mean(1 - T3[y, y]))
  counts = _counts(y, ref, 3)
  assert counts[1, 0] == counts[1, 2] == 0  # zero-probability entries never drawn
  _assert_binomial(counts, T3)
  json.dumps(rec)


@pytest.mark.parametrize(
  "matrix,k,word",
  [
    (np.ones((2, 3)) / 3, 2, "square"),
    (np.eye(4), 3, "4 x 4 but num_classes is 3"),
    ([[0.5, 0.4], [0, 1]], 2, "row 0 sums to 0.9"),
    ([[1.2, -0.2], [0, 1]], 2, "negative entry -0.2 at \\(0, 1\\)"),
    ([[np.nan, 1], [0, 1]], 2, "non-finite"),
    (np.ones(3) / 3, 3, "square"),
    ([["a", "b"], ["c", "d"]], 2, "numeric"),
  ],
)
def test_matrix_validation_one_line_errors(matrix, k, word):
  with pytest.raises(ValueError, match=r"^transition_matrix_noise: `matrix` .*" + word) as e:
    R.transition_matrix_noise(np.zeros(4, int), k, matrix=matrix, seed=0)
  assert "\n" not in str(e.value)


def test_matrix_tolerance_and_file_errors(tmp_path):
  nearly = [[0.3333333, 0.3333333, 0.3333334], [0, 1, 0], [0, 0, 1]]
  t = R.check_transition_matrix(nearly, 3)
  np.testing.assert_array_equal(t, nearly)
  with pytest.raises(ValueError, match="sums to"):
    R.check_transition_matrix([[0.333, 0.333, 0.333], [0, 1, 0], [0, 0, 1]], 3)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    parse_regimes(f"matrix:{tmp_path / 'missing.npy'}")
  with pytest.raises(ValueError, match=r"\.npy or \.csv"):
    R.load_transition_matrix(tmp_path / "t.txt")
  bad = tmp_path / "bad.csv"
  bad.write_text("0.5,x\n0,1\n")
  with pytest.raises(ValueError, match="cannot read"):
    R.load_transition_matrix(bad)
  with pytest.raises(ValueError, match="inline"):
    parse_regimes("matrix:0.5 abc;0 1")
  with pytest.raises(ValueError, match="different lengths"):
    parse_regimes("matrix:0.5 0.5;1")
  y = np.zeros(5, int)
  with pytest.raises(ValueError, match="2 x 2 but num_classes is 3"):
    parse_regimes("matrix:0.5 0.5;0 1")[0](y, 3, seed=0)


# ----------------------------------------------------------------------------------------------------------------
# Instance-dependent noise (Xia et al. 2020, NeurIPS, Algorithm 2)
# ----------------------------------------------------------------------------------------------------------------


def _xia_rows(x, y, q, w):
  """Reference rows: z = x W_y, z_y = -inf, P = q softmax(z), P_y = 1 - q (float64, scipy's softmax)."""
  out = np.zeros((len(y), w.shape[-1]))
  for i, (xi, yi, qi) in enumerate(zip(x, y, q)):
    z = xi.reshape(-1).astype(np.float64) @ w[yi]
    z[yi] = -np.inf
    out[i] = qi * special.softmax(z)
    out[i, yi] = 1 - qi
  return out


def _problem(n=4000, k=4, d=5, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d))
  y = rng.integers(0, k, size=n)
  w = rng.normal(size=(k, d, k)) * 0.5
  return x, y, w


def test_instance_transition_rows_match_reference():
  x, y, w = _problem(n=300, k=5, d=6)
  x = x.reshape(300, 2, 3)  # features are flattened per example
  q = np.random.default_rng(1).uniform(0, 1, size=300)
  p = R.instance_dependent_transition(x, y, 5, flip_rates=q, weights=w)
  np.testing.assert_allclose(p, _xia_rows(x, y, q, w), rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(p.sum(1), 1, atol=1e-12)
  np.testing.assert_allclose(p[np.arange(300), y], 1 - q)


def test_instance_noise_counts_within_bound_given_weights_and_fixed_rates():
  x, y, w = _problem()
  k, r = 4, 0.35
  new, rec = R.instance_dependent_noise(x, y, k, rate=r, seed=3, std=0.0, weights=w)
  p = _xia_rows(x, y, np.full(len(y), r), w)
  exp_counts = np.zeros((k, k))
  var = np.zeros((k, k))
  for a in range(k):
    exp_counts[a] = p[y == a].sum(0)
    var[a] = (p[y == a] * (1 - p[y == a])).sum(0)
  counts = _counts(y, new, k)
  np.testing.assert_array_equal(rec["transition_counts"], counts)
  # Poisson-binomial: each cell is a sum of independent Bernoulli(P_i[b]) over the examples of class a
  assert np.all(np.abs(counts - exp_counts) <= Z * np.sqrt(var) + 1e-9), (counts, exp_counts)
  np.testing.assert_allclose(rec["expected_transition_matrix"], exp_counts / exp_counts.sum(1, keepdims=True))
  assert rec["flip_rates"] == pytest.approx({"mean": r, "std": 0.0, "min": r, "max": r}, abs=1e-15)
  n = len(y)
  assert abs(rec["realised_rate"] - r) <= Z * math.sqrt(r * (1 - r) / n)
  assert rec["params"]["weights"] == "given"
  json.dumps(rec, allow_nan=False)


@pytest.mark.parametrize("rate", [0.05, 0.4])
def test_instance_flip_rates_are_truncated_normal(rate):
  x, y, w = _problem(n=5000)
  std = 0.1
  tn = stats.truncnorm((0 - rate) / std, (1 - rate) / std, loc=rate, scale=std)
  new, rec = R.instance_dependent_noise(x, y, 4, rate=rate, seed=11, std=std, weights=w)
  n = len(y)
  fr = rec["flip_rates"]
  assert abs(fr["mean"] - tn.mean()) <= Z * tn.std() / math.sqrt(n)  # a clipped normal would fail at rate 0.05
  assert abs(fr["std"] - tn.std()) <= 0.1 * tn.std()
  assert 0 <= fr["min"] and fr["max"] <= 1
  assert rec["expected_rate"] == fr["mean"]
  # marginally each flip is Bernoulli(E[q] s_ib): counts against E[q] times the reference softmax sums
  s = _xia_rows(x, y, np.ones(n), w)
  s[np.arange(n), y] = 0
  counts = _counts(y, new, 4)
  for a in range(4):
    pm = tn.mean() * s[y == a]
    off = np.arange(4) != a
    mean, sd = pm.sum(0)[off], np.sqrt((pm * (1 - pm)).sum(0))[off]
    assert np.all(np.abs(counts[a, off] - mean) <= Z * sd), (a, counts[a], mean)
  assert abs(np.mean(new != y) - tn.mean()) <= Z * math.sqrt(tn.mean() * (1 - tn.mean()) / n)


def test_instance_noise_seeding_and_shared_weights():
  x, y, _ = _problem(n=1500, k=3, d=4)
  a, ra = R.instance_dependent_noise(x, y, 3, rate=0.3, seed=1)
  b, rb = R.instance_dependent_noise(x, y, 3, rate=0.3, seed=1)
  c, _ = R.instance_dependent_noise(x, y, 3, rate=0.3, seed=2)
  np.testing.assert_array_equal(a, b)
  assert ra == rb and ra["params"]["weights_seed"] == 1 and ra["params"]["weights"] == "drawn"
  assert not np.array_equal(a, c)
  # With std = 0 the expected matrix depends on W only: equal for a shared weights_seed, not otherwise.
  e = [
    R.instance_dependent_noise(x, y, 3, rate=0.3, seed=s, std=0, weights_seed=ws)[1]
    for s, ws in [(1, 5), (2, 5), (2, 6)]
  ]
  np.testing.assert_allclose(e[0]["expected_transition_matrix"], e[1]["expected_transition_matrix"])
  assert not np.allclose(e[0]["expected_transition_matrix"], e[2]["expected_transition_matrix"])


def test_instance_regime_spec_and_features():
  x, y, _ = _problem(n=400, k=4, d=3)
  reg = parse_regimes("instance:0.3:0.05:7")[0]
  assert reg.name == "instance" and reg.needs_x and reg.kind == "labels"
  assert reg.kwargs == {"rate": 0.3, "std": 0.05, "weights_seed": 7}
  assert reg.spec() == "instance:0.3:0.05:7" and parse_regimes(reg.spec()) == [reg]
  assert parse_regimes("instance:0.2")[0].spec() == "instance:0.2"
  assert parse_regimes("idn:0.2")[0].kwargs == {"rate": 0.2}
  ref, _ = R.instance_dependent_noise(x, y, 4, rate=0.3, std=0.05, weights_seed=7, seed=5)
  np.testing.assert_array_equal(reg((x, y), 4, seed=5)[0], ref)
  np.testing.assert_array_equal(reg.indices_or_labels(y, 4, seed=5, x=x)[0], ref)
  with pytest.raises(ValueError, match="needs the features"):
    reg.indices_or_labels(y, 4, seed=5)
  with pytest.raises(ValueError, match="class-level"):
    reg.transition_matrix(4)
  # other regimes ignore x
  sym = parse_regimes("symmetric:0.2")[0]
  np.testing.assert_array_equal(sym.indices_or_labels(y, 4, seed=1, x=x)[0], sym(y, 4, seed=1)[0])


def test_instance_bad_input():
  x, y, w = _problem(n=50, k=3, d=2)
  with pytest.raises(ValueError, match=r"^instance_dependent_noise: `x` must have one row per label"):
    R.instance_dependent_noise(x[:10], y, 3, rate=0.2, seed=0)
  with pytest.raises(ValueError, match=r"^instance_dependent_noise: `weights` must have shape"):
    R.instance_dependent_noise(x, y, 3, rate=0.2, seed=0, weights=w[:, :1])
  with pytest.raises(ValueError, match=r"^instance_dependent_noise: `std`"):
    R.instance_dependent_noise(x, y, 3, rate=0.2, seed=0, std=-1)
  with pytest.raises(ValueError, match=r"^instance_dependent_noise: rate"):
    R.instance_dependent_noise(x, y, 3, rate=1.5, seed=0)
  with pytest.raises(ValueError, match="non-finite"):
    R.instance_dependent_noise(np.full((50, 2), np.inf), y, 3, rate=0.2, seed=0)
  with pytest.raises(ValueError, match=r"^instance_dependent_transition: `flip_rates`"):
    R.instance_dependent_transition(x, y, 3, flip_rates=np.full(50, 2.0), weights=np.zeros((3, 2, 3)))
  with pytest.raises(ValueError, match="std must be >= 0"):
    parse_regimes("instance:0.2:-1")


# ----------------------------------------------------------------------------------------------------------------
# load_dataset: the instance-dependent regime reads each split's features
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "spec, rate, std, wseed", [("instance:0.3", 0.3, 0.1, None), ("instance:0.8:0.3:5", 0.8, 0.3, 5)]
)
def test_instance_regime_through_load_dataset_on_digits(spec, rate, std, wseed):
  import gence_jax.data as D

  ds = D.load_dataset("digits", seed=0, regimes=spec)
  train_only = D.load_dataset("digits", seed=0, regimes=spec, regimes_on_val=False)
  # Xia et al. (2020): example i flips with probability q_i, q_i ~ N(rate, std^2) truncated to [0, 1], so a flip is
  # Bernoulli(E[q]); E[q] of the truncated normal from SciPy (0.676, not 0.8, for rate 0.8 and std 0.3)
  mean_q = stats.truncnorm.mean(-rate / std, (1 - rate) / std, loc=rate, scale=std)
  rec = ds.info["regimes"][0]
  assert rec["spec"] == spec and set(rec) >= {"train", "val"} and ds.info["regimes_on_val"]
  w_train = rec["train"]["params"]["weights_seed"]
  assert w_train == rec["val"]["params"]["weights_seed"]  # one W (one noise process) for both splits
  if wseed is not None:
    assert w_train == wseed
  assert rec["train"]["seed"] != rec["val"]["seed"]  # own per-example draws
  for split in ("train", "val"):
    y, yc, x = getattr(ds, f"y_{split}"), getattr(ds, f"y_{split}_clean"), getattr(ds, f"x_{split}")
    realised = float(np.mean(y != yc))
    assert ds.info["label_noise"][split] == pytest.approx(realised, abs=1e-12)
    assert rec[split]["realised_rate"] == pytest.approx(realised, abs=1e-12)
    assert rec[split]["params"]["num_features"] == 64
    assert abs(realised - mean_q) <= 4 * math.sqrt(mean_q * (1 - mean_q) / len(y)), (split, realised, mean_q)
    # the labels are those of the generator run on this split's own feature rows
    again, _ = R.instance_dependent_noise(
      x, yc, 10, rate=rate, std=std, seed=rec[split]["seed"], weights_seed=rec[split]["params"]["weights_seed"]
    )
    np.testing.assert_array_equal(y, again)
  assert ds.info["clean_labels"] == "before_regimes"
  np.testing.assert_array_equal(ds.y_train_clean, D.load_dataset("digits", seed=0).y_train)
  # regimes_on_val=False: the same training noise, a clean validation split
  np.testing.assert_array_equal(train_only.y_train, ds.y_train)
  np.testing.assert_array_equal(train_only.y_val, train_only.y_val_clean)
  assert train_only.info["label_noise"]["val"] == 0.0 and "val" not in train_only.info["regimes"][0]
  json.dumps(ds.info)


def test_instance_regime_needs_the_features_in_apply_regimes():
  import gence_jax.data as D

  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(300, 5)), rng.integers(0, 3, 300)
  splits = {"train": {"x": x, "y": y.copy(), "y_clean": y.copy(), "ids": np.arange(300)}}
  recs = D.apply_regimes(splits, parse_regimes("instance:0.4:0:9"), 3, seed=1)
  # std 0: every q_i is 0.4; the labels follow from x through the generator with W drawn from weights_seed 9
  ref, _ = R.instance_dependent_noise(x, y, 3, rate=0.4, std=0.0, seed=recs[0]["train"]["seed"], weights_seed=9)
  np.testing.assert_array_equal(splits["train"]["y"], ref)
  flipped = float(np.mean(splits["train"]["y"] != y))
  assert abs(flipped - 0.4) <= 4 * math.sqrt(0.4 * 0.6 / 300)
