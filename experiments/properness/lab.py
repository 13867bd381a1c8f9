"""The properness lab: synthetic data with a known posterior, and how far each loss's learned posterior is from it.

World. K Gaussian class-conditionals in d dimensions with a shared isotropic covariance sigma^2 I and class priors
pi, x | y ~ N(mu_y, sigma^2 I). Bayes' rule gives a posterior that is exactly linear-softmax:

    log p(y|x) = x . mu_y / sigma^2 - |mu_y|^2 / (2 sigma^2) + log pi_y + const(x)
    =>  p(y|x) = softmax(x @ W + b),  W = M^T / sigma^2 [d, K],  b_y = -|mu_y|^2 / (2 sigma^2) + log pi_y.

A linear model ``logits = x @ w + c`` therefore contains the truth: for a loss whose link is softmax, any gap from
the truth that survives large n is the loss's own bias (or, for GenCE, its finite-batch normaliser), not model
misspecification. (MGCE's links are not softmax, so for MGCE the linear model is not well specified: see the README.)

Measures (numpy float64, on a large fresh test sample of the same world):

* ``kl``: E_x sum_y p(y|x) log(p(y|x) / q(y|x)), with q clipped below at ``CLIP`` = 1e-12 (MGCE's sparse link gives
  exact zeros). ``zero_frac``: the fraction of (x, y) entries with q exactly 0; ``clipped_mass``: the true
  probability mass E_x sum_{y: q(y|x) < CLIP} p(y|x) on the entries the clip touched (0 means the clip is immaterial).
* ``tv``: E_x (1/2) sum_y |p(y|x) - q(y|x)|, the mean total-variation distance (no clipping needed).
* ``ece``: top-label ECE, 15 equal-width bins, against the sampled test labels (`gence_jax.metrics.ece`).
* ``true_ece``: the same binned ECE with the correctness indicator 1[yhat = y] replaced by its exact expectation
  p(yhat|x) (no label-sampling noise).
* ``acc_gap``: Bayes accuracy minus the model's expected accuracy, E_x[max_y p(y|x) - p(yhat|x)] (>= 0).
* ``overconf``: mean top-label confidence minus expected accuracy, E_x[max_y q(y|x) - p(yhat|x)] (signed).

Training, two ways:

* ``sgd`` (`make_trainer`): Adam with a cosine decay to 0 over a fixed number of steps on minibatches drawn from an
  infinite shuffled stream of the training set (a fresh permutation every epoch; batches may straddle epochs).
  Float32, zero initial parameters. Seeds (and training-set sizes) are vmapped. This is how GenCE is used in
  practice: its normaliser is the mean over the minibatch.
* ``erm`` (`fit_erm`): the full-batch empirical-risk minimiser by L-BFGS in float64. For a loss that does not
  couple examples it is the minimiser of the expected minibatch objective at every batch size (SGD only adds
  optimisation error); for GenCE it is the B = n limit (normaliser = training-set mean).

`pointwise_minimiser` removes the model and the sampling altogether: free logits per point, expected loss under
the true posterior, to test each loss's properness for its link.

Everything here is a pure function of its arguments (randomness comes from explicit seeds).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gence_jax import metrics as gm
from gence_jax.losses import get_loss, mgce_worst_case

CLIP = 1e-12
NUM_BINS = 15
MEASURES = ("kl", "tv", "zero_frac", "clipped_mass", "ece", "true_ece", "acc_gap", "overconf")


# ------------------------------------------------------------------------------------------------------------ world


@dataclasses.dataclass(frozen=True)
class World:
  """K isotropic Gaussian classes in d dimensions: x | y ~ N(means[y], sigma^2 I), y ~ priors."""

  means: np.ndarray  # [K, d]
  sigma: float
  priors: np.ndarray  # [K]

  @property
  def num_classes(self) -> int:
    return self.means.shape[0]

  @property
  def dim(self) -> int:
    return self.means.shape[1]

  @property
  def weights(self) -> np.ndarray:
    """W [d, K] of the closed-form posterior softmax(x @ W + b)."""
    return self.means.T / self.sigma**2

  @property
  def bias(self) -> np.ndarray:
    """b [K] of the closed-form posterior softmax(x @ W + b)."""
    return -np.sum(self.means**2, axis=1) / (2 * self.sigma**2) + np.log(self.priors)

  def to_json(self) -> dict:
    return {
      "num_classes": self.num_classes,
      "dim": self.dim,
      "sigma": self.sigma,
      "priors": self.priors.tolist(),
      "means": self.means.tolist(),
    }


def _softmax64(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def true_posterior(world: World, x: np.ndarray) -> np.ndarray:
  """p(y|x) [N, K] in float64, from the closed form softmax(x @ W + b)."""
  return _softmax64(np.asarray(x, np.float64) @ world.weights + world.bias)


def sample(world: World, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """n i.i.d. draws (x [n, d] float64, y [n] int32) from the world."""
  y = rng.choice(world.num_classes, size=n, p=world.priors).astype(np.int32)
  x = world.means[y] + world.sigma * rng.standard_normal((n, world.dim))
  return x, y


def bayes_error(world: World, x: np.ndarray) -> float:
  """Bayes error E_x[1 - max_y p(y|x)], Monte Carlo over the given x (exact in y)."""
  return float(1.0 - true_posterior(world, x).max(axis=1).mean())


def exp_priors(num_classes: int, ratio: float) -> np.ndarray:
  """Exponential (long-tail) profile pi_c proportional to ratio^(-c/(K-1)) (Cao et al. 2019); ratio 1 is uniform."""
  p = float(ratio) ** (-np.arange(num_classes) / max(num_classes - 1, 1))
  return p / p.sum()


def make_world(
  num_classes: int,
  dim: int,
  *,
  target_bayes_error: float = 0.2,
  imbalance: float = 1.0,
  seed: int = 0,
  num_mc: int = 100_000,
) -> tuple[World, float]:
  """A world whose Bayes error is ``target_bayes_error`` (to Monte Carlo precision).

  Means are directions drawn from N(0, I_d) (seed ``seed``) times a common scale; sigma = 1. The scale is found by
  bisection on a Monte Carlo estimate of the Bayes error with common random numbers (fixed class draws and noise).

  Returns:
    (world, bayes_error on the calibration sample).
  """
  rng = np.random.default_rng(seed)
  directions = rng.standard_normal((num_classes, dim))
  priors = exp_priors(num_classes, imbalance)
  y = rng.choice(num_classes, size=num_mc, p=priors)
  noise = rng.standard_normal((num_mc, dim))

  def err(log_scale):
    w = World(means=directions * np.exp(log_scale), sigma=1.0, priors=priors)
    return bayes_error(w, w.means[y] + noise), w

  lo, hi = np.log(1e-3), np.log(1e3)
  for _ in range(50):
    mid = 0.5 * (lo + hi)
    e, _ = err(mid)
    if e > target_bayes_error:
      lo = mid
    else:
      hi = mid
  e, world = err(0.5 * (lo + hi))
  return world, e


# ------------------------------------------------------------------------------------------------------- losses


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """A loss of the registry with its hyper-parameters, under a short label for tables and plots."""

  label: str
  name: str
  hparams: tuple[tuple[str, object], ...] = ()

  def get(self):
    return get_loss(self.name, **dict(self.hparams))


LOSSES = {
  "cross_entropy": LossSpec("cross_entropy", "cross_entropy"),
  "gence": LossSpec("gence", "gence"),
  "gence_noself": LossSpec("gence_noself", "gence", (("include_self", False),)),
  "mgce_b2": LossSpec("mgce_b2", "mgce", (("beta", 2.0),)),
  "mgce_b11": LossSpec("mgce_b11", "mgce", (("beta", 11.0),)),
  "lq_0.7": LossSpec("lq_0.7", "generalized_ce", (("q", 0.7),)),
  "focal_2": LossSpec("focal_2", "focal", (("gamma", 2.0),)),
  "brier": LossSpec("brier", "brier"),
}


def prob_links(spec: LossSpec) -> dict[str, Callable]:
  """The probability maps a trained model is read through: ``{"": loss.probs}`` (the registered link), plus, for
  MGCE, ``{"w": worst-case distribution}`` (the map the loss's gradient w - e_y is stationary at)."""
  loss = spec.get()
  links = {"": loss.probs}
  if spec.name == "mgce":
    beta = dict(spec.hparams)["beta"]
    links["w"] = functools.partial(mgce_worst_case, beta=beta)
  return links


# ----------------------------------------------------------------------------------------------------- training


def batch_indices(n: int, batch_size: int, steps: int, rng: np.random.Generator) -> np.ndarray:
  """[steps, batch_size] int32 indices into a training set of size n: an infinite stream of per-epoch shuffles."""
  total = steps * batch_size
  epochs = -(-total // n)
  stream = np.concatenate([rng.permutation(n) for _ in range(epochs)])[:total]
  return stream.reshape(steps, batch_size).astype(np.int32)


def init_params(dim: int, num_classes: int) -> dict:
  return {"w": jnp.zeros((dim, num_classes), jnp.float32), "b": jnp.zeros((num_classes,), jnp.float32)}


def _optimizer(lr: float, steps: int):
  return optax.adam(optax.cosine_decay_schedule(lr, steps))


def make_trainer(spec: LossSpec, *, num_classes: int, steps: int, lr: float, full_batch: bool = False):
  """A jitted function training the linear model with `spec`'s loss, vmapped over the leading axis of its arguments.

  Minibatch form: ``train(x [S, N, d], y [S, N], idx [S, steps, B]) -> params`` (leading axis S: seeds/configs).
  Full-batch form: ``train(x [S, N, d], y [S, N], mask [S, N]) -> params``; every step uses all rows with
  ``mask`` True (GenCE's normaliser is then the mean over the whole training set; masked rows count nowhere).
  """
  loss = spec.get()
  opt = _optimizer(lr, steps)

  def objective(params, xb, yb, where):
    per = loss.per_example(xb @ params["w"] + params["b"], yb, where=where)
    if where is None:
      return jnp.mean(per)
    return jnp.sum(per) / jnp.sum(where)

  def fit(x, y, batches):
    params = init_params(x.shape[-1], num_classes)

    def step(carry, item):
      params, state = carry
      if full_batch:
        g = jax.grad(objective)(params, x, y, batches)
      else:
        g = jax.grad(objective)(params, x[item], y[item], None)
      updates, state = opt.update(g, state, params)
      return (optax.apply_updates(params, updates), state), None

    xs = None if full_batch else batches
    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), xs, length=steps)
    return params

  return jax.jit(jax.vmap(fit))


def lbfgs(
  objective: Callable, theta0: np.ndarray, *, maxiter: int = 5000, gtol: float = 1e-9
) -> tuple[np.ndarray, dict]:
  """Minimise a jax-traceable scalar ``objective(theta)`` from ``theta0`` with scipy's L-BFGS-B in float64.

  Returns (theta, info) with info = {"nit", "grad_norm" (max abs gradient), "converged" (grad_norm < 1e-6),
  "objective"}.
  """
  import scipy.optimize

  with jax.enable_x64(True):
    value_and_grad = jax.jit(jax.value_and_grad(objective))

    def fun(theta):
      v, g = value_and_grad(jnp.asarray(theta, jnp.float64))
      return float(v), np.asarray(g, np.float64)

    res = scipy.optimize.minimize(
      fun,
      np.asarray(theta0, np.float64),
      jac=True,
      method="L-BFGS-B",
      options={"maxiter": maxiter, "gtol": gtol, "ftol": 1e-15, "maxcor": 20},
    )
  grad_norm = float(np.abs(res.jac).max())
  info = {"nit": int(res.nit), "grad_norm": grad_norm, "converged": bool(grad_norm < 1e-6), "objective": float(res.fun)}
  return res.x, info


def fit_erm(
  spec: LossSpec, x: np.ndarray, y: np.ndarray, *, num_classes: int, init: dict | None = None, maxiter: int = 5000
) -> tuple[dict, dict]:
  """Empirical-risk minimiser of the linear model (full batch, L-BFGS, float64), from zero parameters or from
  ``init``. run.py starts the losses that are not convex in the logits (Lq, focal, Brier) from the cross-entropy ERM
  of the same data: for them L-BFGS finds a stationary point, not necessarily the global minimum.

  The objective is (1/n) sum_i loss_i over the whole training set; for GenCE the normaliser is the training-set mean
  (the B = n limit of its minibatch objective). For a loss that does not couple examples this is also the minimiser
  of the expected minibatch objective at every batch size. Inputs are centred for conditioning (mapped back).

  Returns:
    (params {"w": [d, K], "b": [K]} float64 numpy, info from `lbfgs`).
  """
  loss = spec.get()
  d = x.shape[-1]
  center = np.asarray(x, np.float64).mean(axis=0)
  xc, yc = np.asarray(x, np.float64) - center, np.asarray(y, np.int32)

  def objective(theta):
    w, b = theta[: d * num_classes].reshape(d, num_classes), theta[d * num_classes :]
    return jnp.mean(loss.per_example(jnp.asarray(xc) @ w + b, jnp.asarray(yc)))

  theta0 = np.zeros(d * num_classes + num_classes)
  if init is not None:
    w0 = np.asarray(init["w"], np.float64)
    theta0 = np.concatenate([w0.reshape(-1), np.asarray(init["b"], np.float64) + center @ w0])
  theta, info = lbfgs(objective, theta0, maxiter=maxiter)
  w = theta[: d * num_classes].reshape(d, num_classes)
  return {"w": w, "b": theta[d * num_classes :] - center @ w}, info


def logits_of(params: dict, x) -> jax.Array:
  """Logits of one linear model (float32)."""
  return jnp.asarray(x, jnp.float32) @ jnp.asarray(params["w"], jnp.float32) + jnp.asarray(params["b"], jnp.float32)


_PREDICTORS: dict = {}


def predict(spec: LossSpec, params: dict, x) -> dict[str, np.ndarray]:
  """Probabilities [S, N, K] (float32 computation) of S stacked linear models (params leaves [S, ...]) on x [N, d],
  for each probability link of the loss (`prob_links`). Jitted once per loss."""
  if spec.label not in _PREDICTORS:
    links = prob_links(spec)
    _PREDICTORS[spec.label] = {
      suffix: jax.jit(jax.vmap(lambda w, b, xx, link=link: link(xx @ w + b), in_axes=(0, 0, None)))
      for suffix, link in links.items()
    }
  w = jnp.asarray(params["w"], jnp.float32)
  b = jnp.asarray(params["b"], jnp.float32)
  xx = jnp.asarray(x, jnp.float32)
  return {suffix: np.asarray(fn(w, b, xx)) for suffix, fn in _PREDICTORS[spec.label].items()}


# ----------------------------------------------------------------------------------------------------- measures


def expected_kl(p: np.ndarray, q: np.ndarray, clip: float = CLIP) -> float:
  """E_x sum_y p log(p / max(q, clip)) over the rows of p, q [N, K] (0 log 0 = 0)."""
  p = np.asarray(p, np.float64)
  q = np.maximum(np.asarray(q, np.float64), clip)
  terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(q)), 0.0)
  return float(terms.sum(axis=1).mean())


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
  """E_x (1/2) sum_y |p(y|x) - q(y|x)| (insensitive to exact zeros, unlike the KL)."""
  return float(0.5 * np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum(axis=1).mean())


def _bin_index(conf: np.ndarray, num_bins: int) -> np.ndarray:
  """`gence_jax.metrics.bin_index` as a NumPy array: bins (lo, hi] with edges b / M, 0 first, 1.0 in the last."""
  return np.asarray(gm.bin_index(conf, num_bins))


def true_ece(p: np.ndarray, q: np.ndarray, num_bins: int = NUM_BINS) -> float:
  """Top-label ECE with equal-width bins where 1[yhat = y] is replaced by its exact expectation p(yhat|x)."""
  yhat = q.argmax(axis=1)
  conf = q[np.arange(len(q)), yhat]
  acc = p[np.arange(len(p)), yhat]
  b = _bin_index(conf, num_bins)
  gap = np.bincount(b, weights=conf - acc, minlength=num_bins)
  return float(np.abs(gap).sum() / len(q))


def posterior_reliability(p: np.ndarray, q: np.ndarray, num_bins: int = 20) -> dict:
  """Over every (x, y) entry: the mean true p(y|x) within equal-width bins of the learned q(y|x) (a classwise-pooled
  reliability curve against the known posterior). Returns per-bin counts, mean q and mean p (None when empty)."""
  qf, pf = q.reshape(-1), p.reshape(-1)
  b = _bin_index(qf, num_bins)
  cnt = np.bincount(b, minlength=num_bins)
  sq = np.bincount(b, weights=qf, minlength=num_bins)
  sp = np.bincount(b, weights=pf, minlength=num_bins)
  with np.errstate(invalid="ignore", divide="ignore"):
    mq, mp = sq / cnt, sp / cnt
  return {
    "count": cnt.tolist(),
    "mean_q": [None if c == 0 else float(v) for c, v in zip(cnt, mq)],
    "mean_p": [None if c == 0 else float(v) for c, v in zip(cnt, mp)],
  }


def measures(p: np.ndarray, q: np.ndarray, labels: np.ndarray) -> dict:
  """Every measure of the lab for learned probabilities q against the true posterior p on the test set."""
  q64 = np.asarray(q, np.float64)
  if not np.all(np.isfinite(q64)):  # training diverged (NaN/Inf parameters): measures are None
    return {key: None for key in MEASURES} | {"diverged": True}
  q64 = q64 / q64.sum(axis=1, keepdims=True)
  yhat = q64.argmax(axis=1)
  rows = np.arange(len(q64))
  exp_acc = p[rows, yhat]
  return {
    "kl": expected_kl(p, q64),
    "tv": total_variation(p, q64),
    "zero_frac": float(np.mean(q64 == 0.0)),
    "clipped_mass": float(np.sum(np.where(q64 < CLIP, p, 0.0)) / len(p)),
    "ece": float(gm.ece(jnp.asarray(q64, jnp.float32), jnp.asarray(labels), num_bins=NUM_BINS)),
    "true_ece": true_ece(p, q64),
    "acc_gap": float(np.mean(p.max(axis=1) - exp_acc)),
    "overconf": float(np.mean(q64.max(axis=1) - exp_acc)),
    "diverged": False,
  }


# ------------------------------------------------------------------------------------------- pointwise properness


def pointwise_minimiser(spec: LossSpec, p: np.ndarray, *, maxiter: int = 20000) -> tuple[dict, dict]:
  """Free logits per row minimising the expected loss sum_y p_y loss(z, y) (no model, no sampling), by L-BFGS in
  float64: tests whether the loss is proper for its link(s). GenCE is not pointwise (its normaliser couples rows):
  for it the rows are a discrete x-marginal with uniform weights and the risk is (1/N) sum_i sum_y p_iy l_i(y) with
  the normaliser over all rows, its exact population risk on that marginal.

  Returns ({link_suffix: probabilities [N, K]}, lbfgs info).
  """
  loss = spec.get()
  n, k = p.shape
  labels = np.broadcast_to(np.arange(k, dtype=np.int32)[:, None], (k, n))  # labels[c] = all c

  def risk(theta):
    z = theta.reshape(n, k)
    per_label = jax.vmap(lambda lab: loss.per_example(z, lab))(jnp.asarray(labels))  # [K, N]
    return jnp.sum(per_label.T * jnp.asarray(p)) / n

  theta, info = lbfgs(risk, np.zeros(n * k), maxiter=maxiter)
  with jax.enable_x64(True):
    z = jnp.asarray(theta.reshape(n, k))
    return {suffix: np.asarray(link(z), np.float64) for suffix, link in prob_links(spec).items()}, info


def tilted(p: np.ndarray, exponent: float) -> np.ndarray:
  """p^a / sum p^a row-wise (computed in log space): the population minimiser of Lq (a = 1/(1-q)) and the MGCE link h
  when w = p (a = beta / (beta - 1))."""
  logp = np.log(np.maximum(np.asarray(p, np.float64), 1e-300))
  return _softmax64(exponent * logp)
