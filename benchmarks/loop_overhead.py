"""Per-step overhead of the training program (`gence_jax.train.train_and_evaluate`) against a bare jitted step loop.

Usage::

    python benchmarks/loop_overhead.py                                   # 3 setups, 1 warm-up + 3 rounds, whole run
    python benchmarks/loop_overhead.py --rounds 5 --json benchmarks/results/loop_overhead_cpu_2core.json
    python benchmarks/loop_overhead.py --no-whole-run                    # skip the 150-epoch comparison

Setups (all cross-entropy, float32, ``train.mode=jit``):

* ``digits_mlp``: the default config (``load_config(None)``): MLP 256 hidden, Adam 1e-3, batch 128, digits.
* ``table3_mlp``: ``experiments/configs/mgce_table3_tabular_mlp.py`` (MLP 1024 hidden, SGD lr 0.001 momentum 0.9,
  gradient clip 5, batch 128) on a synthetic tabular ``.npz`` (``x``: 20,000 x 16 float32, ``y``: 4 classes from a
  noisy linear rule), written to a temporary directory; the loader holds out the test split.
* ``digits_cnn``: the default config with ``model.name=cnn`` (default kwargs), ``dataset.as_images=True``.
* ``digits_mlp_nnx``, ``digits_cnn_nnx``: the same two digits setups with the NNX versions of the models
  (``model.name=nnx:mlp``, ``nnx:cnn``; `gence_jax.models.nnx_models`, run through the same train step by
  `gence_jax.models.adapter`). With both versions of a model in ``--setups``, the table gains a row per model: the
  program's ms/step (chunks) with NNX against Linen, timed in the same process and rounds (target <= 1.1).

1. Program ms/step: each setup is run twice, ``epochs_short`` and ``epochs_long`` epochs (``train.progress=False``,
   evaluation and checkpoints only at the end), and ms/step = (train_seconds_long - train_seconds_short) /
   (steps_long - steps_short) from the returned results, which cancels compilation and start-up. Once with the
   config's ``train.steps_per_dispatch`` (0: chunks up to the next log / checkpoint / epoch boundary, one ``lax.scan``
   dispatch each) and once with ``train.steps_per_dispatch=1``. ``calibration.bootstrap_resamples=0`` in these runs:
   it only changes the final evaluation, which ``train_seconds`` does not count.
2. Bare ms/step: the same model, optimizer, loss and L1 term (``make_train_step`` from the same config, jitted with
   the state donated), the same number of steps as the difference above, batches of ``Dataset.train_batches``
   placed on the device beforehand (a Python list), a plain Python loop with ``block_until_ready`` at the end, after
   a few warm-up steps.
3. Round robin: a warm-up round (compiles every executor and chunk length; kept in the JSON, not in the medians),
   then ``--rounds`` rounds of (program short, program long, for both dispatch settings, then bare) per setup.
   Reported: median ms/step over rounds and the median over rounds of the per-round ratio program / bare.
   Target: ratio <= 1.25 for each setup.
4. Whole run, ``table3_mlp``: the config as given (150 epochs, evaluation every 5 epochs, bootstrap intervals),
   ``results["seconds"]``, against a minimal loop: the normalised training split on the device, one jitted
   ``lax.scan`` per epoch over a device-side permutation, every 5 epochs validation and test logits with accuracy and
   NLL (best state by validation accuracy kept on the host), timed end to end from data loading, including its own
   compilation. Run once, after the rounds: the program first on a fresh executor (its first run of this config in
   the process, as the first run of a ``compare`` grid), then the minimal loop, then the program again (the executor
   cached, as the later runs of a grid). The program's time is split by wrapping its phases (``setup``,
   ``evaluate_epoch``, ``finalize``, ``write_run_outputs``) with timers, and the distinct chunk lengths it dispatched
   (each one a separate compilation of the scan) are counted. Target: ratio <= 1.5.

The machine's 1-minute load average is recorded at the start and the end: other processes distort the timings.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


from gence_jax.train import load_config, loop, train_and_evaluate
from gence_jax.train.config import apply_overrides, resolve
from gence_jax.train.optim import make_optimizer
from gence_jax.train.step import create_state, make_predict, make_train_step

TABLE3_CONFIG = os.path.join(os.path.dirname(__file__), "..", "experiments", "configs", "mgce_table3_tabular_mlp.py")
STEP_RATIO_TARGET = 1.25
NNX_RATIO_TARGET = 1.1
NNX_PAIRS = {"digits_mlp": "digits_mlp_nnx", "digits_cnn": "digits_cnn_nnx"}
WHOLE_RUN_RATIO_TARGET = 1.5
QUIET = ["train.progress=False", "train.eval_every_epochs=1000000", "train.checkpoint_every_steps=1000000000"]


def _loadavg():
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def write_tabular_npz(path: str, *, n: int = 20_000, d: int = 16, k: int = 4, seed: int = 0) -> None:
  """Synthetic tabular data: standard normal features, labels argmax(x W + Gumbel noise) over `k` classes."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, d)).astype(np.float32)
  w = rng.standard_normal((d, k))
  y = np.argmax(x @ w + rng.gumbel(size=(n, k)), axis=-1).astype(np.int64)
  np.savez(path, x=x, y=y)


def setup_configs(npz_path: str) -> dict[str, tuple[ml_collections.ConfigDict, str]]:
  """{name: (config, description)} of the setups (resolved: each model's default kwargs filled in)."""
  digits = load_config(None)
  table3 = load_config(TABLE3_CONFIG)
  apply_overrides(table3, [f"dataset.name={npz_path}"])
  cnn = apply_overrides(load_config(None), ["model.name=cnn", "dataset.as_images=True"])
  digits_nnx = apply_overrides(load_config(None), ["model.name=nnx:mlp"])
  cnn_nnx = apply_overrides(load_config(None), ["model.name=nnx:cnn", "dataset.as_images=True"])
  setups = {
    "digits_mlp": (digits, "default config: digits, MLP 256, Adam 1e-3, batch 128"),
    "table3_mlp": (table3, "MGCE Table 3 config: synthetic 20000x16, 4 classes, MLP 1024, SGD 1e-3 m0.9, clip 5"),
    "digits_cnn": (cnn, "default config, model.name=cnn, digits as 8x8x1 images"),
    "digits_mlp_nnx": (digits_nnx, "digits_mlp with the NNX MLP (model.name=nnx:mlp)"),
    "digits_cnn_nnx": (cnn_nnx, "digits_cnn with the NNX CNN (model.name=nnx:cnn)"),
  }
  for config, _ in setups.values():
    resolve(config)
  return setups


def _with(config, overrides):
  """A copy of `config` with ``key=value`` overrides."""
  return apply_overrides(config.copy_and_resolve_references(), overrides)


def program_run(config, overrides) -> dict:
  """One run of the program in a fresh work directory (removed afterwards); its ``results``."""
  workdir = tempfile.mkdtemp(prefix="loop_overhead_")
  try:
    return train_and_evaluate(_with(config, overrides), workdir)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


class Bare:
  """The train step of `config` jitted alone (state donated), fed `num_steps` batches already on the device."""

  def __init__(self, config, num_steps: int, warmup: int = 5):
    data = loop.load_data(config)
    loss = loop.build_loss(config, data)
    init_key, self.key = jax.random.split(jax.random.PRNGKey(config.seed))
    model = loop.build_model(config, data.num_classes, data.input_shape, key=init_key)
    spe = data.steps_per_epoch(config.train.batch_size)
    tx = make_optimizer(config.optimizer, spe * config.train.epochs, spe)
    self.state = create_state(model, tx, init_key, jnp.zeros((1, *data.input_shape), jnp.float32), loss.init_state())
    self.step = jax.jit(make_train_step(model, loss, tx, l1=loop.l1_lambda(config, loss)), donate_argnums=0)
    it = data.train_batches(config.train.batch_size, seed=config.seed, augment=config.dataset.augment)
    host = [next(it) for _ in range(num_steps + warmup)]
    self.batches = [jax.device_put({k: b[k] for k in ("x", "label", "mask")}) for b in host]
    jax.block_until_ready(self.batches)
    self.warmup, self.num_steps = warmup, num_steps
    self.spe = spe

  def time_ms(self) -> float:
    """ms/step of `num_steps` steps (a plain Python loop, one dispatch per step), after the warm-up steps."""
    state = self.state
    for b in self.batches[: self.warmup]:
      state, metrics = self.step(state, b, self.key)
    jax.block_until_ready((state, metrics))
    t0 = time.perf_counter()
    for b in self.batches[self.warmup :]:
      state, metrics = self.step(state, b, self.key)
    jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - t0
    self.state = state  # the donated input is gone: keep the live one
    return 1e3 * seconds / self.num_steps


def _round(name, config, epochs, bare) -> dict:
  """One round of a setup: program short/long with chunks and with one step per dispatch, then bare."""
  out = {}
  for label, extra in (("chunks", []), ("one_per_dispatch", ["train.steps_per_dispatch=1"])):
    no_boot = ["calibration.bootstrap_resamples=0"]
    short, long = (program_run(config, QUIET + no_boot + extra + [f"train.epochs={e}"]) for e in epochs)
    out[label] = {
      "train_seconds": [short["train_seconds"], long["train_seconds"]],
      "steps": [short["steps"], long["steps"]],
      "ms_per_step": 1e3 * (long["train_seconds"] - short["train_seconds"]) / (long["steps"] - short["steps"]),
    }
  out["bare_ms_per_step"] = bare.time_ms()
  print(
    f"  {name}: chunks {out['chunks']['ms_per_step']:.3f}, 1/dispatch {out['one_per_dispatch']['ms_per_step']:.3f}, "
    f"bare {out['bare_ms_per_step']:.3f} ms/step (load {_loadavg()})",
    file=sys.stderr,
    flush=True,
  )
  return out


# ------------------------------------------------------------------------------------------------- whole run
class PhaseTimer:
  """Wraps the program's phase functions (module attributes of `gence_jax.train.loop`) with wall-clock timers and
  records the chunk lengths it dispatches; `restore` puts the originals back."""

  PHASES = ("setup", "evaluate_epoch", "finalize", "write_run_outputs")

  def __init__(self):
    self.seconds = {p: 0.0 for p in self.PHASES}
    self.chunks: list[int] = []
    self._orig = {p: getattr(loop, p) for p in (*self.PHASES, "chunk_length")}
    for p in self.PHASES:
      setattr(loop, p, self._timed(p, self._orig[p]))
    orig_chunk = self._orig["chunk_length"]

    def chunk_length(step, run):
      n = orig_chunk(step, run)
      self.chunks.append(n)
      return n

    loop.chunk_length = chunk_length

  def _timed(self, name, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
      t0 = time.perf_counter()
      try:
        return fn(*args, **kwargs)
      finally:
        self.seconds[name] += time.perf_counter() - t0

    return wrapper

  def restore(self):
    for p, fn in self._orig.items():
      setattr(loop, p, fn)


def program_whole_run(config) -> dict:
  timer = PhaseTimer()
  try:
    t0 = time.perf_counter()
    r = program_run(config, ["train.progress=False"])
    wall = time.perf_counter() - t0
  finally:
    timer.restore()
  return {
    "seconds": r["seconds"],
    "wall_seconds": wall,
    "train_seconds": r["train_seconds"],
    "phase_seconds": timer.seconds,
    "steps": r["steps"],
    "chunks": len(timer.chunks),
    "distinct_chunk_lengths": len(set(timer.chunks)),
    "test_accuracy": r["test"]["raw"]["accuracy"],
    "test_nll": r["test"]["raw"]["nll"],
  }


def minimal_whole_run(config) -> dict:
  """The same training and periodic evaluation as a minimal loop: data on the device, one jitted scan per epoch."""
  t0 = time.perf_counter()
  data = loop.load_data(config)
  loss = loop.build_loss(config, data)
  init_key, step_key = jax.random.split(jax.random.PRNGKey(config.seed))
  model = loop.build_model(config, data.num_classes, data.input_shape, key=init_key)
  bs, epochs, every = config.train.batch_size, config.train.epochs, config.train.eval_every_epochs
  spe = data.steps_per_epoch(bs)
  tx = make_optimizer(config.optimizer, spe * epochs, spe)
  state = create_state(model, tx, init_key, jnp.zeros((1, *data.input_shape), jnp.float32), loss.init_state())
  step = make_train_step(model, loss, tx, l1=loop.l1_lambda(config, loss))
  predict = make_predict(model)
  x_train = jax.device_put(data.normalizer(data.x_train))
  y_train = jax.device_put(data.y_train.astype(np.int32))
  splits = {s: (jax.device_put(data.normalizer(data.split(s)[0])), jax.device_put(data.split(s)[1].astype(np.int32)))
            for s in ("val", "test")}
  mask = jnp.ones((bs,), bool)
  t_loaded = time.perf_counter()

  @functools.partial(jax.jit, donate_argnums=0)
  def run_epoch(state, x, y, epoch):
    perm = jax.random.permutation(jax.random.fold_in(step_key, epoch), len(y))[: spe * bs].reshape(spe, bs)

    def body(s, idx):
      return step(s, {"x": x[idx], "label": y[idx], "mask": mask}, step_key)

    return jax.lax.scan(body, state, perm)

  @jax.jit
  def evaluate(state, x, y):
    probs = loss.probs(predict(state, x))
    nll = -jnp.mean(jnp.log(jnp.clip(jnp.take_along_axis(probs, y[:, None], -1)[:, 0], 1e-12)))
    return jnp.mean(jnp.argmax(probs, -1) == y), nll

  best, best_key, train_s, eval_s = None, None, 0.0, 0.0
  for epoch in range(epochs):
    t = time.perf_counter()
    state, metrics = run_epoch(state, x_train, y_train, epoch)
    if (epoch + 1) % every == 0 or epoch + 1 == epochs:
      jax.block_until_ready(metrics)
      t_eval = time.perf_counter()
      train_s += t_eval - t
      scores = {s: [float(v) for v in evaluate(state, *xy)] for s, xy in splits.items()}
      key = (scores["val"][0], -scores["val"][1])
      if best_key is None or key > best_key:
        best, best_key = (jax.device_get(state), scores["test"]), key
      eval_s += time.perf_counter() - t_eval
    else:
      train_s += time.perf_counter() - t
  if not np.all(np.isfinite(jax.device_get(metrics["loss"]))):
    raise FloatingPointError("minimal loop: non-finite loss")
  seconds = time.perf_counter() - t0
  return {
    "seconds": seconds,
    "load_seconds": t_loaded - t0,
    "train_seconds": train_s,
    "eval_seconds": eval_s,
    "steps": spe * epochs,
    "test_accuracy": best[1][0],
    "test_nll": best[1][1],
  }


def whole_run(config) -> dict:
  print("whole run: program (fresh executor) ...", file=sys.stderr, flush=True)
  first = program_whole_run(config)
  print(f"  {first['seconds']:.1f} s; minimal loop ...", file=sys.stderr, flush=True)
  minimal = minimal_whole_run(config)
  print(f"  {minimal['seconds']:.1f} s; program again (cached executor) ...", file=sys.stderr, flush=True)
  second = program_whole_run(config)
  print(f"  {second['seconds']:.1f} s", file=sys.stderr, flush=True)
  return {
    "program_fresh_executor": first,
    "minimal": minimal,
    "program_cached_executor": second,
    "ratio_fresh": first["seconds"] / minimal["seconds"],
    "ratio_cached": second["seconds"] / minimal["seconds"],
    "target": WHOLE_RUN_RATIO_TARGET,
  }


def nnx_vs_linen(setups: dict) -> dict:
  """For each model timed in both versions: median program ms/step (chunks) of each and the median over rounds of
  the per-round ratio NNX / Linen."""
  out = {}
  for linen_name, nnx_name in NNX_PAIRS.items():
    if linen_name in setups and nnx_name in setups:
      a, b = setups[linen_name]["rounds"], setups[nnx_name]["rounds"]
      ratios = [y["chunks"]["ms_per_step"] / x["chunks"]["ms_per_step"] for x, y in zip(a, b)]
      out[linen_name] = {
        "linen_ms_per_step": setups[linen_name]["median_ms_per_step"]["chunks"],
        "nnx_ms_per_step": setups[nnx_name]["median_ms_per_step"]["chunks"],
        "ratio": statistics.median(ratios),
        "per_round_ratios": ratios,
        "target": NNX_RATIO_TARGET,
      }
  return out


# ------------------------------------------------------------------------------------------------------ main
def _epochs(text):
  short, long = (int(v) for v in text.split(","))
  if not 0 < short < long:
    raise argparse.ArgumentTypeError(f"expected 'short,long' epochs with 0 < short < long, got {text!r}")
  return short, long


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up round (default 3)")
  parser.add_argument(
    "--setups",
    default="digits_mlp,table3_mlp,digits_cnn,digits_mlp_nnx,digits_cnn_nnx",
    help="comma-separated setups to time",
  )
  parser.add_argument("--epochs-digits-mlp", type=_epochs, default=(10, 210), help="short,long epochs (10 steps each)")
  parser.add_argument("--epochs-table3-mlp", type=_epochs, default=(2, 22), help="short,long epochs (112 steps each)")
  parser.add_argument("--epochs-digits-cnn", type=_epochs, default=(2, 12), help="short,long epochs (10 steps each)")
  parser.add_argument("--epochs-digits-mlp-nnx", type=_epochs, default=None, help="default: --epochs-digits-mlp")
  parser.add_argument("--epochs-digits-cnn-nnx", type=_epochs, default=None, help="default: --epochs-digits-cnn")
  parser.add_argument("--no-whole-run", action="store_true", help="skip the 150-epoch whole-run comparison")
  parser.add_argument("--json", default=None, help="write all results to this JSON file")
  args = parser.parse_args(argv)

  env = {
    "python": platform.python_version(),
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()],
    "cpu_count": os.cpu_count(),
    "machine": platform.machine(),
    "loadavg_start": _loadavg(),
  }
  tmp = tempfile.mkdtemp(prefix="loop_overhead_data_")
  npz = os.path.join(tmp, "tabular_20000x16_4.npz")
  write_tabular_npz(npz)
  configs = setup_configs(npz)
  names = [s.strip() for s in args.setups.split(",") if s.strip()]
  epochs = {n: getattr(args, "epochs_" + n) for n in configs}
  for linen_name, nnx_name in NNX_PAIRS.items():  # the same steps as the Linen version unless given
    epochs[nnx_name] = epochs[nnx_name] or epochs[linen_name]
  command = "python benchmarks/loop_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:])
  results = {"env": env, "command": command.strip(), "rounds": args.rounds, "target_ratio": STEP_RATIO_TARGET,
             "setups": {}}
  t_start = time.perf_counter()
  try:
    bares = {}
    for n in names:
      short, long = epochs[n]
      cfg = configs[n][0]
      spe = loop.load_data(cfg).steps_per_epoch(cfg.train.batch_size)
      bares[n] = Bare(_with(cfg, [f"train.epochs={long}"]), (long - short) * spe)
      results["setups"][n] = {"description": configs[n][1], "epochs": [short, long], "steps_per_epoch": spe,
                              "bare_steps": (long - short) * spe, "warmup_round": None, "rounds": []}
    for r in range(args.rounds + 1):
      print(f"round {r} ({'warm-up' if r == 0 else 'timed'}) ...", file=sys.stderr, flush=True)
      for n in names:
        out = _round(n, configs[n][0], epochs[n], bares[n])
        if r == 0:
          results["setups"][n]["warmup_round"] = out
        else:
          results["setups"][n]["rounds"].append(out)
    for n in names:
      entry = results["setups"][n]
      rounds = entry["rounds"]
      bare = [x["bare_ms_per_step"] for x in rounds]
      entry["median_ms_per_step"] = {"bare": statistics.median(bare)}
      entry["median_ratio"] = {}
      for label in ("chunks", "one_per_dispatch"):
        ms = [x[label]["ms_per_step"] for x in rounds]
        entry["median_ms_per_step"][label] = statistics.median(ms)
        entry["median_ratio"][label] = statistics.median([m / b for m, b in zip(ms, bare)])
      entry["meets_target"] = entry["median_ratio"]["chunks"] <= STEP_RATIO_TARGET
    results["nnx_vs_linen"] = nnx_vs_linen(results["setups"])
    if not args.no_whole_run:
      results["whole_run"] = {"setup": "table3_mlp", **whole_run(configs["table3_mlp"][0])}
  finally:
    shutil.rmtree(tmp, ignore_errors=True)

  results["wall_s"] = time.perf_counter() - t_start
  env["loadavg_end"] = _loadavg()
  lines = [
    f"### Training-program overhead per step (jax {env['jax']}, {env['backend']}, {env['cpu_count']} CPUs, float32)\n",
    "Program ms/step = (train_seconds_long - train_seconds_short) / (steps_long - steps_short) of two runs of "
    "`train_and_evaluate`; bare = the jitted `make_train_step` alone on batches already on the device. Medians over "
    f"{args.rounds} round-robin rounds after a warm-up round; ratios: median of the per-round ratios to bare. "
    f"Target: chunks/bare <= {STEP_RATIO_TARGET}.\n",
    "| setup | program ms/step (chunks) | program ms/step (1 per dispatch) | bare ms/step | ratio chunks/bare "
    "| ratio 1-per-dispatch/bare |",
    "|---|---|---|---|---|---|",
  ]
  for n in names:
    e = results["setups"][n]
    m, q = e["median_ms_per_step"], e["median_ratio"]
    lines.append(
      f"| {n} | {m['chunks']:.3f} | {m['one_per_dispatch']:.3f} | {m['bare']:.3f} | {q['chunks']:.2f} "
      f"| {q['one_per_dispatch']:.2f} |"
    )
  if results["nnx_vs_linen"]:
    lines += [
      "",
      "NNX against Linen, the same model through the same program (ms/step with chunks, same process and rounds; "
      f"ratio: median of the per-round ratios; target <= {NNX_RATIO_TARGET}):\n",
      "| model | Linen ms/step | NNX ms/step | NNX / Linen |",
      "|---|---|---|---|",
    ]
    for linen_name, row in results["nnx_vs_linen"].items():
      linen_ms, nnx_ms = row["linen_ms_per_step"], row["nnx_ms_per_step"]
      lines.append(f"| {linen_name} | {linen_ms:.3f} | {nnx_ms:.3f} | {row['ratio']:.2f} |")
  if "whole_run" in results:
    w = results["whole_run"]
    f, c, mn = w["program_fresh_executor"], w["program_cached_executor"], w["minimal"]
    lines += [
      "",
      f"Whole run, table3_mlp, 150 epochs, evaluation every 5 (once): program {f['seconds']:.1f} s "
      f"(train {f['train_seconds']:.1f} s, {f['distinct_chunk_lengths']} distinct chunk lengths; "
      f"finalize {f['phase_seconds']['finalize']:.1f} s) vs minimal loop {mn['seconds']:.1f} s "
      f"(train {mn['train_seconds']:.1f} s): ratio {w['ratio_fresh']:.2f} (target <= {WHOLE_RUN_RATIO_TARGET}); "
      f"program again with its executor cached {c['seconds']:.1f} s (train {c['train_seconds']:.1f} s): "
      f"ratio {w['ratio_cached']:.2f}. Test accuracy: program {f['test_accuracy']:.4f}, "
      f"minimal {mn['test_accuracy']:.4f}.",
    ]
  print("\n".join(lines))
  print(
    f"\n_Total benchmark wall time {results['wall_s']:.0f} s; 1-min load average {env['loadavg_start'][0]} at start, "
    f"{env['loadavg_end'][0]} at end (2 shared CPUs: compare runs on an idle machine)._"
  )
  if args.json:
    with open(args.json, "w") as fh:
      json.dump(results, fh, indent=2)
    print(f"(results written to {args.json})", file=sys.stderr)


if __name__ == "__main__":
  main()
