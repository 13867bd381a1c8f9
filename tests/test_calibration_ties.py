"""Calibration on every model's output: equal-mass estimators on tied (discrete, saturated) confidences against
references written here from the authors' definitions (Kumar et al.'s verified_calibration bins and estimators,
Hendrycks et al.'s calib_err), top-label calibrators scored on their (prediction, confidence) pair, ATS monotone in
float32 near confidence 1, and metrics that refuse non-probabilities under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from gence_jax import calibration as C
from gence_jax import metrics as M
from gence_jax.train import evaluate

# ----------------------------------------------------------------------------------------------- references


def _top(probs, labels):
  p = probs.astype(np.float64)
  return p.max(1), (p.argmax(1) == labels).astype(np.float64)


def _kumar_equal_bins(conf, m):
  """verified_calibration's get_equal_bins: sorted values cut in chunks of ceil(n / m); an edge at the midpoint of
  the last value of a chunk and the first of the next; 1.0 appended; duplicates dropped."""
  s = np.sort(conf)
  size = -(-s.size // m)
  chunks = [s[i : i + size] for i in range(0, s.size, size)]
  edges = {(chunks[i][-1] + chunks[i + 1][0]) / 2.0 for i in range(len(chunks) - 1)}
  return np.asarray(sorted(edges | {1.0}))


def _kumar_discrete_bins(conf):
  """get_discrete_bins: midpoints between consecutive distinct values, then 1.0."""
  u = np.unique(conf)
  return np.asarray(list((u[:-1] + u[1:]) / 2.0) + [1.0])


def _kumar_ce2(conf, corr, edges, debias):
  """Kumar et al.'s plugin_ce (power 2, squared) / unbiased_square_ce over the bins bisect_left(edges, value)."""
  b = np.searchsorted(edges, conf, side="left")
  total = 0.0
  for j in np.unique(b):
    sel = b == j
    nb = sel.sum()
    if debias and nb < 2:
      continue
    est = (conf[sel].mean() - corr[sel].mean()) ** 2
    if debias:
      a = corr[sel].mean()
      est -= a * (1 - a) / (nb - 1)
    total += nb / conf.size * est
  return total


def _value_edge_bins(conf, m):
  """Our equal-mass rule written from its definition: cuts at ranks ceil(j n / m), an edge at the midpoint of the
  sorted values either side of each cut, a value equal to an edge in the lower bin."""
  s = np.sort(conf)
  n = s.size
  cuts = [-(-j * n // m) for j in range(1, m)]
  edges = np.asarray([(s[c - 1] + s[c]) / 2.0 for c in cuts if 0 < c < n] + [np.inf])
  return np.searchsorted(edges, conf, side="left")


def _rank_bins(conf, m):
  """The previous rank rule (rank r -> floor(r m / n)), the reference for tie-free confidences."""
  n = conf.size
  b = np.empty(n, int)
  b[np.argsort(conf)] = (np.arange(n) * m) // n
  return b


def _binned(conf, corr, b, debias=False, power=2):
  total = 0.0
  for j in np.unique(b):
    sel = b == j
    nb = sel.sum()
    gap = abs(conf[sel].mean() - corr[sel].mean()) ** power
    if debias:
      if nb < 2:
        continue
      a = corr[sel].mean()
      gap -= a * (1 - a) / (nb - 1)
    total += nb / conf.size * gap
  return total


def _hendrycks_calib_err(conf, corr, beta=100):
  """Hendrycks et al.'s calib_err, p = '2': rank chunks of beta, the remainder appended to the last chunk, the
  last chunk skipped, N counting every example."""
  order = np.argsort(conf, kind="stable")
  c, z = conf[order], corr[order]
  starts = list(range(0, (c.size // beta) * beta, beta))
  stops = starts[1:] + [c.size]
  err = 0.0
  for lo, hi in list(zip(starts, stops))[:-1]:
    err += (hi - lo) / c.size * (c[lo:hi].mean() - z[lo:hi].mean()) ** 2
  return np.sqrt(err)


def _discrete_output(seed, n=600, k=5, levels=10):
  """Probability vectors whose top value takes `levels` distinct values (what binning calibrators output), with
  labels drawn so that the top class is right with probability near its confidence."""
  rng = np.random.default_rng(seed)
  top = rng.choice(np.linspace(0.3, 0.95, levels), size=n)
  cls = rng.integers(0, k, n)
  rest = (1 - top)[:, None] * np.ones((n, k - 1)) / (k - 1)
  probs = np.zeros((n, k))
  probs[np.arange(n), cls] = top
  probs[~np.eye(k, dtype=bool)[cls]] = rest.ravel()
  right = rng.random(n) < top + 0.05 * rng.normal(size=n)
  labels = np.where(right, cls, (cls + rng.integers(1, k, n)) % k).astype(np.int32)
  return probs.astype(np.float32), labels


def _continuous(seed, n=600, k=5, scale=2.0):
  rng = np.random.default_rng(seed)
  t = rng.normal(size=(n, k)) * 2
  labels = (special.softmax(t, 1).cumsum(1) > rng.random((n, 1))).argmax(1).astype(np.int32)
  return special.softmax(scale * t, 1).astype(np.float32), labels


# ----------------------------------------------------------------------------------------------- equal-mass bins


@pytest.mark.parametrize("n", [600, 607])
def test_equal_mass_estimators_on_discrete_outputs_use_value_edges(n):
  probs, labels = _discrete_output(0, n=n)
  conf, corr = _top(probs, labels)
  assert np.unique(conf).size == 10
  m = 15
  b = _value_edge_bins(conf, m)
  np.testing.assert_allclose(float(M.adaptive_ece(probs, labels, num_bins=m)), _binned(conf, corr, b, power=1),
                             rtol=1e-5)
  for debias in (False, True):
    ours = float(M.l2_calibration_error(probs, labels, num_bins=m, binning="mass", squared=True, debias=debias))
    np.testing.assert_allclose(ours, _binned(conf, corr, b, debias=debias), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(float(M.rmsce(probs, labels, num_bins=m)), np.sqrt(_binned(conf, corr, b)), rtol=1e-5)
  # With M dividing N the rank cuts are Kumar et al.'s chunks, so their get_equal_bins gives the same estimate.
  if n % m == 0:
    edges = _kumar_equal_bins(conf, m)
    for debias in (False, True):
      ours = float(M.l2_calibration_error(probs, labels, num_bins=m, binning="mass", squared=True, debias=debias))
      np.testing.assert_allclose(ours, _kumar_ce2(conf, corr, edges, debias), rtol=1e-4, atol=1e-7)
  # Kumar et al.'s estimator for binned models: one bin per distinct value.
  edges = _kumar_discrete_bins(conf)
  for debias in (False, True):
    ours = float(M.l2_calibration_error(probs, labels, binning="values", squared=True, debias=debias))
    np.testing.assert_allclose(ours, _kumar_ce2(conf, corr, edges, debias), rtol=1e-4, atol=1e-7)
  # The bias the rank rule had: splitting each tied group by label makes all-wrong and all-right bins.
  order = np.lexsort((corr, conf))
  rank_split = np.empty(n, int)
  rank_split[order] = (np.arange(n) * m) // n
  assert _binned(conf, corr, rank_split, power=1) > 2 * float(M.adaptive_ece(probs, labels, num_bins=m))


def test_equal_mass_estimators_unchanged_on_tie_free_scores():
  probs, labels = _continuous(1, n=607)
  conf, corr = _top(probs, labels)
  assert np.unique(probs.max(1)).size == 607
  for m in (7, 15):
    b = _rank_bins(conf, m)
    np.testing.assert_allclose(float(M.adaptive_ece(probs, labels, num_bins=m)), _binned(conf, corr, b, power=1),
                               rtol=1e-5)
    got = float(M.l2_calibration_error(probs, labels, num_bins=m, binning="mass", debias=True, squared=True))
    np.testing.assert_allclose(got, _binned(conf, corr, b, debias=True), rtol=1e-4, atol=1e-7)


def test_saturated_confidences_share_one_bin():
  """17% of the confidences exactly 1.0 (float32 saturation): they form one bin, with the labels they have."""
  probs, labels = _continuous(2, n=600, scale=2.0)
  rng = np.random.default_rng(2)
  sat = rng.random(600) < 0.17
  k = probs.shape[1]
  probs[sat] = np.eye(k, dtype=np.float32)[probs[sat].argmax(1)]
  conf, corr = _top(probs, labels)
  b = _value_edge_bins(conf, 15)
  assert np.unique(b[conf == 1.0]).size == 1
  for debias in (False, True):
    got = float(M.l2_calibration_error(probs, labels, num_bins=15, binning="mass", debias=debias, squared=True))
    np.testing.assert_allclose(got, _binned(conf, corr, b, debias=debias), rtol=1e-4, atol=1e-7)
  # The bootstrap's adaptive ECE of the full-weight "resample" is the point value (same rule, weights 1).
  w = np.ones((600, 1), np.int32)
  ones = jnp.asarray(w[:, 0])
  np.testing.assert_allclose(
    float(M.ece_from_stats(M.equal_mass_stats(probs, labels, num_bins=15, weights=ones))),
    float(M.adaptive_ece(probs, labels, num_bins=15)), rtol=1e-6,
  )


@pytest.mark.parametrize("n", [600, 607])
def test_rmsce_bin_size_reproduces_hendrycks_calib_err(n):
  probs, labels = _continuous(3, n=n)
  conf, corr = _top(probs, labels)
  np.testing.assert_allclose(float(M.rmsce(probs, labels, bin_size=100)), _hendrycks_calib_err(conf, corr), rtol=1e-5)
  with pytest.raises(ValueError, match="bin_size"):
    M.rmsce(probs[:50], labels[:50], bin_size=100)


# ----------------------------------------------------------------------------------------------- top-label output


def test_pair_metrics_equal_the_vector_metrics():
  probs, labels = _continuous(4, n=500)
  conf = probs.max(1)
  correct = probs.argmax(1) == labels
  got = M.top_label_metrics(conf, correct, num_bins=12)
  want = {
    "accuracy": M.accuracy(probs, labels),
    "ece": M.ece(probs, labels, num_bins=12),
    "mce": M.mce(probs, labels, num_bins=12),
    "adaptive_ece": M.adaptive_ece(probs, labels, num_bins=12),
    "l2_ce": M.l2_calibration_error(probs, labels, num_bins=12),
    "l2_ce_debiased": M.l2_calibration_error(probs, labels, num_bins=12, debias=True),
    "rmsce": M.rmsce(probs, labels, num_bins=12),
    "smooth_ece": M.smooth_ece(probs, labels),
  }
  for name, value in want.items():
    np.testing.assert_allclose(float(got[name]), float(value), rtol=1e-5, atol=1e-7, err_msg=name)
  a = M.bootstrap_top_label_intervals(conf, correct, num_bins=12, num_resamples=30, seed=5)
  b = M.bootstrap_intervals(probs, labels, num_bins=12, num_resamples=30, seed=5)
  for name in M.TOP_LABEL_BOOTSTRAP:
    for key in ("value", "low", "high", "std"):
      np.testing.assert_allclose(float(a[name][key]), float(b[name][key]), rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_label_calibrators_keep_the_accuracy(seed):
  """Low-accuracy models (three sets, logit scales 1, 2, 3), where a rescaled vector moved the argmax on many rows:
  scored by the program's path, each
  top-label calibrator has exactly the raw accuracy, and its ECE is the ECE of its own pair."""
  rng = np.random.default_rng(seed)
  k = 10  # one shape for the three sets: each metric compiles once
  z = rng.normal(size=(900, k)).astype(np.float32) * (1.0 + seed)
  y = np.where(rng.random(900) < 0.5, z.argmax(1), rng.integers(0, k, 900)).astype(np.int32)
  (zv, yv), (zt, yt) = (z[:450], y[:450]), (z[450:], y[450:])
  raw = evaluate.score(np.asarray(jax.nn.softmax(zt)), yt, 15)
  assert raw["accuracy"] < 0.75
  for method in ("histogram", "isotonic", "scaling_binning"):
    cal = C.fit(method, zv, yv)
    scored = evaluate.score_calibrator(cal, zt, yt, 15, bootstrap=20)
    assert scored["accuracy"] == raw["accuracy"], method
    pred = cal.predict(zt)
    ece = M.top_label_metrics(np.asarray(pred.confidence), np.asarray(pred.prediction) == yt)["ece"]
    assert scored["ece"] == pytest.approx(float(ece), rel=1e-6)
    assert all(scored[m] is None for m in M.UNDEFINED) and scored["undefined"] == list(M.UNDEFINED)
    assert set(scored["bootstrap"]) >= {"accuracy", "ece", "adaptive_ece"}


# ----------------------------------------------------------------------------------------------- ATS near 1


def test_ats_monotone_in_float32_near_confidence_one():
  """Along rays z = s v whose softmax confidence runs from 0.999 to 1 - 1e-7 (and past float32 saturation), the
  calibrated top confidence of a steep monotone ATS never falls by more than float rounding."""
  k = 10
  centres = jnp.asarray([0.9, 0.999, 0.99999], jnp.float32)
  xk = C.ref_log_gap(centres.astype(jnp.float64) if jax.config.x64_enabled else centres, k)
  # The steepest allowed curve: log T rises by (almost) the full gap difference between knots.
  taus = np.cumsum([0.0, 0.999 * float(xk[1] - xk[0]), 0.999 * float(xk[2] - xk[1])])
  params = C.ATSParams(
    boundaries=jnp.asarray([0.99, 0.9999], jnp.float32), temperatures=jnp.asarray(np.exp(taus), jnp.float32),
    global_temperature=jnp.asarray(1.0, jnp.float32), counts=jnp.asarray([100, 100, 100]),
    fitted=jnp.asarray([True, True, True]), centres=centres, link=jax.nn.softmax,
  )
  rng = np.random.default_rng(0)
  worst = 0.0
  for _ in range(8):
    v = rng.normal(size=k)
    v[0] = v.max() + rng.uniform(0.5, 2.0)
    s = np.geomspace(1.0, 60.0, 4000)
    z = jnp.asarray(s[:, None] * v[None, :], jnp.float32)
    c = np.asarray(jnp.max(jax.nn.softmax(C.apply_ats(params, z)), -1), np.float64)
    worst = max(worst, float(np.max(c[:-1] - c[1:])))
  assert worst <= 2e-7, worst  # float32 rounding of the calibrated softmax, not a step of the temperature


def test_ats_reports_a_degenerate_fit():
  """Most confidences exactly 1.0 (a sparse link): the equal-mass pieces collapse, and the summary says so."""
  rng = np.random.default_rng(0)
  z = rng.normal(size=(300, 4)).astype(np.float32)
  z[:200, 0] += 50.0  # softmax confidence rounds to 1.0 in float32
  y = z.argmax(1).astype(np.int32)
  y[rng.random(300) < 0.2] = 1
  cal = C.fit("ats", z, y, num_pieces=3, min_count=10)
  counts = cal.summary()["counts"]
  assert 0 in counts and "degenerate" in cal.summary() and "empty" in cal.degenerate()


# ----------------------------------------------------------------------------------------------- under jit


def test_metrics_under_jit_refuse_rows_that_are_not_probabilities():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(64, 5)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 5, 64), jnp.int32)
  for fn in (M.ece, M.adaptive_ece, M.accuracy, M.nll, M.sce, M.l2_calibration_error):
    assert np.isnan(float(jax.jit(fn)(logits, labels))), fn.__name__
    assert np.isfinite(float(jax.jit(fn)(jax.nn.softmax(logits), labels))), fn.__name__
  bad_labels = labels.at[3].set(7)
  assert np.isnan(float(jax.jit(M.ece)(jax.nn.softmax(logits), bad_labels)))
  # Eagerly, the same inputs are a one-line error.
  with pytest.raises(ValueError, match="^calibration_stats: `probs` must be non-negative"):
    M.ece(logits, labels)
