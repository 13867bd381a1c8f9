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
  """Returns (best log_t [P], best value [P]).

  Every evaluation of ``f`` happens in one loop whose step picks the next point (grid point, golden-section point or
  final midpoint), so ``f`` is traced, and compiled, once.
  """
  p = num_pieces
  grid = jnp.linspace(lo, hi, num_grid, dtype=dtype)
  refine = num_golden > 0 and num_grid >= 2
  h = (hi - lo) / (num_grid - 1) if num_grid >= 2 else 0.0
  total = num_grid + (num_golden + 3 if refine else 0)  # grid, c and d, golden iterations, midpoint
  zeros = jnp.zeros((p,), dtype)
  inf = jnp.full((p,), jnp.inf, dtype)

  def body(i, state):
    best_x, best_f, a, b, c, d, fc, fd = state
    k = i - num_grid  # step of the refinement (< 0 during the grid)
    # Refinement interval around the best grid point, set when k == 0.
    a0 = jnp.clip(best_x - h, lo, hi)
    b0 = jnp.clip(best_x + h, lo, hi)
    # Golden-section step: keep [a, d] if f(c) < f(d) (reuse c as the new d), else [c, b] (reuse d as the new c).
    left = fc < fd
    a2 = jnp.where(left, a, c)
    b2 = jnp.where(left, d, b)
    new_c = b2 - _INV_PHI * (b2 - a2)
    new_d = a2 + _INV_PHI * (b2 - a2)
    x_grid = jnp.full((p,), grid[jnp.clip(i, 0, num_grid - 1)], dtype)
    x_golden = jnp.where(k < 2 + num_golden, jnp.where(left, new_c, new_d), 0.5 * (a + b))  # last step: midpoint
    x = jnp.where(
      k < 0,
      x_grid,
      jnp.where(k == 0, b0 - _INV_PHI * (b0 - a0), jnp.where(k == 1, a + _INV_PHI * (b - a), x_golden)),
    )
    fx = f(x)
    fx = jnp.where(jnp.isnan(fx), jnp.inf, fx)
    golden = (k >= 2) & (k < 2 + num_golden)
    a = jnp.where(k == 0, a0, jnp.where(golden, a2, a))
    b = jnp.where(k == 0, b0, jnp.where(golden, b2, b))
    c_next = jnp.where(k == 0, x, jnp.where(golden, jnp.where(left, new_c, d), c))
    d_next = jnp.where(k == 1, x, jnp.where(golden, jnp.where(left, c, new_d), d))
    fc_next = jnp.where(k == 0, fx, jnp.where(golden, jnp.where(left, fx, fd), fc))
    fd_next = jnp.where(k == 1, fx, jnp.where(golden, jnp.where(left, fc, fx), fd))
    best_x, best_f = _keep_best(best_x, best_f, x, fx)  # strict: the first of equal values is kept
    return best_x, best_f, a, b, c_next, d_next, fc_next, fd_next

  init = (jnp.full((p,), grid[0], dtype), inf, zeros, zeros, zeros, zeros, inf, inf)
  best_x, best_f, *_ = jax.lax.fori_loop(0, total, body, init)
  return best_x, best_f
