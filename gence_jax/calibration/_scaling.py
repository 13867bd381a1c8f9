"""Affine calibrators fitted by regularised NLL: vector scaling, matrix scaling, Dirichlet calibration.

Vector and matrix scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks") transform the logits,
Dirichlet calibration (Kull et al. 2019, "Beyond temperature scaling: Obtaining well-calibrated multiclass
probabilities with Dirichlet calibration") the log-probabilities. Fitting runs L-BFGS-B from SciPy on the host, with
the objective and its gradient computed by one jitted JAX function (in the dtype of the logits): the problem is a
small smooth (for the softmax, convex) minimisation over K or K^2 + K parameters, which a quasi-Newton method on the
host solves reliably. Prediction is jit-able.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from gence_jax.calibration import _common

Link = Callable[[jax.Array], jax.Array]

DEFAULT_REG = 1e-2  # ODIR strengths lambda (off-diagonal) and mu (intercept) of matrix scaling and Dirichlet
DEFAULT_MAXITER = 1000


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VectorScalingParams:
  """Vector scaling: calibrated probabilities = link(w * z + b) (Guo et al. 2017).

  Attributes:
    scale: [K] per-class multipliers w.
    bias: [K] per-class offsets b.
    link: the probability link (static metadata).
  """

  scale: jax.Array
  bias: jax.Array
  link: Link = dataclasses.field(default=jax.nn.softmax, metadata=dict(static=True))

  def summary(self) -> dict:
    w, b = np.asarray(self.scale, np.float64), np.asarray(self.bias, np.float64)
    return {
      "num_classes": int(w.shape[0]),
      "scale_mean": float(w.mean()),
      "scale_min": float(w.min()),
      "scale_max": float(w.max()),
      "bias_abs_max": float(np.abs(b).max()),
    }


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MatrixScalingParams:
  """Matrix scaling (Guo et al. 2017) or Dirichlet calibration (Kull et al. 2019).

  ``kind="matrix"``: probabilities = link(z W^T + b) on the logits z.
  ``kind="dirichlet"``: probabilities = softmax(log(link(z)) W^T + b) on the model's log-probabilities (floored at
  the dtype's tiny, so sparse links stay finite).

  Attributes:
    weight: [K, K] matrix W (row k gives the calibrated logit of class k).
    bias: [K] intercepts b.
    reg_offdiag, reg_bias: the ODIR strengths it was fitted with (static metadata).
    kind: "matrix" or "dirichlet" (static metadata).
    link: the probability link (static metadata).
  """

  weight: jax.Array
  bias: jax.Array
  reg_offdiag: float = dataclasses.field(default=0.0, metadata=dict(static=True))
  reg_bias: float = dataclasses.field(default=0.0, metadata=dict(static=True))
  kind: str = dataclasses.field(default="matrix", metadata=dict(static=True))
  link: Link = dataclasses.field(default=jax.nn.softmax, metadata=dict(static=True))

  def summary(self) -> dict:
    w, b = np.asarray(self.weight, np.float64), np.asarray(self.bias, np.float64)
    k = w.shape[0]
    off = w[~np.eye(k, dtype=bool)]
    return {
      "kind": self.kind,
      "num_classes": int(k),
      "diag_mean": float(np.diag(w).mean()),
      "offdiag_rms": float(np.sqrt(np.mean(off**2))) if off.size else 0.0,
      "bias_rms": float(np.sqrt(np.mean(b**2))),
      "reg_offdiag": float(self.reg_offdiag),
      "reg_bias": float(self.reg_bias),
    }


# ----------------------------------------------------------------------------------------------- model


def _features(logits, kind, link):
  if kind == "dirichlet":
    return _common.log_probs(logits, link)
  return logits


def _output_log_probs(scores, kind, link):
  return _common.log_probs(scores, jax.nn.softmax if kind == "dirichlet" else link)


def _unpack(theta, kind, k):
  if kind == "vector":
    return theta[:k], theta[k:]
  return theta[: k * k].reshape(k, k), theta[k * k :]


def _scores(x, kind, weight, bias):
  if kind == "vector":
    return x * weight + bias
  return x @ weight.T + bias


def odir_penalty(
  weight: jax.typing.ArrayLike,
  bias: jax.typing.ArrayLike,
  reg_offdiag: jax.typing.ArrayLike,
  reg_bias: jax.typing.ArrayLike,
) -> jax.Array:
  """ODIR (Kull et al. 2019): lambda / (K (K - 1)) sum_{i != j} W_ij^2 + mu / K sum_j b_j^2."""
  k = bias.shape[-1]
  off = jnp.sum(weight**2) - jnp.sum(jnp.diagonal(weight) ** 2)
  return reg_offdiag * off / max(k * (k - 1), 1) + reg_bias * jnp.sum(bias**2) / k


@functools.partial(jax.jit, static_argnames=("kind", "link"))
def _objective(theta, x, labels, valid, reg_offdiag, reg_bias, *, kind, link):
  k = x.shape[-1]
  weight, bias = _unpack(theta, kind, k)
  nll = _common.label_nll(_output_log_probs(_scores(x, kind, weight, bias), kind, link), labels)
  value = _common.masked_mean(nll, valid)
  if kind != "vector":
    value = value + odir_penalty(weight, bias, reg_offdiag, reg_bias)
  return value


_value_and_grad = jax.jit(jax.value_and_grad(_objective), static_argnames=("kind", "link"))


def _fit(fn, kind, logits, labels, where, link, reg_offdiag, reg_bias, maxiter):
  logits, labels, valid = _common.check_inputs(fn, logits, labels, where, link)
  reg_offdiag = _common.check_real(fn, "reg_offdiag", reg_offdiag)
  reg_bias = _common.check_real(fn, "reg_bias", reg_bias)
  maxiter = _common.check_int(fn, "maxiter", maxiter, 1)
  k = logits.shape[-1]
  dtype = logits.dtype
  # Masked rows may hold NaN padding: zero them, or NaN * 0 would reach the gradient through the masked mean.
  x = jnp.where(valid[:, None], _features(logits, kind, link), 0)
  eye = np.ones(k) if kind == "vector" else np.eye(k).reshape(-1)
  theta0 = np.concatenate([eye, np.zeros(k)])
  regs = (jnp.asarray(reg_offdiag, dtype), jnp.asarray(reg_bias, dtype))

  def fun(theta):
    value, grad = _value_and_grad(jnp.asarray(theta, dtype), x, labels, valid, *regs, kind=kind, link=link)
    return float(value), np.asarray(grad, np.float64)

  f0 = fun(theta0)[0]
  res = optimize.minimize(
    fun, theta0, jac=True, method="L-BFGS-B", options=dict(maxiter=maxiter, ftol=1e-12, gtol=1e-8)
  )
  theta = res.x if np.isfinite(res.fun) and res.fun <= f0 else theta0  # never worse than the identity
  weight, bias = _unpack(jnp.asarray(theta, dtype), kind, k)
  return weight, bias


def fit_vector_scaling(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  link: Link = jax.nn.softmax,
  where: jax.typing.ArrayLike | None = None,
  maxiter: int = DEFAULT_MAXITER,
) -> VectorScalingParams:
  """Vector scaling (Guo et al. 2017): per-class scale and offset of the logits, by NLL.

      (w*, b*) = argmin_{w, b in R^K}  (1/N) sum_{i unmasked} -log link(w * z_i + b)_{y_i}

  Unregularised, as in Guo et al. Starts from the identity (w = 1, b = 0) and is never worse than it on the fitting
  data. For the softmax the NLL is convex in (w, b) (b only up to a common shift, which leaves the probabilities
  unchanged). Does NOT keep the argmax in general (per-class scales and offsets reorder classes), positive scales
  or not. Fitted with SciPy's L-BFGS-B on the host (objective and gradient by JAX); prediction is jit-able.
  """
  weight, bias = _fit("fit_vector_scaling", "vector", logits, labels, where, link, 0.0, 0.0, maxiter)
  return VectorScalingParams(scale=weight, bias=bias, link=link)


def fit_matrix_scaling(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  link: Link = jax.nn.softmax,
  where: jax.typing.ArrayLike | None = None,
  reg_offdiag: float = DEFAULT_REG,
  reg_bias: float = DEFAULT_REG,
  maxiter: int = DEFAULT_MAXITER,
) -> MatrixScalingParams:
  """Matrix scaling (Guo et al. 2017) with ODIR regularisation (Kull et al. 2019).

      (W*, b*) = argmin (1/N) sum_{i unmasked} -log link(W z_i + b)_{y_i}
                 + lambda / (K (K - 1)) sum_{k != j} W_kj^2 + mu / K sum_k b_k^2

  with lambda = ``reg_offdiag`` and mu = ``reg_bias`` (off-diagonal and intercept regularisation: the diagonal is
  free; Kull et al. choose lambda and mu by cross-validation, our default is 1e-2 for both; 0 gives Guo et al.'s
  unregularised matrix scaling, which overfits with many classes). Starts from the identity (W = I, b = 0, where
  the penalty is 0) and is never worse than it by this objective. Does not keep the argmax in general. Fitted with
  SciPy's L-BFGS-B on the host; prediction is jit-able.
  """
  weight, bias = _fit("fit_matrix_scaling", "matrix", logits, labels, where, link, reg_offdiag, reg_bias, maxiter)
  return MatrixScalingParams(
    weight=weight, bias=bias, reg_offdiag=float(reg_offdiag), reg_bias=float(reg_bias), kind="matrix", link=link
  )


def fit_dirichlet(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  link: Link = jax.nn.softmax,
  where: jax.typing.ArrayLike | None = None,
  reg_offdiag: float = DEFAULT_REG,
  reg_bias: float = DEFAULT_REG,
  maxiter: int = DEFAULT_MAXITER,
) -> MatrixScalingParams:
  """Dirichlet calibration (Kull et al. 2019): matrix scaling of the model's log-probabilities, ODIR-regularised.

      q(z) = softmax(W log p(z) + b),   p(z) = link(z) (floored at the dtype's tiny before the log)
      (W*, b*) = argmin (1/N) sum_{i unmasked} -log q(z_i)_{y_i}
                 + lambda / (K (K - 1)) sum_{k != j} W_kj^2 + mu / K sum_k b_k^2

  The log-probabilities come through the model's own link (e.g. the MGCE link), the output map is the softmax as
  in the paper. W = I, b = 0 returns p itself (for a link without exact zeros), so the fit starts from the
  uncalibrated model and is never worse than it by this objective. Defaults lambda = mu = 1e-2 (the paper
  cross-validates them). Does not keep the argmax in general. SciPy L-BFGS-B on the host; prediction is jit-able.
  """
  weight, bias = _fit("fit_dirichlet", "dirichlet", logits, labels, where, link, reg_offdiag, reg_bias, maxiter)
  return MatrixScalingParams(
    weight=weight, bias=bias, reg_offdiag=float(reg_offdiag), reg_bias=float(reg_bias), kind="dirichlet", link=link
  )


def apply_vector_scaling(params: VectorScalingParams, logits: jax.typing.ArrayLike) -> jax.Array:
  """Calibrated probabilities link(w * z + b) ([..., K] -> [..., K])."""
  return params.link(_scores(jnp.asarray(logits), "vector", params.scale, params.bias))


def apply_matrix_scaling(params: MatrixScalingParams, logits: jax.typing.ArrayLike) -> jax.Array:
  """Calibrated probabilities: link(W z + b) (matrix) or softmax(W log link(z) + b) (Dirichlet); [..., K]."""
  logits = jnp.asarray(logits)
  x = _features(logits, params.kind, params.link)
  s = _scores(x, params.kind, params.weight, params.bias)
  return jax.nn.softmax(s, axis=-1) if params.kind == "dirichlet" else params.link(s)


def scaling_objective(
  params: VectorScalingParams | MatrixScalingParams,
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """The fitting objective of vector / matrix scaling or Dirichlet calibration at ``params`` (mean NLL + ODIR)."""
  if isinstance(params, VectorScalingParams):
    kind, theta, regs = "vector", jnp.concatenate([params.scale, params.bias]), (0.0, 0.0)
  else:
    kind = params.kind
    theta = jnp.concatenate([params.weight.reshape(-1), params.bias])
    regs = (params.reg_offdiag, params.reg_bias)
  logits, labels, valid = _common.check_inputs("scaling_objective", logits, labels, where, params.link)
  x = jnp.where(valid[:, None], _features(logits, kind, params.link), 0)
  return _objective(theta.astype(logits.dtype), x, labels, valid, *regs, kind=kind, link=params.link)
