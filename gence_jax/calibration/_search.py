"""Gradient-free 1-D minimisation over log-temperature, vectorised over independent pieces.

``f(log_t) -> values`` maps a vector of P candidate log-temperatures (one per piece) to the P objective values
(one pass over the data). We evaluate a uniform grid of ``num_grid`` points on [lo, hi], take each piece's best
grid point x_g, and refine by golden-section search on [x_g - h, x_g + h] (h the grid spacing, clipped to [lo, hi])
for ``num_golden`` iterations. The returned point is the best of everything evaluated (grid points, the golden
section's interior points and the final midpoint), so it is never worse than the best grid point. For a unimodal
objective (softmax NLL is convex in 1/T, hence unimodal in log T) this converges to the global minimum on [lo, hi].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_INV_PHI = 0.6180339887498949  # (sqrt(5) - 1) / 2


def _keep_best(best_x, best_f, x, fx):
  better = fx < best_f
  return jnp.where(better, x, best_x), jnp.where(better, fx, best_f)


def minimize_log_t(f, num_pieces: int, lo: float, hi: float, num_grid: int, num_golden: int, dtype):
  """Returns (best log_t [P], best value [P])."""
  grid = jnp.linspace(lo, hi, num_grid, dtype=dtype)
  vals = jax.lax.map(lambda g: f(jnp.full((num_pieces,), g, dtype)), grid)  # [G, P]
  vals = jnp.where(jnp.isnan(vals), jnp.inf, vals)
  ib = jnp.argmin(vals, axis=0)
  best_x = grid[ib]
  best_f = jnp.take_along_axis(vals, ib[None, :], axis=0)[0]
  if num_golden <= 0 or num_grid < 2:
    return best_x, best_f
  h = (hi - lo) / (num_grid - 1)
  a = jnp.clip(best_x - h, lo, hi)
  b = jnp.clip(best_x + h, lo, hi)
  c = b - _INV_PHI * (b - a)
  d = a + _INV_PHI * (b - a)
  fc, fd = f(c), f(d)
  best_x, best_f = _keep_best(best_x, best_f, c, fc)
  best_x, best_f = _keep_best(best_x, best_f, d, fd)

  def body(_, state):
    a, b, c, d, fc, fd, best_x, best_f = state
    left = fc < fd  # minimum in [a, d]: new interval [a, d], reuse c as the new d
    a2 = jnp.where(left, a, c)
    b2 = jnp.where(left, d, b)
    new_c = b2 - _INV_PHI * (b2 - a2)
    new_d = a2 + _INV_PHI * (b2 - a2)
    x_new = jnp.where(left, new_c, new_d)
    f_new = f(x_new)
    c2 = jnp.where(left, new_c, d)
    d2 = jnp.where(left, c, new_d)
    fc2 = jnp.where(left, f_new, fd)
    fd2 = jnp.where(left, fc, f_new)
    best_x, best_f = _keep_best(best_x, best_f, x_new, f_new)
    return a2, b2, c2, d2, fc2, fd2, best_x, best_f

  a, b, c, d, fc, fd, best_x, best_f = jax.lax.fori_loop(0, num_golden, body, (a, b, c, d, fc, fd, best_x, best_f))
  mid = 0.5 * (a + b)
  best_x, best_f = _keep_best(best_x, best_f, mid, f(mid))
  return best_x, best_f
