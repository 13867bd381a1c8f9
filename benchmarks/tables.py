"""Markdown tables of the committed benchmark results (what the README shows), from their JSON files.

    python benchmarks/tables.py benchmarks/results/losses_cpu_2core.json
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


if __name__ == "__main__":
  print(losses_table(json.load(open(sys.argv[1]))))
