"""Wall time of the README's main-job grid (`gence-jax compare` with its defaults: digits MLP, 5 losses x 2 regimes x
3 seeds = 30 cells) with ``--jobs 1`` and ``--jobs 2``, and the speed-up to expect from N jobs.

Usage::

    python benchmarks/grid_jobs.py                        # 1 round: --jobs 1 then --jobs 2
    python benchmarks/grid_jobs.py --rounds 3 --jobs 1 2 4 --json benchmarks/results/grid_jobs_cpu_2core.json

Each round runs every ``--jobs`` value once, in turn (round robin), each as a fresh ``gence-jax compare`` process in a
fresh work directory (the grid is trained from scratch; the persistent XLA compilation cache is off, as on a fresh
machine). Reported: the median wall time per ``--jobs`` value, its ratio to ``--jobs 1``, and from the runs' own
``results.json``: the sum and the largest of the per-cell times (``seconds``: data, set-up, compilation, training,
evaluation). On a box with N accelerators and one job per device, the grid takes about
``start-up + max(sum / N, largest)``, and the speed-up over one job is the ``--jobs 1`` wall time over that, where ``start-up`` (a job's process start, imports and first compilations)
is estimated as the ``--jobs 1`` wall time less the sum of the cells' times.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def run_grid(jobs: int, workdir: str) -> float:
  env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"), "TF_CPP_MIN_LOG_LEVEL": "3"}
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  t0 = time.perf_counter()
  subprocess.run([sys.executable, "-m", "gence_jax.cli", "compare", "--workdir", workdir, "--jobs", str(jobs)],
                 env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  return time.perf_counter() - t0


def cell_seconds(workdir: str) -> list[float]:
  return [json.load(open(p))["seconds"] for p in glob.glob(os.path.join(workdir, "*", "*", "seed*", "results.json"))]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=1)
  parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
  parser.add_argument("--json", default=None, help="write the measurements here")
  args = parser.parse_args()
  walls: dict[int, list[float]] = {j: [] for j in args.jobs}
  cells: dict[int, list[list[float]]] = {j: [] for j in args.jobs}
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(args.rounds):
      for jobs in args.jobs:
        wd = os.path.join(tmp, f"r{r}-j{jobs}")
        walls[jobs].append(run_grid(jobs, wd))
        cells[jobs].append(cell_seconds(wd))
        print(f"round {r}: --jobs {jobs}: {walls[jobs][-1]:.1f} s ({len(cells[jobs][-1])} cells)", flush=True)
  base = statistics.median(walls[args.jobs[0]])
  print(f"\ncores: {len(os.sched_getaffinity(0))}, load average before the last run: {os.getloadavg()[0]:.2f}")
  for jobs in args.jobs:
    med = statistics.median(walls[jobs])
    total = statistics.median(sum(c) for c in cells[jobs])
    largest = statistics.median(max(c) for c in cells[jobs])
    print(f"--jobs {jobs}: median wall {med:.1f} s, ratio to --jobs {args.jobs[0]} {med / base:.2f}; "
          f"cells: sum {total:.1f} s, largest {largest:.1f} s")
  one = args.jobs[0]
  total = statistics.median(sum(c) for c in cells[one])
  startup = max(0.0, base - total)
  print(f"\nstart-up (--jobs {one} wall less the sum of its cells): {startup:.1f} s")
  largest = statistics.median(max(c) for c in cells[one])
  for n in (2, 4, 8):
    expected = startup + max(total / n, largest)
    print(f"expected on {n} accelerators, one job each: ~{expected:.0f} s (speed-up ~{base / expected:.1f}x)")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"walls": walls, "cell_seconds": cells, "cores": len(os.sched_getaffinity(0))}, f, indent=1)


if __name__ == "__main__":
  main()
