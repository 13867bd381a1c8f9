"""Restate a committed grid's results with the program's statistics over seeds (`gence_jax.train.report`): sample
std (ddof=1), 95% Student-t intervals and paired tests against a reference loss, from the per-seed records a
``summary.json`` keeps (``runs``), so the statistics of an older grid can be recomputed without rerunning it.

    python experiments/resummarize.py experiments/results/digits_grid/summary.json --reference cross_entropy \
        --columns accuracy nll ece sce ece:ts --out experiments/results/digits_grid/summary_stats.md
"""

from __future__ import annotations

import argparse
import json

from gence_jax.train.report import markdown_table, parse_columns, summarize


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("summary", help="a summary.json written by gence-jax compare")
  parser.add_argument("--reference", default=None, help="loss spec the others are compared with (default: first)")
  parser.add_argument("--columns", nargs="+", default=None, metavar="METRIC[:STAGE]")
  parser.add_argument("--out", default=None, help="write the Markdown here (default: print it)")
  args = parser.parse_args(argv)
  with open(args.summary) as f:
    grid = json.load(f)["runs"]
  name = json.load(open(args.summary))["config"]["dataset"]["name"]
  table = markdown_table(summarize(grid, reference=args.reference), name, parse_columns(args.columns))
  if args.out:
    with open(args.out, "w") as f:
      f.write(table + "\n")
  else:
    print(table)


if __name__ == "__main__":
  main()
