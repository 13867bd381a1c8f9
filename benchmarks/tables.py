"""Markdown tables of the committed benchmark results (what the README shows), from their JSON files.

    python benchmarks/tables.py benchmarks/results/losses_cpu_2core.json
    python benchmarks/tables.py benchmarks/results/loss_floors_cpu_2core.json
"""

from __future__ import annotations

import json
import sys

LOSSES = ("cross_entropy", "gence", "mgce (beta=1)", "mgce (beta=1.43)", "mgce (beta=2)", "mgce (beta=3.33)",
          "mgce (beta=8)", "mgce (beta=64)")


def losses_table(d: dict) -> str:
  shapes = d["shapes"]
  cells = {(r["loss"], r["shape"]): r for r in d["jax"]}
  lines = ["| loss | " + " | ".join(f"{s} ms | x CE" for s in shapes) + " |", "|---|" + "---|---|" * len(shapes)]
  for loss in ("optax CE", *LOSSES):
    row = [loss]
    for s in shapes:
      r = cells.get((loss, s))
      row += ["-", "-"] if r is None else [f"{r['median_ms']:.3f}", f"{r['ratio']:.2f}"]
    lines.append("| " + " | ".join(row) + " |")
  lines += ["", "| beta | " + " | ".join(shapes) + " |", "|---|" + "---|" * len(shapes)]
  peers = {(p["beta"], p["shape"]): p for p in d.get("peer", [])}
  for beta in sorted({p["beta"] for p in d.get("peer", [])}):
    lines.append(f"| {beta:g} | " + " | ".join(f"{peers[(beta, s)]['speedup']:.1f}x faster" for s in shapes) + " |")
  return "\n".join(lines)


def floors_table(d: dict) -> str:
  """The MGCE pass accounting and GenCE's two-pass minimum of `benchmarks/loss_floors.py`."""
  lines = ["| shape | beta | MGCE x CE | passes | one more pass x CE | the rest x CE | passes within 3x CE |",
           "|---|---|---|---|---|---|---|"]
  for r in d["mgce_passes"]:
    lines.append(f"| {r['shape']} | {r['beta']:g} | {r['loss_ratio']:.2f} | {r['passes']} | {r['per_pass_ratio']:.2f} | "
                 f"{r['rest_ratio']:.2f} | {r['passes_within_3x']:.1f} |")
  cells = {(r["name"], r["shape"]): r["ratio"] for r in d["timings"]}
  shapes = sorted({r["shape"] for r in d["timings"]}, key=lambda s: int(s.split("x")[0]))
  lines += ["", "| computation | " + " | ".join(f"{s} x CE" for s in shapes) + " |", "|---|" + "---|" * len(shapes)]
  for name in ("gence", "gence two-pass minimum"):
    lines.append(f"| {name} | " + " | ".join(f"{cells[(name, s)]:.2f}" for s in shapes) + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  with open(sys.argv[1]) as f:
    record = json.load(f)
  print(floors_table(record) if "mgce_passes" in record else losses_table(record))
