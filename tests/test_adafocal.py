"""AdaFocal (Ghosh, Schaaf & Gormley, NeurIPS 2022): loss, per-epoch gamma update, validation bins.

The loss is checked against an independent NumPy float64 reference written from the module docstring's equations;
the update against epochs worked out by hand in the comments below and against a NumPy reference (np.quantile
edges, explicit loops over bins) on random data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from gence_jax.losses import baselines
from gence_jax.losses.adafocal import (
  AdaFocalState,
  _bin_of_label_prob,
  adafocal,
  adafocal_init,
  adafocal_update,
  adafocal_validation_stats,
)

# ----------------------------------------------------------------------------------------------------------------
# NumPy float64 references.
# ----------------------------------------------------------------------------------------------------------------


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  m = np.max(z, axis=-1, keepdims=True)
  return z - m - np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True))


def ref_train_bin(p, edges):
  """e_b <= p < e_{b+1}; the first and last bins are open-ended."""
  nb = len(edges) - 1
  for b in range(nb):
    if b == nb - 1 or p < edges[b + 1]:
      return b
  raise AssertionError


def ref_adafocal(z, y, gammas, edges):
  log_p = np_log_softmax(z)
  out = []
  for lp_row, label in zip(log_p.reshape(-1, log_p.shape[-1]), np.asarray(y).reshape(-1)):
    log_py = lp_row[label]
    p_y = np.exp(log_py)
    g = float(gammas[ref_train_bin(p_y, edges)])
    if g >= 0:
      one_minus = np.sum(np.exp(np.delete(lp_row, label)))  # 1 - p_y without cancellation
      out.append(-(one_minus**g) * log_py)
    else:
      out.append(-((1.0 + p_y) ** (-g)) * log_py)
  return np.asarray(out).reshape(np.shape(y))


def ref_update(gammas, probs, labels, *, lam, gamma_max, s_th, gamma_min, num_bins, binning="equal_mass"):
  probs = np.asarray(probs, np.float64)
  conf = probs.max(-1)
  correct = (probs.argmax(-1) == np.asarray(labels)).astype(np.float64)
  if binning == "equal_mass":
    edges = np.quantile(conf, np.arange(num_bins + 1) / num_bins)
  elif binning == "equal_mass_authors":
    # The sorted confidences interpolated at positions k N / B (np.interp holds the last value past N - 1).
    edges = np.interp(np.linspace(0, conf.size, num_bins + 1), np.arange(conf.size), np.sort(conf))
  else:
    edges = np.arange(num_bins + 1) / num_bins
  gaps, counts = np.zeros(num_bins), np.zeros(num_bins, int)
  for b in range(num_bins):
    lo_ok = np.ones_like(conf, bool) if b == 0 else conf > edges[b]
    hi_ok = np.ones_like(conf, bool) if b == num_bins - 1 else conf <= edges[b + 1]
    m = lo_ok & hi_ok
    counts[b] = m.sum()
    if m.any():
      gaps[b] = conf[m].mean() - correct[m].mean()
  new = []
  for g, gap in zip(np.asarray(gammas, np.float64), gaps):
    g = g * np.exp(lam * gap) if g > 0 else g * np.exp(-lam * gap)
    if abs(g) < s_th:
      g = -s_th if g > 0 else s_th
    new.append(min(max(g, gamma_min), gamma_max))
  return np.asarray(new), edges, gaps, counts


def _random_case(rng, n, k, scale=3.0):
  z = rng.normal(size=(n, k)) * scale
  y = rng.integers(0, k, size=n)
  return z, y


# ----------------------------------------------------------------------------------------------------------------
# The loss.
# ----------------------------------------------------------------------------------------------------------------

GAMMAS = np.array([5.0, 0.0, 1.3, -0.2, -2.0])
EDGES = np.array([0.0, 0.1, 0.3, 0.5, 0.8, 1.0])


@pytest.mark.parametrize("x64", [False, True])
def test_loss_matches_numpy_reference(x64):
  rng = np.random.default_rng(0)
  z, y = _random_case(rng, 200, 6)
  with jax.enable_x64(x64):
    dt = jnp.float64 if x64 else jnp.float32
    out = adafocal(jnp.asarray(z, dt), jnp.asarray(y), gammas=GAMMAS, bin_edges=EDGES)
    assert out.dtype == dt and out.shape == (200,)
    tol = dict(rtol=1e-12, atol=1e-12) if x64 else dict(rtol=3e-5, atol=3e-6)
    np.testing.assert_allclose(np.asarray(out), ref_adafocal(np.asarray(z, dt), y, GAMMAS, EDGES), **tol)


def test_every_bin_and_both_forms_are_exercised():
  rng = np.random.default_rng(0)
  z, y = _random_case(rng, 200, 6)
  p_y = np.exp(np_log_softmax(z)[np.arange(200), y])
  bins = {ref_train_bin(p, EDGES) for p in p_y}
  assert bins == set(range(len(GAMMAS)))


def test_leading_dims_mask_and_bad_labels():
  rng = np.random.default_rng(1)
  z, y = _random_case(rng, 12, 4)
  z, y = z.reshape(3, 4, 4), y.reshape(3, 4)
  y[0, 0] = 7  # out of range
  where = np.ones((3, 4), bool)
  where[2, 1] = False
  out = np.asarray(adafocal(z.astype(np.float32), y, gammas=GAMMAS, bin_edges=EDGES, where=where))
  assert out.shape == (3, 4)
  assert np.isnan(out[0, 0]) and out[2, 1] == 0.0
  ok = np.ones((3, 4), bool)
  ok[0, 0] = ok[2, 1] = False
  np.testing.assert_allclose(out[ok], ref_adafocal(z, np.where(y < 4, y, 0), GAMMAS, EDGES)[ok], rtol=3e-5)


def test_all_gammas_zero_is_cross_entropy():
  rng = np.random.default_rng(2)
  z, y = _random_case(rng, 64, 5)
  with jax.enable_x64(True):
    out = adafocal(jnp.asarray(z), jnp.asarray(y), gammas=np.zeros(15), bin_edges=np.linspace(0, 1, 16))
    ce_ref = -np_log_softmax(z)[np.arange(64), y]
    np.testing.assert_allclose(np.asarray(out), ce_ref, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(
      np.asarray(out), np.asarray(baselines.cross_entropy(jnp.asarray(z), jnp.asarray(y))), rtol=1e-13, atol=1e-14
    )
    g = jax.grad(lambda zz: adafocal(zz, jnp.asarray(y), gammas=np.zeros(3), bin_edges=[0, 0.5, 0.9, 1]).sum())
    g_ce = np.exp(np_log_softmax(z)) - np.eye(5)[y]
    np.testing.assert_allclose(np.asarray(g(jnp.asarray(z))), g_ce, rtol=1e-12, atol=1e-13)


def test_constant_gamma_is_focal_loss():
  rng = np.random.default_rng(3)
  z, y = _random_case(rng, 64, 5)
  out = adafocal(z.astype(np.float32), y, gammas=np.full(4, 2.5), bin_edges=np.linspace(0, 1, 5))
  np.testing.assert_allclose(
    np.asarray(out), np.asarray(baselines.focal(z.astype(np.float32), y, gamma=2.5)), rtol=1e-6, atol=1e-7
  )


def test_training_bin_lookup_boundaries():
  edges = jnp.asarray([0.0, 0.25, 0.5, 0.75, 1.0])
  p = jnp.asarray([-0.1, 0.0, 0.2499, 0.25, 0.5, 0.74, 0.75, 1.0, 1.5])
  np.testing.assert_array_equal(np.asarray(_bin_of_label_prob(p, edges)), [0, 0, 0, 1, 2, 2, 3, 3, 3])
  # Edges from equal-mass validation bins need not cover [0, 1]: the outer bins are open-ended.
  edges = jnp.asarray([0.4, 0.6, 0.9])
  np.testing.assert_array_equal(
    np.asarray(_bin_of_label_prob(jnp.asarray([0.01, 0.59, 0.6, 0.99]), edges)), [0, 0, 1, 1]
  )


def test_gradient_matches_finite_differences():
  # p_y well inside the bins so that a finite-difference step never moves an example to another bin.
  z = np.array([[2.0, 0.1, -1.0], [0.2, 0.1, 0.0], [-1.0, 3.0, 0.5], [0.0, 0.3, 2.5], [1.0, 1.0, 2.0]])
  y = np.array([0, 1, 2, 0, 2])
  edges = np.array([0.0, 0.2, 0.5, 0.8, 1.0])
  gammas = np.array([3.0, -1.5, 0.7, -0.2])
  with jax.enable_x64(True):
    p_y = np.exp(np_log_softmax(z)[np.arange(5), y])
    assert {ref_train_bin(p, edges) for p in p_y} == {0, 1, 2, 3}
    assert np.min(np.abs(p_y[:, None] - edges[None, 1:-1])) > 1e-3
    f = lambda zz: adafocal(zz, jnp.asarray(y), gammas=gammas, bin_edges=edges)  # noqa: E731
    check_grads(f, (jnp.asarray(z),), order=1, modes=["rev"], atol=1e-7, rtol=1e-7, eps=1e-6)


def test_no_gradient_through_gammas_or_edges():
  z = jnp.asarray([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
  y = jnp.asarray([0, 1])
  dg, de = jax.grad(lambda g, e: adafocal(z, y, gammas=g, bin_edges=e).sum(), argnums=(0, 1))(
    jnp.asarray([1.0, -0.5]), jnp.asarray([0.0, 0.6, 1.0])
  )
  assert np.all(np.asarray(dg) == 0) and np.all(np.asarray(de) == 0)


@pytest.mark.parametrize("gamma", [0.2, 0.5, 3.0, -0.2, -2.0, 0.0])
def test_saturated_probability_gives_finite_values_and_gradients(gamma):
  # p_y == 1 exactly in float32: (1 - p)^gamma with gamma < 1 must not turn the gradient into NaN.
  z = jnp.asarray([[120.0, 0.0, -3.0], [60.0, 0.0, 1.0]], jnp.float32)
  y = jnp.asarray([0, 0])
  f = lambda zz: adafocal(zz, y, gammas=jnp.asarray([gamma]), bin_edges=jnp.asarray([0.0, 1.0])).sum()  # noqa
  val, grad = jax.value_and_grad(f)(z)
  assert np.isfinite(float(val)) and np.all(np.isfinite(np.asarray(grad)))
  np.testing.assert_allclose(float(val), 0.0, atol=1e-20)


def test_jit_and_vmap():
  rng = np.random.default_rng(4)
  z, y = _random_case(rng, 16, 4)
  z = z.astype(np.float32)
  eager = adafocal(z, y, gammas=GAMMAS, bin_edges=EDGES)
  jitted = jax.jit(lambda a, b, g, e: adafocal(a, b, gammas=g, bin_edges=e))(z, y, GAMMAS, EDGES)
  vmapped = jax.vmap(lambda a, b: adafocal(a, b, gammas=GAMMAS, bin_edges=EDGES))(z, y)
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(vmapped), np.asarray(eager), rtol=1e-6)


def test_loss_input_validation():
  z, y = np.zeros((2, 3), np.float32), np.zeros(2, np.int32)
  with pytest.raises(ValueError, match="gammas"):
    adafocal(z, y, gammas=np.zeros((2, 2)), bin_edges=np.zeros(3))
  with pytest.raises(ValueError, match="bin_edges"):
    adafocal(z, y, gammas=np.zeros(3), bin_edges=np.zeros(3))
  with pytest.raises(TypeError, match="labels"):
    adafocal(z, y.astype(np.float32), gammas=np.zeros(2), bin_edges=np.zeros(3))
  with pytest.raises(ValueError, match="labels"):
    adafocal(z, np.zeros(3, np.int32), gammas=np.zeros(2), bin_edges=np.zeros(3))


# ----------------------------------------------------------------------------------------------------------------
# The per-epoch update.
# ----------------------------------------------------------------------------------------------------------------

# Epoch 1 (K = 4, 2 equal-mass bins). Top-1 confidences 0.6 (correct), 0.7 (wrong: argmax 1, label 0),
# 0.8 (correct), 0.9 (correct). Quantile edges at levels 0, 1/2, 1 of the sorted [0.6, 0.7, 0.8, 0.9]:
# positions 0, 1.5, 3 -> [0.6, 0.75, 0.9]. Bin 0 = {0.6, 0.7}: confidence 0.65, accuracy 0.5 -> gap +0.15 (over-
# confident). Bin 1 = {0.8, 0.9}: confidence 0.85, accuracy 1 -> gap -0.15. With gamma = 1 and lambda = 1:
# gammas -> [e^0.15, e^-0.15] = [1.16183..., 0.86070...].
VAL1_PROBS = np.array([[0.6, 0.2, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.8, 0.1, 0.05, 0.05], [0.05, 0.05, 0.9, 0.0]])
VAL1_LABELS = np.array([0, 0, 0, 2])
# Epoch 2 (lambda = 3). Confidences 0.30 (wrong), 0.34 (wrong), 0.38 (correct), 0.42 (correct); edges at positions
# 0, 1.5, 3 -> [0.30, 0.36, 0.42]. Bin 0: confidence 0.32, accuracy 0 -> gap +0.32; bin 1: confidence 0.40,
# accuracy 1 -> gap -0.60. Bin 0: e^0.15 * e^(3 * 0.32) = e^1.11 = 3.0344...; bin 1: e^-0.15 * e^(3 * -0.6)
# = e^-1.95 = 0.1423 < S_th = 0.2 -> switches to the inverse-focal loss: -0.2.
VAL2_PROBS = np.array(
  [[0.30, 0.25, 0.25, 0.20], [0.22, 0.22, 0.34, 0.22], [0.38, 0.22, 0.20, 0.20], [0.20, 0.42, 0.19, 0.19]]
)
VAL2_LABELS = np.array([1, 0, 0, 1])
# Epoch 3 (lambda = 1) on the epoch-1 set again: gaps [+0.15, -0.15]. Bin 0: e^1.11 * e^0.15 = e^1.26;
# bin 1 (gamma -0.2 <= 0): -0.2 * e^(-1 * -0.15) = -0.2 e^0.15 = -0.23237 (more inverse-focal: still
# under-confident).


@pytest.mark.parametrize("x64", [False, True])
def test_hand_computed_epochs(x64):
  with jax.enable_x64(x64):
    dt = jnp.float64 if x64 else jnp.float32
    tol = dict(rtol=1e-12, atol=1e-12) if x64 else dict(rtol=2e-6, atol=2e-6)
    state = adafocal_init(2, 1.0, dtype=dt)
    np.testing.assert_allclose(np.asarray(state.gammas), [1.0, 1.0])
    np.testing.assert_allclose(np.asarray(state.bin_edges), [0.0, 0.5, 1.0])

    state = adafocal_update(
      state, jnp.asarray(VAL1_PROBS, dt), VAL1_LABELS, lam=1.0, gamma_max=20.0, switch_threshold=0.2
    )
    np.testing.assert_allclose(np.asarray(state.bin_edges), [0.6, 0.75, 0.9], **tol)
    np.testing.assert_allclose(np.asarray(state.calibration_gaps), [0.15, -0.15], **tol)
    np.testing.assert_array_equal(np.asarray(state.bin_counts), [2, 2])
    np.testing.assert_allclose(np.asarray(state.gammas), [np.exp(0.15), np.exp(-0.15)], **tol)

    state = adafocal_update(
      state, jnp.asarray(VAL2_PROBS, dt), VAL2_LABELS, lam=3.0, gamma_max=20.0, switch_threshold=0.2
    )
    np.testing.assert_allclose(np.asarray(state.bin_edges), [0.30, 0.36, 0.42], **tol)
    np.testing.assert_allclose(np.asarray(state.calibration_gaps), [0.32, -0.60], **tol)
    np.testing.assert_allclose(np.asarray(state.gammas), [np.exp(1.11), -0.2], **tol)

    state = adafocal_update(
      state, jnp.asarray(VAL1_PROBS, dt), VAL1_LABELS, lam=1.0, gamma_max=20.0, switch_threshold=0.2
    )
    np.testing.assert_allclose(np.asarray(state.gammas), [np.exp(1.26), -0.2 * np.exp(0.15)], **tol)


def test_hand_computed_switch_back_and_clipping():
  # Equal-width, 2 bins: confidences 0.3 (wrong), 0.4 (wrong) -> bin 0, gap 0.35 - 0 = +0.35;
  # 0.9 (correct), 0.6 (correct) -> bin 1, gap 0.75 - 1 = -0.25.
  probs = np.array([[0.3, 0.25, 0.25, 0.2], [0.4, 0.2, 0.2, 0.2], [0.9, 0.05, 0.05, 0.0], [0.2, 0.6, 0.1, 0.1]])
  labels = np.array([1, 1, 0, 1])
  with jax.enable_x64(True):

    def run(g0, g1, lam=1.0):
      s = AdaFocalState(jnp.asarray([g0, g1]), jnp.asarray([0.0, 0.5, 1.0]), jnp.zeros(2), jnp.zeros(2, jnp.int32))
      out = adafocal_update(
        s, probs, labels, lam=lam, gamma_max=20.0, switch_threshold=0.2, gamma_min=-2.0, binning="equal_width"
      )
      np.testing.assert_allclose(np.asarray(out.calibration_gaps), [0.35, -0.25], rtol=1e-12, atol=1e-14)
      return np.asarray(out.gammas)

    # Over-confident inverse-focal bin: -0.21 * e^-0.35 = -0.148 -> |.| < 0.2 -> back to focal, +0.2.
    # Under-confident focal bin 1: 0.25 * e^-0.25 = 0.1947 -> inverse focal, -0.2.
    np.testing.assert_allclose(run(-0.21, 0.25), [0.2, -0.2])
    # Clipping: 19 * e^0.35 = 26.96 -> 20; -1.9 * e^(+0.25) = -2.44 -> -2.
    np.testing.assert_allclose(run(19.0, -1.9), [20.0, -2.0])
    # Inside the limits: 2 * e^(2 * 0.35) and -1 * e^(2 * 0.25).
    np.testing.assert_allclose(run(2.0, -1.0, lam=2.0), [2.0 * np.exp(0.7), -1.0 * np.exp(0.5)], rtol=1e-12)
    # ... and the same with gamma_min = -2: -1.5 * e^0.5 = -2.47 -> clipped to -2.
    np.testing.assert_allclose(run(2.0, -1.5, lam=2.0), [2.0 * np.exp(0.7), -2.0], rtol=1e-12)
    # gamma = 0 (a cross-entropy bin) stays below S_th: it becomes +S_th.
    np.testing.assert_allclose(run(0.0, 0.0), [0.2, 0.2])


def test_update_matches_numpy_reference_random():
  rng = np.random.default_rng(5)
  with jax.enable_x64(True):
    for trial, nb in enumerate([1, 3, 7, 15]):
      z, y = _random_case(rng, 60, 5, scale=float(rng.uniform(0.3, 4)))
      probs = np.exp(np_log_softmax(z))
      gammas = rng.choice([-1.0, 1.0], nb) * rng.uniform(0.2, 3.0, nb)
      binning = ["equal_mass", "equal_width"][trial % 2]
      hp = dict(lam=float(rng.uniform(0.5, 3)), gamma_max=5.0, switch_threshold=0.3, gamma_min=-1.5)
      state = AdaFocalState(jnp.asarray(gammas), jnp.linspace(0, 1, nb + 1), jnp.zeros(nb), jnp.zeros(nb, jnp.int32))
      out = adafocal_update(state, probs, y, binning=binning, **hp)
      g, e, gaps, counts = ref_update(
        gammas, probs, y, lam=hp["lam"], gamma_max=5.0, s_th=0.3, gamma_min=-1.5, num_bins=nb, binning=binning
      )
      np.testing.assert_allclose(np.asarray(out.bin_edges), e, rtol=1e-12, atol=1e-14)
      np.testing.assert_allclose(np.asarray(out.calibration_gaps), gaps, rtol=1e-10, atol=1e-12)
      np.testing.assert_array_equal(np.asarray(out.bin_counts), counts)
      np.testing.assert_allclose(np.asarray(out.gammas), g, rtol=1e-10, atol=1e-12)
      assert counts.sum() == len(y)


def test_update_jit_mask_and_sharded_axis():
  rng = np.random.default_rng(6)
  z, y = _random_case(rng, 24, 5)
  probs = np.exp(np_log_softmax(z)).astype(np.float32)
  state = adafocal_init(4, 1.0)
  hp = dict(lam=1.0, gamma_max=20.0, switch_threshold=0.2)
  eager = adafocal_update(state, probs, y, **hp)

  jitted = jax.jit(lambda s, p, l: adafocal_update(s, p, l, **hp))(state, probs, y)
  for a, b in zip(jitted, eager):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)

  # Padding rows masked out count nowhere.
  pad_p = np.concatenate([probs, np.full((5, 5), 0.2, np.float32)])
  pad_y = np.concatenate([y, np.zeros(5, int)])
  where = np.arange(29) < 24
  masked = jax.jit(lambda s, p, l, w: adafocal_update(s, p, l, where=w, **hp))(state, pad_p, pad_y, where)
  for a, b in zip(masked, eager):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)

  # A validation set split over a named axis gives the statistics of the whole set.
  sharded = jax.vmap(lambda p, l: adafocal_update(state, p, l, axis_name="i", **hp), axis_name="i")(
    probs.reshape(4, 6, 5), y.reshape(4, 6)
  )
  for a, b in zip(sharded, eager):
    np.testing.assert_allclose(np.asarray(a), np.broadcast_to(np.asarray(b), np.asarray(a).shape), rtol=1e-6)


def test_empty_bins_and_no_valid_sample():
  # Equal-width, 3 bins, all confidences in the top bin: the two lower bins have gap 0 and keep their gamma.
  probs = np.array([[0.9, 0.1], [0.8, 0.2]])
  state = adafocal_init(3, 1.5)
  out = adafocal_update(
    state, probs, np.array([1, 0]), lam=1.0, gamma_max=20.0, switch_threshold=0.2, binning="equal_width"
  )
  np.testing.assert_array_equal(np.asarray(out.bin_counts), [0, 0, 2])
  np.testing.assert_allclose(np.asarray(out.gammas), [1.5, 1.5, 1.5 * np.exp(0.85 - 0.5)], rtol=1e-6)
  # No valid sample at all: gaps 0, equal-width edges, gammas unchanged.
  out = adafocal_update(state, probs, np.array([1, 0]), where=np.array([False, False]))
  np.testing.assert_allclose(np.asarray(out.gammas), [1.5] * 3)
  np.testing.assert_allclose(np.asarray(out.bin_edges), np.linspace(0, 1, 4), atol=1e-7)
  np.testing.assert_array_equal(np.asarray(out.bin_counts), [0, 0, 0])


def test_validation_stats_equal_mass_counts():
  rng = np.random.default_rng(7)
  z, y = _random_case(rng, 150, 10)
  probs = np.exp(np_log_softmax(z))
  edges, gaps, counts = adafocal_validation_stats(probs, y, 15)
  assert np.asarray(counts).tolist() == [10] * 15  # distinct confidences: exactly equal mass
  assert np.all(np.diff(np.asarray(edges)) >= 0)
  ece_like = np.sum(np.asarray(counts) / 150 * np.abs(np.asarray(gaps)))
  assert 0.0 <= ece_like <= 1.0


def _conf_probs(conf):
  """[N, 4] probabilities whose top-1 confidence (class 0) is ``conf`` (conf >= 0.25)."""
  conf = np.asarray(conf, np.float64)
  return np.stack([conf] + [(1 - conf) / 3] * 3, axis=-1)


def test_equal_mass_edges_quantile_default_and_authors_rule_hand_computed():
  conf = [0.26, 0.53, 0.61, 0.75, 0.94, 0.99]
  probs, labels = _conf_probs(conf), np.zeros(6, np.int32)  # every prediction correct: gap = mean conf - 1
  with jax.enable_x64(True):
    # Default, quantiles at positions k (N - 1) / B = 0, 5/3, 10/3, 5:
    #   s0 = .26; s1 + (2/3)(s2 - s1) = .53 + .08 * 2/3 = .583333; s3 + (1/3)(s4 - s3) = .75 + .19/3 = .813333; s5 = .99
    edges, gaps, counts = adafocal_validation_stats(probs, labels, 3)
    np.testing.assert_allclose(edges, [0.26, 0.53 + 0.08 * 2 / 3, 0.75 + 0.19 / 3, 0.99], rtol=1e-12)
    np.testing.assert_array_equal(counts, [2, 2, 2])  # {.26, .53} {.61, .75} {.94, .99}
    # Authors' rule, positions k N / B = 0, 2, 4, 6 (6 past the last index: s5): edges .26, .61, .94, .99;
    # bins (e_b, e_b+1], first open: {.26, .53, .61} {.75, .94} {.99}
    edges, gaps, counts = adafocal_validation_stats(probs, labels, 3, binning="equal_mass_authors")
    np.testing.assert_allclose(edges, [0.26, 0.61, 0.94, 0.99], rtol=1e-12)
    np.testing.assert_array_equal(counts, [3, 2, 1])
    np.testing.assert_allclose(gaps, [(0.26 + 0.53 + 0.61) / 3 - 1, (0.75 + 0.94) / 2 - 1, 0.99 - 1], rtol=1e-12)
    # A fractional position: N = 5, B = 2. Authors: positions 0, 2.5, 5 -> .3, (.5 + .7) / 2 = .6, .9;
    # quantiles: positions 0, 2, 4 -> .3, .5, .9.
    conf5 = _conf_probs([0.9, 0.3, 0.7, 0.5, 0.4])
    np.testing.assert_allclose(
      adafocal_validation_stats(conf5, np.zeros(5, np.int32), 2, binning="equal_mass_authors")[0], [0.3, 0.6, 0.9]
    )
    np.testing.assert_allclose(adafocal_validation_stats(conf5, np.zeros(5, np.int32), 2)[0], [0.3, 0.5, 0.9])


def test_update_with_authors_edges_matches_numpy_reference_and_mask():
  rng = np.random.default_rng(11)
  hp = dict(lam=0.7, gamma_max=5.0, switch_threshold=0.3, gamma_min=-1.5)
  for n, nb in [(97, 15), (6, 10)]:  # N not a multiple of B; N < B
    z, y = _random_case(rng, n, 5)
    probs = np.exp(np_log_softmax(z)).astype(np.float32)
    gammas = rng.uniform(-2, 5, nb)
    state = adafocal_init(nb)._replace(gammas=jnp.asarray(gammas, jnp.float32))
    out = adafocal_update(state, probs, y, binning="equal_mass_authors", **hp)
    g, edges, gaps, counts = ref_update(
      gammas, probs, y, lam=0.7, gamma_max=5.0, s_th=0.3, gamma_min=-1.5, num_bins=nb, binning="equal_mass_authors"
    )
    np.testing.assert_allclose(out.bin_edges, edges, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out.bin_counts, counts)
    np.testing.assert_allclose(out.calibration_gaps, gaps, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.gammas, g, rtol=1e-4, atol=1e-5)
    # Masked rows count nowhere.
    keep = np.arange(n) % 3 != 0
    masked = adafocal_update(state, probs, y, binning="equal_mass_authors", where=jnp.asarray(keep), **hp)
    kept = adafocal_update(state, probs[keep], y[keep], binning="equal_mass_authors", **hp)
    np.testing.assert_allclose(masked.bin_edges, kept.bin_edges, rtol=1e-6)
    np.testing.assert_allclose(masked.gammas, kept.gammas, rtol=1e-6)


def test_init_defaults_and_validation():
  s = adafocal_init()
  assert s.gammas.shape == (15,) and s.bin_edges.shape == (16,) and s.gammas.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(s.gammas), 1.0)
  with pytest.raises(ValueError, match="num_bins"):
    adafocal_init(0)
  with pytest.raises(ValueError, match="num_bins"):
    adafocal_init(2.5)
  with pytest.raises(TypeError, match="gamma_init"):
    adafocal_init(3, "1")

  probs, labels = VAL1_PROBS, VAL1_LABELS
  with pytest.raises(ValueError, match="gamma_max"):
    adafocal_update(s, probs, labels, gamma_max=0.0)
  with pytest.raises(ValueError, match="lam"):
    adafocal_update(s, probs, labels, lam=0.0)
  with pytest.raises(ValueError, match="switch_threshold"):
    adafocal_update(s, probs, labels, switch_threshold=-0.1)
  with pytest.raises(ValueError, match="switch_threshold"):
    adafocal_update(s, probs, labels, switch_threshold=25.0)
  with pytest.raises(ValueError, match="gamma_min"):
    adafocal_update(s, probs, labels, gamma_min=0.5)
  with pytest.raises(ValueError, match="binning"):
    adafocal_update(s, probs, labels, binning="quantile")
  with pytest.raises(TypeError, match="AdaFocalState"):
    adafocal_update((s.gammas, s.bin_edges), probs, labels)
  with pytest.raises(ValueError, match="val_labels"):
    adafocal_update(s, probs, labels[:3])
  with pytest.raises(TypeError, match="val_probs"):
    adafocal_update(s, np.zeros((4, 4), np.int32), labels)
  bad = s._replace(bin_edges=jnp.zeros(5))
  with pytest.raises(ValueError, match="bin_edges"):
    adafocal_update(bad, probs, labels)


def test_end_to_end_training_loop_runs():
  """A jitted train step with AdaFocal state threaded through epochs (linear model on synthetic data)."""
  rng = np.random.default_rng(8)
  x = rng.normal(size=(200, 6)).astype(np.float32)
  w_true = rng.normal(size=(6, 3))
  y = np.argmax(x @ w_true + rng.normal(size=(200, 3)), -1)
  xt, yt, xv, yv = x[:150], y[:150], x[150:], y[150:]

  @jax.jit
  def step(w, state):
    def loss(w):
      return jnp.mean(adafocal(xt @ w, yt, gammas=state.gammas, bin_edges=state.bin_edges))

    val, g = jax.value_and_grad(loss)(w)
    return w - 0.5 * g, val

  w = jnp.zeros((6, 3))
  state = adafocal_init(5, 1.0)
  update = jax.jit(lambda s, p, l: adafocal_update(s, p, l))
  for _ in range(5):
    for _ in range(10):
      w, val = step(w, state)
    state = update(state, jax.nn.softmax(xv @ w), yv)
  assert np.isfinite(float(val))
  assert np.all(np.isfinite(np.asarray(state.gammas)))
  assert np.all((np.asarray(state.gammas) <= 20) & (np.asarray(state.gammas) >= -2))
  assert np.all(np.abs(np.asarray(state.gammas)) >= 0.2 - 1e-6)
