"""The properness lab (experiments/properness/lab.py): its closed-form posterior, its measures, and its training.

* the closed-form posterior softmax(x @ W + b) equals Bayes' rule on the Gaussian densities (scipy, float64);
* the KL / TV / true-ECE measures on hand-computed cases (q = p gives 0; a two-class case; the clip at 1e-12);
* cross-entropy trained on a large sample (minibatch Adam, and the exact ERM) gets close to the truth, which the
  untrained (zero) model does not; full-batch GenCE's ERM coincides with cross-entropy's;
* the pointwise check finds cross-entropy proper and Lq's minimiser at the tilted posterior.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys

import jax
import numpy as np
import pytest
from scipy.stats import multivariate_normal

_LAB_PATH = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "properness", "lab.py"
)


def _load_lab():
  if "properness_lab" in sys.modules:
    return sys.modules["properness_lab"]
  spec = importlib.util.spec_from_file_location("properness_lab", _LAB_PATH)
  module = importlib.util.module_from_spec(spec)
  sys.modules["properness_lab"] = module  # dataclasses look their module up in sys.modules
  spec.loader.exec_module(module)
  return module


lab = _load_lab()


def _bayes_rule(means, sigma, priors, x):
  """p(y|x) from the class-conditional densities and the priors, written independently of lab.py."""
  dens = np.stack(
    [multivariate_normal(mean=m, cov=sigma**2 * np.eye(len(m))).pdf(x) * pi for m, pi in zip(means, priors)], axis=1
  )
  return dens / dens.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("num_classes, dim", [(2, 1), (4, 3), (7, 5)])
def test_closed_form_posterior_is_bayes_rule(num_classes, dim):
  rng = np.random.default_rng(num_classes)
  means = rng.normal(size=(num_classes, dim))
  priors = rng.dirichlet(np.ones(num_classes))
  world = lab.World(means=means, sigma=1.3, priors=priors)
  x = rng.normal(scale=1.5, size=(200, dim))
  np.testing.assert_allclose(lab.true_posterior(world, x), _bayes_rule(means, 1.3, priors, x), rtol=1e-10, atol=1e-13)
  # Samples come from the world: class frequencies follow the priors, the class means are recovered.
  xs, ys = lab.sample(world, 40_000, rng)
  np.testing.assert_allclose(np.bincount(ys, minlength=num_classes) / len(ys), priors, atol=0.01)
  for c in range(num_classes):
    if np.sum(ys == c) > 1000:
      np.testing.assert_allclose(xs[ys == c].mean(axis=0), means[c], atol=0.1)


def test_make_world_hits_the_target_bayes_error():
  world, calib = lab.make_world(5, 3, target_bayes_error=0.25, imbalance=4.0, seed=3, num_mc=20_000)
  assert abs(calib - 0.25) < 1e-3
  np.testing.assert_allclose(world.priors, lab.exp_priors(5, 4.0))
  assert world.priors[0] / world.priors[-1] == pytest.approx(4.0)
  x, _ = lab.sample(world, 40_000, np.random.default_rng(0))
  assert abs(lab.bayes_error(world, x) - 0.25) < 0.01  # a fresh sample agrees to Monte Carlo precision


def test_kl_and_tv_hand_cases():
  p = np.array([[0.25, 0.75], [1.0, 0.0]])
  assert lab.expected_kl(p, p) == 0.0
  assert lab.total_variation(p, p) == 0.0
  q = np.array([[0.5, 0.5], [0.5, 0.5]])
  row0 = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # = 0.1308...
  row1 = 1.0 * math.log(1.0 / 0.5)  # 0 log 0 = 0 for the second class
  assert lab.expected_kl(p, q) == pytest.approx((row0 + row1) / 2, rel=1e-12)
  assert lab.total_variation(p, q) == pytest.approx((0.25 + 0.5) / 2, rel=1e-12)
  # an exact zero where p > 0 is clipped at 1e-12
  q0 = np.array([[0.0, 1.0]])
  assert lab.expected_kl(np.array([[0.5, 0.5]]), q0) == pytest.approx(0.5 * math.log(0.5 / 1e-12) + 0.5 * math.log(0.5))


def test_true_ece_and_measures_hand_case():
  # two points, both predicted class 0 with confidence 0.9 (same bin); the true p(yhat|x) are 0.8 and 0.6.
  p = np.array([[0.8, 0.2], [0.6, 0.4]])
  q = np.array([[0.9, 0.1], [0.9, 0.1]])
  assert lab.true_ece(p, q) == pytest.approx(abs((0.9 - 0.8) + (0.9 - 0.6)) / 2)
  m = lab.measures(p, q, np.array([0, 1]))
  assert m["overconf"] == pytest.approx(0.2)
  assert m["acc_gap"] == pytest.approx(0.0)
  assert m["ece"] == pytest.approx(abs(0.9 - 0.5), abs=1e-6)  # one bin: confidence 0.9, accuracy 1/2
  assert not m["diverged"]
  assert m["zero_frac"] == 0.0 and m["clipped_mass"] == 0.0
  m0 = lab.measures(p, np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([0, 1]))
  assert m0["zero_frac"] == pytest.approx(0.25) and m0["clipped_mass"] == pytest.approx(0.2 / 2)
  bad = lab.measures(p, np.full_like(q, np.nan), np.array([0, 1]))
  assert bad["diverged"] and bad["kl"] is None


def _world_and_test(seed=0):
  world, _ = lab.make_world(3, 2, target_bayes_error=0.2, seed=seed, num_mc=20_000)
  x_test, _ = lab.sample(world, 5000, np.random.default_rng(7))
  return world, x_test, lab.true_posterior(world, x_test)


def test_cross_entropy_training_recovers_the_posterior():
  world, x_test, p_test = _world_and_test()
  n, batch, steps, seeds = 5000, 128, 1500, (0, 1)
  data = [lab.sample(world, n, np.random.default_rng(s)) for s in seeds]
  x = np.stack([d[0] for d in data]).astype(np.float32)
  y = np.stack([d[1] for d in data])
  idx = np.stack([lab.batch_indices(n, batch, steps, np.random.default_rng(10 + s)) for s in seeds])
  assert idx.shape == (2, steps, batch) and idx.max() < n
  assert sorted(idx[0].reshape(-1)[:n].tolist()) == list(range(n))  # the first epoch is a permutation

  spec = lab.LOSSES["cross_entropy"]
  params = lab.make_trainer(spec, num_classes=3, steps=steps, lr=0.05)(x, y, idx)
  kl_sgd = [lab.expected_kl(p_test, q) for q in lab.predict(spec, params, x_test)[""]]
  zero = jax.tree.map(lambda a: a[None], lab.init_params(2, 3))
  kl_untrained = lab.expected_kl(p_test, lab.predict(spec, zero, x_test)[""][0])
  # asymptotically E KL ~ (K-1)(d+1)/(2n) = 6e-4 for maximum likelihood; the uniform model is far off
  assert max(kl_sgd) < 5e-3, kl_sgd
  assert kl_untrained > 0.3, kl_untrained

  # the exact ERM (L-BFGS) is a stationary point, close to the SGD solution; full-batch GenCE's ERM is CE's
  erm, info = lab.fit_erm(spec, x[0], y[0], num_classes=3)
  assert info["converged"], info
  kl_erm = lab.expected_kl(p_test, lab.predict(spec, jax.tree.map(lambda a: a[None], erm), x_test)[""][0])
  assert kl_erm < 5e-3 and abs(kl_erm - kl_sgd[0]) < 1e-3, (kl_erm, kl_sgd)
  gence = lab.LOSSES["gence"]
  erm_g, info_g = lab.fit_erm(gence, x[0], y[0], num_classes=3)
  assert info_g["converged"], info_g
  kl_g = lab.expected_kl(p_test, lab.predict(gence, jax.tree.map(lambda a: a[None], erm_g), x_test)[""][0])
  assert abs(kl_g - kl_erm) < 1e-4, (kl_g, kl_erm)


def test_pointwise_properness_detects_improper_links():
  p = np.random.default_rng(0).dirichlet(np.ones(3), size=20)
  q_ce, _ = lab.pointwise_minimiser(lab.LOSSES["cross_entropy"], p, maxiter=2000)
  assert lab.expected_kl(p, q_ce[""]) < 1e-6
  q_lq, _ = lab.pointwise_minimiser(lab.LOSSES["lq_0.7"], p, maxiter=2000)
  # Lq's minimiser is the tilted posterior p^(1/(1-q)) / Z, not p
  np.testing.assert_allclose(q_lq[""], lab.tilted(p, 1 / 0.3), atol=2e-3)
  assert lab.expected_kl(p, q_lq[""]) > 0.05
