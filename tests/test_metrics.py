"""Tests for gence_jax.metrics: hand-computed cases, float64 NumPy references, mergeability, masks, OOD metrics."""

import math

import jax
import numpy as np
import pytest
from sklearn import metrics as skm

from gence_jax import metrics as M

# ----------------------------------------------------------------------------------------------- references (float64)


def ref_edges(m, dtype=np.float32):
  # Edges as stored in the probability dtype, compared in float64.
  return (np.arange(m + 1) / m).astype(dtype).astype(np.float64)


def ref_bin(v, m, dtype=np.float32):
  e = ref_edges(m, dtype)
  for b in range(m):
    if (v > e[b] or b == 0) and (v <= e[b + 1] or b == m - 1):
      return b
  raise AssertionError


def ref_top(probs, labels):
  p = np.asarray(probs, np.float64)
  conf = p.max(1)
  pred = np.array([int(np.flatnonzero(row == row.max())[0]) for row in p])
  return conf, (pred == np.asarray(labels)).astype(np.float64)


def ref_ece_mce(probs, labels, m):
  conf, corr = ref_top(probs, labels)
  n = len(conf)
  bins = [ref_bin(c, m) for c in conf]
  ece, mce = 0.0, 0.0
  for b in range(m):
    idx = [i for i in range(n) if bins[i] == b]
    if not idx:
      continue
    gap = abs(np.mean(corr[idx]) - np.mean(conf[idx]))
    ece += len(idx) / n * gap
    mce = max(mce, gap)
  return ece, mce


def ref_classwise(probs, labels, m):
  p = np.asarray(probs, np.float64)
  n, k = p.shape
  total = 0.0
  for c in range(k):
    bins = [ref_bin(v, m) for v in p[:, c]]
    hit = (np.asarray(labels) == c).astype(np.float64)
    for b in range(m):
      idx = [i for i in range(n) if bins[i] == b]
      if idx:
        total += len(idx) / n * abs(np.mean(hit[idx]) - np.mean(p[idx, c]))
  return total / k


def ref_adaptive(probs, labels, m):
  conf, corr = ref_top(probs, labels)
  n = len(conf)
  order = sorted(range(n), key=lambda i: (conf[i], corr[i]))
  total = 0.0
  for b in range(m):
    start, stop = -(-b * n // m), -(-(b + 1) * n // m)  # ranks ceil(bn/M) .. ceil((b+1)n/M) - 1
    idx = order[start:stop]
    if idx:
      total += len(idx) / n * abs(np.mean(corr[idx]) - np.mean(conf[idx]))
  return total


def ref_scalars(probs, labels):
  p = np.asarray(probs, np.float64)
  y = np.asarray(labels)
  _, corr = ref_top(p, y)
  py = np.maximum(p[np.arange(len(y)), y], np.finfo(np.float32).tiny)
  onehot = np.eye(p.shape[1])[y]
  return corr.mean(), np.mean(-np.log(py)), np.mean(np.sum((p - onehot) ** 2, axis=1))


def make_data(seed, n=400, k=5, m=15):
  """Random float32 probabilities including exact 0, exact 1.0 and values exactly on the (float32) bin edges."""
  rng = np.random.default_rng(seed)
  p = rng.dirichlet(np.full(k, 0.4), size=n)
  p[:6] = np.eye(k)[rng.integers(0, k, 6)]  # confidence exactly 1.0, other entries exactly 0
  p[6:12, 0] = 0.0
  p[6:12] /= p[6:12].sum(1, keepdims=True)
  edges = (np.arange(m + 1) / m).astype(np.float32).astype(np.float64)
  r = 12
  for b in range(1, m):  # top-label confidence exactly on an edge (where it can be the max)
    if edges[b] > 1.0 / k + 0.02:
      p[r] = (1 - edges[b]) / (k - 1)
      p[r, r % k] = edges[b]
      r += 1
  for b in range(1, 4):  # a small classwise probability exactly on an edge
    p[r] = rng.dirichlet(np.ones(k - 1)).tolist() + [0.0]
    p[r, :-1] *= 1 - edges[b]
    p[r, -1] = edges[b]
    r += 1
  probs = p.astype(np.float32)
  labels = rng.integers(0, k, n).astype(np.int32)
  correct_some = rng.random(n) < 0.5  # make accuracy non-trivial
  labels[correct_some] = probs[correct_some].argmax(1)
  return probs, labels


# ----------------------------------------------------------------------------------------------- hand-computed cases

# K = 2, num_bins = 4 (edges 0, .25, .5, .75, 1 are exact in float32).
HAND_P = np.array([[0.25, 0.75], [1.0, 0.0], [0.5, 0.5], [0.125, 0.875], [0.625, 0.375]], np.float32)
HAND_Y = np.array([1, 0, 0, 0, 0], np.int32)
# top label: conf .75 (edge -> bin 2, correct), 1.0 (bin 3, correct), .5 (edge -> bin 1, first max = class 0,
# correct), .875 (bin 3, wrong), .625 (bin 2, correct).


def test_hand_accuracy_nll_brier():
  assert float(M.accuracy(HAND_P, HAND_Y)) == pytest.approx(4 / 5)
  expected_nll = -(math.log(0.75) + math.log(1.0) + math.log(0.5) + math.log(0.125) + math.log(0.625)) / 5
  assert float(M.nll(HAND_P, HAND_Y)) == pytest.approx(expected_nll, rel=1e-6)
  # (1/N) sum_i sum_k (p_ik - 1[y_i=k])^2 = (0.125 + 0 + 0.5 + 1.53125 + 0.28125) / 5
  assert float(M.brier(HAND_P, HAND_Y)) == pytest.approx(2.4375 / 5, rel=1e-6)


def test_hand_ece_mce():
  # bin1: {.5 ok} gap .5; bin2: {.75 ok, .625 ok} gap |1 - .6875| = .3125; bin3: {1.0 ok, .875 wrong} gap .4375
  assert float(M.ece(HAND_P, HAND_Y, num_bins=4)) == pytest.approx((0.5 + 2 * 0.3125 + 2 * 0.4375) / 5, rel=1e-6)
  assert float(M.mce(HAND_P, HAND_Y, num_bins=4)) == pytest.approx(0.5, rel=1e-6)
  # One bin: |acc - mean conf| = |0.8 - 3.75/5|.
  assert float(M.ece(HAND_P, HAND_Y, num_bins=1)) == pytest.approx(0.05, abs=1e-6)


def test_hand_classwise_and_sce():
  # class 0: p0 = .25(bin0,y!=0) 1.0(bin3,hit) .5(bin1,hit) .125(bin0,hit) .625(bin2,hit)
  #   bin0 |1 - .375| = .625, bin1 |1 - .5| = .5, bin2 |1 - .625| = .375, bin3 0  -> 1.5 / 5 = 0.3
  # class 1: p1 = .75(bin2,hit) 0(bin0) .5(bin1) .875(bin3) .375(bin1)
  #   bin0 0, bin1 |0 - .875| = .875, bin2 |1 - .75| = .25, bin3 .875          -> 2.0 / 5 = 0.4
  assert float(M.classwise_ece(HAND_P, HAND_Y, num_bins=4)) == pytest.approx(0.35, rel=1e-6)
  assert float(M.sce(HAND_P, HAND_Y, num_bins=4)) == pytest.approx(0.35, rel=1e-6)


def test_hand_adaptive_ece():
  # sorted conf: .5 ok, .625 ok, .75 ok, .875 wrong, 1.0 ok; M = 3 -> bin floor(3r/5) = 0,0,1,1,2
  # bin0 |2 - 1.125| = .875, bin1 |1 - 1.625| = .625, bin2 |1 - 1| = 0 -> 1.5 / 5
  assert float(M.adaptive_ece(HAND_P, HAND_Y, num_bins=3)) == pytest.approx(0.3, rel=1e-6)
  # Tied confidences share a bin, whatever the input order and the labels: conf .6 ok, .8 wrong, .8 ok; M = 2 ->
  # the cut at rank ceil(3/2) = 2 falls between the two .8's, so the edge is .8 and all three share bin 0:
  # |2 - 2.2| / 3 (splitting the tie by rank would give bins {.6, .8 wrong} and {.8 ok}: (.4 + .2) / 3).
  p = np.array([[0.6, 0.4], [0.8, 0.2], [0.8, 0.2]], np.float32)
  for y in ([0, 1, 0], [0, 0, 1]):
    perm = np.array([0, 1, 2]) if y == [0, 1, 0] else np.array([0, 2, 1])
    assert float(M.adaptive_ece(p[perm], np.array(y, np.int32), num_bins=2)) == pytest.approx(0.2 / 3, rel=1e-5)


def test_hand_bin_index():
  # M = 20: 0 -> 0, 0.25 (edge 5/20) -> 4, slightly above -> 5, 0.5 -> 9, 1.0 -> 19 (no extra bin).
  v = np.array([0.0, 0.25, np.nextafter(np.float32(0.25), np.float32(1)), 0.5, 0.75, 1.0], np.float32)
  np.testing.assert_array_equal(M.bin_index(v, 20), [0, 4, 5, 9, 14, 19])
  # Generic values agree with clip(ceil(c M) - 1, 0, M - 1) evaluated in float64.
  rng = np.random.default_rng(0)
  for m in (15, 20):
    c = rng.random(1000).astype(np.float32)
    expect = np.clip(np.ceil(c.astype(np.float64) * m) - 1, 0, m - 1)
    edge_close = np.abs(c[:, None] - ref_edges(m)[None]).min(1) < 1e-6
    np.testing.assert_array_equal(np.asarray(M.bin_index(c, m))[~edge_close], expect[~edge_close])
  # On a float32 edge the rule follows the stored edge: float32(9/15) sits a hair above 0.6 but is the edge.
  e = np.float32(9 / 15)
  assert int(M.bin_index(np.array([e]), 15)[0]) == 8
  assert int(M.bin_index(np.array([np.nextafter(e, np.float32(1))]), 15)[0]) == 9


# ----------------------------------------------------------------------------------------------- vs references


@pytest.mark.parametrize("m", [15, 20])
def test_binned_metrics_match_float64_reference(m):
  probs, labels = make_data(m, m=m)
  conf = probs.max(1)
  assert (conf == 1.0).any() and (probs == 0).any()
  assert np.isin(conf, (np.arange(m + 1) / m).astype(np.float32)).sum() >= 5  # edges are exercised
  ece_r, mce_r = ref_ece_mce(probs, labels, m)
  np.testing.assert_allclose(M.ece(probs, labels, num_bins=m), ece_r, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(M.mce(probs, labels, num_bins=m), mce_r, rtol=1e-5, atol=1e-6)
  cw = ref_classwise(probs, labels, m)
  np.testing.assert_allclose(M.classwise_ece(probs, labels, num_bins=m), cw, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(M.sce(probs, labels, num_bins=m), cw, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    M.adaptive_ece(probs, labels, num_bins=m), ref_adaptive(probs, labels, m), rtol=1e-5, atol=1e-6
  )
  acc, nll, brier = ref_scalars(probs, labels)
  np.testing.assert_allclose(M.accuracy(probs, labels), acc, rtol=1e-6)
  np.testing.assert_allclose(M.nll(probs, labels), nll, rtol=1e-5)
  np.testing.assert_allclose(M.brier(probs, labels), brier, rtol=1e-5)
  # Bin assignment of every entry is exactly the reference's.
  np.testing.assert_array_equal(M.bin_index(probs, m), np.vectorize(lambda v: ref_bin(v, m))(probs))


def test_adaptive_ece_from_confidences_and_uneven_sizes():
  probs, labels = make_data(3, n=101)
  conf = probs.max(1)
  correct = probs.argmax(1) == labels
  for m in (1, 7, 15, 150):  # 150 > N: some bins empty
    np.testing.assert_allclose(
      M.adaptive_ece_from_confidences(conf, correct, num_bins=m), ref_adaptive(probs, labels, m), rtol=1e-5, atol=1e-6
    )


# ----------------------------------------------------------------------------------------------- merge / mask / psum


def test_merge_equals_concatenate():
  probs, labels = make_data(7)
  chunks = [(0, 37), (37, 151), (151, 400)]
  for m in (15, 20):
    parts = [M.calibration_stats(probs[a:b], labels[a:b], num_bins=m) for a, b in chunks]
    merged = M.merge(M.merge(parts[0], parts[1]), parts[2])
    whole = M.calibration_stats(probs, labels, num_bins=m)
    for f in ("count", "correct", "class_count", "class_hits"):
      np.testing.assert_array_equal(getattr(merged, f), getattr(whole, f))
    np.testing.assert_allclose(merged.conf_sum, whole.conf_sum, rtol=1e-6)
    ece_r, mce_r = ref_ece_mce(probs, labels, m)
    np.testing.assert_allclose(M.ece_from_stats(merged), ece_r, rtol=1e-5)
    np.testing.assert_allclose(M.mce_from_stats(merged), mce_r, rtol=1e-5)
    np.testing.assert_allclose(M.classwise_ece_from_stats(merged), ref_classwise(probs, labels, m), rtol=1e-5)
    np.testing.assert_allclose(M.sce_from_stats(merged), M.sce(probs, labels, num_bins=m), rtol=1e-6)
  # EvalStats accumulated batch by batch (starting from zeros) gives the metrics of the whole.
  stats = M.EvalStats.zeros(probs.shape[1], num_bins=20)
  for a, b in chunks:
    stats = stats.update(probs[a:b], labels[a:b])
  out = stats.compute()
  acc, nll, brier = ref_scalars(probs, labels)
  assert int(out["num_examples"]) == 400
  np.testing.assert_allclose(out["accuracy"], acc, rtol=1e-6)
  np.testing.assert_allclose(out["nll"], nll, rtol=1e-5)
  np.testing.assert_allclose(out["brier"], brier, rtol=1e-5)
  np.testing.assert_allclose(out["ece"], ref_ece_mce(probs, labels, 20)[0], rtol=1e-5)
  np.testing.assert_allclose(out["mce"], ref_ece_mce(probs, labels, 20)[1], rtol=1e-5)
  np.testing.assert_allclose(out["classwise_ece"], ref_classwise(probs, labels, 20), rtol=1e-5)


def test_masked_rows_count_nowhere():
  probs, labels = make_data(11)
  rng = np.random.default_rng(1)
  keep = rng.random(400) < 0.7
  bad_p = probs.copy()
  bad_p[~keep] = np.nan  # padding garbage: must be ignored, not propagated
  bad_y = labels.copy()
  bad_y[~keep] = -1
  for f in (M.ece, M.mce, M.classwise_ece, M.sce, M.adaptive_ece):
    np.testing.assert_allclose(
      f(bad_p, bad_y, num_bins=15, where=keep), f(probs[keep], labels[keep], num_bins=15), rtol=1e-6
    )
  for f in (M.accuracy, M.nll, M.brier):
    np.testing.assert_allclose(f(bad_p, bad_y, where=keep), f(probs[keep], labels[keep]), rtol=1e-6)
  s_masked = M.eval_stats(bad_p, bad_y, where=keep).compute()
  s_kept = M.eval_stats(probs[keep], labels[keep]).compute()
  for key in s_kept:
    np.testing.assert_allclose(s_masked[key], s_kept[key], rtol=1e-6)


def test_psum_over_named_axis_gives_global_stats():
  probs, labels = make_data(5)
  fn = lambda p, y: M.calibration_stats(p, y, num_bins=15, axis_name="d")
  per = jax.vmap(fn, axis_name="d")(probs.reshape(4, 100, -1), labels.reshape(4, 100))
  whole = M.calibration_stats(probs, labels, num_bins=15)
  np.testing.assert_array_equal(per.count[0], whole.count)
  np.testing.assert_array_equal(per.class_hits[3], whole.class_hits)
  np.testing.assert_allclose(M.ece_from_stats(jax.tree.map(lambda x: x[0], per)), M.ece_from_stats(whole), rtol=1e-6)


def test_jit_matches_eager_and_skips_value_checks():
  probs, labels = make_data(9)
  keep = np.arange(400) % 3 != 0
  for f in (M.ece, M.classwise_ece, M.adaptive_ece):
    jf = jax.jit(f, static_argnames="num_bins")
    np.testing.assert_allclose(
      jf(probs, labels, num_bins=20, where=keep), f(probs, labels, num_bins=20, where=keep), rtol=1e-6
    )
  jit_update = jax.jit(lambda s, p, y: s.update(p, y))
  s = jit_update(M.EvalStats.zeros(5), probs, labels)
  np.testing.assert_allclose(s.compute()["nll"], M.nll(probs, labels), rtol=1e-6)
  # Under jit the values are traced: no value check (and no error) for rows that do not sum to 1.
  jax.jit(M.ece)(probs * 2, labels)


# ----------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", [M.ece, M.classwise_ece, M.adaptive_ece, M.calibration_stats])
def test_bad_input_binned(fn):
  p, y = HAND_P, HAND_Y
  with pytest.raises(ValueError, match="probs must have shape"):
    fn(p[0], y)
  with pytest.raises(TypeError, match="labels must be integer"):
    fn(p, y.astype(np.float32))
  with pytest.raises(ValueError, match="labels must have shape"):
    fn(p, y[:3])
  with pytest.raises(ValueError, match="where must have shape"):
    fn(p, y, where=np.ones(4, bool))
  with pytest.raises(TypeError, match="where must be a boolean"):
    fn(p, y, where=np.ones(5, np.int32))
  with pytest.raises(ValueError, match="sum to 1"):
    fn(p * 1.5, y)
  with pytest.raises(ValueError, match="non-negative"):
    fn(np.array([[1.5, -0.5]] + [[0.5, 0.5]] * 4, np.float32), y)
  with pytest.raises(ValueError, match="labels must lie in"):
    fn(p, np.array([0, 1, 2, 0, 0], np.int32))
  with pytest.raises(ValueError, match="num_bins"):
    fn(p, y, num_bins=0)
  # A masked row is not checked.
  bad = p.copy()
  bad[2] = 7.0
  fn(bad, y, where=np.array([True, True, False, True, True]))


def test_bad_input_scalar():
  with pytest.raises(ValueError, match="sum to 1"):
    M.nll(HAND_P * 0.5, HAND_Y)
  with pytest.raises(TypeError, match="labels must be integer"):
    M.accuracy(HAND_P, HAND_Y.astype(np.float64))
  with pytest.raises(ValueError, match="num_bins"):
    M.eval_stats(HAND_P, HAND_Y, num_bins=-1)
  with pytest.raises(ValueError, match="confidences"):
    M.adaptive_ece_from_confidences(HAND_P, HAND_P.argmax(1) == HAND_Y)


# ----------------------------------------------------------------------------------------------- OOD


def test_ood_scores_hand():
  p = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]], np.float32)
  np.testing.assert_allclose(M.max_prob(p), [1.0, 0.25, 0.5])
  np.testing.assert_allclose(M.entropy(p), [0.0, -math.log(4), -math.log(2)], rtol=1e-6)  # negative entropy
  z = np.array([[0.0, math.log(3.0)], [0.0, 0.0]], np.float32)
  np.testing.assert_allclose(M.energy(z), [math.log(4.0), math.log(2.0)], rtol=1e-6)  # -E = logsumexp
  np.testing.assert_allclose(M.energy(z, temperature=2.0)[0], 2 * math.log(1 + math.sqrt(3)), rtol=1e-6)
  assert M.HIGHER_IS_IN_DISTRIBUTION
  # Confident predictions score higher than uncertain ones under all three scores.
  zc = np.array([[8.0, 0.0, 0.0], [0.1, 0.0, 0.0]], np.float32)
  for name, f in M.OOD_SCORES.items():
    s = f(zc) if name == "energy" else f(jax.nn.softmax(zc))
    assert s[0] > s[1], name


def test_ood_metrics_hand():
  s_in, s_out = [3.0, 2.0, 1.0], [0.0, 2.0]
  # pairs: 3 beats both (2); 2 beats 0, ties 2 (1.5); 1 beats 0 (1) -> 4.5 / 6
  assert M.auroc(s_in, s_out) == pytest.approx(0.75)
  assert M.auroc(s_in, s_out, positive="out") == pytest.approx(0.75)
  # thresholds 3: P=1 R=1/3; 2: P=2/3 R=2/3; 1: P=3/4 R=1; 0: no recall gain
  assert M.aupr(s_in, s_out) == pytest.approx(1 / 3 + (1 / 3) * (2 / 3) + (1 / 3) * (3 / 4))
  # 20 in-scores 1..20: t = 19th largest = 2; OOD >= 2: {2, 2.5, 30} -> 3/5
  assert M.fpr_at_95_tpr(np.arange(1, 21), [0.0, 1.5, 2.0, 2.5, 30.0]) == pytest.approx(0.6)


def ref_fpr_at_tpr(pos, neg, tpr):
  for t in sorted(set(np.concatenate([pos, neg])), reverse=True):
    if np.mean(pos >= t) >= tpr:
      return np.mean(neg >= t)
  raise AssertionError


@pytest.mark.parametrize("ties", [False, True])
def test_ood_metrics_vs_sklearn(ties):
  rng = np.random.default_rng(3)
  s_in = rng.normal(1.0, 1.0, 300)
  s_out = rng.normal(0.0, 1.0, 170)
  if ties:
    s_in, s_out = np.round(s_in, 1), np.round(s_out, 1)
  y = np.r_[np.ones(300), np.zeros(170)]
  s = np.r_[s_in, s_out]
  assert M.auroc(s_in, s_out) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
  assert M.aupr(s_in, s_out) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
  assert M.aupr(s_in, s_out, positive="out") == pytest.approx(skm.average_precision_score(1 - y, -s), abs=1e-12)
  fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
  expect = fpr[np.searchsorted(tpr, 0.95, side="left")]
  assert M.fpr_at_95_tpr(s_in, s_out) == pytest.approx(expect, abs=1e-12)
  assert M.fpr_at_95_tpr(s_in, s_out) == pytest.approx(ref_fpr_at_tpr(s_in, s_out, 0.95), abs=1e-12)
  assert M.fpr_at_95_tpr(s_in, s_out, positive="out") == pytest.approx(ref_fpr_at_tpr(-s_out, -s_in, 0.95), abs=1e-12)


def test_ood_bad_input():
  with pytest.raises(ValueError, match="scores_in must be a 1-D"):
    M.auroc(np.zeros((2, 2)), [1.0])
  with pytest.raises(ValueError, match="scores_out must not be empty"):
    M.aupr([1.0], [])
  with pytest.raises(ValueError, match="scores_in contains NaN"):
    M.fpr_at_95_tpr([np.nan], [1.0])
  with pytest.raises(ValueError, match="positive must be"):
    M.auroc([1.0], [0.0], positive="ood")
  with pytest.raises(ValueError, match="temperature"):
    M.energy(np.zeros((1, 2)), temperature=0.0)


# ----------------------------------------------------------------------------------------------- conventions

# K = 3, M = 4, sparse rows (exact zeros), no value on an edge and none exactly 1.0.
SPARSE_P = np.array([[0.6, 0.4, 0.0], [0.0, 0.7, 0.3], [0.2, 0.0, 0.8], [0.1, 0.0, 0.9]], np.float32)
SPARSE_Y = np.array([0, 2, 2, 1], np.int32)


def test_hand_sce_skip_zeros():
  # Every entry counted (N = 4), bins of width .25:
  #   class 0: bin0 {0, .2, .1} no hit |0 - .3| = .3; bin2 {.6 hit} |1 - .6| = .4          -> .7 / 4 = .175
  #   class 1: bin0 {0, 0 (hit)} |1 - 0| = 1; bin1 {.4} .4; bin2 {.7} .7                   -> 2.1 / 4 = .525
  #   class 2: bin0 {0} 0; bin1 {.3 hit} .7; bin3 {.8 hit, .9} |1 - 1.7| = .7              -> 1.4 / 4 = .35
  #   SCE = (.175 + .525 + .35) / 3 = .35
  assert float(M.sce(SPARSE_P, SPARSE_Y, num_bins=4)) == pytest.approx(0.35, rel=1e-6)
  # Exact zeros dropped, class k normalised by its N_k nonzero entries:
  #   class 0: N_0 = 3, bin0 {.2, .1} .3, bin2 {.6 hit} .4                                 -> .7 / 3
  #   class 1: N_1 = 2 (the hit at 0 is dropped), bin1 {.4} .4, bin2 {.7} .7               -> 1.1 / 2 = .55
  #   class 2: N_2 = 3, bin1 {.3 hit} .7, bin3 {.8 hit, .9} .7                              -> 1.4 / 3
  #   SCE = (.7/3 + .55 + 1.4/3) / 3 = 1.25 / 3
  assert float(M.sce(SPARSE_P, SPARSE_Y, num_bins=4, skip_zeros=True)) == pytest.approx(1.25 / 3, rel=1e-6)
  stats = M.calibration_stats(SPARSE_P, SPARSE_Y, num_bins=4)
  np.testing.assert_array_equal(stats.class_zero_count, [1, 2, 1])
  np.testing.assert_array_equal(stats.class_zero_hits, [0, 1, 0])
  assert float(M.sce_from_stats(stats, skip_zeros=True)) == pytest.approx(1.25 / 3, rel=1e-6)
  # A class whose probabilities are all exactly 0 contributes 0 (and still counts in the mean over K).
  p = np.array([[0.6, 0.4, 0.0], [0.3, 0.7, 0.0]], np.float32)
  y = np.array([0, 1], np.int32)
  # class 0: bin1 {.3} .3, bin2 {.6 hit} .4 -> .7/2; class 1: bin1 {.4} .4, bin2 {.7 hit} .3 -> .7/2; class 2: 0.
  assert float(M.sce(p, y, num_bins=4, skip_zeros=True)) == pytest.approx(0.7 / 3, rel=1e-6)


def ref_sce_drop_zeros(probs, labels, m):
  """SCE as robustness_metrics computes it (threshold 0): per class, drop p == 0, bins [lo, hi) (np.digitize on the
  upper edges, so 1.0 gets a bin of its own), weights n_b / N_k, then the mean over the K classes."""
  p = np.asarray(probs, np.float64)
  k = p.shape[1]
  upper = np.linspace(0.0, 1.0, m + 1)[1:]
  total = 0.0
  for c in range(k):
    keep = p[:, c] > 0
    v, hit = p[keep, c], (np.asarray(labels)[keep] == c).astype(np.float64)
    if v.size == 0:
      continue
    b = np.digitize(v, upper)
    for j in range(m + 1):
      idx = b == j
      if idx.any():
        total += idx.sum() / v.size * abs(hit[idx].mean() - v[idx].mean()) / k
  return total


def _sparsemax(z):
  """Sparsemax rows (Martins & Astudillo 2016) in float64: exact zeros off the support."""
  zs = -np.sort(-z, axis=1)
  cs = np.cumsum(zs, axis=1)
  r = np.arange(1, z.shape[1] + 1)
  support = 1 + r * zs > cs
  kz = support.sum(1)
  tau = (cs[np.arange(len(z)), kz - 1] - 1) / kz
  return np.maximum(z - tau[:, None], 0.0)


def test_sce_skip_zeros_matches_drop_zero_reference_on_sparse_outputs():
  rng = np.random.default_rng(12)
  p = _sparsemax(0.8 * rng.standard_normal((600, 6)))
  p = p[p.max(1) < 1.0]  # no exact 1.0 (the reference would bin it apart)
  probs = p.astype(np.float32)
  probs = probs / probs.sum(1, keepdims=True)
  labels = np.array([rng.choice(6, p=row / row.sum()) for row in probs.astype(np.float64)], np.int32)
  m = 15
  assert (probs == 0).mean() > 0.3
  assert np.abs(probs[:, :, None] - (np.arange(1, m) / m)[None, None]).min() > 1e-6  # nothing on an interior edge
  ours = float(M.sce(probs, labels, num_bins=m))
  skip = float(M.sce(probs, labels, num_bins=m, skip_zeros=True))
  np.testing.assert_allclose(skip, ref_sce_drop_zeros(probs, labels, m), rtol=1e-5)
  np.testing.assert_allclose(ours, ref_classwise(probs, labels, m), rtol=1e-5)
  assert abs(skip - ours) > 0.2 * ours  # the convention matters on sparse outputs
  # On softmax outputs (no exact zeros) the two conventions agree.
  probs2, labels2 = make_data(4)
  probs2 = np.where(probs2 == 0, 1e-6, probs2).astype(np.float32)
  probs2 /= probs2.sum(1, keepdims=True)
  np.testing.assert_allclose(M.sce(probs2, labels2, skip_zeros=True), M.sce(probs2, labels2), rtol=1e-6)


def test_sce_skip_zeros_merge_mask_and_bad_input():
  probs, labels = make_data(8)
  parts = [M.calibration_stats(probs[a:b], labels[a:b]) for a, b in [(0, 150), (150, 400)]]
  merged = M.merge(parts[0], parts[1])
  whole = M.sce(probs, labels, skip_zeros=True)
  np.testing.assert_allclose(M.sce_from_stats(merged, skip_zeros=True), whole, rtol=1e-6)
  keep = np.arange(400) % 4 != 0
  bad = probs.copy()
  bad[~keep] = 0.0  # masked rows full of zeros must not count
  bad[~keep, 0] = np.nan
  np.testing.assert_allclose(
    M.sce(bad, labels, where=keep, skip_zeros=True), M.sce(probs[keep], labels[keep], skip_zeros=True), rtol=1e-6
  )
  s = M.EvalStats.zeros(5).update(probs, labels)
  np.testing.assert_allclose(
    M.sce_from_stats(s.calibration, skip_zeros=True), M.sce(probs, labels, skip_zeros=True), rtol=1e-6
  )
  with pytest.raises(TypeError, match="skip_zeros"):
    M.sce(probs, labels, skip_zeros=1)
  with pytest.raises(ValueError, match="stats"):
    M.sce_from_stats(M.calibration_stats(probs, labels, classwise=False), skip_zeros=True)


def test_hand_fpr_rules():
  s_out = [0.5, 1.5, 2.5, 3.5, 20.0]
  # 12 in-scores 1..12: 0.95 * 12 = 11.4 detected.
  #   first_reaching: 12 detected (TPR 1), t = 1: OOD >= 1 = {1.5, 2.5, 3.5, 20} -> 4/5
  #   closest: |11 - 11.4| = .4 < |12 - 11.4| = .6 -> 11 detected (TPR .917), t = 2: {2.5, 3.5, 20} -> 3/5
  s_in = np.arange(1, 13, dtype=np.float64)
  assert M.fpr_at_95_tpr(s_in, s_out) == pytest.approx(0.8)
  assert M.fpr_at_95_tpr(s_in, s_out, rule="first_reaching") == pytest.approx(0.8)
  assert M.fpr_at_95_tpr(s_in, s_out, rule="closest") == pytest.approx(0.6)
  # 10 in-scores 1..10: 9.5 detected is equidistant from 9 and 10; closest takes the higher TPR: t = 1 -> 4/5.
  assert M.fpr_at_95_tpr(np.arange(1, 11.0), s_out, rule="closest") == pytest.approx(0.8)
  # 20 in-scores: 19 detected exactly, both rules agree: t = 2 -> 3/5.
  s20 = np.arange(1, 21.0)
  assert M.fpr_at_95_tpr(s20, s_out, rule="closest") == M.fpr_at_95_tpr(s20, s_out) == pytest.approx(0.6)
  # Tied in-scores: 1 and eleven 3s; thresholds 3 (TPR 11/12) and 1 (TPR 1). closest: t = 3 -> {3.5, 20} = 2/5.
  tied = np.array([1.0] + [3.0] * 11)
  assert M.fpr_at_95_tpr(tied, s_out, rule="closest") == pytest.approx(0.4)
  assert M.fpr_at_95_tpr(tied, s_out, rule="first_reaching") == pytest.approx(0.8)
  # positive="out": OOD detected with the negated score (5 OOD, 4.75 -> 5 detected for both rules): t = -20,
  # in-distribution flagged: -s_in >= -20 -> all 12 -> 1.0
  assert M.fpr_at_95_tpr(s_in, s_out, positive="out", rule="closest") == pytest.approx(1.0)
  with pytest.raises(ValueError, match="rule"):
    M.fpr_at_95_tpr(s_in, s_out, rule="nearest")


def test_fpr_closest_vs_sklearn_roc_curve():
  rng = np.random.default_rng(5)
  s_in = rng.normal(1.0, 1.0, 293)  # 0.95 * 293 = 278.35: closest (278) and first_reaching (279) differ
  s_out = rng.normal(0.0, 1.0, 170)
  y = np.r_[np.ones(293), np.zeros(170)]
  fpr, tpr, _ = skm.roc_curve(y, np.r_[s_in, s_out], drop_intermediate=False)
  assert M.fpr_at_95_tpr(s_in, s_out, rule="closest") == pytest.approx(fpr[np.argmin(np.abs(tpr - 0.95))], abs=1e-12)
  assert M.fpr_at_95_tpr(s_in, s_out) == pytest.approx(fpr[np.searchsorted(tpr, 0.95, side="left")], abs=1e-12)
  assert M.fpr_at_95_tpr(s_in, s_out, rule="closest") <= M.fpr_at_95_tpr(s_in, s_out)
