"""Is the host input pipeline the bottleneck?

Measures examples/s of the NumPy pipeline of ``gence_jax.data`` (shuffle + gather, CIFAR crop/flip augmentation,
normalisation) on synthetic CIFAR-size uint8 data, next to the time a jitted training step of a small Flax CNN
(3 conv layers, SGD with momentum, cross-entropy) takes to consume one batch of the same size on the default JAX
device. The ratio pipeline-time / step-time per batch says how much of one host core's time per step the pipeline
needs: < 1 means one host thread keeps up with the device; > 1 means input-bound (prefetch in a thread or use more
processes).

Run: ``.venv/bin/python benchmarks/data.py`` (about 30-60 s on a 2-core CPU); ``--help`` for options.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def _time_pipeline(make_iter, num_batches: int, repeats: int) -> float:
  """Median seconds per batch over ``repeats`` runs of ``num_batches`` batches."""
  times = []
  for r in range(repeats):
    it = make_iter(r)
    next(it)  # exclude generator start-up and the epoch permutation from the first timing
    t0 = time.perf_counter()
    for _ in range(num_batches):
      next(it)
    times.append((time.perf_counter() - t0) / num_batches)
  return statistics.median(times)


def _cnn_step(shape, num_classes: int, normalizer=None):
  """Jitted SGD step of a 3-conv Flax CNN; with ``normalizer`` the step takes uint8 images and normalises them
  on the device (``Normalizer.apply_jax``)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax

  class TinyCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Conv(32, (3, 3))(x))
      x = nn.relu(nn.Conv(64, (3, 3), strides=(2, 2))(x))
      x = nn.relu(nn.Conv(128, (3, 3), strides=(2, 2))(x))
      x = jnp.mean(x, axis=(1, 2))
      return nn.Dense(num_classes)(x)

  model = TinyCNN()
  params = model.init(jax.random.key(0), jnp.zeros((1, *shape), jnp.float32))
  tx = optax.sgd(0.05, momentum=0.9)
  opt_state = tx.init(params)

  def loss_fn(p, batch):
    images = batch["x"] if normalizer is None else normalizer.apply_jax(batch["x"])
    logits = model.apply(p, images)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    m = batch["mask"].astype(jnp.float32)
    return jnp.sum(ce * m) / jnp.maximum(m.sum(), 1.0)

  @jax.jit
  def step(p, s, batch):
    loss, g = jax.value_and_grad(loss_fn)(p, batch)
    updates, s = tx.update(g, s, p)
    return optax.apply_updates(p, updates), s, loss

  nparams = sum(v.size for v in jax.tree_util.tree_leaves(params))
  return step, params, opt_state, nparams


def _time_steps(step, params, opt_state, batches, steps: int, repeats: int) -> float:
  import jax

  params, opt_state, loss = step(params, opt_state, batches[0])  # compile
  jax.block_until_ready(loss)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for i in range(steps):
      params, opt_state, loss = step(params, opt_state, batches[i % len(batches)])
    jax.block_until_ready((params, loss))
    times.append((time.perf_counter() - t0) / steps)
  return statistics.median(times)


def _time_end_to_end(step, params, opt_state, make_iter, sharding, steps: int, repeats: int) -> float:
  import jax

  from gence_jax import data as D

  times = []
  for r in range(repeats):
    src = D.prefetch_to_device(make_iter(r), size=2, sharding=sharding)
    params, opt_state, loss = step(params, opt_state, next(src))
    jax.block_until_ready(loss)
    t0 = time.perf_counter()
    for _ in range(steps):
      params, opt_state, loss = step(params, opt_state, next(src))
    jax.block_until_ready((params, loss))
    times.append((time.perf_counter() - t0) / steps)
    src.close()
  return statistics.median(times)


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--batch-size", type=int, default=128)
  ap.add_argument("--num-examples", type=int, default=10240, help="synthetic training set size")
  ap.add_argument("--batches", type=int, default=40, help="batches per pipeline timing run")
  ap.add_argument(
    "--steps", type=int, default=None, help="training steps per timing run (default: 4 on CPU, 50 on an accelerator)"
  )
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument(
    "--workers", type=int, default=min(4, os.cpu_count() or 1), help="threads for the threaded pipeline rows"
  )
  args = ap.parse_args(argv)

  import jax

  from gence_jax import data as D

  dev = jax.devices()[0]
  steps = args.steps or (4 if dev.platform == "cpu" else 50)
  step_repeats = args.repeats if dev.platform != "cpu" else min(args.repeats, 3)
  bs, n, w = args.batch_size, args.num_examples, args.workers
  shape = (32, 32, 3)
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
  y = rng.integers(0, 10, n)
  norm = D.compute_normalizer(x)
  common = dict(batch_size=bs, num_epochs=None, process_index=0, process_count=1)

  host_norm = dict(augment="crop_flip", normalizer=norm)  # float32 batches, normalised on the host
  dev_norm = dict(augment="crop_flip", normalizer=None)  # uint8 batches, normalised in the step
  variants = [
    ("shuffle + gather (uint8)", dict(augment=None, normalizer=None), 0),
    ("+ crop/flip (uint8)", dev_norm, 0),
    ("+ crop/flip + normalise (f32) [A]", host_norm, 0),
    (f"crop/flip (uint8), {w} threads [B]", dev_norm, w),
    (f"crop/flip + normalise, {w} threads", host_norm, w),
  ]
  pipe = {}
  for name, kw, nw in variants:
    pipe[name] = _time_pipeline(
      lambda r, kw=kw, nw=nw: D.train_batches(x, y, seed=r, num_workers=nw, **common, **kw), args.batches, args.repeats
    )
  eval_t = _time_pipeline(
    lambda r: _cycle(lambda: D.eval_batches(x, y, batch_size=bs, normalizer=norm)), args.batches, args.repeats
  )

  sharding = D.batch_sharding()
  step_f32, p0, s0, nparams = _cnn_step(shape, 10)
  step_u8, p1, s1, _ = _cnn_step(shape, 10, normalizer=norm)
  it_f32 = D.train_batches(x, y, seed=0, **common, **host_norm)
  it_u8 = D.train_batches(x, y, seed=0, **common, **dev_norm)
  t_f32 = _time_steps(step_f32, p0, s0, [D.to_device(next(it_f32), sharding) for _ in range(4)], steps, step_repeats)
  t_u8 = _time_steps(step_u8, p1, s1, [D.to_device(next(it_u8), sharding) for _ in range(4)], steps, step_repeats)
  e2e_a = _time_end_to_end(
    step_f32,
    p0,
    s0,
    lambda r: D.train_batches(x, y, seed=100 + r, **common, **host_norm),
    sharding,
    steps,
    step_repeats,
  )
  e2e_b = _time_end_to_end(
    step_u8,
    p1,
    s1,
    lambda r: D.train_batches(x, y, seed=100 + r, num_workers=w, **common, **dev_norm),
    sharding,
    steps,
    step_repeats,
  )

  print(
    f"gence_jax.data pipeline benchmark: batch {bs}, uint8 {shape}, {n} examples; median of "
    f"{args.repeats} runs x {args.batches} batches (pipeline), {step_repeats} runs x {steps} steps (device)"
  )
  print(
    f"device: {dev.platform} {getattr(dev, 'device_kind', '')} x{jax.device_count()}, host CPUs "
    f"{os.cpu_count()}; TinyCNN 3 conv, {nparams:,} params, SGD momentum, cross-entropy"
  )
  print()
  print(f"{'stage':<40}{'ms/batch':>10}{'examples/s':>14}")
  print("-" * 64)
  for name, t in pipe.items():
    print(f"{'train: ' + name:<40}{t * 1e3:>10.3f}{bs / t:>14,.0f}")
  rows = [
    ("eval pipeline: normalise, padded", eval_t),
    ("train step (f32 input) [A]", t_f32),
    ("train step (uint8, normalise in step) [B]", t_u8),
    ("end to end [A]: 1 thread, host norm", e2e_a),
    (f"end to end [B]: {w} threads, device norm", e2e_b),
  ]
  for name, t in rows:
    print(f"{name:<40}{t * 1e3:>10.3f}{bs / t:>14,.0f}")
  print("-" * 64)
  ratio_a = pipe["+ crop/flip + normalise (f32) [A]"] / t_f32
  ratio_b = pipe[f"crop/flip (uint8), {w} threads [B]"] / t_u8
  for label, ratio in (
    ("[A] default (host normalise, 1 thread)", ratio_a),
    (f"[B] uint8 + device normalise, {w} threads", ratio_b),
  ):
    verdict = "input-bound" if ratio > 1 else "device-bound: the pipeline keeps up"
    print(f"ratio pipeline/step per batch, {label}: {ratio:.3f} -> {verdict}")
  return {
    "pipeline_s": pipe,
    "eval_s": eval_t,
    "step_f32_s": t_f32,
    "step_u8_s": t_u8,
    "end_to_end_a_s": e2e_a,
    "end_to_end_b_s": e2e_b,
    "ratio_a": ratio_a,
    "ratio_b": ratio_b,
  }


def _cycle(make):
  while True:
    yield from make()


if __name__ == "__main__":
  main()
