"""Tests for the calibrators beyond TS/ATS and for calibration.fit: independent references (SciPy fits of the same
objectives written here, scikit-learn's IsotonicRegression, NumPy binning), invariants and bad input."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, special
from sklearn.isotonic import IsotonicRegression

from gence_jax import calibration as C

METHODS = (
  "ts",
  "ts_ece",
  "ats",
  "vector",
  "matrix",
  "dirichlet",
  "histogram",
  "histogram_ovr",
  "isotonic",
  "isotonic_ovr",
  "scaling_binning",
)
TOP_LABEL = ("histogram", "isotonic", "scaling_binning")  # calibrators whose output is (prediction, confidence)


def make_data(seed=0, n=600, k=4, scale=2.5):
  """Labels drawn from softmax(t); the model's logits are overconfident (scale) and biased per class."""
  rng = np.random.default_rng(seed)
  t = rng.normal(size=(n, k)) * 1.5
  labels = (special.softmax(t, 1).cumsum(1) > rng.random((n, 1))).argmax(1).astype(np.int32)
  z = scale * t + np.linspace(-0.6, 0.6, k)[None, :]
  return z.astype(np.float32), labels


def sparsemax(z):
  """Sparsemax (Martins & Astudillo 2016), sort-based: an independent non-softmax link."""
  z = jnp.asarray(z)
  k = z.shape[-1]
  zs = -jnp.sort(-z, axis=-1)
  cs = jnp.cumsum(zs, axis=-1)
  r = jnp.arange(1, k + 1, dtype=z.dtype)
  kz = jnp.sum(1 + r * zs > cs, axis=-1, keepdims=True)
  tau = (jnp.take_along_axis(cs, kz - 1, axis=-1) - 1) / kz
  return jnp.maximum(z - tau, 0)


def nll64(probs, labels):
  p = np.asarray(probs, np.float64)[np.arange(len(labels)), labels]
  return -np.mean(np.log(np.maximum(p, np.finfo(np.float32).tiny)))


def ece64(probs, labels, m=15):
  """Top-label ECE with equal-width bins (lo, hi] (docs/calibration.md), float64."""
  probs = np.asarray(probs, np.float64)
  c, correct = probs.max(1), probs.argmax(1) == labels
  b = np.clip(np.ceil(c * m) - 1, 0, m - 1).astype(int)
  return sum(abs(correct[b == j].sum() - c[b == j].sum()) for j in range(m)) / len(labels)


# ----------------------------------------------------------------------------------------------- uniform API


@pytest.fixture(scope="module")
def fitted():
  z, y = make_data()
  return z, y, {m: C.fit(m, z, y) for m in METHODS}


def test_available_methods_and_outputs_are_probability_vectors(fitted):
  z, y, cals = fitted
  assert set(METHODS) <= set(C.available_methods())
  z_new, _ = make_data(1)
  for m, cal in cals.items():
    assert cal.method == m and cal.link is jax.nn.softmax
    assert cal.top_label == (m in TOP_LABEL), m
    for x in (z, z_new):
      if cal.top_label:  # the pair: the model's own prediction and a confidence in [0, 1]; no vector
        pred = cal.predict(x)
        np.testing.assert_array_equal(pred.prediction, x.argmax(1), err_msg=m)
        c = np.asarray(pred.confidence)
        assert c.shape == (len(x),) and np.all((c >= 0) & (c <= 1)), m
        with pytest.raises(ValueError, match="top-label"):
          cal.probs(x)
        continue
      p = np.asarray(cal.probs(x))  # jax.jit(calibrated_probs) with the params pytree as an argument
      assert p.shape == x.shape and np.all(p >= 0), m
      np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5, err_msg=m)
      pred = cal.predict(x)
      np.testing.assert_array_equal(pred.prediction, p.argmax(1), err_msg=m)
      np.testing.assert_allclose(pred.confidence, p.max(1), rtol=1e-6, err_msg=m)
    text = json.dumps(cal.summary())
    assert json.loads(text)["method"] == m and len(text) < 1500, m
  assert cals["ts"].summary()["temperature"] == pytest.approx(float(cals["ts"].params.temperature))
  assert len(cals["ats"].summary()["temperatures"]) == 4


def test_argmax_kept_by_scaling_with_one_positive_factor(fitted):
  z, y, cals = fitted
  for m in ("ts", "ts_ece", "ats"):
    np.testing.assert_array_equal(np.asarray(cals[m].probs(z)).argmax(1), z.argmax(1), err_msg=m)
  # Top-label calibrators keep the prediction on every row, whatever the calibrated confidence.
  for m in TOP_LABEL:
    pred = cals[m].predict(z)
    np.testing.assert_array_equal(pred.prediction, z.argmax(1), err_msg=m)
    assert np.any(np.asarray(pred.confidence) < 0.5), m  # rows where a rescaled vector could have moved the argmax
  # Vector scaling does not keep it, even with positive scales: scales (1, 2) turn (1, 0.6) into (1, 1.2).
  params = C.VectorScalingParams(scale=jnp.array([1.0, 2.0]), bias=jnp.zeros(2))
  assert int(jnp.argmax(C.calibrated_probs(params, jnp.array([[1.0, 0.6]])))) == 1


def test_each_fit_is_no_worse_than_identity_by_its_criterion(fitted):
  z, y, cals = fitted
  raw = special.softmax(z.astype(np.float64), 1)
  nll_raw = nll64(raw, y)
  for m in ("ts", "ats", "vector"):
    assert nll64(cals[m].probs(z), y) <= nll_raw, m
  for m in ("matrix", "dirichlet"):  # mean NLL + ODIR penalty; the identity has penalty 0
    assert float(C.scaling_objective(cals[m].params, z, y)) <= nll_raw * (1 + 1e-6), m
  assert ece64(cals["ts_ece"].probs(z), y) <= ece64(raw, y) + 1e-7  # T = 1 is on the grid
  # Isotonic regression: the least-squares monotone fit; the identity map is monotone, hence feasible.
  correct = (raw.argmax(1) == y).astype(float)
  top = np.asarray(cals["isotonic"].predict(z).confidence, np.float64)
  assert np.sum((correct - top) ** 2) <= np.sum((correct - raw.max(1)) ** 2)
  # TS and ATS lower the NLL clearly on this overconfident model.
  assert nll64(cals["ts"].probs(z), y) < nll_raw - 0.05


def test_fit_errors_are_one_line(fitted):
  z, y, _ = fitted
  with pytest.raises(ValueError, match=r"^fit: unknown method 'platt'; available: ts, ts_ece, ats") as e:
    C.fit("platt", z, y)
  assert "\n" not in str(e.value) and all(m in str(e.value) for m in METHODS)
  with pytest.raises(TypeError, match=r"^fit: method 'ts' takes no option\(s\) num_pieces; its options:") as e:
    C.fit("ts", z, y, num_pieces=3)
  assert "\n" not in str(e.value)
  with pytest.raises(TypeError, match="takes no option"):
    C.fit("isotonic", z, y, variant="one_vs_rest")  # the variant is set by the method name
  cal = C.fit("ts_ece", z, y, num_bins=15, temperatures=(1.0, 2.0))
  assert cal.summary()["options"] == {"num_bins": 15, "temperatures": [1.0, 2.0]}


# ----------------------------------------------------------------------------------------------- affine calibrators


def scipy_affine_fit(x, labels, kind, lam=0.0, mu=0.0):
  """Reference fit in float64: scipy BFGS on mean NLL of softmax(affine(x)) + ODIR, analytic gradient."""
  n, k = x.shape
  y = np.eye(k)[labels]
  off = ~np.eye(k, dtype=bool)

  def unpack(theta):
    if kind == "vector":
      return theta[:k], theta[k:]
    return theta[: k * k].reshape(k, k), theta[k * k :]

  def fun(theta):
    w, b = unpack(theta)
    s = x * w + b if kind == "vector" else x @ w.T + b
    logp = special.log_softmax(s, 1)
    g = (np.exp(logp) - y) / n
    value = -np.sum(y * logp) / n
    if kind == "vector":
      return value, np.concatenate([np.sum(g * x, 0), g.sum(0)])
    value += lam * np.sum(w[off] ** 2) / (k * (k - 1)) + mu * np.sum(b**2) / k
    gw = g.T @ x + 2 * lam * np.where(off, w, 0) / (k * (k - 1))
    return value, np.concatenate([gw.ravel(), g.sum(0) + 2 * mu * b / k])

  theta0 = np.concatenate([np.ones(k) if kind == "vector" else np.eye(k).ravel(), np.zeros(k)])
  res = optimize.minimize(fun, theta0, jac=True, method="BFGS", options=dict(gtol=1e-10, maxiter=5000))
  w, b = unpack(res.x)
  s = x * w + b if kind == "vector" else x @ w.T + b
  return res.fun, w, b, special.softmax(s, 1)


@pytest.mark.parametrize("method", ["vector", "matrix", "dirichlet"])
def test_affine_calibrators_match_scipy_reference(method):
  z, y = make_data(2, n=300, k=3)
  z64 = z.astype(np.float64)
  x = special.log_softmax(z64, 1) if method == "dirichlet" else z64  # Dirichlet: log-probabilities through the link
  lam, mu = (0.0, 0.0) if method == "vector" else (0.3, 0.1)
  opts = {} if method == "vector" else dict(reg_offdiag=lam, reg_bias=mu)
  with jax.enable_x64(True):
    cal = C.fit(method, z64, y, **opts)
    probs = np.asarray(cal.probs(z64))
    objective = float(C.scaling_objective(cal.params, z64, y))
  f_ref, w_ref, b_ref, p_ref = scipy_affine_fit(x, y, "vector" if method == "vector" else "matrix", lam, mu)
  assert objective == pytest.approx(f_ref, rel=1e-9, abs=1e-10)
  np.testing.assert_allclose(probs, p_ref, atol=1e-5)
  if method != "vector":  # ODIR makes the optimum unique: the parameters agree too
    np.testing.assert_allclose(cal.params.weight, w_ref, atol=1e-4)
    np.testing.assert_allclose(cal.params.bias, b_ref, atol=1e-4)
    assert cal.summary()["kind"] == method and "weight" not in cal.summary()


def test_dirichlet_through_a_sparse_link():
  z, y = make_data(3, n=300, k=4, scale=0.6)
  for method in ("dirichlet",):
    cal = C.fit(method, z, y, link=sparsemax)
    p = np.asarray(cal.probs(z))
    assert np.all(p >= 0) and np.allclose(p.sum(1), 1, atol=1e-5)
    # Never worse than the identity: for Dirichlet, softmax(log max(sparsemax(z), tiny)) is sparsemax up to tiny mass.
    raw = np.asarray(sparsemax(z))
    assert float(C.scaling_objective(cal.params, z, y)) <= nll64(raw, y) * (1 + 1e-5), method


# ----------------------------------------------------------------------------------------------- binning


def hist_reference(s, t, m, binning):
  """NumPy histogram binning: (edges, values) with bins (lo, hi], empty bins at their midpoints."""
  if binning == "equal_mass":
    srt = np.sort(s)
    inner = srt[(np.arange(1, m) * len(s) + m - 1) // m - 1]
  else:
    inner = np.arange(1, m) / m
  idx = np.searchsorted(inner, s, side="left")
  edges = np.concatenate([[0.0], inner, [1.0]])
  values = np.array([t[idx == b].mean() if np.any(idx == b) else 0.5 * (edges[b] + edges[b + 1]) for b in range(m)])
  return inner, values


@pytest.mark.parametrize("binning", ["equal_mass", "equal_width"])
def test_histogram_binning_matches_numpy_reference(binning):
  z, y = make_data(4, n=400, k=4)
  z_new, _ = make_data(5, n=100, k=4)
  m = 8
  p = special.softmax(z.astype(np.float64), 1)
  p_new = np.asarray(jax.nn.softmax(z_new), np.float64)
  # Top-label: (top probability, correctness).
  top = C.fit_histogram_binning(z, y, num_bins=m, binning=binning)
  p32 = np.asarray(jax.nn.softmax(jnp.asarray(z)), np.float64)  # the confidences the library bins (float32)
  inner, values = hist_reference(p32.max(1), (p.argmax(1) == y).astype(float), m, binning)
  np.testing.assert_allclose(top.boundaries, inner, rtol=1e-6)
  np.testing.assert_allclose(top.values, values, atol=1e-6)
  out = C.calibrated_top_label(top, z_new)  # the pair: the model's prediction, the value of its bin
  np.testing.assert_array_equal(out.prediction, p_new.argmax(1))
  np.testing.assert_allclose(out.confidence, values[np.searchsorted(inner, p_new.max(1), side="left")], atol=1e-6)
  # One-vs-rest: (p_k, 1[y = k]) per class, renormalised.
  ovr = C.fit_histogram_binning(z, y, num_bins=m, binning=binning, variant="one_vs_rest")
  scores = np.zeros_like(p_new)
  for k in range(4):
    inner_k, values_k = hist_reference(p32[:, k], (y == k).astype(float), m, binning)
    np.testing.assert_allclose(ovr.values[k], values_k, atol=1e-6)
    scores[:, k] = values_k[np.searchsorted(inner_k, p_new[:, k], side="left")]
  np.testing.assert_allclose(C.calibrated_probs(ovr, z_new), scores / scores.sum(1, keepdims=True), atol=1e-5)


def test_isotonic_matches_sklearn():
  z, y = make_data(6, n=500, k=3)
  z = z[np.random.default_rng(6).integers(0, 150, 500)]  # repeated rows: tied scores are pooled first, as in sklearn
  z_new, _ = make_data(7, n=300, k=3, scale=4.0)  # beyond the fitted range too (clipped)
  p = np.asarray(jax.nn.softmax(jnp.asarray(z)), np.float64)
  p_new = np.asarray(jax.nn.softmax(jnp.asarray(z_new)), np.float64)
  assert len(np.unique(p.max(1))) < 400
  # Top-label.
  cal = C.fit("isotonic", z, y)
  ref = IsotonicRegression(out_of_bounds="clip").fit(p.max(1), (p.argmax(1) == y).astype(float))
  for x, px in ((z, p), (z_new, p_new)):
    ours = np.asarray(cal.predict(x).confidence, np.float64)
    np.testing.assert_allclose(ours, ref.predict(px.max(1)), atol=1e-6)
  # One-vs-rest, renormalised.
  ovr = C.fit("isotonic_ovr", z, y)
  iso = [IsotonicRegression(out_of_bounds="clip").fit(p[:, k], (y == k).astype(float)) for k in range(3)]
  scores = np.stack([iso[k].predict(p_new[:, k]) for k in range(3)], 1)
  np.testing.assert_allclose(ovr.probs(z_new), scores / scores.sum(1, keepdims=True), atol=1e-5)


def test_scaling_binning_follows_kumar_et_al():
  z, y = make_data(8, n=600, k=4)
  cal = C.fit("scaling_binning", z, y, num_bins=6, fit_fraction=0.5, seed=3)
  params = cal.params
  # The documented split: a seeded permutation of the unmasked rows, the first half fits T.
  perm = np.random.default_rng(3).permutation(np.arange(600))
  scale_part, bin_part = perm[:300], perm[300:]
  t = float(params.temperature)
  t_ref = float(C.fit_temperature(z[scale_part], y[scale_part]).temperature)
  assert t == pytest.approx(t_ref, rel=1e-6)
  g = special.softmax(z.astype(np.float64) / t, 1).max(1)
  inner, values = hist_reference(np.asarray(jax.nn.softmax(jnp.asarray(z) / t).max(1), np.float64)[bin_part],
                                 g[bin_part], 6, "equal_mass")  # means of the scaled values, no labels
  np.testing.assert_allclose(params.boundaries, inner, rtol=1e-6)
  np.testing.assert_allclose(params.values, values, rtol=1e-5)
  pred = cal.predict(z)
  np.testing.assert_array_equal(pred.prediction, z.argmax(1))
  top = np.asarray(pred.confidence, np.float64)
  assert len(np.unique(np.round(top, 6))) <= 6
  far = np.abs(g[:, None] - inner[None, :]).min(1) > 1e-6  # rows on a boundary may round to either side
  assert far.sum() > 500
  np.testing.assert_allclose(top[far], values[np.searchsorted(inner, g[far], side="left")], atol=1e-5)


def test_ts_ece_matches_grid_reference():
  z, y = make_data(9, n=400, k=4, scale=3.0)
  with jax.enable_x64(True):
    t = float(C.fit("ts_ece", z.astype(np.float64), y).params.temperature)
  grid = np.arange(1, 101) / 10
  values = [ece64(special.softmax(z.astype(np.float64) / s, 1), y) for s in grid]
  assert t == grid[int(np.argmin(values))]  # the first minimiser on the grid 0.1, 0.2, ..., 10.0
  assert values[int(np.argmin(values))] < ece64(special.softmax(z.astype(np.float64), 1), y)
  t_custom = float(C.fit_temperature_ece(z, y, temperatures=[1.0, 2.0], num_bins=15).temperature)
  assert t_custom == (1.0 if values[9] <= values[19] else 2.0)


def test_where_mask_equals_the_subset():
  z, y = make_data(10, n=300, k=4)
  keep = np.arange(300) % 3 != 0
  z_nan = np.where(keep[:, None], z, np.nan).astype(np.float32)
  z_new, _ = make_data(11, n=50, k=4)
  for method in ("ts_ece", "histogram_ovr", "isotonic"):
    masked = C.fit(method, z_nan, y, where=keep)
    sub = C.fit(method, z[keep], y[keep])
    np.testing.assert_allclose(masked.predict(z_new).confidence, sub.predict(z_new).confidence, rtol=1e-5, atol=1e-7,
                               err_msg=method)
  # Vector scaling in float64: in float32 the flat NLL resolves the parameters to ~sqrt(eps) only.
  with jax.enable_x64(True):
    masked = C.fit("vector", z_nan.astype(np.float64), y, where=keep)
    sub = C.fit("vector", z[keep].astype(np.float64), y[keep])
    np.testing.assert_allclose(masked.probs(z_new), sub.probs(z_new), atol=1e-7)


def test_bad_input_messages():
  z, y = make_data(n=40)
  cases = [
    (TypeError, "fit_isotonic: labels must be integer", lambda: C.fit_isotonic(z, y.astype(np.float32))),
    (ValueError, "fit_vector_scaling: logits must have shape", lambda: C.fit_vector_scaling(z[0], y)),
    (ValueError, "fit_histogram_binning: num_bins must be", lambda: C.fit_histogram_binning(z, y, num_bins=0)),
    (ValueError, "fit_histogram_binning: binning must be one of", lambda: C.fit_histogram_binning(z, y, binning="x")),
    (ValueError, "fit_isotonic: variant must be one of", lambda: C.fit_isotonic(z, y, variant="top")),
    (ValueError, "fit_matrix_scaling: reg_offdiag must be", lambda: C.fit_matrix_scaling(z, y, reg_offdiag=-1.0)),
    (ValueError, "fit_dirichlet: labels must lie in", lambda: C.fit_dirichlet(z, np.full(40, 7, np.int32))),
    (ValueError, "fit_scaling_binning: fit_fraction must be", lambda: C.fit_scaling_binning(z, y, fit_fraction=1.5)),
    (ValueError, "fit_temperature_ece: temperatures must be", lambda: C.fit_temperature_ece(z, y, temperatures=[0.0])),
    (TypeError, "fit_ats: link must be a callable", lambda: C.fit_ats(z, y, link="softmax")),
    (TypeError, "calibrated_probs: params must be", lambda: C.calibrated_probs({"temperature": 1.0}, z)),
  ]
  for exc, start, call in cases:
    with pytest.raises(exc) as e:
      call()
    assert str(e.value).startswith(start) and "\n" not in str(e.value), str(e.value)
  params = C.HistogramBinningParams(boundaries=jnp.array([0.5]), values=jnp.array([0.4, 0.9]))
  with pytest.raises(ValueError, match="^calibrated_probs: HistogramBinningParams is a top-label calibrator"):
    C.calibrated_probs(params, z)
  ovr = C.HistogramBinningParams(boundaries=jnp.zeros((4, 1)) + 0.5, values=jnp.ones((4, 2)) / 4, variant="one_vs_rest")
  with pytest.raises(ValueError, match="link can only be overridden"):
    C.calibrated_probs(ovr, z, jax.nn.softmax)
