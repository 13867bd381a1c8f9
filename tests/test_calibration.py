"""Tests for gence_jax.calibration: TS against scipy, ATS invariants, link generality, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, special

from gence_jax import calibration as C


def make_logits(seed=0, n=1000, k=10, scale=3.0):
  """Labels drawn from softmax(t); the model's logits are scale * t (overconfident: optimal T near scale)."""
  rng = np.random.default_rng(seed)
  t = rng.normal(size=(n, k)) * 1.5
  p = special.softmax(t, axis=1)
  labels = (p.cumsum(1) > rng.random((n, 1))).argmax(1).astype(np.int32)
  return (scale * t).astype(np.float32), labels


def nll64(logits, labels, temperature=1.0, link=None):
  z = np.asarray(logits, np.float64) / np.asarray(temperature, np.float64).reshape(-1, 1)
  if link is None:
    logp = special.log_softmax(z, axis=1)
  else:
    logp = np.log(np.maximum(np.asarray(link(z), np.float64), np.finfo(np.float32).tiny))
  return -np.mean(logp[np.arange(len(labels)), labels])


def scipy_temperature(logits, labels, link=None):
  res = optimize.minimize_scalar(
    lambda lt: nll64(logits, labels, np.exp(lt), link), bounds=(-4, 4), method="bounded", options=dict(xatol=1e-10)
  )
  return float(np.exp(res.x))


def sparsemax(z):
  """Sparsemax (Martins & Astudillo 2016), sort-based, written here as an independent non-softmax link."""
  z = jnp.asarray(z)
  k = z.shape[-1]
  zs = -jnp.sort(-z, axis=-1)
  cs = jnp.cumsum(zs, axis=-1)
  r = jnp.arange(1, k + 1, dtype=z.dtype)
  support = 1 + r * zs > cs
  kz = jnp.sum(support, axis=-1, keepdims=True)
  tau = (jnp.take_along_axis(cs, kz - 1, axis=-1) - 1) / kz
  return jnp.maximum(z - tau, 0)


# ----------------------------------------------------------------------------------------------- TS


def test_temperature_matches_scipy_float32():
  z, y = make_logits()
  t = float(C.fit_temperature(z, y).temperature)
  t_ref = scipy_temperature(z, y)
  assert 2.5 < t_ref < 3.5
  assert t == pytest.approx(t_ref, rel=2e-3)
  # The objective at our T is as good as scipy's, up to float32 evaluation noise.
  assert nll64(z, y, t) <= nll64(z, y, t_ref) * (1 + 1e-6)


def test_temperature_matches_scipy_float64():
  z, y = make_logits(1)
  with jax.enable_x64(True):
    t = float(C.fit_temperature(z.astype(np.float64), y).temperature)
    t2 = float(C.fit_temperature(z.astype(np.float64), y, link=lambda v: jax.nn.softmax(2.0 * v)).temperature)
  t_ref = scipy_temperature(z, y)
  assert t == pytest.approx(t_ref, rel=1e-6)
  # softmax(2 z / T') = softmax(z / T) iff T' = 2 T: the link is honoured when fitting.
  assert t2 == pytest.approx(2 * t_ref, rel=1e-6)


def test_temperature_mask_and_apply():
  z, y = make_logits(2)
  keep = np.arange(1000) % 4 != 0
  z_bad = z.copy()
  z_bad[~keep] = np.nan
  t_mask = float(C.fit_temperature(z_bad, y, where=keep).temperature)
  t_sub = float(C.fit_temperature(z[keep], y[keep]).temperature)
  # float32: T is resolved to ~sqrt(eps) because the NLL is flat at its minimum (summation order differs here).
  assert t_mask == pytest.approx(t_sub, rel=2e-3)
  with jax.enable_x64(True):
    t_mask64 = float(C.fit_temperature(z_bad.astype(np.float64), y, where=keep).temperature)
    t_sub64 = float(C.fit_temperature(z[keep].astype(np.float64), y[keep]).temperature)
  assert t_mask64 == pytest.approx(t_sub64, rel=1e-7)
  params = C.TemperatureParams(temperature=jnp.float32(2.0))
  np.testing.assert_allclose(C.apply_temperature(params, np.array([[2.0, 4.0]])), [[1.0, 2.0]])
  np.testing.assert_allclose(C.calibrated_probs(params, np.array([[0.0, 2 * np.log(3.0)]])), [[0.25, 0.75]], rtol=1e-6)


def test_temperature_is_jittable():
  z, y = make_logits(3)
  t_jit = jax.jit(lambda a, b: C.fit_temperature(a, b).temperature)(z, y)
  # Same search, differently compiled (fusion changes float32 rounding of the flat objective): see the float32 note.
  np.testing.assert_allclose(t_jit, C.fit_temperature(z, y).temperature, rtol=2e-3)


# ----------------------------------------------------------------------------------------------- ATS


def ref_log_gap64(c, k):
  """x(c) = log a(c), a(c) = log((K-1) c / (1-c)) clipped to [1e-6, log(K-1) + log(2/eps32)] (docs/calibration.md)."""
  c = np.asarray(c, np.float64)
  with np.errstate(divide="ignore"):
    a = np.log(k - 1) + np.log(c) - np.log1p(-c)
  return np.log(np.clip(a, 1e-6, np.log(k - 1) + np.log(2 / np.finfo(np.float32).eps)))


def ats_temperature_ref(conf, centres, temps, k):
  """Monotone ATS temperature from the documented formula: log T linear in x(c) between the centres, clamped."""
  return np.exp(np.interp(ref_log_gap64(conf, k), ref_log_gap64(centres, k), np.log(np.asarray(temps, np.float64))))


@pytest.mark.parametrize("monotone", [False, True])
def test_ats_invariants_softmax(monotone):
  z, y = make_logits(4)
  ts = C.fit_temperature(z, y)
  ats = C.fit_ats(z, y, num_pieces=4, min_count=50, monotone=monotone)
  assert ats.temperatures.shape == (4,) and ats.boundaries.shape == (3,)
  assert float(ats.global_temperature) == float(ts.temperature)
  # Equal-mass pieces: boundary j is the ceil(jN/P)-th smallest uncalibrated confidence.
  conf = special.softmax(z.astype(np.float64), axis=1).max(1)
  np.testing.assert_allclose(ats.boundaries, np.sort(conf)[[249, 499, 749]], rtol=1e-5)
  np.testing.assert_array_equal(ats.counts, [250, 250, 250, 250])
  pieces = np.asarray(C.ats_pieces(ats, z))
  np.testing.assert_array_equal(np.bincount(pieces, minlength=4), [250, 250, 250, 250])  # same pieces at apply time
  # Never changes the argmax.
  cal = np.asarray(C.apply_ats(ats, z))
  np.testing.assert_array_equal(cal.argmax(1), z.argmax(1))
  np.testing.assert_array_equal(np.asarray(C.calibrated_probs(ats, z)).argmax(1), z.argmax(1))
  # Each piece's logits are divided by that piece's temperature.
  conf32 = np.asarray(C._temperature._top_confidence(jnp.asarray(z), link=jax.nn.softmax))  # the library's own
  np.testing.assert_array_equal(pieces, np.searchsorted(np.asarray(ats.boundaries), conf32, side="left"))
  if not monotone:
    assert ats.centres is None
    np.testing.assert_allclose(cal, z / np.asarray(ats.temperatures)[pieces][:, None], rtol=1e-6)
  else:  # log T linear in x(c) between the piece centres (the ceil((2j+1)N/(2P))-th smallest confidences)
    np.testing.assert_allclose(ats.centres, np.sort(conf)[[124, 374, 624, 874]], rtol=1e-5)
    t_ref = ats_temperature_ref(conf32, ats.centres, ats.temperatures, 10)
    np.testing.assert_allclose(cal, z / t_ref[:, None], rtol=2e-5)
    assert np.all(np.diff(np.log(np.asarray(ats.temperatures, np.float64))) <= np.diff(ref_log_gap64(ats.centres, 10)))
  # NLL on its own fitting data is <= TS's.
  assert nll64(cal, y) <= nll64(z, y, float(ts.temperature)) * (1 + 1e-6)
  assert 0.0 < conf.min() and conf.max() <= 1.0


def test_ats_piece_temperatures_match_scipy_per_piece():  # the piecewise-constant variant
  z, y = make_logits(5)
  with jax.enable_x64(True):
    z64 = z.astype(np.float64)
    ats = C.fit_ats(z64, y, num_pieces=3, min_count=10, monotone=False)
    pieces = np.asarray(C.ats_pieces(ats, z64))
  for p in range(3):
    idx = pieces == p
    t_ref = scipy_temperature(z[idx], y[idx])
    if bool(ats.fitted[p]):
      assert float(ats.temperatures[p]) == pytest.approx(t_ref, rel=1e-5)
    else:  # fell back: its own optimum is no better than the global one
      assert nll64(z[idx], y[idx], t_ref) >= nll64(z[idx], y[idx], float(ats.global_temperature)) - 1e-12


def test_ats_beats_ts_when_miscalibration_depends_on_confidence():
  rng = np.random.default_rng(6)
  t = rng.normal(size=(1000, 10)) * 1.5
  labels = (special.softmax(t, 1).cumsum(1) > rng.random((1000, 1))).argmax(1).astype(np.int32)
  # Confident examples are much more overconfident than the others.
  scale = np.where(special.softmax(t, 1).max(1) > 0.5, 4.0, 1.0)[:, None]
  z = (t * scale).astype(np.float32)
  ts = C.fit_temperature(z, labels)
  ats = C.fit_ats(z, labels, num_pieces=4)
  nll_ts = nll64(z, labels, float(ts.temperature))
  nll_ats = nll64(C.apply_ats(ats, z), labels)
  assert nll_ats < nll_ts - 0.01
  assert bool(np.any(ats.fitted))


def confidences_along_rays(params, link, k, seed=0, num=4001):
  """(raw, calibrated) top confidence and the argmax check along rays z = s v, s on a dense geometric grid
  (float64): the reference ray (1, 0, ..., 0), a two-class-like ray and random directions."""
  rng = np.random.default_rng(seed)
  s = np.geomspace(1e-2, 1e3, num)
  dirs = [np.eye(k)[0], np.r_[1.0, 0.6, np.zeros(k - 2)]] + [rng.normal(size=k) for _ in range(6)]
  out = []
  with jax.enable_x64(True):
    raw_fn, cal_fn = jax.jit(link), jax.jit(C.calibrated_probs)  # one compilation for all rays
    for v in dirs:
      z = jnp.asarray(s[:, None] * v[None, :])
      raw = np.asarray(raw_fn(z), np.float64)
      cal = np.asarray(cal_fn(params, z), np.float64)
      np.testing.assert_array_equal(cal.argmax(1), raw.argmax(1))  # argmax preserved
      out.append((raw.max(1), cal.max(1)))
  return out


def largest_drop(pairs):
  """Largest decrease of the calibrated confidence as the raw confidence grows (0 when monotone)."""
  worst = 0.0
  for raw, cal in pairs:
    assert np.all(np.diff(raw) >= -1e-15)  # raw confidence grows along each ray
    worst = max(worst, -np.min(np.diff(cal)))
  return worst


def test_ats_monotone_along_rays_and_piecewise_is_not():
  rng = np.random.default_rng(6)
  t = rng.normal(size=(1000, 10)) * 1.5
  labels = (special.softmax(t, 1).cumsum(1) > rng.random((1000, 1))).argmax(1).astype(np.int32)
  z = (t * np.where(special.softmax(t, 1).max(1) > 0.5, 4.0, 1.0)[:, None]).astype(np.float32)
  mono = C.fit_ats(z, labels, num_pieces=4)
  piecewise = C.fit_ats(z, labels, num_pieces=4, monotone=False)
  assert np.ptp(np.log(np.asarray(mono.temperatures))) > 0.5  # temperatures really vary with confidence
  pairs = confidences_along_rays(mono, jax.nn.softmax, 10)
  raw_ref = pairs[0][0]
  assert raw_ref.min() < float(mono.centres[0]) and raw_ref.max() > float(mono.centres[-1])  # crosses every piece
  assert largest_drop(pairs) <= 1e-12
  # The piecewise-constant variant jumps at its boundaries: calibrated confidence falls as the raw one rises.
  assert largest_drop(confidences_along_rays(piecewise, jax.nn.softmax, 10)) > 1e-2


def test_ats_monotone_two_classes_dense_confidence_grid():
  z, y = make_logits(12, k=2, scale=3.0)
  ats = C.fit_ats(z, y, num_pieces=4, min_count=20)
  c = np.concatenate([np.linspace(0.5, 0.999, 20001), 1 - np.geomspace(1e-3, 1e-12, 2001)])
  with jax.enable_x64(True):
    grid = jnp.asarray(np.stack([np.log(c) - np.log1p(-c), np.zeros_like(c)], 1))  # softmax(grid)_0 = c
    cal = np.asarray(C.calibrated_probs(ats, grid), np.float64)
  assert c.min() < float(ats.boundaries.min()) and c.max() > float(ats.boundaries.max())
  assert np.all(np.diff(cal.max(1)) >= -1e-12)
  np.testing.assert_array_equal(cal.argmax(1), 0)
  nll_ts = nll64(z, y, float(C.fit_temperature(z, y).temperature))
  assert nll64(C.apply_ats(ats, z), y) <= nll_ts * (1 + 1e-6)


def test_softmax_confidence_sensitivity_is_largest_on_the_reference_ray():
  # The lemma behind monotone ATS: along z = s v, dc/du (u = log s) <= c (1 - c) log((K - 1) c / (1 - c)).
  rng = np.random.default_rng(13)
  for k in (2, 3, 10, 100):
    v = rng.normal(size=(2000, k)) * rng.uniform(0.1, 10, size=(2000, 1))
    h = 1e-6
    c0 = special.softmax(v * np.exp(-h), 1).max(1)
    c1 = special.softmax(v * np.exp(h), 1).max(1)
    dcdu = (c1 - c0) / (2 * h)
    c = special.softmax(v, 1).max(1)
    ok = c < 1 - 1e-9
    v, c, dcdu = v[ok], c[ok], dcdu[ok]
    bound = c * (1 - c) * np.log((k - 1) * c / (1 - c))
    assert np.all(dcdu <= bound * (1 + 1e-5) + 1e-9)
    ref = special.softmax(np.outer(np.log((k - 1) * c / (1 - c)), np.eye(k)[0]), 1)[:, 0]
    np.testing.assert_allclose(ref, c, rtol=1e-9)  # a(c) is the reference gap of confidence c


def test_ats_one_piece_is_ts_and_fallback():
  z, y = make_logits(7)
  ts = C.fit_temperature(z, y)
  one = C.fit_ats(z, y, num_pieces=1)
  assert one.boundaries.shape == (0,)
  assert float(one.temperatures[0]) == float(ts.temperature)
  np.testing.assert_array_equal(C.apply_ats(one, z), C.apply_temperature(ts, z))
  # Every piece below min_count falls back to the global temperature.
  few = C.fit_ats(z, y, num_pieces=4, min_count=10_000)
  np.testing.assert_array_equal(few.temperatures, np.full(4, float(ts.temperature), np.float32))
  assert not np.any(few.fitted)


def test_ats_piece_convention_hand():
  # Identity "link" (the inputs are probabilities) so confidences are exact: boundaries .5 and .75, bins (lo, hi].
  params = C.ATSParams(
    boundaries=jnp.array([0.5, 0.75]),
    temperatures=jnp.array([1.0, 2.0, 4.0]),
    global_temperature=jnp.array(2.0),
    counts=jnp.array([1, 1, 1]),
    fitted=jnp.array([True, True, True]),
    link=_identity,
  )
  x = np.array([[0.5, 0.5], [0.25, 0.75], [0.2, 0.8], [0.0, 1.0], [0.6, 0.4]], np.float32)
  np.testing.assert_array_equal(C.ats_pieces(params, x), [0, 1, 2, 2, 1])
  np.testing.assert_allclose(C.apply_ats(params, x), x / np.array([1.0, 2.0, 4.0, 4.0, 2.0])[:, None])


def _identity(z):
  return z


def test_ats_boundaries_and_out_of_range():
  z, y = make_logits(8)
  ats = C.fit_ats(z, y, num_pieces=4, min_count=1)
  # The fitting example that defines a boundary is in the lower piece (same jitted confidence at fit and apply).
  pieces = np.asarray(C.ats_pieces(ats, z))
  conf = np.asarray(C._temperature._top_confidence(jnp.asarray(z), link=jax.nn.softmax))
  on_boundary = np.flatnonzero(conf == np.asarray(ats.boundaries)[1])
  assert on_boundary.size >= 1 and np.all(pieces[on_boundary] == 1)  # (lo, hi]: the lower piece
  extremes = np.zeros((2, 10), np.float32)  # conf 1/10 and ~1.0
  extremes[1, 0] = 100.0
  np.testing.assert_array_equal(C.ats_pieces(ats, extremes), [0, 3])
  # Leading batch dimensions are supported at prediction time.
  # (A confidence within an ulp of a boundary may switch piece when the link is compiled for another shape.)
  near = np.abs(conf[:, None] - np.asarray(ats.boundaries)[None, :]).min(1) < 1e-6
  np.testing.assert_allclose(
    C.apply_ats(ats, z.reshape(20, 50, 10)).reshape(1000, 10)[~near], C.apply_ats(ats, z)[~near], rtol=1e-6
  )


@pytest.mark.parametrize("link_name", ["softmax2", "sparsemax"])
def test_ats_non_softmax_link(link_name):
  link = (lambda v: jax.nn.softmax(2.0 * v)) if link_name == "softmax2" else sparsemax
  z, y = make_logits(9, scale=1.0 if link_name == "softmax2" else 0.5)
  ts = C.fit_temperature(z, y, link=link)
  ats = C.fit_ats(z, y, link=link, num_pieces=3)
  assert ats.link is link and ts.link is link
  probs_ats = np.asarray(C.calibrated_probs(ats, z))
  np.testing.assert_allclose(probs_ats.sum(1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(probs_ats.argmax(1), np.asarray(link(z)).argmax(1))
  nll_ts = nll64(C.apply_temperature(ts, z), y, link=link)
  nll_ats = nll64(C.apply_ats(ats, z), y, link=link)
  assert np.isfinite(nll_ats) and nll_ats <= nll_ts * (1 + 1e-6)
  assert ats.monotone and largest_drop(confidences_along_rays(ats, link, 10, num=2001)) <= 1e-9
  # The fitted TS temperature is the link's NLL optimum (scipy on the same link-specific float64 objective).
  t_ref = scipy_temperature(z, y, link=lambda v: np.asarray(link(jnp.asarray(v, jnp.float32))))
  assert nll64(z, y, float(ts.temperature), link=link) <= nll64(z, y, t_ref, link=link) * (1 + 1e-5)


@pytest.mark.slow
def test_ats_monotone_with_the_mgce_link():
  from gence_jax import losses

  link = losses.get_loss("mgce").probs  # the MGCE link (entmax-like, sparse): no proof, checked on rays
  z, y = make_logits(14, n=400, k=5, scale=1.0)
  ts = C.fit_temperature(z, y, link=link)
  ats = C.fit_ats(z, y, link=link, num_pieces=3, min_count=20)
  assert ats.monotone and bool(np.any(ats.fitted))
  assert nll64(C.apply_ats(ats, z), y, link=link) <= nll64(C.apply_temperature(ts, z), y, link=link) * (1 + 1e-6)
  assert largest_drop(confidences_along_rays(ats, link, 5, num=1001)) <= 1e-9


@pytest.mark.slow
def test_ats_is_jittable_and_masked():
  z, y = make_logits(10)
  keep = np.arange(1000) % 5 != 0
  z_bad = np.where(keep[:, None], z, np.nan).astype(np.float32)
  f = jax.jit(lambda a, b, w: C.fit_ats(a, b, where=w, num_pieces=3, min_count=20).temperatures)
  # float32: the NLL is flat at its minimum, so T is resolved to ~sqrt(float32 eps) (summation order differs).
  np.testing.assert_allclose(
    f(z_bad, y, keep), C.fit_ats(z[keep], y[keep], num_pieces=3, min_count=20).temperatures, rtol=2e-3
  )
  with jax.enable_x64(True):
    z64 = z_bad.astype(np.float64)
    masked = C.fit_ats(z64, y, where=keep, num_pieces=3, min_count=20)
    sub = C.fit_ats(z[keep].astype(np.float64), y[keep], num_pieces=3, min_count=20)
  np.testing.assert_allclose(masked.temperatures, sub.temperatures, rtol=1e-7)
  np.testing.assert_allclose(masked.boundaries, sub.boundaries, rtol=1e-12)  # softmax may differ by an ulp
  np.testing.assert_array_equal(masked.counts, sub.counts)


# ----------------------------------------------------------------------------------------------- bad input


class _UnhashableLink:
  __hash__ = None

  def __call__(self, z):
    return jax.nn.softmax(z)


def test_calibration_bad_input():
  z, y = make_logits(11)
  for fit in (C.fit_temperature, C.fit_ats):
    with pytest.raises(TypeError, match="labels must be integer"):
      fit(z, y.astype(np.float32))
    with pytest.raises(ValueError, match="logits must have shape"):
      fit(z[0], y)
    with pytest.raises(ValueError, match="labels must have shape"):
      fit(z, y[:10])
    with pytest.raises(ValueError, match="logits contains NaN"):
      fit(np.where(np.arange(1000)[:, None] == 3, np.nan, z).astype(np.float32), y)
    with pytest.raises(ValueError, match="log_t_bounds"):
      fit(z, y, log_t_bounds=(1.0, -1.0))
    with pytest.raises(TypeError, match="link must be a callable"):
      fit(z, y, link="softmax")
    with pytest.raises(ValueError, match="labels must lie in"):
      fit(z, np.full(1000, 10, np.int32))
    with pytest.raises(TypeError, match="link must be hashable"):
      fit(z, y, link=_UnhashableLink())
  with pytest.raises(ValueError, match="num_pieces"):
    C.fit_ats(z, y, num_pieces=0)
  with pytest.raises(ValueError, match="min_count"):
    C.fit_ats(z, y, min_count=-1)
  with pytest.raises(TypeError, match="TemperatureParams or ATSParams"):
    C.calibrated_probs({"temperature": 1.0}, z, jax.nn.softmax)


def test_ats_piece_without_errors_keeps_the_global_temperature():
  # High-confidence half: every example correct, so its NLL keeps falling as T -> 0 (optimum at the search edge);
  # that piece must fall back to T_g instead of an arbitrarily small temperature. The low half has errors.
  rng = np.random.default_rng(0)
  n, k = 400, 5
  labels = rng.integers(0, k, n)
  scale = np.where(np.arange(n) < n // 2, 0.3, 8.0)
  logits = 0.5 * rng.normal(size=(n, k))
  logits[np.arange(n), labels] += scale  # strong margin for the second half
  wrong = (np.arange(n) < n // 2) & (rng.random(n) < 0.4)
  labels = np.where(wrong, (labels + 1) % k, labels)
  logits, labels = logits.astype(np.float32), labels.astype(np.int32)
  top = jax.nn.softmax(logits).max(-1)
  assert np.all(np.argmax(logits, -1)[np.asarray(top) > np.median(top)] == labels[np.asarray(top) > np.median(top)])
  ts = C.fit_temperature(logits, labels)
  ats = C.fit_ats(logits, labels, num_pieces=2, min_count=10)
  assert not bool(ats.fitted[1])
  np.testing.assert_allclose(ats.temperatures[1], ts.temperature, rtol=1e-6)
