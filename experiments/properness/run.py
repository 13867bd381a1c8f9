"""Run every sweep of the properness lab and write results.json, summary.md and the plots.

    nice -n 10 .venv/bin/python experiments/properness/run.py --out experiments/properness/results
    .venv/bin/python experiments/properness/run.py --quick --out /tmp/properness_quick   # tiny smoke setting

Sweeps (see README.md): ``pointwise`` (free logits per point, no model), ``n`` (training-set size), ``batch``
(batch size), ``classes`` (number of classes), ``imbalanced`` (batch size under a long-tailed class prior).
Each (sweep, configuration, loss) is trained for every seed, by minibatch Adam (``sgd``) and/or by the exact
full-batch minimiser (``erm``, L-BFGS). The training set of a (configuration, seed), and for ``sgd`` runs of one
batch size the batch order, are shared by all losses, so differences between losses are paired.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import sys
import time

import jax
import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load_lab():
  if "properness_lab" in sys.modules:
    return sys.modules["properness_lab"]
  spec = importlib.util.spec_from_file_location("properness_lab", os.path.join(_HERE, "lab.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules["properness_lab"] = module  # dataclasses look their module up in sys.modules
  spec.loader.exec_module(module)
  return module


lab = _load_lab()

GENCE_FAMILY = ("cross_entropy", "gence", "gence_noself")
ERM_LOSSES = ("cross_entropy", "gence", "mgce_b2", "mgce_b11", "lq_0.7", "focal_2", "brier")
SGD_LOSSES = ("cross_entropy", "gence", "gence_noself", "mgce_b2", "mgce_b11", "lq_0.7", "focal_2", "brier")

SETTINGS = {
  "full": {
    "dim": 8,
    "bayes_error": 0.2,
    "num_mc": 100_000,
    "seeds": [0, 1, 2, 3, 4],
    "n_test": 50_000,
    "lr": 0.02,
    "epochs": 200,
    "min_steps": 10_000,
    "pointwise": {"num_classes": 10, "rows": 300, "maxiter": 5000, "losses": ERM_LOSSES},
    "n": {
      "num_classes": 10,
      "batch": 64,
      "ns": [128, 512, 2048, 8192, 32768],
      "sgd_steps": 50_000,
      "erm_losses": ERM_LOSSES,
      "sgd_losses": GENCE_FAMILY,
    },
    "batch": {
      "num_classes": 10,
      "n": 16384,
      "batches": [16, 32, 64, 128, 256, 512, 1024],
      "erm_losses": ERM_LOSSES,
      "sgd_losses": SGD_LOSSES,
    },
    "classes": {
      "ks": [2, 5, 10, 20, 50],
      "n": 16384,
      "batches": [16, 32, 256],
      "erm_losses": ERM_LOSSES,
      "sgd_losses": GENCE_FAMILY,
    },
    "imbalanced": {
      "num_classes": 10,
      "imbalance": 20.0,
      "n": 16384,
      "batches": [16, 32, 64, 256, 1024],
      "erm_losses": ("cross_entropy", "gence"),
      "sgd_losses": GENCE_FAMILY,
    },
    "reliability": {"n": 32768, "seed": 0, "bins": 20},
  },
  "quick": {
    "dim": 4,
    "bayes_error": 0.2,
    "num_mc": 10_000,
    "seeds": [0, 1],
    "n_test": 4000,
    "lr": 0.05,
    "epochs": 2,
    "min_steps": 300,
    "pointwise": {
      "num_classes": 3,
      "rows": 100,
      "maxiter": 2000,
      "losses": ("cross_entropy", "gence", "mgce_b2", "lq_0.7"),
    },
    "n": {
      "num_classes": 3,
      "batch": 32,
      "ns": [128, 1024],
      "sgd_steps": 300,
      "erm_losses": ("cross_entropy", "mgce_b2", "lq_0.7"),
      "sgd_losses": ("cross_entropy", "gence"),
    },
    "batch": {
      "num_classes": 3,
      "n": 1024,
      "batches": [16, 128],
      "erm_losses": ("cross_entropy", "gence"),
      "sgd_losses": ("cross_entropy", "gence"),
    },
    "classes": {"ks": [2, 3], "n": 1024, "batches": [16], "erm_losses": ("cross_entropy",), "sgd_losses": ("gence",)},
    "imbalanced": {
      "num_classes": 3,
      "imbalance": 10.0,
      "n": 1024,
      "batches": [16],
      "erm_losses": ("cross_entropy",),
      "sgd_losses": ("cross_entropy", "gence"),
    },
    "reliability": {"n": 1024, "seed": 0, "bins": 10},
  },
}

SWEEP_IDS = {"pointwise": 0, "n": 1, "batch": 2, "classes": 3, "imbalanced": 4}


class Progress:
  """Prints one line per finished unit with the elapsed wall time."""

  def __init__(self):
    self.t0 = time.time()

  def __call__(self, msg: str):
    print(f"[{time.time() - self.t0:7.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------------------------------- worlds & data


class Worlds:
  """Worlds (with their test sets) by (num_classes, imbalance), built once."""

  def __init__(self, cfg, progress):
    self.cfg, self.progress, self.cache = cfg, progress, {}

  def get(self, num_classes: int, imbalance: float = 1.0):
    key = (num_classes, float(imbalance))
    if key not in self.cache:
      world, calib_err = lab.make_world(
        num_classes,
        self.cfg["dim"],
        target_bayes_error=self.cfg["bayes_error"],
        imbalance=imbalance,
        seed=num_classes,
        num_mc=self.cfg["num_mc"],
      )
      rng = np.random.default_rng([num_classes, int(imbalance * 1000), 999])
      x_test, y_test = lab.sample(world, self.cfg["n_test"], rng)
      p_test = lab.true_posterior(world, x_test)
      info = world.to_json() | {
        "imbalance": imbalance,
        "bayes_error_calibration_sample": calib_err,
        "bayes_error_test": float(1 - p_test.max(axis=1).mean()),
        "mean_true_entropy_test": float(-(p_test * np.log(np.maximum(p_test, 1e-300))).sum(axis=1).mean()),
      }
      self.cache[key] = (world, x_test, y_test, p_test, info)
      self.progress(f"world K={num_classes} imbalance={imbalance:g}: Bayes error (test) {info['bayes_error_test']:.4f}")
    return self.cache[key]

  def to_json(self):
    return {f"K={k[0]},imbalance={k[1]:g}": v[4] for k, v in self.cache.items()}


def training_sets(world, n: int, seeds, sweep: str, imbalance: float = 1.0):
  """One training set of size n per seed (shared by every loss and batch size of the sweep), stacked float32."""
  xs, ys = [], []
  for s in seeds:
    rng = np.random.default_rng([SWEEP_IDS[sweep], world.num_classes, int(imbalance * 1000), s, 1])
    x, y = lab.sample(world, n, rng)
    xs.append(x.astype(np.float32))
    ys.append(y)
  return np.stack(xs), np.stack(ys)


def steps_for(cfg, n: int, batch: int) -> int:
  """SGD steps: `epochs` passes over the data, at least `min_steps`."""
  return max(cfg["min_steps"], math.ceil(cfg["epochs"] * n / batch))


# ------------------------------------------------------------------------------------------------------ runs


def _records(spec, params, instances, base, world_data, fit_info=None, keep=None):
  """Evaluate stacked params (leading axis = instances); one record per (instance, probability link).

  `instances`: list of per-instance extra fields (e.g. seed, n). `keep(extra)` selects instances whose test
  probabilities are returned too (for the reliability plot).
  """
  _, x_test, y_test, p_test, _ = world_data
  probs = lab.predict(spec, params, x_test)
  recs, kept = [], {}
  for i, extra in enumerate(instances):
    for suffix, q in probs.items():
      label = spec.label + (f"/{suffix}" if suffix else "")
      rec = base | extra | {"loss": spec.label, "link": suffix or "link", "label": label}
      if fit_info is not None:
        rec |= fit_info[i]
      rec |= lab.measures(p_test, q[i], y_test)
      recs.append(rec)
      if keep is not None and keep(extra):
        kept[label] = q[i]
  return recs, kept


WARM_START = ("lq_0.7", "focal_2", "brier")  # not convex in the logits: ERM started from the cross-entropy ERM


def run_erm(spec, x, y, num_classes, ce_params=None):
  """ERM for each stacked training set; returns stacked params and per-instance fit info. Losses in WARM_START
  start from `ce_params` (the stacked cross-entropy ERM of the same training sets), the others from zero."""
  ws, bs, infos = [], [], []
  warm = spec.label in WARM_START
  if warm and ce_params is None:
    raise ValueError(f"ERM of {spec.label} starts from the cross-entropy ERM: run cross_entropy first")
  for i in range(x.shape[0]):
    t = time.time()
    init = {"w": ce_params["w"][i], "b": ce_params["b"][i]} if warm else None
    params, info = lab.fit_erm(spec, x[i], y[i], num_classes=num_classes, init=init)
    ws.append(params["w"])
    bs.append(params["b"])
    infos.append(info | {"fit_s": time.time() - t, "init": "cross_entropy ERM" if warm else "zero"})
  return {"w": np.stack(ws), "b": np.stack(bs)}, infos


def run_sgd(cfg, spec, x, y, idx, num_classes, steps):
  trainer = lab.make_trainer(spec, num_classes=num_classes, steps=steps, lr=cfg["lr"])
  t = time.time()
  params = jax.block_until_ready(trainer(x, y, idx))
  dt = time.time() - t
  return params, [{"steps": steps, "fit_s_all_instances": dt} for _ in range(x.shape[0])], dt


def sweep_pointwise(cfg, worlds, progress):
  c = cfg["pointwise"]
  _, _, _, p_test, _ = worlds.get(c["num_classes"])
  p = p_test[: c["rows"]]
  exponents = {"mgce_b2": 2.0, "mgce_b11": 11.0 / 10.0, "lq_0.7": 1.0 / (1.0 - 0.7)}
  recs = []
  for name in c["losses"]:
    spec = lab.LOSSES[name]
    t = time.time()
    qs, info = lab.pointwise_minimiser(spec, p, maxiter=c["maxiter"])
    for suffix, q in qs.items():
      q64 = q / q.sum(axis=1, keepdims=True)
      yhat = q64.argmax(axis=1)
      exp_acc = p[np.arange(len(p)), yhat]
      rec = {
        "sweep": "pointwise",
        "K": c["num_classes"],
        "rows": c["rows"],
        "loss": spec.label,
        "link": suffix or "link",
        "label": spec.label + (f"/{suffix}" if suffix else ""),
        "kl": lab.expected_kl(p, q64),
        "tv": lab.total_variation(p, q64),
        "max_abs_err": float(np.abs(q64 - p).max()),
        "zero_frac": float(np.mean(q64 == 0.0)),
        "true_ece": lab.true_ece(p, q64),
        "overconf": float(np.mean(q64.max(axis=1) - exp_acc)),
        "acc_gap": float(np.mean(p.max(axis=1) - exp_acc)),
      } | info
      if name in exponents and not suffix:
        tilt = lab.tilted(p, exponents[name])
        rec |= {
          "tilt_exponent": exponents[name],
          "kl_of_tilt": lab.expected_kl(p, tilt),
          "max_abs_err_vs_tilt": float(np.abs(q64 - tilt).max()),
        }
      recs.append(rec)
    progress(
      f"pointwise {name}: KL {recs[-len(qs)]['kl']:.2e}, {info['nit']} L-BFGS iterations ({time.time() - t:.1f}s)"
    )
  return recs


def sweep_n(cfg, worlds, progress):
  """Training-set size. Nested training sets (the first n rows of each seed's largest set). SGD: one compile per
  loss, vmapped over (n, seed) with the data padded to the largest n (indices only reach the first n rows)."""
  c = cfg["n"]
  k, batch, ns, seeds = c["num_classes"], c["batch"], c["ns"], cfg["seeds"]
  wd = worlds.get(k)
  x, y = training_sets(wd[0], max(ns), seeds, "n")
  rc = cfg["reliability"]
  keep = lambda e: e["n"] == rc["n"] and e["seed"] == rc["seed"]  # noqa: E731
  recs, rel, ce_erm = [], {}, {}
  for name in c["erm_losses"]:
    spec = lab.LOSSES[name]
    t = time.time()
    for n in ns:
      params, infos = run_erm(spec, x[:, :n], y[:, :n], k, ce_erm.get(n))
      if name == "cross_entropy":
        ce_erm[n] = params
      base = {"sweep": "n", "trainer": "erm", "K": k, "B": "full", "imbalance": 1.0, "n": n}
      r, kept = _records(
        spec, params, [{"seed": s} for s in seeds], base, wd, infos, lambda e: n == rc["n"] and keep(e | {"n": n})
      )
      recs += r
      rel |= {f"{label} [ERM]": q for label, q in kept.items()}
    progress(f"n-sweep ERM {name}: {len(ns)} sizes x {len(seeds)} seeds in {time.time() - t:.1f}s")
  steps = c["sgd_steps"]
  insts, idx = [], []
  for n in ns:
    for s in seeds:
      insts.append({"n": n, "seed": s})
      idx.append(lab.batch_indices(n, batch, steps, np.random.default_rng([1, k, n, s, 2])))
  xs = np.repeat(x[None], len(ns), axis=0).reshape(-1, *x.shape[1:])
  ys = np.repeat(y[None], len(ns), axis=0).reshape(-1, *y.shape[1:])
  idx = np.stack(idx)
  base = {"sweep": "n", "trainer": "sgd", "K": k, "B": batch, "imbalance": 1.0}
  for name in c["sgd_losses"]:
    spec = lab.LOSSES[name]
    params, infos, dt = run_sgd(cfg, spec, xs, ys, idx, k, steps)
    r, kept = _records(spec, params, insts, base, wd, infos, keep)
    recs += r
    rel |= {f"{label} [SGD B={batch}]": q for label, q in kept.items()}
    progress(f"n-sweep SGD {name}: {len(insts)} runs x {steps} steps in {dt:.1f}s")
  curves = {label: lab.posterior_reliability(wd[3], q, rc["bins"]) for label, q in rel.items()}
  return recs, {"n": rc["n"], "seed": rc["seed"], "K": k, "curves": curves}


def _batch_sweep(cfg, worlds, progress, *, sweep, k, imbalance, n, batches, sgd_losses, erm_losses):
  seeds = cfg["seeds"]
  wd = worlds.get(k, imbalance)
  x, y = training_sets(wd[0], n, seeds, sweep, imbalance)
  insts = [{"seed": s} for s in seeds]
  recs = []
  t = time.time()
  base = {"sweep": sweep, "trainer": "erm", "K": k, "n": n, "B": "full", "imbalance": imbalance}
  ce_erm = None
  for name in erm_losses:
    spec = lab.LOSSES[name]
    params, infos = run_erm(spec, x, y, k, ce_erm)
    if name == "cross_entropy":
      ce_erm = params
    recs += _records(spec, params, insts, base, wd, infos)[0]
  progress(f"{sweep}-sweep K={k} ERM {', '.join(erm_losses)}: {time.time() - t:.1f}s")
  for batch in batches:
    steps = steps_for(cfg, n, batch)
    rngs = [np.random.default_rng([SWEEP_IDS[sweep], k, int(imbalance * 1000), batch, s, 3]) for s in seeds]
    idx = np.stack([lab.batch_indices(n, batch, steps, r) for r in rngs])
    base = {"sweep": sweep, "trainer": "sgd", "K": k, "n": n, "B": batch, "imbalance": imbalance}
    t = time.time()
    for name in sgd_losses:
      spec = lab.LOSSES[name]
      params, infos, _ = run_sgd(cfg, spec, x, y, idx, k, steps)
      recs += _records(spec, params, insts, base, wd, infos)[0]
    progress(f"{sweep}-sweep K={k} B={batch} SGD ({steps} steps) {', '.join(sgd_losses)}: {time.time() - t:.1f}s")
  return recs


def sweep_batch(cfg, worlds, progress):
  c = cfg["batch"]
  return _batch_sweep(
    cfg,
    worlds,
    progress,
    sweep="batch",
    k=c["num_classes"],
    imbalance=1.0,
    n=c["n"],
    batches=c["batches"],
    sgd_losses=c["sgd_losses"],
    erm_losses=c["erm_losses"],
  )


def sweep_classes(cfg, worlds, progress, batch_records=()):
  """Number of classes. The configuration the batch sweep already ran (same K and n) is copied from its records
  (relabelled sweep="classes") instead of being trained again."""
  c, cb = cfg["classes"], cfg["batch"]
  recs = []
  for k in c["ks"]:
    reuse = [
      r
      for r in batch_records
      if r["K"] == k
      and r["n"] == c["n"]
      and (
        (r["trainer"] == "erm" and r["loss"] in c["erm_losses"])
        or (r["trainer"] == "sgd" and r["B"] in c["batches"] and r["loss"] in c["sgd_losses"])
      )
    ]
    needed = len(c["erm_losses"]) + len(c["batches"]) * len(c["sgd_losses"])
    if (
      k == cb["num_classes"] and c["n"] == cb["n"] and len({(r["trainer"], r["B"], r["loss"]) for r in reuse}) == needed
    ):
      recs += [r | {"sweep": "classes", "copied_from": "batch"} for r in reuse]
      progress(f"classes-sweep K={k}: copied from the batch sweep ({len(reuse)} records)")
      continue
    recs += _batch_sweep(
      cfg,
      worlds,
      progress,
      sweep="classes",
      k=k,
      imbalance=1.0,
      n=c["n"],
      batches=c["batches"],
      sgd_losses=c["sgd_losses"],
      erm_losses=c["erm_losses"],
    )
  return recs


def sweep_imbalanced(cfg, worlds, progress):
  c = cfg["imbalanced"]
  return _batch_sweep(
    cfg,
    worlds,
    progress,
    sweep="imbalanced",
    k=c["num_classes"],
    imbalance=c["imbalance"],
    n=c["n"],
    batches=c["batches"],
    sgd_losses=c["sgd_losses"],
    erm_losses=c["erm_losses"],
  )


# ------------------------------------------------------------------------------------------------------ summary

KEYS = ("trainer", "K", "n", "B", "imbalance")


def _stat(values):
  """Mean and std (ddof=0) over the seeds whose value is not None (None: diverged), and the per-seed values."""
  finite = np.array([v for v in values if v is not None], np.float64)
  if finite.size == 0:
    return {"mean": None, "std": None, "per_seed": list(values)}
  return {"mean": float(np.mean(finite)), "std": float(np.std(finite)), "per_seed": list(values)}


def aggregate(records):
  """Mean and std over seeds of every measure per (sweep, label, trainer, K, n, B, imbalance), plus the paired excess
  KL over cross-entropy (same sweep, trainer, configuration and seed: the same training set and, for SGD, the same
  batch order)."""
  ce = {
    (r["sweep"],) + tuple(r[k] for k in KEYS) + (r["seed"],): r["kl"] for r in records if r["label"] == "cross_entropy"
  }
  groups = {}
  for r in records:
    groups.setdefault((r["sweep"], r["label"]) + tuple(r[k] for k in KEYS), []).append(r)
  out = []
  for key, rs in groups.items():
    rs = sorted(rs, key=lambda r: r["seed"])
    row = {"sweep": key[0], "label": key[1]} | dict(zip(KEYS, key[2:])) | {"seeds": [r["seed"] for r in rs]}
    for m in lab.MEASURES:
      row[m] = _stat([r[m] for r in rs])
    row["diverged"] = int(sum(bool(r["diverged"]) for r in rs))
    if key[2] == "erm":
      row["erm_not_converged"] = int(sum(not r["converged"] for r in rs))
    ce_kl = [ce.get((key[0],) + key[2:] + (r["seed"],)) for r in rs]
    if key[1] != "cross_entropy" and all(c is not None for c in ce_kl):
      row["excess_kl_vs_ce"] = _stat([None if r["kl"] is None else r["kl"] - c for r, c in zip(rs, ce_kl)])
    out.append(row)
  return out


PREF = [
  "cross_entropy",
  "gence",
  "gence_noself",
  "mgce_b2",
  "mgce_b2/w",
  "mgce_b11",
  "mgce_b11/w",
  "lq_0.7",
  "focal_2",
  "brier",
]


def _order(labels):
  def key(label):
    base = label.split(" [")[0]
    return (PREF.index(base) if base in PREF else 99, label)

  return sorted(labels, key=key)


def _row_name(r, sweep):
  """Table row: the label, plus the trainer where a sweep's columns are not batch sizes."""
  if sweep in ("batch", "imbalanced"):
    return r["label"]
  return f"{r['label']} [{'ERM' if r['trainer'] == 'erm' else 'SGD B=' + str(r['B'])}]"


def _fmt(stat, scale=1.0, digits=4):
  if stat is None:
    return "-"
  if stat["mean"] is None:
    return "NaN"
  return f"{stat['mean'] * scale:.{digits}f} +/- {stat['std'] * scale:.{digits}f}"


def _table(rows, sweep, col_key, cols, measure, scale=1.0, digits=4):
  cell = {(_row_name(r, sweep), r[col_key]): r for r in rows}
  names = _order({_row_name(r, sweep) for r in rows})
  colname = {"B": "B", "n": "n", "K": "K"}[col_key]
  lines = ["| loss | " + " | ".join(f"{colname}={c}" for c in cols) + " |", "|" + "---|" * (len(cols) + 1)]
  for name in names:
    vals = []
    for c in cols:
      r = cell.get((name, c))
      txt = _fmt(None if r is None else r.get(measure), scale, digits)
      if r is not None and r["diverged"]:
        txt += f" ({r['diverged']}/{len(r['seeds'])} diverged)"
      if r is not None and r.get("erm_not_converged"):
        txt += f" ({r['erm_not_converged']}/{len(r['seeds'])} not converged)"
      vals.append(txt)
    lines.append(f"| {name} | " + " | ".join(vals) + " |")
  return "\n".join(lines)


MEASURE_TEXT = {
  "kl": ("KL(true || learned), nats", 1.0, 5),
  "excess_kl_vs_ce": ("excess KL over cross-entropy, paired per seed (same trainer, data and batches), nats", 1.0, 5),
  "tv": ("mean total-variation distance E_x TV(p, q)", 1.0, 5),
  "true_ece": ("true-posterior ECE (15 bins), %", 100.0, 2),
  "overconf": ("over-confidence E[max q - p(yhat|x)], %", 100.0, 2),
  "acc_gap": ("accuracy gap to Bayes, %", 100.0, 2),
  "ece": ("ECE against sampled test labels (15 bins), %", 100.0, 2),
  "zero_frac": ("fraction of (x, y) with q exactly 0, %", 100.0, 3),
  "clipped_mass": ("true mass on entries with q < 1e-12 (clipped in the KL), E_x sum p, %", 100.0, 3),
}


def summary_markdown(results):
  agg, cfg = results["aggregate"], results["settings"]
  out = [
    "# Properness lab: summary",
    "",
    f"Produced by `{results['meta']['command']}` ({results['meta']['wall_time_s'] / 60:.1f} min).",
    f"Every cell is mean +/- std over seeds {cfg['seeds']} (population std, ddof=0). "
    "`[ERM]`: exact full-batch minimiser",
    "(L-BFGS, float64); `[SGD B=..]` / columns `B=..`: minibatch Adam; column `B=full`: the ERM. `gence_noself` is",
    "GenCE with `include_self=False`; `mgce_bX/w` reads the MGCE model through the worst-case distribution w instead",
    "of the registered link h.",
    "",
    "## Pointwise properness (free logits per point; no model, no sampling)",
    "",
    f"Rows: the true posteriors of the first {cfg['pointwise']['rows']} test points of the "
    f"K={cfg['pointwise']['num_classes']} world; L-BFGS (float64) on the expected loss. `tilt`: the closed-form",
    "tilted posterior p^a / sum p^a (a = beta/(beta-1) for the MGCE link h if w = p; a = 1/(1-q) for Lq).",
    "",
    "| loss | KL | mean TV | max abs error | true ECE % | over-confidence % | zero frac % | a | KL of tilt | max abs "
    "error vs tilt | L-BFGS iters | max abs grad |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  by_label = {r["label"]: r for r in results["pointwise"]}
  for label in _order(by_label):
    r = by_label[label]
    tilt = (
      f"{r['tilt_exponent']:.3g} | {r['kl_of_tilt']:.2e} | {r['max_abs_err_vs_tilt']:.1e}"
      if "kl_of_tilt" in r
      else "- | - | -"
    )
    out.append(
      f"| {label} | {r['kl']:.2e} | {r['tv']:.2e} | {r['max_abs_err']:.1e} | {100 * r['true_ece']:.2f} | "
      f"{100 * r['overconf']:.2f} | {100 * r['zero_frac']:.2f} | {tilt} | {r['nit']} | {r['grad_norm']:.1e} |"
    )
  sweeps = [
    ("n", "n", "Training-set size", f"K={cfg['n']['num_classes']}"),
    ("batch", "B", "Batch size", f"K={cfg['batch']['num_classes']}, n={cfg['batch']['n']}"),
    ("classes", "K", "Number of classes", f"n={cfg['classes']['n']}"),
    (
      "imbalanced",
      "B",
      "Batch size under a long-tailed prior",
      f"K={cfg['imbalanced']['num_classes']}, imbalance {cfg['imbalanced']['imbalance']:g}, n={cfg['imbalanced']['n']}",
    ),
  ]
  for sweep, col, title, fixed in sweeps:
    rows = [r for r in agg if r["sweep"] == sweep]
    if not rows:
      continue
    cols = sorted({r[col] for r in rows}, key=lambda v: (isinstance(v, str), v))
    out += ["", f"## {title} ({fixed})"]
    for measure in MEASURE_TEXT:
      if measure in ("zero_frac", "clipped_mass") and not any((r[measure]["mean"] or 0) > 0 for r in rows):
        continue
      text, scale, digits = MEASURE_TEXT[measure]
      out += ["", f"{text}:", "", _table(rows, sweep, col, cols, measure, scale, digits)]
  out += [
    "",
    "## Worlds",
    "",
    "| world | Bayes error (test) | mean true entropy (nats) | sigma | mean norm of the means |",
    "|---|---|---|---|---|",
  ]
  for name, w in results["worlds"].items():
    norms = np.linalg.norm(np.array(w["means"]), axis=1).mean()
    out.append(
      f"| {name} | {w['bayes_error_test']:.4f} | {w['mean_true_entropy_test']:.4f} | {w['sigma']:g} | {norms:.3f} |"
    )
  return "\n".join(out) + "\n"


# -------------------------------------------------------------------------------------------------------- plots

COLORS = {
  "cross_entropy": "k",
  "gence": "tab:red",
  "gence_noself": "tab:orange",
  "mgce_b2": "tab:blue",
  "mgce_b2/w": "tab:blue",
  "mgce_b11": "tab:cyan",
  "mgce_b11/w": "tab:cyan",
  "lq_0.7": "tab:green",
  "focal_2": "tab:purple",
  "brier": "tab:brown",
}


def _style(label, dashed=False):
  base = label.split(" [")[0]
  ls = "--" if base.endswith("/w") or dashed else "-"
  return {"color": COLORS.get(base, "gray"), "linestyle": ls, "marker": "o", "ms": 3}


def _figure(ncols, width, height):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(width, height))
  FigureCanvasAgg(fig)
  return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _series(rows, col, measure="kl"):
  rs = sorted([r for r in rows if measure in r and not isinstance(r[col], str)], key=lambda r: r[col])
  xs = np.array([r[col] for r in rs], float)
  m = np.array([np.nan if r[measure]["mean"] is None else r[measure]["mean"] for r in rs])
  s = np.array([np.nan if r[measure]["std"] is None else r[measure]["std"] for r in rs])
  return xs, m, s


def _errorbar(ax, rows, col, label, measure="kl", dashed=False, **kw):
  xs, m, s = _series(rows, col, measure)
  ok = np.isfinite(m)
  if ok.any():
    style = _style(label, dashed) | kw
    ax.errorbar(xs[ok], m[ok], yerr=s[ok], label=label, capsize=2, lw=1.2, **style)


def _ticks(ax, values):
  """Log x axis with ticks at the swept values, labelled plainly."""
  from matplotlib.ticker import NullFormatter

  ax.set_xscale("log")
  ax.set_xticks(list(values))
  ax.set_xticklabels([str(v) for v in values])
  ax.xaxis.set_minor_formatter(NullFormatter())


def _excess_axes(ax, xlabel, title):
  ax.axhline(0.0, color="k", lw=0.8)
  ax.set_xscale("log")
  ax.set_yscale("symlog", linthresh=1e-4)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("KL(GenCE) - KL(CE), paired [nats]")
  ax.set_title(title, fontsize=9)
  ax.grid(True, which="both", alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7)


def plots(results, out_dir, dpi=80):
  agg, cfg = results["aggregate"], results["settings"]
  paths = []

  def save(fig, name):
    fig.tight_layout()
    paths.append(os.path.join(out_dir, name))
    fig.savefig(paths[-1], dpi=dpi)

  # KL vs n: ERM of every loss, SGD of the GenCE family
  rows = [r for r in agg if r["sweep"] == "n"]
  if rows:
    fig, (ax,) = _figure(1, 8.0, 5.5)
    for label in _order({r["label"] for r in rows if r["trainer"] == "erm"}):
      _errorbar(ax, [r for r in rows if r["trainer"] == "erm" and r["label"] == label], "n", f"{label} [ERM]")
    for label in ("gence", "gence_noself"):
      rs = [r for r in rows if r["trainer"] == "sgd" and r["label"] == label]
      _errorbar(ax, rs, "n", f"{label} [SGD B={cfg['n']['batch']}]", dashed=True, marker="x")
    k, d = cfg["n"]["num_classes"], cfg["dim"]
    ns = np.array(sorted({r["n"] for r in rows}), float)
    ax.plot(ns, (k - 1) * (d + 1) / (2 * ns), ":", color="gray", label="(K-1)(d+1)/(2n)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training-set size n")
    ax.set_ylabel("KL(true || learned) [nats]")
    ax.set_title(f"K={k}, d={d}; mean +/- std over {len(cfg['seeds'])} seeds", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _ticks(ax, cfg["n"]["ns"])
    save(fig, "kl_vs_n.png")

  # KL vs batch: SGD of every loss (ERM dotted), and GenCE's paired excess
  rows = [r for r in agg if r["sweep"] == "batch"]
  imb = [r for r in agg if r["sweep"] == "imbalanced"]
  if rows:
    fig, (ax1, ax2) = _figure(2, 13.0, 5.0)
    for label in _order({r["label"] for r in rows}):
      _errorbar(ax1, [r for r in rows if r["trainer"] == "sgd" and r["label"] == label], "B", label)
      for r in rows:
        if r["trainer"] == "erm" and r["label"] == label and r["kl"]["mean"] is not None:
          ax1.axhline(r["kl"]["mean"], color=_style(label)["color"], lw=0.8, ls=(0, (1, 3)))
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("batch size B")
    ax1.set_ylabel("KL(true || learned) [nats]")
    ax1.set_title(f"Minibatch Adam, K={cfg['batch']['num_classes']}, n={cfg['batch']['n']} (dotted: ERM)", fontsize=9)
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7, ncol=2)
    for rs, tag, dashed in ((rows, "balanced", False), (imb, f"imbalance {cfg['imbalanced']['imbalance']:g}", True)):
      for label in ("gence", "gence_noself"):
        sel = [r for r in rs if r["trainer"] == "sgd" and r["label"] == label]
        _errorbar(ax2, sel, "B", f"{label}, {tag}", "excess_kl_vs_ce", dashed=dashed, color=COLORS[label])
    _excess_axes(ax2, "batch size B", f"GenCE's finite-batch excess (SGD), K={cfg['batch']['num_classes']}")
    _ticks(ax1, cfg["batch"]["batches"])
    _ticks(ax2, cfg["batch"]["batches"])
    save(fig, "kl_vs_batch.png")

  # KL vs classes
  rows = [r for r in agg if r["sweep"] == "classes"]
  if rows:
    fig, (ax1, ax2) = _figure(2, 13.0, 5.0)
    for label in _order({r["label"] for r in rows if r["trainer"] == "erm"}):
      _errorbar(ax1, [r for r in rows if r["trainer"] == "erm" and r["label"] == label], "K", f"{label} [ERM]")
    b_mid = sorted({r["B"] for r in rows if r["trainer"] == "sgd"})
    for b in b_mid[:1]:
      sel = [r for r in rows if r["trainer"] == "sgd" and r["label"] == "gence" and r["B"] == b]
      _errorbar(ax1, sel, "K", f"gence [SGD B={b}]", dashed=True, marker="x")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("number of classes K")
    ax1.set_ylabel("KL(true || learned) [nats]")
    ax1.set_title(f"n={cfg['classes']['n']}", fontsize=9)
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7, ncol=2)
    markers = ["v", "o", "s", "D"]
    bcolors = ["tab:red", "tab:orange", "tab:blue", "tab:green"]
    for j, b in enumerate(b_mid):
      for label in ("gence", "gence_noself"):
        sel = [r for r in rows if r["trainer"] == "sgd" and r["label"] == label and r["B"] == b]
        _errorbar(
          ax2,
          sel,
          "K",
          f"{label}, B={b}",
          "excess_kl_vs_ce",
          dashed=label != "gence",
          marker=markers[j % 4],
          color=bcolors[j % 4],
        )
    _excess_axes(ax2, "number of classes K", "GenCE's finite-batch excess (SGD); missing points: diverged")
    _ticks(ax1, cfg["classes"]["ks"])
    _ticks(ax2, cfg["classes"]["ks"])
    save(fig, "kl_vs_classes.png")

  # posterior reliability
  rel = results.get("reliability", {}).get("curves", {})
  if rel:
    fig, (ax,) = _figure(1, 6.5, 6.0)
    ax.plot([0, 1], [0, 1], color="gray", lw=0.8)
    for label in _order(rel):
      c = rel[label]
      pts = [(q, p) for q, p in zip(c["mean_q"], c["mean_p"]) if q is not None]
      if pts:
        q, p = zip(*pts)
        ax.plot(q, p, label=label, lw=1.2, **_style(label, "SGD" in label))
    r = results["reliability"]
    ax.set_xlabel("learned q(y|x) (bin mean)")
    ax.set_ylabel("true p(y|x) (bin mean)")
    ax.set_title(f"Posterior reliability over all (x, y); K={r['K']}, n={r['n']}, seed {r['seed']}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)
    save(fig, "reliability.png")
  return paths


# --------------------------------------------------------------------------------------------------------- main


def _json_default(o):
  if isinstance(o, (np.floating, np.integer, np.bool_)):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  if isinstance(o, tuple):
    return list(o)
  raise TypeError(type(o))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--out", default=os.path.join(_HERE, "results"), help="output folder")
  ap.add_argument("--quick", action="store_true", help="tiny setting (seconds), for smoke tests")
  ap.add_argument("--sweeps", nargs="*", default=list(SWEEP_IDS), choices=list(SWEEP_IDS), help="subset of sweeps")
  ap.add_argument("--replot", action="store_true", help="only rewrite summary.md and the plots from --out/results.json")
  args = ap.parse_args(argv)
  if args.replot:
    with open(os.path.join(args.out, "results.json")) as f:
      results = json.load(f)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
      f.write(summary_markdown(results))
    paths = plots(results, args.out)
    print(f"rewrote summary.md, {', '.join(os.path.basename(p) for p in paths)} in {args.out}")
    return results

  cfg = SETTINGS["quick" if args.quick else "full"]
  os.makedirs(args.out, exist_ok=True)
  progress = Progress()
  worlds = Worlds(cfg, progress)
  command = "python experiments/properness/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
  results = {"meta": {"command": command.strip()}, "settings": cfg, "pointwise": [], "reliability": {}}
  records = []
  if "pointwise" in args.sweeps:
    results["pointwise"] = sweep_pointwise(cfg, worlds, progress)
  if "n" in args.sweeps:
    recs, results["reliability"] = sweep_n(cfg, worlds, progress)
    records += recs
  if "batch" in args.sweeps:
    records += sweep_batch(cfg, worlds, progress)
  if "classes" in args.sweeps:
    records += sweep_classes(cfg, worlds, progress, [r for r in records if r["sweep"] == "batch"])
  if "imbalanced" in args.sweeps:
    records += sweep_imbalanced(cfg, worlds, progress)
  results["records"] = records
  results["aggregate"] = aggregate(records)
  results["worlds"] = worlds.to_json()
  results["meta"] |= {
    "wall_time_s": time.time() - progress.t0,
    "jax": jax.__version__,
    "python": platform.python_version(),
    "platform": platform.platform(),
    "devices": [str(d) for d in jax.devices()],
    "cpu_count": os.cpu_count(),
  }
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(results, f, indent=1, default=_json_default)
  with open(os.path.join(args.out, "summary.md"), "w") as f:
    f.write(summary_markdown(results))
  paths = plots(results, args.out)
  progress(f"wrote results.json, summary.md, {', '.join(os.path.basename(p) for p in paths)} to {args.out}")
  return results


if __name__ == "__main__":
  main()
