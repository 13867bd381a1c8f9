"""Loss throughput: jitted ``value_and_grad`` of the batch mean of every registered loss, against optax CE.

Usage::

    python benchmarks/losses.py                       # all shapes, 30 repeats, MRCpy peer if importable
    python benchmarks/losses.py --shapes 128x10,1024x100 --repeats 50 --json results.json
    python benchmarks/losses.py --no-peer
    python benchmarks/losses.py --losses gence,mgce --betas 1,1.43,2,3.33,8,64 --shapes 1024x100,4096x1000

For every (batch, classes) shape and every loss in `gence_jax.losses.available_losses()` (default hyper-parameters;
MGCE at beta in {1, 1.43, 2, 3.33, 8, 64}, or ``--betas``; ``--losses`` keeps some losses only) it times
``jax.jit(jax.value_and_grad(lambda z, y: mean(loss(z, y))))`` in float32, in the same process as
``optax.softmax_cross_entropy_with_integer_labels`` under the same wrapper, round-robin (each round times CE and every
loss once, in a seeded order shuffled per round, so load and cache state hit all alike), and reports the median wall time
(``block_until_ready``, after warm-up) and the median over rounds of the ratio to CE's time in that round.

When torch and MRCpy are importable, MGCE is also timed against MRCpy's PyTorch implementation
(``mgce_loss(K, beta).get_gradient(logits, labels)``, which returns the gradient of the batch mean and the mean loss:
the same work), on CPU in float32 on the same logits. MRCpy's bisection syncs with the host at every iteration and
its beta = 1 path loops over the classes in Python, so it gets a time budget per cell (``--peer-budget`` seconds,
at least 3 repeats); the number of repeats actually used is printed next to each time.

The output is Markdown, pasteable into a README. The 1-minute load average is printed at the start and the end:
on a small shared machine other processes distort the timings (PyTorch's multi-threaded ops are hit hardest, as a
descheduled OpenMP thread stalls every op; ``--torch-threads 1`` avoids that), so compare runs on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gence_jax.losses import available_losses, data_hparams, get_loss

DEFAULT_SHAPES = "128x10,1024x100,4096x1000"
MGCE_BETAS = (1.0, 1.43, 2.0, 3.33, 8.0, 64.0)


def _parse_shapes(text):
  shapes = []
  for item in text.split(","):
    b, k = item.lower().strip().split("x")
    shapes.append((int(b), int(k)))
  return shapes


def _median_ms(call, repeats, warmup=3, budget_s=None, min_repeats=3):
  """(median ms, calls timed, min ms) of `call()`'s wall time; `call` must block until its result is ready.

  The min is kept in the JSON only, as an indicator of noise from other load on the machine.
  """
  for _ in range(warmup):
    call()
  times = []
  start = time.perf_counter()
  for i in range(repeats):
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
    if budget_s is not None and i + 1 >= min_repeats and time.perf_counter() - start > budget_s:
      break
  return 1e3 * statistics.median(times), len(times), 1e3 * min(times)


def _loadavg():
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def _loss_variants(names=None, betas=MGCE_BETAS):
  """(label, name, hparams) for every registered loss (or those in `names`) at default hparams; MGCE at each beta."""
  variants = []
  for name in available_losses():
    if names is not None and name not in names:
      continue
    if name == "mgce":
      variants += [(f"mgce (beta={b:g})", name, {"beta": b}) for b in betas]
    else:
      variants.append((name, name, {}))
  return variants


def _per_example(name, hparams, batch, num_classes):
  """The loss's per-example function for this shape: losses that take the training split's class counts get
  balanced ones (ceil(batch / K) each), stateful losses their initial state."""
  data = {"class_counts": np.full(num_classes, -(-batch // num_classes), np.int64)} if data_hparams(name) else None
  loss = get_loss(name, data=data, **hparams)
  if not loss.stateful:
    return loss.per_example
  state = loss.init_state()
  return lambda z, y: loss.per_example(z, y, state=state)


def _jax_call(per_example, logits, labels):
  """A blocking call of the jitted value-and-gradient of the batch mean, compiled and checked for finiteness."""
  fn = jax.jit(jax.value_and_grad(lambda z, y: jnp.mean(per_example(z, y))))
  value, grad = fn(logits, labels)
  if not (np.isfinite(float(value)) and bool(jnp.all(jnp.isfinite(grad)))):
    raise FloatingPointError("non-finite loss or gradient")

  def call():
    jax.block_until_ready(fn(logits, labels))

  return call


def _interleaved(calls, repeats, warmup=3):
  """Times every call in `calls` (a dict; the first is the baseline) round-robin: each round calls every one once,
  in an order shuffled per round (seeded), so load from other processes and the state the previous call leaves in
  the caches hit all of them alike. Returns {name: (median ms, median of the per-round ratios to the baseline,
  min ms)}."""
  for _ in range(warmup):
    for call in calls.values():
      call()
  times = {name: [] for name in calls}
  order = list(calls)
  rng = random.Random(0)
  for _ in range(repeats):
    rng.shuffle(order)
    for name in order:
      call = calls[name]
      t0 = time.perf_counter()
      call()
      times[name].append(time.perf_counter() - t0)
  base = times[next(iter(calls))]
  return {
    name: (1e3 * statistics.median(ts), statistics.median([t / b for t, b in zip(ts, base)]), 1e3 * min(ts))
    for name, ts in times.items()
  }


def _peer():
  try:
    import torch  # noqa: F401
    from MRCpy.pytorch.mgce.loss import mgce_loss  # noqa: F401
  except Exception:  # pylint: disable=broad-except
    return None
  import torch
  from MRCpy.pytorch.mgce.loss import mgce_loss

  return torch, mgce_loss


def _torch_timer(torch, mgce_loss, logits_np, labels_np, beta, repeats, budget_s):
  loss = mgce_loss(num_classes=logits_np.shape[-1], beta=beta)
  z = torch.from_numpy(np.ascontiguousarray(logits_np, np.float32))
  y = torch.from_numpy(labels_np.astype(np.int64))

  def call():
    with torch.no_grad():
      loss.get_gradient(z, y)

  return _median_ms(call, repeats, warmup=1, budget_s=budget_s)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"comma-separated BxK (default {DEFAULT_SHAPES})")
  parser.add_argument("--repeats", type=int, default=30, help="timed calls per JAX cell (after 3 warm-up calls)")
  parser.add_argument(
    "--peer-repeats", type=int, default=None, help="max timed calls per MRCpy cell (default: --repeats)"
  )
  parser.add_argument(
    "--peer-budget", type=float, default=4.0, help="seconds per MRCpy cell; stops early (at least 3 calls) once spent"
  )
  parser.add_argument("--no-peer", action="store_true", help="skip the MRCpy/PyTorch comparison")
  parser.add_argument(
    "--torch-threads",
    type=int,
    default=None,
    help="torch.set_num_threads for MRCpy (default: torch's own default). On a small, shared "
    "machine 1 thread avoids OpenMP barrier stalls when another process takes a core",
  )
  parser.add_argument("--losses", default=None, help="comma-separated registered loss names to time (default: all)")
  parser.add_argument(
    "--betas", default=",".join(f"{b:g}" for b in MGCE_BETAS), help="comma-separated MGCE betas (and MRCpy's)"
  )
  parser.add_argument("--json", default=None, help="write all results to this JSON file")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  shapes = _parse_shapes(args.shapes)
  betas = tuple(float(b) for b in args.betas.split(","))
  names = None if args.losses is None else set(n.strip() for n in args.losses.split(","))
  if names is not None and (unknown := names - set(available_losses())):
    parser.error(f"--losses: unknown {sorted(unknown)}; registered: {', '.join(available_losses())}")
  variants = _loss_variants(names, betas)
  peer = None if args.no_peer or not any(name == "mgce" for _, name, _ in variants) else _peer()
  rng = np.random.default_rng(args.seed)
  data = {}
  for b, k in shapes:
    data[(b, k)] = (2.0 * rng.standard_normal((b, k))).astype(np.float32), rng.integers(0, k, size=b)

  env = {
    "python": platform.python_version(),
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()],
    "cpu_count": os.cpu_count(),
    "optax": optax.__version__,
    "machine": platform.machine(),
    "processor": platform.processor() or platform.machine(),
    "loadavg_start": _loadavg(),
  }
  if peer is not None:
    import MRCpy  # pylint: disable=import-outside-toplevel

    if args.torch_threads:
      peer[0].set_num_threads(args.torch_threads)
    env["torch"] = peer[0].__version__
    env["torch_threads"] = peer[0].get_num_threads()
    env["MRCpy"] = getattr(MRCpy, "__version__", "?")

  results = {
    "env": env,
    "command": " ".join(["benchmarks/losses.py"] + (sys.argv[1:] if argv is None else list(argv))),
    "repeats": args.repeats,
    "shapes": [f"{b}x{k}" for b, k in shapes],
    "jax": [],
    "peer": [],
  }
  ce_ms = {}
  table = {}
  t_start = time.perf_counter()
  ratios = {}
  for b, k in shapes:
    logits, labels = jnp.asarray(data[(b, k)][0]), jnp.asarray(data[(b, k)][1], jnp.int32)
    calls = {"optax CE": _jax_call(optax.softmax_cross_entropy_with_integer_labels, logits, labels)}
    for label, name, hparams in variants:
      try:
        calls[label] = _jax_call(_per_example(name, hparams, b, k), logits, labels)
      except Exception as exc:  # pylint: disable=broad-except
        print(f"[{label} {b}x{k}] failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    timed = _interleaved(calls, args.repeats)
    ce_ms[(b, k)] = timed["optax CE"][0]
    for label in ["optax CE"] + [v[0] for v in variants]:
      ms, ratio, min_ms = timed.get(label, (float("nan"), float("nan"), float("nan")))
      table[(label, (b, k))] = ms
      ratios[(label, (b, k))] = ratio
      results["jax"].append(
        {"loss": label, "shape": f"{b}x{k}", "median_ms": ms, "min_ms": min_ms, "repeats": args.repeats, "ratio": ratio}
      )
    print(f"  timed {b}x{k} ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr, flush=True)

  lines = []
  lines.append(
    f"### Loss value-and-gradient time (jax {env['jax']}, {env['backend']}, {env['cpu_count']} CPUs, float32)\n"
  )
  lines.append(
    f"Median of {args.repeats} calls (after 3 warm-up calls) of "
    "`jax.jit(jax.value_and_grad(lambda z, y: mean(loss(z, y))))`, timed round-robin with "
    "`optax.softmax_cross_entropy_with_integer_labels` under the same wrapper (same process, same logits "
    "N(0, 2^2)); `x CE`: median over rounds of the ratio to CE's time in the same round.\n"
  )
  header = "| loss | " + " | ".join(f"{b}x{k} ms | x CE" for b, k in shapes) + " |"
  lines.append(header)
  lines.append("|" + "---|" * (1 + 2 * len(shapes)))
  for label in ["optax CE"] + [v[0] for v in variants]:
    cells = []
    for shape in shapes:
      cells += [f"{table[(label, shape)]:.3f}", f"{ratios[(label, shape)]:.2f}"]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")

  if peer is not None:
    torch, mgce_loss = peer
    peer_repeats = args.peer_repeats or args.repeats
    lines.append("")
    lines.append(
      f"### MGCE: gence_jax vs MRCpy {env['MRCpy']} (PyTorch {env['torch']}, CPU, "
      f"{env['torch_threads']} thread(s), float32)\n"
    )
    lines.append(
      "Both compute the mean loss and its gradient wrt the logits "
      "(MRCpy: `mgce_loss(K, beta).get_gradient(logits, labels)`). "
      f"MRCpy: median over at most {peer_repeats} calls, stopping once {args.peer_budget:g} s are spent "
      "(n = calls used); speed-up = MRCpy ms / gence_jax ms.\n"
    )
    lines.append("| beta | shape | gence_jax ms | MRCpy ms (n) | speed-up |")
    lines.append("|---|---|---|---|---|")
    for beta in betas:
      for b, k in shapes:
        jax_ms = table[(f"mgce (beta={beta:g})", (b, k))]
        try:
          t_ms, n, t_min = _torch_timer(
            torch, mgce_loss, data[(b, k)][0], data[(b, k)][1], beta, peer_repeats, args.peer_budget
          )
        except Exception as exc:  # pylint: disable=broad-except
          print(f"[MRCpy beta={beta:g} {b}x{k}] failed: {type(exc).__name__}: {exc}", file=sys.stderr)
          t_ms, n, t_min = float("nan"), 0, float("nan")
        results["peer"].append(
          {
            "beta": beta,
            "shape": f"{b}x{k}",
            "jax_ms": jax_ms,
            "mrcpy_ms": t_ms,
            "mrcpy_min_ms": t_min,
            "mrcpy_repeats": n,
            "speedup": t_ms / jax_ms,
          }
        )
        few = "" if n >= peer_repeats else " *"
        lines.append(f"| {beta:g} | {b}x{k} | {jax_ms:.3f} | {t_ms:.2f} ({n}){few} | {t_ms / jax_ms:.1f}x |")
    if any(r["mrcpy_repeats"] < peer_repeats for r in results["peer"]):
      lines.append("")
      lines.append(
        f"\\* fewer than {peer_repeats} MRCpy calls: the {args.peer_budget:g} s budget per cell ran out "
        "(MRCpy syncs with the host at every bisection step; beta = 1 loops over classes in Python)."
      )
  elif not args.no_peer:
    lines.append("")
    lines.append("(MRCpy/torch not importable: peer comparison skipped.)")

  results["wall_s"] = time.perf_counter() - t_start
  env["loadavg_end"] = _loadavg()
  print("\n".join(lines))
  print(
    f"\n_Total benchmark wall time {results['wall_s']:.0f} s; {env['processor']}, python {env['python']}, "
    f"optax {env['optax']}; 1-min load average {env['loadavg_start'] and env['loadavg_start'][0]} at start, "
    f"{env['loadavg_end'] and env['loadavg_end'][0]} at end (timings are only comparable on an idle "
    "machine)._"
  )
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)
    print(f"(results written to {args.json})", file=sys.stderr)


if __name__ == "__main__":
  main()
