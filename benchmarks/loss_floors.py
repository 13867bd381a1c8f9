"""Where the loss benchmark's ratios come from: the cost of one MGCE root-finder pass, the passes each beta takes,
and GenCE against its two-pass minimum.

Usage::

    python benchmarks/loss_floors.py --repeats 30 --json benchmarks/results/loss_floors_cpu_2core.json

On the logits of `benchmarks/losses.py` (same seed and scale, float32), round-robin in one process against
``optax.softmax_cross_entropy_with_integer_labels`` (each row: median over rounds of the ratio to CE's time in the same
round; every call is a jitted value-and-gradient of the batch mean, or the single pass named):

* ``mgce``: the loss itself, and the same loss with its root finder stopped after one pass (``max_iter=1``), with
  the number of passes the solver makes on these logits (the slowest row's). The difference, divided by the passes
  after the first, is what one more pass costs inside the solver (one power per logit and its row sums, over
  cache-sized row blocks); what remains at ``max_iter=1`` is the rest: the shift, the first pass, the backward pass
  (one more power per logit) and the loss. The last column is how many passes a 3x-CE budget would leave.
* ``gence``: the loss, and a two-pass minimum written here: the same forward and analytic backward without a mask
  and without the exact fallback for classes whose softmax sums underflow (the branch that `gence` keeps for
  extreme logits). It is what the computation costs on this backend when only its memory passes are left: the
  exponentials written once, then read for the row sums, the class sums, the backward's row products and the
  gradient, two reads more than cross-entropy needs.
"""

from __future__ import annotations

import argparse
import json
import platform

import jax
import jax.numpy as jnp
import numpy as np
import optax
from losses import DEFAULT_SHAPES, _interleaved, _jax_call, _loadavg, _parse_shapes  # the loss benchmark's harness
from tables import floors_table  # the README's tables of these results

from gence_jax.losses import gence, mgce
from gence_jax.losses import minimax_gce as mg


@jax.custom_vjp
def _gence_two_pass(z, y):
  return _two_pass_fwd(z, y)[0]


def _two_pass_fwd(z, y):
  """l_i = lse_i - z_iy + log S_y - log B, S_c = sum_j softmax(z_j)_c; keeps e = exp(z - max z) for the backward."""
  m = jnp.max(z, axis=-1)
  e = jnp.exp(z - m[:, None])
  norm = jnp.sum(e, axis=-1)
  inv = 1.0 / norm
  sums = jnp.dot(inv, e, precision=jax.lax.Precision.HIGHEST)
  s_y = sums[y]
  loss = m + jnp.log(norm) - jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0] + jnp.log(s_y) - jnp.log(z.shape[0])
  return loss, (e, inv, s_y, y)


def _two_pass_bwd(res, g):
  """dl/dz_jk = p_jk (Q_k - r_j) - g_j [k = y_j], Q_c = sum_{i: y_i = c} g_i / S_c, r_j = -g_j + sum_k p_jk Q_k."""
  e, inv, s_y, y = res
  q = jax.ops.segment_sum(g / s_y, y, e.shape[1])
  r = -g + inv * jnp.dot(e, q, precision=jax.lax.Precision.HIGHEST)
  onehot = y[:, None] == jnp.arange(e.shape[1])
  return e * (inv[:, None] * (q - r[:, None])) - jnp.where(onehot, g[:, None], 0.0), None


_gence_two_pass.defvjp(_two_pass_fwd, _two_pass_bwd)


def _passes(z, beta):
  """Evaluations `_solve_newton` makes on these logits at the default tolerance (its while loop's count)."""
  x = z - jnp.max(z, axis=-1, keepdims=True)
  tol = mg._default_tol(z.dtype)
  solve = jax.jit(lambda x: mg._solve_newton(x, beta, tol, mg.DEFAULT_MAX_ITER, jnp.zeros(x.shape[0], x.dtype))[-1])
  return int(solve(x))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--shapes", default="1024x100,4096x1000", help="batch x classes, comma-separated")
  parser.add_argument("--betas", default="1.43,3.33", help="MGCE betas whose root finder takes Newton/Halley passes")
  parser.add_argument("--repeats", type=int, default=30, help="timed rounds (default 30)")
  parser.add_argument("--seed", type=int, default=0, help="the loss benchmark's seed (its logits are drawn in order)")
  parser.add_argument("--json", default=None, help="write the results to this JSON file")
  args = parser.parse_args(argv)
  shapes = _parse_shapes(args.shapes)
  betas = [float(b) for b in args.betas.split(",")]
  for beta in betas:
    if beta <= mg._SECANT_MAX_BETA and mg._cheap_pow(beta):
      parser.error(f"--betas: {beta:g} takes the secant path (a few multiplications per power), not Newton passes")
  rng = np.random.default_rng(args.seed)
  drawn = {}  # the stream `benchmarks/losses.py` draws for its default shapes, in its order; other shapes after
  for b, k in _parse_shapes(DEFAULT_SHAPES) + shapes:
    if (b, k) not in drawn:
      drawn[(b, k)] = (2.0 * rng.standard_normal((b, k))).astype(np.float32), rng.integers(0, k, size=b)
  load_start, rows, mgce_rows = _loadavg(), [], []
  print(f"1-min load average at start: {load_start}")
  for b, k in shapes:
    z, y = jnp.asarray(drawn[(b, k)][0]), jnp.asarray(drawn[(b, k)][1], jnp.int32)
    calls = {"optax CE": _jax_call(optax.softmax_cross_entropy_with_integer_labels, z, y)}
    calls["gence"] = _jax_call(gence, z, y)
    calls["gence two-pass minimum"] = _jax_call(_gence_two_pass, z, y)
    passes = {}
    for beta in betas:
      calls[f"mgce (beta={beta:g})"] = _jax_call(lambda z, y, beta=beta: mgce(z, y, beta=beta), z, y)
      calls[f"mgce (beta={beta:g}, max_iter=1)"] = _jax_call(
        lambda z, y, beta=beta: mgce(z, y, beta=beta, max_iter=1), z, y
      )
      passes[beta] = _passes(z, beta)
    timed = _interleaved(calls, args.repeats)
    for name, (ms, ratio, _) in timed.items():
      rows.append({"shape": f"{b}x{k}", "name": name, "median_ms": ms, "ratio": ratio})
    for beta in betas:
      full, first = timed[f"mgce (beta={beta:g})"][1], timed[f"mgce (beta={beta:g}, max_iter=1)"][1]
      per_pass = (full - first) / max(passes[beta] - 1, 1)
      mgce_rows.append(
        {
          "shape": f"{b}x{k}",
          "beta": beta,
          "passes": passes[beta],
          "loss_ratio": full,
          "per_pass_ratio": per_pass,
          "rest_ratio": first - per_pass,
          "passes_within_3x": (3.0 - (first - per_pass)) / per_pass,
        }
      )
    print(f"  timed {b}x{k}", flush=True)
  env = {
    "python": platform.python_version(),
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "loadavg_start": load_start,
    "loadavg_end": _loadavg(),
  }
  record = {
    "env": env,
    "command": "benchmarks/loss_floors.py " + " ".join(argv or []),
    "timings": rows,
    "mgce_passes": mgce_rows,
  }
  print("\n".join(f"| {r['shape']} | {r['name']} | {r['median_ms']:.3f} ms | {r['ratio']:.2f} x CE |" for r in rows))
  print(floors_table(record))
  print(f"1-min load average at end: {env['loadavg_end']}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(record, f, indent=2)


if __name__ == "__main__":
  import sys

  main(sys.argv[1:])
