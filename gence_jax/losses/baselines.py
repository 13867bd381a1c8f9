"""Per-example baseline losses: the comparisons GenCE and MGCE are measured against.

Every function has the signature ``loss(logits, labels, *, where=None, axis_name=None, **hparams)`` and returns one
value per example (shape ``labels.shape``), with no reduction. ``logits`` is ``[..., K]``, ``labels`` integer
``[...]``. ``where=False`` rows give 0; out-of-range labels give NaN (use `gence_jax.losses.checked` to raise).
``axis_name`` is accepted for a uniform signature: none of these losses couples examples, so it is unused.
Notation: ``p = softmax(z)``, ``p_y`` the probability of the label, ``e_y`` its one-hot vector.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gence_jax.losses._common import check_hparam, check_logits_labels, finalize, take_label


def log_prob_of_label(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """log softmax(logits)[labels] = (z_y - m) - log sum_k exp(z_k - m), m = max_k z_k held constant (the value does
  not depend on it, so neither does the gradient, e_y - softmax(z)).

  z_y - m is exact when z_y is near the max (0 when the label is the top class), so the result keeps float32
  precision for large logits; z_y is read from the logits themselves rather than from the shifted array, which lets
  XLA fuse the shift into the one pass of exponentials (no K-wide log-softmax array is written)."""
  m = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  return (take_label(logits, labels) - m) - jnp.log(jnp.sum(jnp.exp(logits - m[..., None]), axis=-1))


def _prepare(logits, labels, where, fn):
  """Checked inputs as (logits, labels, where, lse, log_py) with lse = logsumexp(z) and log p_y."""
  logits, labels, where = check_logits_labels(logits, labels, where, fn=fn)
  return logits, labels, where, jax.nn.logsumexp(logits, axis=-1), log_prob_of_label(logits, labels)


def cross_entropy(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  label_smoothing: float = 0.0,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Cross-entropy with optional label smoothing.

  .. math:: \ell(z, y) = -\sum_k t_k \log p_k, \qquad t = (1 - \varepsilon) e_y + \varepsilon / K

  Label smoothing: Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer Vision".
  ``label_smoothing`` must be in [0, 1).
  """
  del axis_name
  check_hparam("cross_entropy", "label_smoothing", label_smoothing, low=0.0, high=1.0, high_inclusive=False)
  logits, labels, where, lse, log_py = _prepare(logits, labels, where, "cross_entropy")
  # -sum_k t_k log p_k = (1 - eps) (-log p_y) - eps * mean_k log p_k,  mean_k log p_k = mean_k z_k - lse
  loss = -(1.0 - label_smoothing) * log_py
  if not (isinstance(label_smoothing, (int, float)) and label_smoothing == 0):  # may be traced (vmap over it)
    loss = loss - label_smoothing * (jnp.mean(logits, axis=-1) - lse)
  return finalize(loss, labels, logits.shape[-1], where)


def generalized_ce(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  q: float = 0.7,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Generalized cross-entropy, the :math:`L_q` loss of Zhang & Sabuncu 2018.

  .. math:: \ell(z, y) = \frac{1 - p_y^{\,q}}{q}, \qquad q \in (0, 1]

  :math:`q \to 0` recovers cross-entropy, :math:`q = 1` is :math:`1 - p_y` (MAE up to a factor 2).
  Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels",
  NeurIPS 2018. (Not to be confused with GenCE, `gence`.) In the MGCE parameterisation, q = 1/beta.
  """
  del axis_name
  check_hparam("generalized_ce", "q", q, low=0.0, high=1.0, low_inclusive=False)
  logits, labels, where, _, log_py = _prepare(logits, labels, where, "generalized_ce")
  loss = -jnp.expm1(q * log_py) / q  # (1 - p_y^q) / q, accurate for small q * log p_y
  return finalize(loss, labels, logits.shape[-1], where)


lq = generalized_ce


def mae(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Mean absolute error between the one-hot label and the softmax output.

  .. math:: \ell(z, y) = \lVert e_y - p \rVert_1 = 2 (1 - p_y)

  Ghosh, Kumar & Sastry, "Robust Loss Functions under Label Noise for Deep Neural Networks", AAAI 2017.
  """
  del axis_name
  logits, labels, where, _, log_py = _prepare(logits, labels, where, "mae")
  loss = -2.0 * jnp.expm1(log_py)
  return finalize(loss, labels, logits.shape[-1], where)


def modulator(base, gamma):
  """base^gamma for base >= 0, with its limit at base = 0 (1 if gamma == 0 else 0) and finite gradients there.

  The safe base keeps pow's derivative gamma * base^(gamma - 1) from producing inf * 0 = NaN for 0 < gamma < 1.
  """
  positive = base > 0
  safe = jnp.where(positive, base, 1.0)
  return jnp.where(positive, safe**gamma, jnp.where(gamma == 0, 1.0, 0.0))


def _focal_term(log_py, gamma):
  # -(1 - p_y)^gamma log p_y; written with -expm1 so that 1 - p_y keeps precision as p_y -> 1.
  return -modulator(-jnp.expm1(log_py), gamma) * log_py


def focal(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  gamma: float = 2.0,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Focal loss.

  .. math:: \ell(z, y) = -(1 - p_y)^\gamma \log p_y, \qquad \gamma \ge 0

  Lin, Goyal, Girshick, He & Dollar, "Focal Loss for Dense Object Detection", ICCV 2017; its calibration
  properties: Mukhoti et al., NeurIPS 2020. ``gamma = 0`` is cross-entropy.
  """
  del axis_name
  check_hparam("focal", "gamma", gamma, low=0.0)
  logits, labels, where, _, log_py = _prepare(logits, labels, where, "focal")
  loss = _focal_term(log_py, gamma)
  return finalize(loss, labels, logits.shape[-1], where)


def flsd53(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Sample-dependent focal loss FLSD-53.

  .. math:: \ell(z, y) = -(1 - p_y)^{\gamma(p_y)} \log p_y, \qquad
            \gamma(p_y) = 5 \text{ if } p_y < 0.2 \text{ else } 3

  The choice of gamma is a piecewise-constant function of p_y and is not differentiated.
  Mukhoti, Kulharia, Sanyal, Golodetz, Torr & Dokania, "Calibrating Deep Neural Networks using Focal Loss",
  NeurIPS 2020.
  """
  del axis_name
  logits, labels, where, _, log_py = _prepare(logits, labels, where, "flsd53")
  gamma = jnp.where(jax.lax.stop_gradient(log_py) < jnp.log(0.2), 5.0, 3.0)
  loss = _focal_term(log_py, gamma)
  return finalize(loss, labels, logits.shape[-1], where)


def _logit_below_label(logits, labels):
  """(z_j, has_j) per row: z_j the largest logit STRICTLY below the label's logit z_y, has_j whether there is one.

  j is the first such class on ties (argmax). Logits order the classes exactly as their probabilities do, so
  "strictly below in logit" is "strictly below in probability" without the rounding of a float softmax; a class
  tied with the label (z_k == z_y) is not below it. The argmax is not differentiated: z_j is differentiated as the
  logit of the fixed class j (the paper's p_j as a function of the logits, whose class changes only where two
  logits cross).
  """
  z_y = take_label(logits, labels)
  masked = jnp.where(logits < z_y[..., None], logits, -jnp.inf)
  j = jnp.argmax(masked, axis=-1)
  z_j = take_label(logits, j)
  return z_j, z_j < z_y  # no class below: argmax returns a class whose logit is >= z_y


def dual_focal(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  gamma: float = 2.0,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Dual focal loss.

  .. math:: \ell(z, y) = -(1 - p_y + p_j)^\gamma \log p_y, \qquad p_j = \max\{p_k : p_k < p_y\}

  with :math:`p_j = 0` when no probability is strictly below :math:`p_y` (the label's is the smallest). Tao, Dong &
  Xu, "Dual Focal Loss for Calibration", ICML 2023: :math:`p_j` is the probability of the class ranked just below the
  ground-truth class, as in the authors' code (``torch.lt`` mask, then the largest masked probability). On a
  correctly classified example it is the largest wrong-class probability; on a misclassified one it is NOT (the
  classes ranked above the label are skipped), so the factor :math:`1 - p_y + p_j` is always below 1, where the
  largest wrong-class probability would take it towards 2. ``gamma >= 0``; ``gamma = 0`` is cross-entropy.

  Conventions: classes are ordered by their logits (the same order as their probabilities, without float rounding
  ties); a class tied with the label is not "strictly below" it; among classes tied for the largest probability
  below :math:`p_y` the first is :math:`j`. The gradient treats :math:`p_j = \mathrm{softmax}(z)_j` as a function of
  the logits (:math:`\partial p_j / \partial z = p_j (e_j - p)`); the choice of :math:`j` is piecewise constant.
  """
  del axis_name
  check_hparam("dual_focal", "gamma", gamma, low=0.0)
  logits, labels, where, lse, log_py = _prepare(logits, labels, where, "dual_focal")
  z_j, has_j = _logit_below_label(logits, labels)
  p_j = jnp.where(has_j, jnp.exp(z_j - lse), 0.0)
  loss = -modulator(-jnp.expm1(log_py) + p_j, gamma) * log_py
  return finalize(loss, labels, logits.shape[-1], where)


def brier(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Brier score of the softmax output (Brier 1950, "Verification of forecasts expressed in terms of probability").

  .. math:: \ell(z, y) = \sum_k (p_k - [k = y])^2
  """
  del axis_name
  logits, labels, where, lse, log_py = _prepare(logits, labels, where, "brier")
  p = jax.nn.softmax(logits, axis=-1)
  loss = jnp.sum(jnp.square(p), axis=-1) - 2.0 * jnp.exp(log_py) + 1.0  # sum_k p_k^2 - 2 p_y + 1
  return finalize(loss, labels, logits.shape[-1], where)


RCE_LOG_ZERO_PAPER = -4.0
"""``nce_rce``'s ``log_zero`` as set in the papers (Wang et al. 2019; Ma et al. 2020): A = -4."""
RCE_LOG_ZERO_CODE = math.log(1e-4)
"""``nce_rce``'s ``log_zero`` that the authors' code realises by clamping the one-hot label at 1e-4: log(1e-4)."""


def nce_rce(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  alpha: float = 1.0,
  beta: float = 1.0,
  log_zero: float = RCE_LOG_ZERO_PAPER,
  where: jax.typing.ArrayLike | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  r"""Active-passive loss NCE+RCE: normalized cross-entropy plus reverse cross-entropy.

  .. math::
     \mathrm{NCE} = \frac{-\log p_y}{-\sum_k \log p_k}, \qquad
     \mathrm{RCE} = -\sum_k p_k \log e_{y,k} = -A (1 - p_y), \qquad
     \ell = \alpha\,\mathrm{NCE} + \beta\,\mathrm{RCE}

  with :math:`\log 0` replaced by :math:`A` = ``log_zero`` (< 0). Ma, Huang, Wang, Romano, Erfani & Bailey,
  "Normalized Loss Functions for Deep Learning with Noisy Labels", ICML 2020 (RCE from Wang et al., ICCV 2019,
  "Symmetric Cross Entropy for Robust Learning with Noisy Labels"). Defaults alpha = beta = 1 are the CIFAR-10
  setting (the authors' CIFAR-100 configuration uses alpha = 10, beta = 0.1).

  Which ``log_zero`` reproduces what (the RCE term scales with :math:`-A`, so the two differ by a factor 2.3):

  * ``log_zero = -4`` (default, ``RCE_LOG_ZERO_PAPER``): the papers' stated constant A = -4.
  * ``log_zero = log(1e-4) = -9.2103...`` (``RCE_LOG_ZERO_CODE``): the authors' released code, which clamps the
    one-hot label to [1e-4, 1] before the log, so that log 0 becomes log(1e-4). That code also clamps each
    probability to at least 1e-7 inside RCE; we do not, which changes RCE by at most :math:`-A (K - 1) 10^{-7}`
    (below 1e-5 for K = 10) and only on rows with probabilities under 1e-7.
  """
  del axis_name
  check_hparam("nce_rce", "alpha", alpha, low=0.0)
  check_hparam("nce_rce", "beta", beta, low=0.0)
  check_hparam("nce_rce", "log_zero", log_zero, high=0.0, high_inclusive=False)
  logits, labels, where, lse, log_py = _prepare(logits, labels, where, "nce_rce")
  nce = log_py / (jnp.sum(logits, axis=-1) - logits.shape[-1] * lse)  # sum_k log p_k = sum_k z_k - K lse
  rce = -log_zero * (-jnp.expm1(log_py))
  loss = alpha * nce + beta * rce
  return finalize(loss, labels, logits.shape[-1], where)
