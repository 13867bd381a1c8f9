"""Command line: ``gence-jax <command> ...``.

User errors (a bad config or option, bad data, a work directory holding another run or in use, an unreadable
checkpoint, a diverging run, a work directory that cannot be written) print one line ``gence-jax: error: ...`` and
exit with their status (``gence_jax.train.errors.EXIT_STATUS``: 2 config, 3 data, 4 work directory identity or
lock, 5 checkpoint, 6 divergence, 7 work directory write); ``--debug`` shows the traceback. Programming errors keep
their traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback


def _train(args):
  from gence_jax import train
  from gence_jax.train.errors import ConfigError

  config = _config(args)
  if args.print_config:
    print("\n".join(config_lines(config)))
    return
  if not args.workdir:
    raise ConfigError("gence-jax train: the argument --workdir is required (or --print-config)")
  results = train.train_and_evaluate(config, args.workdir, overwrite=args.overwrite)
  test = results["test"]
  for stage in ("raw", *config.calibration.methods):  # the calibrators the config fitted
    m = test[stage]
    print(
      f"test [{stage:3s}] accuracy {100 * m['accuracy']:.2f}%  nll {m['nll']:.4f}  ece {100 * m['ece']:.2f}%  "
      f"sce {100 * m['sce']:.2f}%"
    )
  report = results.get("loss_report")
  if report and "objective" in report:
    print(
      f"training objective {report['objective']:.4f} >= error of the randomised rule on the training labels "
      f"{report['train_randomized_error']:.4f} (not a bound on the argmax test error)"
    )
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


def config_lines(config) -> list[str]:
  """Every key of `config` as ``key=value`` (a Python literal, so each line is a valid ``--set``), sorted."""
  out = []

  def walk(node, prefix):
    for key, value in node.items():
      path = f"{prefix}{key}"
      if hasattr(value, "items") and value:
        walk(value, path + ".")
      else:
        out.append(f"{path}={_literal(value)}")

  walk(config.to_dict() if hasattr(config, "to_dict") else config, "")
  return out


def _literal(value) -> str:
  if hasattr(value, "items"):
    return repr(dict(value))
  return repr(tuple(value) if isinstance(value, list) else value)


def _defaults_epilog() -> str:
  from gence_jax.train.config import MODEL_DEFAULTS, default_config

  lines = "\n".join(f"  {line}" for line in config_lines(default_config()))
  per_model = ", ".join(f"{name}: {kwargs}" for name, kwargs in MODEL_DEFAULTS.items())
  return (
    "config keys and their defaults (override with --set KEY=VALUE):\n"
    f"{lines}\n"
    f"model.kwargs defaults per model (under the given entries): {per_model}; other models: their constructor's"
  )


DEFAULT_COMPARE_LOSSES = ["cross_entropy", "generalized_ce:q=0.7", "focal:gamma=2.0", "gence", "mgce:beta=2.0"]


def _config(args):
  """The config file with ``--set`` overrides, validated; any problem is a `ConfigError` naming the key."""
  from gence_jax import train
  from gence_jax.train.errors import ConfigError, ConfigTypeError

  try:
    config = train.apply_overrides(train.load_config(args.config), args.set)
    train.validate(config)
  except TypeError as e:
    raise ConfigTypeError(str(e)) from e
  except (ValueError, FileNotFoundError) as e:
    raise ConfigError(str(e)) from e
  return config


def _compare(args):
  from gence_jax.train.compare import compare
  from gence_jax.train.errors import ConfigError

  config = _config(args)
  regimes = ["" if r == "clean" else r for r in args.regimes]
  try:
    from gence_jax.train.compare import plan_grid
    from gence_jax.train.report import parse_columns, selection_groups

    parse_columns(args.columns)
    if args.select is not None:
      selection_groups(args.losses, args.select)
    plan_grid(config, args.workdir, losses=args.losses, seeds=args.seeds, regimes=regimes)
  except (ValueError, TypeError, FileNotFoundError) as e:
    raise ConfigError(str(e)) from e
  compare(
    config,
    args.workdir,
    losses=args.losses,
    seeds=args.seeds,
    regimes=regimes,
    select=args.select,
    columns=args.columns,
    reference=args.reference,
    selection=args.selection,
    overwrite=args.overwrite,
    train=not args.summarize_only,
  )


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="gence-jax", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  epilog = _defaults_epilog()
  tr = sub.add_parser(
    "train",
    help="train one configuration (any loss, model, data source, regime, seed)",
    epilog=epilog,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  tr.add_argument("--config", default=None, help="Python config file with get_config() (default: built-in)")
  tr.add_argument("--workdir", default=None, help="checkpoints, metrics.jsonl, results.json, plots (required to train)")
  tr.add_argument(
    "--print-config",
    action="store_true",
    help="print the resolved config (every key, with the config file and --set overrides applied) and exit",
  )
  tr.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="override a config field, e.g. --set loss.name=mgce --set loss.hparams.beta=2.0 (keys and defaults below)",
  )
  tr.add_argument("--overwrite", action="store_true", help="move a run of another config in --workdir aside")
  tr.add_argument("--debug", action="store_true", help="show the traceback of user errors")
  tr.set_defaults(func=_train)

  cmp = sub.add_parser(
    "compare",
    help="grid of losses x regimes x seeds; mean +/- std table (Markdown + JSON)",
    epilog=epilog,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
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
  cmp.add_argument(
    "--reference",
    default=None,
    metavar="LOSS",
    help="loss spec every other row is compared with, paired by seed (default: the first of --losses)",
  )
  cmp.add_argument(
    "--selection",
    default="val",
    choices=["val", "last", "clean_val"],
    help="checkpoint each run reports: best on validation (default), last, or best on the clean validation labels "
    "(an oracle; only differs under label noise)",
  )
  cmp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the base config")
  cmp.add_argument("--overwrite", action="store_true", help="move runs of another config in the grid aside")
  cmp.add_argument(
    "--summarize-only",
    action="store_true",
    help="train nothing: summarise the finished runs of the grid (a grid still running or stopped part-way)",
  )
  cmp.add_argument("--debug", action="store_true", help="show the traceback of user errors")
  cmp.set_defaults(func=_compare)
  return parser


def exit_status(error: BaseException) -> int | None:
  """The exit status of a user error (see the module docstring); None for a programming error."""
  from gence_jax.data import DataError
  from gence_jax.train import CheckpointError, TrainingDivergedError
  from gence_jax.train.errors import EXIT_STATUS, UserError

  if isinstance(error, UserError):
    return error.exit_status
  if isinstance(error, DataError):
    return EXIT_STATUS["data"]
  if isinstance(error, CheckpointError):
    return EXIT_STATUS["checkpoint"]
  if isinstance(error, TrainingDivergedError):
    return EXIT_STATUS["divergence"]
  if isinstance(error, OSError) and error.errno is not None:  # read-only workdir, disk full, missing file
    return EXIT_STATUS["workdir write"]
  return None


def main(argv=None) -> int:
  args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
  try:
    args.func(args)
  except Exception as e:  # noqa: BLE001 - user errors become one line; anything else is re-raised
    status = exit_status(e)
    if status is None:
      raise
    if args.debug:
      traceback.print_exc()
    message = " ".join(str(e).split()) or type(e).__name__
    print(f"gence-jax: error: {message}", file=sys.stderr)
    return status
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
