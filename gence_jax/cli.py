"""Command line: ``gence-jax <command> ...``."""

from __future__ import annotations

import argparse
import sys


def _train(args):
  from gence_jax import train

  config = train.apply_overrides(train.load_config(args.config), args.set)
  train.validate(config)
  results = train.train_and_evaluate(config, args.workdir)
  test = results["test"]
  for stage in ("raw", "ts", "ats"):
    m = test[stage]
    print(
      f"test [{stage:3s}] accuracy {100 * m['accuracy']:.2f}%  nll {m['nll']:.4f}  ece {100 * m['ece']:.2f}%  "
      f"sce {100 * m['sce']:.2f}%"
    )
  if "mgce_bound" in results:
    b = results["mgce_bound"]
    print(f"MGCE objective (error bound, Remark 1) {b['objective']:.4f}  vs test error {b['test_error']:.4f}")
  print(f"selected step {results['selected'].get('step')} by {results['selected']['by']}")
  for line in ood_lines(results):
    print(line)
  print(f"results: {args.workdir}/results.json")


def ood_lines(results: dict) -> list[str]:
  """One line per (OOD dataset, score): AUROC, AUPR-In, AUPR-Out, FPR at 95% TPR in % (in-distribution positive)."""
  if "ood" not in results:
    return []
  n_in = results["ood"]["in_distribution"]["num_examples"]
  lines = []
  for name, entry in results["ood"]["datasets"].items():
    for score in results["ood"]["scores"]:
      m = entry[score]
      lines.append(
        f"ood [{name} ({entry['num_examples']}) vs test ({n_in})] {score:8s} auroc {100 * m['auroc']:.2f}%  "
        f"aupr-in {100 * m['aupr_in']:.2f}%  aupr-out {100 * m['aupr_out']:.2f}%  fpr95 {100 * m['fpr95']:.2f}%"
      )
  return lines


DEFAULT_COMPARE_LOSSES = ["cross_entropy", "generalized_ce:q=0.7", "focal:gamma=2.0", "gence", "mgce:beta=2.0"]


def _compare(args):
  from gence_jax import train
  from gence_jax.train.compare import compare

  config = train.apply_overrides(train.load_config(args.config), args.set)
  regimes = ["" if r == "clean" else r for r in args.regimes]
  compare(
    config,
    args.workdir,
    losses=args.losses,
    seeds=args.seeds,
    regimes=regimes,
    select=args.select,
    columns=args.columns,
  )


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="gence-jax", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  tr = sub.add_parser("train", help="train one configuration (any loss, model, data source, regime, seed)")
  tr.add_argument("--config", default=None, help="Python config file with get_config() (default: built-in)")
  tr.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, results.json, plots")
  tr.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="override a config field, e.g. --set loss.name=mgce --set loss.hparams.beta=2.0",
  )
  tr.set_defaults(func=_train)

  cmp = sub.add_parser("compare", help="grid of losses x regimes x seeds; mean +/- std table (Markdown + JSON)")
  cmp.add_argument("--config", default=None, help="base config file (default: built-in digits MLP)")
  cmp.add_argument("--workdir", default="runs/compare")
  cmp.add_argument(
    "--losses",
    nargs="+",
    default=DEFAULT_COMPARE_LOSSES,
    help="loss specs name[:hparam=value;...], e.g. mgce:beta=2.0 lq:q=0.7",
  )
  cmp.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  cmp.add_argument(
    "--regimes",
    nargs="+",
    default=["clean", "symmetric:0.4"],
    help="'clean' or a regime spec such as symmetric:0.4, longtail:exp:10, small:20",
  )
  cmp.add_argument(
    "--select",
    nargs="*",
    default=None,
    metavar="LOSS",
    help="hyper-parameter selection on validation: specs of the same loss (mgce:beta=1 mgce:beta=2 ...) form a "
    "group; per regime and seed the spec with the best validation accuracy (ties: lower NLL) is chosen and a row "
    "'<loss> (selected on validation)' added. No names: every loss with two or more specs",
  )
  cmp.add_argument(
    "--columns",
    nargs="+",
    default=None,
    metavar="METRIC[:STAGE]",
    help="table columns, e.g. accuracy sce ece classwise_ece ece:ts ece:ats (stage raw/ts/ats, default raw); "
    "default: accuracy nll ece sce, then nll/ece/sce after TS and ATS",
  )
  cmp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the base config")
  cmp.set_defaults(func=_compare)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
  args.func(args)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
