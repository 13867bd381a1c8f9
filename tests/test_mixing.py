"""Mixup and CutMix: batches against a loop reference, the mixup criterion against the soft-target loss, lambda's
distribution, and a resumed run that mixes exactly as the uninterrupted one."""

from __future__ import annotations

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gence_jax import train
from gence_jax.data.mixing import cutmix, cutmix_box, mixed_loss, mixup
from gence_jax.losses import cross_entropy, mgce, mgce_nu


def test_mixup_matches_a_loop_and_lambda_is_beta():
  x = np.random.default_rng(0).normal(size=(6, 3, 2)).astype(np.float32)
  mixed, perm, lam = mixup(jax.random.PRNGKey(3), jnp.asarray(x), alpha=0.4)
  perm, lam = np.asarray(perm), float(lam)
  assert sorted(perm.tolist()) == list(range(6))
  ref = np.empty_like(x)
  for i in range(6):
    ref[i] = lam * x[i] + (1 - lam) * x[perm[i]]
  np.testing.assert_allclose(np.asarray(mixed), ref, rtol=1e-6)
  lams = np.array([float(mixup(jax.random.PRNGKey(k), jnp.zeros((2, 1)), alpha=0.4)[2]) for k in range(400)])
  # Beta(0.4, 0.4): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 0.1389
  assert abs(lams.mean() - 0.5) < 4 * np.sqrt(0.1389 / 400) and abs(lams.var() - 0.1389) < 0.03


def test_cutmix_matches_a_loop_and_lambda_is_the_kept_area():
  x = np.random.default_rng(1).normal(size=(5, 8, 6, 2)).astype(np.float32)
  key = jax.random.PRNGKey(7)
  mixed, perm, lam = cutmix(key, jnp.asarray(x), alpha=1.0)
  k_lam, _, k_box = jax.random.split(key, 3)
  lam0 = jax.random.beta(k_lam, 1.0, 1.0)
  top, bottom, left, right = (int(v) for v in cutmix_box(k_box, 8, 6, lam0))
  perm = np.asarray(perm)
  ref = x.copy()
  for i in range(5):
    for r in range(8):
      for c in range(6):
        if top <= r < bottom and left <= c < right:
          ref[i, r, c] = x[perm[i], r, c]
  np.testing.assert_array_equal(np.asarray(mixed), ref)
  assert float(lam) == pytest.approx(1 - (bottom - top) * (right - left) / 48)
  with pytest.raises(ValueError, match="images"):
    cutmix(key, jnp.zeros((4, 3)))


@pytest.mark.parametrize("loss", ["ce", "mgce"])
def test_mixup_criterion_equals_the_loss_of_the_mixed_target(loss):
  # CE and MGCE are linear in a soft target t: -<t, log softmax z> and -<t, z> - nu(z)
  rng = np.random.default_rng(2)
  z = rng.normal(size=(7, 4)) * 2
  y = rng.integers(0, 4, 7)
  perm, lam = rng.permutation(7), 0.3
  t = lam * np.eye(4)[y] + (1 - lam) * np.eye(4)[y[perm]]
  if loss == "ce":
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    want = -(t * logp).sum(-1)
    got = mixed_loss(lambda yy: cross_entropy(jnp.asarray(z, jnp.float32), yy), jnp.asarray(y), jnp.asarray(perm), lam)
  else:
    nu = np.asarray(mgce_nu(jnp.asarray(z, jnp.float32), beta=2.0), np.float64)
    want = -(t * z).sum(-1) - nu
    got = mixed_loss(lambda yy: mgce(jnp.asarray(z, jnp.float32), yy, beta=2.0), jnp.asarray(y), jnp.asarray(perm), lam)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def _config(*extra):
  common = ["train.epochs=3", "train.batch_size=64", "train.progress=False", "train.checkpoint_every_steps=20"]
  common += ["calibration.bootstrap_resamples=0", "calibration.methods=('ts',)", "outputs.reliability_plot=False"]
  return train.apply_overrides(train.load_config(None), [*common, "model.kwargs.hidden=(32,)", *extra])


def _params(workdir):
  import orbax.checkpoint as ocp

  d = os.path.join(workdir, "checkpoints")
  step = max(int(n) for n in os.listdir(d) if n.isdigit())
  with ocp.StandardCheckpointer() as c:
    return jax.tree_util.tree_leaves(c.restore(os.path.join(d, str(step), "default"))["params"])


@pytest.mark.slow
def test_mixup_run_resumes_bit_exactly_and_differs_from_no_mixing(tmp_path):
  full, part, plain = (str(tmp_path / n) for n in ("full", "part", "plain"))
  train.train_and_evaluate(_config("train.mix=mixup", "train.mix_alpha=0.5"), full)
  train.train_and_evaluate(_config("train.mix=mixup", "train.mix_alpha=0.5"), part)
  shutil.rmtree(os.path.join(part, "checkpoints", "60"))  # back to the epoch-2 checkpoint
  for name in ("best", "best_clean_val"):
    shutil.rmtree(os.path.join(part, name), ignore_errors=True)
  for name in ("best.json", "results.json"):
    if os.path.exists(os.path.join(part, name)):
      os.remove(os.path.join(part, name))
  out = train.train_and_evaluate(_config("train.mix=mixup", "train.mix_alpha=0.5"), part)
  assert out["resumed_from_step"] == 40
  for a, b in zip(_params(full), _params(part)):
    assert np.array_equal(np.asarray(a), np.asarray(b))
  train.train_and_evaluate(_config(), plain)
  assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(_params(full), _params(plain)))


def test_mix_config_errors(tmp_path):
  from gence_jax.train.errors import ConfigError

  with pytest.raises(ValueError, match="'train.mix'"):
    train.validate(_config("train.mix=blend"))
  with pytest.raises(ValueError, match="'train.mix_alpha'"):
    train.validate(_config("train.mix=mixup", "train.mix_alpha=0.0"))
  with pytest.raises(ConfigError, match="cutmix needs images"):
    train.train_and_evaluate(_config("train.mix=cutmix"), str(tmp_path / "w"))


def test_cutmix_probability_applies_to_that_share_of_batches():
  """train.cutmix_prob (the CutMix authors' CIFAR recipe: 0.5): each batch is cut-mixed with that probability and
  otherwise left as it is, with lambda = 1 so the mixed loss is the plain loss."""
  from gence_jax.data.mixing import get_mix

  x = jnp.arange(4 * 8 * 8 * 1, dtype=jnp.float32).reshape(4, 8, 8, 1)
  fn = jax.jit(get_mix("cutmix", 1.0, 0.5))
  applied = 0
  for i in range(400):
    mixed, perm, lam = fn(jax.random.PRNGKey(i), x)
    if float(lam) == 1.0:  # not applied (or an empty box): the batch is unchanged
      assert bool(jnp.array_equal(mixed, x))
    applied += float(lam) < 1.0
  # Binomial(400, 0.5): 4.5 standard deviations either side; a box can be empty (lambda = 1) only rarely.
  assert 155 <= applied <= 245, applied
  # Probability 1 is plain CutMix, with the same random stream.
  key = jax.random.PRNGKey(3)
  np.testing.assert_array_equal(get_mix("cutmix", 1.0, 1.0)(key, x)[0], cutmix(key, x, alpha=1.0)[0])
  with pytest.raises(ValueError, match="'train.cutmix_prob'"):
    train.validate(_config("train.mix=cutmix", "train.cutmix_prob=0.0"))
