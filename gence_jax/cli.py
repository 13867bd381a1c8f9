"""Command line: ``gence-jax <command> ...``."""

from __future__ import annotations

import argparse
import sys


def _demo(args):
  from gence_jax import demo

  demo.run(workdir=args.workdir, seeds=tuple(args.seeds), epochs=args.epochs, mgce_beta=args.mgce_beta,
           progress=not args.no_progress)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="gence-jax", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  demo = sub.add_parser("demo", help="CE vs GenCE vs MGCE on the bundled digits data, with calibration")
  demo.add_argument("--workdir", default="runs/demo")
  demo.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  demo.add_argument("--epochs", type=int, default=30)
  demo.add_argument("--mgce-beta", type=float, default=2.0)
  demo.add_argument("--no-progress", action="store_true")
  demo.set_defaults(func=_demo)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
  args.func(args)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
