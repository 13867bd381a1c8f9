"""Training-step cost of each loss: ResNet-18 (CIFAR stem) on 32x32x3 batches, cross-entropy vs GenCE vs MGCE.

Usage::

    python benchmarks/train_step.py                                    # width 64, batch 128, float32, 10 classes
    python benchmarks/train_step.py --dtype bfloat16 --torch           # plus a PyTorch ResNet-18 step, same device
    python benchmarks/train_step.py --width 16 --batch-size 64         # quick run on a small CPU (minutes)
    python benchmarks/train_step.py --num-classes 10 100 --json out.json

For each number of classes, one ResNet-18 (``get_model("resnet18", K, dtype=..., width=...)``) is initialised once
and every loss (``cross_entropy``, ``gence``, ``mgce`` with beta = 2) trains its own copy of that state with the step
of `gence_jax.train.step.make_train_step` (optax SGD, momentum 0.9), jitted with the state donated, on the same
fixed random batch. The timed call is one full step (forward, loss, backward, finiteness check, SGD update, metrics),
``block_until_ready`` on its outputs. The losses are timed round-robin (one step of each per round, after the warm-up
steps, which include compilation), so slow drifts of the machine's load hit every loss alike. Reported: the median
step time and its inter-quartile range (IQR), images/s, the ratio of the medians to cross-entropy's and the overhead
``100 * (median / median_CE - 1)`` in % (target: under 3%), plus the median of the paired per-round differences to
cross-entropy (less sensitive to drifts).

The loss alone is timed as ``jax.jit(jax.value_and_grad(lambda z, y: mean(loss(z, y))))`` on float32 logits of the
step's shape ``[batch, K]`` (the model returns float32 logits in every dtype), to show which fraction of the step it
is; "loss extra" is (loss alone - CE alone) / CE step, i.e. the overhead the loss would add if nothing else changed.

``--torch`` also times a PyTorch ResNet-18 training step (eager, SGD momentum 0.9, cross-entropy, same batch shape and
number of classes, NCHW by default) on the same kind of device: ``torchvision.models.resnet18`` with the CIFAR stem when
torchvision imports and ``--width 64``, else the plain-torch model of ``benchmarks/torch_resnet.py`` (same
architecture, any width). ``--dtype bfloat16`` runs it under ``torch.autocast`` (parameters stay float32, as in the
Flax model).

The output is Markdown (device, command, table), pasteable into a README.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gence_jax.losses import get_loss
from gence_jax.models import get_model
from gence_jax.train.step import create_state, make_train_step

LOSSES = (("cross_entropy", {}), ("gence", {}), ("mgce", {"beta": 2.0}))
TARGET_OVERHEAD_PCT = 3.0


def _label(name, hparams):
  return name + "".join(f" {k}={v:g}" for k, v in hparams.items())


def _stats(times_s):
  """Median, IQR (q75 - q25) and count of a list of seconds, in milliseconds."""
  t = 1e3 * np.asarray(times_s)
  q25, q50, q75 = np.percentile(t, [25, 50, 75])
  return {"median_ms": float(q50), "iqr_ms": float(q75 - q25), "min_ms": float(t.min()), "n": int(t.size)}


def _time_calls(call, repeats, warmup):
  for _ in range(warmup):
    call()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
  return times


def _loadavg():
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


# --------------------------------------------------------------------------------------------------------- JAX side


def _make_batch(batch_size, num_classes, seed=0):
  rng = np.random.default_rng(seed)
  return {
    "x": jnp.asarray(rng.standard_normal((batch_size, 32, 32, 3), dtype=np.float32)),
    "label": jnp.asarray(rng.integers(0, num_classes, batch_size, dtype=np.int32)),
    "mask": jnp.ones((batch_size,), jnp.bool_),
  }


def time_jax_steps(num_classes, args, dtype):
  """{loss label: {"step": stats, "times_s": [...], "compile_s": ...}} for every loss, timed round-robin."""
  model = get_model("resnet18", num_classes, dtype=dtype, width=args.width)
  tx = optax.sgd(args.lr, momentum=0.9)
  batch = _make_batch(args.batch_size, num_classes)
  t0 = time.perf_counter()
  init = jax.jit(lambda k, x: create_state(model, tx, k, x))
  state0 = jax.block_until_ready(init(jax.random.key(0, impl="rbg"), batch["x"][:2]))
  print(f"  [K={num_classes}] init {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
  step_key = jax.random.key(1, impl="rbg")

  runs = []
  for name, hparams in LOSSES:
    step = jax.jit(make_train_step(model, get_loss(name, **hparams), tx), donate_argnums=0)
    run = {"label": _label(name, hparams), "step": step, "state": jax.tree_util.tree_map(jnp.copy, state0)}
    t0 = time.perf_counter()
    run["state"], metrics = jax.block_until_ready(step(run["state"], batch, step_key))
    run["compile_s"] = time.perf_counter() - t0
    if bool(metrics["nonfinite"]):
      raise FloatingPointError(f"{run['label']}: the first step was non-finite")
    print(
      f"  [K={num_classes}] {run['label']}: first call (compile) {run['compile_s']:.1f} s", file=sys.stderr, flush=True
    )
    runs.append(run)

  def one_step(run):
    run["state"], metrics = run["step"](run["state"], batch, step_key)
    jax.block_until_ready((run["state"], metrics))

  for _ in range(args.warmup):
    for run in runs:
      one_step(run)
  times = {run["label"]: [] for run in runs}
  t_start = time.perf_counter()
  for _ in range(args.repeats):
    for run in runs:
      t0 = time.perf_counter()
      one_step(run)
      times[run["label"]].append(time.perf_counter() - t0)
  print(
    f"  [K={num_classes}] timed {args.repeats} rounds in {time.perf_counter() - t_start:.1f} s",
    file=sys.stderr,
    flush=True,
  )
  return {
    run["label"]: {"step": _stats(times[run["label"]]), "times_s": times[run["label"]], "compile_s": run["compile_s"]}
    for run in runs
  }


def time_jax_losses(num_classes, args):
  """{loss label: stats} of the jitted value_and_grad of the batch-mean loss on float32 logits [batch, K]."""
  rng = np.random.default_rng(1)
  logits = jnp.asarray(3.0 * rng.standard_normal((args.batch_size, num_classes), dtype=np.float32))
  labels = jnp.asarray(rng.integers(0, num_classes, args.batch_size, dtype=np.int32))
  out = {}
  for name, hparams in LOSSES:
    loss = get_loss(name, **hparams)
    fn = jax.jit(jax.value_and_grad(lambda z, y, loss=loss: jnp.mean(loss.per_example(z, y))))

    def call(fn=fn):
      jax.block_until_ready(fn(logits, labels))

    out[_label(name, hparams)] = _stats(_time_calls(call, max(args.repeats, 100), warmup=5))
  return out


# ------------------------------------------------------------------------------------------------------- torch side


def time_torch_step(num_classes, args):
  """Stats of an eager PyTorch ResNet-18 SGD/CE training step, plus a description of what was timed."""
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import torch_resnet  # pylint: disable=import-outside-toplevel

  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  torch.manual_seed(0)
  model, source = None, "plain torch (benchmarks/torch_resnet.py)"
  if args.width == 64:
    try:
      model, source = torch_resnet.torchvision_resnet18_cifar(num_classes), "torchvision resnet18, CIFAR stem"
    except ImportError:
      pass
  if model is None:
    model = torch_resnet.ResNet18(num_classes, width=args.width)
  memory_format = torch.channels_last if args.torch_channels_last else torch.contiguous_format
  model = model.to(device, memory_format=memory_format).train()
  if device.type == "cuda":
    torch.backends.cudnn.benchmark = True
  opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
  gen = torch.Generator().manual_seed(0)
  x = torch.randn(args.batch_size, 3, 32, 32, generator=gen).to(device, memory_format=memory_format)
  y = torch.randint(0, num_classes, (args.batch_size,), generator=gen).to(device)
  use_bf16 = args.dtype == "bfloat16"

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
      logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    opt.step()
    return loss

  if args.torch_compile:
    step = torch.compile(step)

  def call():
    step()
    if device.type == "cuda":
      torch.cuda.synchronize()

  t0 = time.perf_counter()
  call()
  first_s = time.perf_counter() - t0
  stats = _stats(_time_calls(call, args.repeats, warmup=args.warmup))
  name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
  desc = (
    f"{source}, {'torch.compile' if args.torch_compile else 'eager'}, "
    f"{'channels_last' if args.torch_channels_last else 'NCHW'}"
    f"{', autocast bf16' if use_bf16 else ', float32'}"
  )
  return {
    "step": stats,
    "first_call_s": first_s,
    "device": name,
    "what": desc,
    "torch": torch.__version__,
    "num_params": sum(p.numel() for p in model.parameters()),
  }


# ------------------------------------------------------------------------------------------------------------ report


def _paired_overhead_pct(times, ce_times, ce_median_ms):
  diff = 1e3 * (np.asarray(times) - np.asarray(ce_times))
  return float(100.0 * np.median(diff) / ce_median_ms)


def _table(results, args):
  b = args.batch_size
  lines = [
    "| classes | step | median ms | IQR ms | images/s | ratio to CE | overhead vs CE | paired overhead "
    "| loss alone ms | loss % of step | loss extra % of CE step |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for k, res in results["by_classes"].items():
    ce = res["jax"]["cross_entropy"]
    ce_ms = ce["step"]["median_ms"]
    ce_loss_ms = res["loss_alone"]["cross_entropy"]["median_ms"]
    for label, r in res["jax"].items():
      s = r["step"]
      loss_ms = res["loss_alone"][label]["median_ms"]
      ratio = s["median_ms"] / ce_ms
      if label == "cross_entropy":
        over, paired = "-", "-"
      else:
        over = f"{100 * (ratio - 1):+.2f}%"
        paired = f"{r['paired_overhead_pct']:+.2f}%"
      lines.append(
        f"| {k} | JAX {label} | {s['median_ms']:.2f} | {s['iqr_ms']:.2f} | {1e3 * b / s['median_ms']:,.0f} "
        f"| {ratio:.3f} | {over} | {paired} | {loss_ms:.3f} | {100 * loss_ms / s['median_ms']:.2f}% "
        f"| {100 * (loss_ms - ce_loss_ms) / ce_ms:+.2f}% |"
      )
    if "torch" in res:
      t = res["torch"]
      if "error" in t:
        lines.append(f"| {k} | PyTorch CE | failed: {t['error']} | | | | | | | | |")
      else:
        s = t["step"]
        lines.append(
          f"| {k} | PyTorch CE | {s['median_ms']:.2f} | {s['iqr_ms']:.2f} "
          f"| {1e3 * b / s['median_ms']:,.0f} | {s['median_ms'] / ce_ms:.3f} | | | | | |"
        )
  return lines


def main(argv=None):
  parser = argparse.ArgumentParser(
    description=__doc__.split("\n\n", 1)[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--width", type=int, default=64, help="ResNet width (64: the standard ResNet-18; 16 for CPU)")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
  parser.add_argument("--repeats", type=int, default=50, help="timed steps per loss (loss alone: at least 100)")
  parser.add_argument("--warmup", type=int, default=5, help="untimed steps per loss after the compiling call")
  parser.add_argument("--num-classes", type=int, nargs="+", default=[10], help="e.g. --num-classes 10 100")
  parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (does not change the cost)")
  parser.add_argument("--json", default=None, help="write all results (with the raw step times) to this file")
  parser.add_argument("--torch", action="store_true", help="also time a PyTorch ResNet-18 CE step")
  parser.add_argument("--torch-channels-last", action="store_true", help="run the PyTorch model channels_last")
  parser.add_argument("--torch-compile", action="store_true", help="wrap the PyTorch step in torch.compile")
  args = parser.parse_args(argv)
  if args.batch_size < 1 or args.repeats < 1 or args.warmup < 0 or args.width < 1:
    parser.error("--batch-size, --repeats and --width must be positive and --warmup non-negative")

  # Donation is a no-op on some backends; the warning would repeat for every loss.
  warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
  dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
  command = "python benchmarks/train_step.py" + ("" if not sys.argv[1:] else " " + shlex.join(sys.argv[1:]))
  dev = jax.devices()[0]
  env = {
    "device_kind": dev.device_kind,
    "platform": dev.platform,
    "jax": jax.__version__,
    "python": platform.python_version(),
    "processor": platform.processor() or platform.machine(),
    "cpu_count": os.cpu_count(),
    "loadavg_start": _loadavg(),
  }
  results = {"command": command, "args": vars(args), "env": env, "by_classes": {}}
  t_all = time.perf_counter()
  for k in args.num_classes:
    res = {"jax": time_jax_steps(k, args, dtype)}
    ce_times = res["jax"]["cross_entropy"]["times_s"]
    ce_ms = res["jax"]["cross_entropy"]["step"]["median_ms"]
    for r in res["jax"].values():
      r["paired_overhead_pct"] = _paired_overhead_pct(r["times_s"], ce_times, ce_ms)
    res["loss_alone"] = time_jax_losses(k, args)
    if args.torch:
      try:
        res["torch"] = time_torch_step(k, args)
      except Exception as exc:  # pylint: disable=broad-except
        res["torch"] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"  [K={k}] PyTorch step failed: {res['torch']['error']}", file=sys.stderr)
    results["by_classes"][k] = res
  env["loadavg_end"] = _loadavg()
  results["wall_s"] = time.perf_counter() - t_all

  title = (
    f"ResNet-18 (CIFAR stem, width {args.width}) training step, batch {args.batch_size}x32x32x3, "
    f"{args.dtype}, SGD momentum 0.9"
  )
  out = [
    f"### {title}",
    "",
    f"Device: **{env['device_kind']}** ({env['platform']}, {env['cpu_count']} host CPUs), jax {env['jax']}, "
    f"python {env['python']}",
    "",
    f"Command: `{command}`",
    "",
    f"Median of {args.repeats} steps per loss after {args.warmup} warm-up steps (round-robin over the losses), "
    "state donated; IQR = q75 - q25. Overhead = median / median CE - 1; paired = median over rounds of "
    "(step - CE step) / median CE. Loss alone: jitted value_and_grad of the batch-mean loss on float32 logits "
    f"[{args.batch_size}, K]; loss extra = (loss alone - CE alone) / CE step.",
    "",
  ]
  out += _table(results, args)
  torch_rows = [(k, r["torch"]) for k, r in results["by_classes"].items() if "torch" in r and "error" not in r]
  if torch_rows:
    t = torch_rows[0][1]
    out += [
      "",
      f"PyTorch {t['torch']} on {t['device']}: {t['what']}, {t['num_params']:,} parameters "
      f"(K={torch_rows[0][0]}); ratio column = PyTorch step / JAX CE step.",
    ]
  verdicts = []
  for k, res in results["by_classes"].items():
    ce_ms = res["jax"]["cross_entropy"]["step"]["median_ms"]
    for label, r in res["jax"].items():
      if label != "cross_entropy":
        pct = 100 * (r["step"]["median_ms"] / ce_ms - 1)
        verdicts.append(
          f"{label} (K={k}) {pct:+.2f}% {'<' if pct < TARGET_OVERHEAD_PCT else '>='} {TARGET_OVERHEAD_PCT:g}%"
        )
  out += ["", "Overhead target under 3% of the CE step: " + "; ".join(verdicts) + "."]
  out += [
    "",
    f"_Benchmark wall time {results['wall_s']:.0f} s; load average {env['loadavg_start']} -> "
    f"{env['loadavg_end']}; compile (first call) "
    + ", ".join(
      f"{label} {r['compile_s']:.1f} s" for label, r in next(iter(results["by_classes"].values()))["jax"].items()
    )
    + "._",
  ]
  print("\n".join(out))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2, default=str)
    print(f"(results written to {args.json})", file=sys.stderr)


if __name__ == "__main__":
  main()
