"""Out-of-distribution detection: scores and threshold-free detection metrics.

Sign convention: every score here is oriented so that a HIGHER score means MORE in-distribution
(``HIGHER_IS_IN_DISTRIBUTION = True``). ``entropy`` therefore returns the NEGATIVE entropy and ``energy`` the
NEGATIVE energy. The detection metrics take ``scores_in`` (in-distribution test set) and ``scores_out`` (OOD set)
oriented that way; by default the in-distribution set is the POSITIVE class (``positive="in"``).

The metrics are computed in float64 NumPy (they sort the scores; they are evaluation-time, not jit-able) and
return Python floats.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

HIGHER_IS_IN_DISTRIBUTION = True


def max_prob(probs: jax.typing.ArrayLike) -> jax.Array:
  """Maximum softmax (or link) probability max_k p_k (Hendrycks & Gimpel 2017). [..., K] -> [...]; higher = in."""
  return jnp.max(jnp.asarray(probs), axis=-1)


def entropy(probs: jax.typing.ArrayLike) -> jax.Array:
  """NEGATIVE Shannon entropy, -H(p) = sum_k p_k log p_k (0 log 0 = 0), in nats. [..., K] -> [...]; higher = in.

  Note the sign: this is an OOD score, so a confident (low-entropy) prediction gets a high score.
  """
  p = jnp.asarray(probs)
  plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1)), 0)
  return jnp.sum(plogp, axis=-1)


def energy(logits: jax.typing.ArrayLike, temperature: float = 1.0) -> jax.Array:
  """NEGATIVE free energy (Liu et al. 2020, "Energy-based Out-of-distribution Detection").

  The energy is E(x; T) = -T logsumexp_k(z_k / T); the score returned is -E(x; T) = T logsumexp_k(z_k / T), so
  higher = more in-distribution. Computed from LOGITS (for non-softmax links the energy is still the logsumexp of
  the logits; it is the softmax model's free energy). [..., K] -> [...].
  """
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0; got {temperature}")
  z = jnp.asarray(logits)
  return temperature * jax.nn.logsumexp(z / temperature, axis=-1)


OOD_SCORES = {"max_prob": max_prob, "entropy": entropy, "energy": energy}


# ----------------------------------------------------------------------------------------------- metrics


def _scores(x, name):
  a = np.asarray(x, dtype=np.float64)
  if a.ndim != 1:
    raise ValueError(f"{name} must be a 1-D array of scores; got shape {a.shape}")
  if a.size == 0:
    raise ValueError(f"{name} must not be empty")
  if not np.isfinite(a).all():
    raise ValueError(f"{name} contains NaN or inf")
  return a


def _pos_neg(scores_in, scores_out, positive):
  s_in = _scores(scores_in, "scores_in")
  s_out = _scores(scores_out, "scores_out")
  if positive == "in":
    return s_in, s_out
  if positive == "out":
    return -s_out, -s_in
  raise ValueError(f"positive must be 'in' or 'out'; got {positive!r}")


def auroc(scores_in: jax.typing.ArrayLike, scores_out: jax.typing.ArrayLike, *, positive: str = "in") -> float:
  """Area under the ROC curve = Mann-Whitney U / (n_pos n_neg), ties counted 1/2 (as sklearn's roc_auc_score).

      AUROC = (1 / (n_pos n_neg)) sum_{i in pos} sum_{j in neg} (1[s_i > s_j] + 0.5 * 1[s_i = s_j])

  The value does not depend on ``positive`` (swapping the classes and negating the score gives the same number);
  the argument exists for symmetry with :func:`aupr`.
  """
  pos, neg = _pos_neg(scores_in, scores_out, positive)
  neg = np.sort(neg)
  below = np.searchsorted(neg, pos, side="left")  # negatives strictly below each positive
  not_above = np.searchsorted(neg, pos, side="right")  # negatives <= each positive
  u = np.sum(below, dtype=np.float64) + 0.5 * np.sum(not_above - below, dtype=np.float64)
  return float(u / (pos.size * neg.size))


def aupr(scores_in: jax.typing.ArrayLike, scores_out: jax.typing.ArrayLike, *, positive: str = "in") -> float:
  """Area under the precision-recall curve as step-wise average precision (sklearn's average_precision_score).

      AP = sum_t (R_t - R_{t-1}) P_t

  over the distinct score thresholds t in decreasing order (tied scores form one threshold), where at threshold t
  the detector predicts "positive" for score >= t, P_t = TP/(TP+FP), R_t = TP/n_pos, R_0 = 0. No interpolation.
  ``positive="in"`` (default, "AUPR-In"): in-distribution examples are positive with the score as is.
  ``positive="out"`` ("AUPR-Out"): OOD examples are positive, ranked by the negated score.
  """
  pos, neg = _pos_neg(scores_in, scores_out, positive)
  s = np.concatenate([pos, neg])
  y = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
  order = np.argsort(-s, kind="stable")
  s, y = s[order], y[order]
  tp = np.cumsum(y)
  fp = np.cumsum(1.0 - y)
  last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # last index of each tie group
  tp, fp = tp[last], fp[last]
  precision = tp / (tp + fp)
  recall = tp / pos.size
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


_FPR_RULES = ("first_reaching", "closest")


def fpr_at_tpr(
  scores_in: jax.typing.ArrayLike,
  scores_out: jax.typing.ArrayLike,
  *,
  tpr: float = 0.95,
  positive: str = "in",
  rule: str = "first_reaching",
) -> float:
  """False-positive rate at the threshold chosen by ``rule`` for the target true-positive rate ``tpr``.

  The candidate thresholds are the distinct positive scores t; at t the detector accepts every score >= t, so
  TPR(t) = mean(pos >= t) and FPR(t) = mean(neg >= t) (at a given TPR this is the highest threshold, the ROC corner
  with the fewest false positives).

  * ``rule="first_reaching"`` (default): the largest t with TPR(t) >= ``tpr``, i.e. t is the ceil(tpr * n_pos)-th
    largest positive score (ties at t all count as detected). This equals ``fpr[first index with tpr >= 0.95]`` of
    sklearn's ``roc_curve(..., drop_intermediate=False)``. It never reports a TPR below the target.
  * ``rule="closest"``: the t whose TPR(t) is closest to ``tpr`` (on an exact tie in distance, the higher TPR), as
    in code that takes ``argmin |tpr - 0.95|`` over the ROC curve (e.g. Hendrycks et al.'s Outlier Exposure code).
    It may report a TPR a little below the target; it differs from the default only when no threshold gives
    exactly ``tpr`` (n_pos not a multiple of 20 for 0.95, or ties among positive scores). The Outlier Exposure code
    also reports, at the chosen TPR, the lowest threshold before the next positive (the most false positives at
    that TPR) rather than the ROC corner used here.

  With ``positive="in"`` (default) in-distribution examples are the positives: the result is the fraction of OOD
  examples accepted as in-distribution. ``positive="out"``: the roles swap (OOD detected with the negated score;
  result = fraction of in-distribution examples flagged as OOD).
  """
  if not 0 < tpr <= 1:
    raise ValueError(f"tpr must be in (0, 1]; got {tpr}")
  if rule not in _FPR_RULES:
    raise ValueError(f"fpr_at_tpr: `rule` must be one of {_FPR_RULES}, got {rule!r}.")
  pos, neg = _pos_neg(scores_in, scores_out, positive)
  pos_desc = np.sort(pos)[::-1]
  if rule == "first_reaching":
    k = max(1, math.ceil(round(tpr * pos.size, 9)))
    t = pos_desc[k - 1]
  else:
    # Distinct thresholds t (descending) and their detected counts #(pos >= t); distance |count - tpr n| in counts.
    thresholds = np.unique(pos)[::-1]
    detected = pos.size - np.searchsorted(np.sort(pos), thresholds, side="left")
    dist = np.round(np.abs(detected - tpr * pos.size), 9)
    best = np.flatnonzero(dist == dist.min())
    t = thresholds[best[-1]]  # ties in distance: the lowest threshold, i.e. the higher TPR
  return float(np.mean(neg >= t))


def fpr_at_95_tpr(
  scores_in: jax.typing.ArrayLike,
  scores_out: jax.typing.ArrayLike,
  *,
  positive: str = "in",
  rule: str = "first_reaching",
) -> float:
  """:func:`fpr_at_tpr` with tpr = 0.95 (FPR95; Hendrycks & Gimpel 2017, Liu et al. 2020); see there for ``rule``."""
  return fpr_at_tpr(scores_in, scores_out, tpr=0.95, positive=positive, rule=rule)
