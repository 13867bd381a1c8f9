"""Mixed-sample augmentation on device: mixup (Zhang, Cisse, Dauphin & Lopez-Paz, ICLR 2018) and CutMix (Yun, Han,
Oh, Chun, Choe & Yoo, ICCV 2019), as pure functions of a PRNG key, so a train step that folds the step number into
its key mixes the same way after a resume.

Both pair every example i of a batch with example ``perm[i]`` of the same batch (a random permutation) and draw one
mixing weight per batch, lambda ~ Beta(alpha, alpha):

* mixup: x'_i = lambda x_i + (1 - lambda) x_perm[i];
* CutMix: x'_i = x_i with a box of x_perm[i] pasted in; the box has area fraction 1 - lambda (centre uniform over
  the image, sides sqrt(1 - lambda) H and W, clipped at the border), and lambda is then recomputed from the clipped
  box as 1 - area / (H W), as in the authors' code.

The loss of a mixed batch is the mixup criterion of both papers' code: lambda l(z_i, y_i) + (1 - lambda)
l(z_i, y_perm[i]) for integer-label losses (for losses linear in a soft target, such as cross-entropy and MGCE, this
equals the loss of the mixed target lambda e_y + (1 - lambda) e_perm). See `mixed_loss`.

>>> import jax, jax.numpy as jnp
>>> x = jnp.arange(8.0).reshape(4, 2)
>>> mixed, perm, lam = mixup(jax.random.PRNGKey(0), x, alpha=1.0)
>>> bool(jnp.allclose(mixed, lam * x + (1 - lam) * x[perm]))
True
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

MIXES = ("none", "mixup", "cutmix")


def _check_alpha(fn: str, alpha) -> float:
  if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
    raise ValueError(f"{fn}: `alpha` must be a number > 0, got {alpha!r}.")
  return float(alpha)


def mixup(key: jax.Array, x: jax.Array, *, alpha: float = 1.0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(mixed x, perm, lambda)``: x' = lambda x + (1 - lambda) x[perm] with lambda ~ Beta(alpha, alpha)."""
  alpha = _check_alpha("mixup", alpha)
  k_lam, k_perm = jax.random.split(key)
  lam = jax.random.beta(k_lam, alpha, alpha)
  perm = jax.random.permutation(k_perm, x.shape[0])
  mixed = lam.astype(x.dtype) * x + (1 - lam).astype(x.dtype) * x[perm]
  return mixed, perm, lam


def cutmix_box(key: jax.Array, height: int, width: int, lam: jax.Array) -> tuple[jax.Array, ...]:
  """``(top, bottom, left, right)`` of the CutMix box for mixing weight `lam` (before clipping the sides are
  sqrt(1 - lam) H and sqrt(1 - lam) W; the centre is uniform over the image)."""
  k_y, k_x = jax.random.split(key)
  cut = jnp.sqrt(1.0 - lam)
  cy = jax.random.randint(k_y, (), 0, height)
  cx = jax.random.randint(k_x, (), 0, width)
  half_h = (cut * height / 2).astype(jnp.int32)
  half_w = (cut * width / 2).astype(jnp.int32)
  top, bottom = jnp.clip(cy - half_h, 0, height), jnp.clip(cy + half_h, 0, height)
  left, right = jnp.clip(cx - half_w, 0, width), jnp.clip(cx + half_w, 0, width)
  return top, bottom, left, right


def cutmix(key: jax.Array, x: jax.Array, *, alpha: float = 1.0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(mixed x, perm, lambda)`` for images ``x`` [B, H, W, C]: a box of x[perm] pasted into x; lambda is the
  fraction of each image left unchanged."""
  alpha = _check_alpha("cutmix", alpha)
  if x.ndim != 4:
    raise ValueError(f"cutmix: `x` must be images [batch, height, width, channels], got shape {x.shape}.")
  k_lam, k_perm, k_box = jax.random.split(key, 3)
  lam = jax.random.beta(k_lam, alpha, alpha)
  perm = jax.random.permutation(k_perm, x.shape[0])
  height, width = x.shape[1], x.shape[2]
  top, bottom, left, right = cutmix_box(k_box, height, width, lam)
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  mixed = jnp.where(inside[None, :, :, None], x[perm], x)
  lam = 1.0 - ((bottom - top) * (right - left)) / (height * width)
  return mixed, perm, lam


def mixed_loss(per_example: Callable[[jax.Array], jax.Array], labels: jax.Array, perm: jax.Array, lam) -> jax.Array:
  """lambda l(y) + (1 - lambda) l(y[perm]) per example, ``per_example(labels) -> [B]`` the loss of the (mixed)
  logits against integer labels."""
  return lam * per_example(labels) + (1.0 - lam) * per_example(labels[perm])


def with_probability(fn: Callable, prob: float) -> Callable:
  """``fn`` applied to a batch with probability ``prob`` (one Bernoulli draw per batch from the key), the batch
  unchanged otherwise (then lambda = 1, so the mixed loss is the plain loss). ``prob = 1`` returns ``fn`` itself
  (the same random stream as before this option existed)."""
  if prob >= 1.0:
    return fn

  def maybe(key, x):
    k_apply, k_mix = jax.random.split(key)
    mixed, perm, lam = fn(k_mix, x)
    apply = jax.random.uniform(k_apply) < prob
    return jnp.where(apply, mixed, x), perm, jnp.where(apply, lam, jnp.ones_like(lam))

  return maybe


def get_mix(name: str, alpha: float, cutmix_prob: float = 1.0) -> Callable | None:
  """The mixing function for config ``train.mix`` (:data:`MIXES`), or None for "none". CutMix is applied to a batch
  with probability ``cutmix_prob`` (the authors' CIFAR recipe: 0.5, ``--cutmix_prob`` in their code; the program's
  default, config ``train.cutmix_prob``); mixup to every batch, as in Zhang et al.'s code."""
  if name not in MIXES:
    raise ValueError(f"unknown mix {name!r}; expected one of {list(MIXES)}")
  if name == "none":
    return None
  _check_alpha(name, alpha)
  if name == "mixup":
    return lambda key, x: mixup(key, x, alpha=alpha)
  if not 0.0 < cutmix_prob <= 1.0:
    raise ValueError(f"cutmix_prob must be in (0, 1], got {cutmix_prob!r}")
  return with_probability(lambda key, x: cutmix(key, x, alpha=alpha), cutmix_prob)
