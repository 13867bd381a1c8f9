"""Command line: ``gence-jax <command> ...``.

User errors (a bad config or option, bad data, a work directory holding another run or in use, an unreadable
checkpoint, a diverging run, a work directory that cannot be written) print one line ``gence-jax: error: ...`` and
exit with their status (``gence_jax.train.errors.EXIT_STATUS``: 2 config, 3 data, 4 work directory identity or
lock, 5 checkpoint, 6 divergence, 7 work directory write, 8 failed grid cells); ``--debug`` shows the traceback.
Programming errors keep their traceback. Ctrl-C ends a command with one line and exit status 130 (rerun the same
command to resume).
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
    nll = "n/a" if m["nll"] is None else f"{m['nll']:.4f}"  # None: a top-label calibrator has no vector
    sce = "n/a" if m["sce"] is None else f"{100 * m['sce']:.2f}%"
    print(f"test [{stage:3s}] accuracy {100 * m['accuracy']:.2f}%  nll {nll}  ece {100 * m['ece']:.2f}%  sce {sce}")
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


def _slurm_options(args) -> dict:
  """The ``--slurm-*`` options as `gence_jax.train.launch.run_submitit` takes them."""
  from gence_jax.train.specs import parse_assignment

  extra = dict(parse_assignment(item, what="--slurm-extra") for item in args.slurm_extra)
  return {
    "partition": args.slurm_partition,
    "account": args.slurm_account,
    "gpus_per_job": args.slurm_gpus_per_job,
    "cpus_per_job": args.slurm_cpus_per_job,
    "mem_gb": args.slurm_mem_gb,
    "time": args.slurm_time,
    "array_parallelism": args.slurm_array_parallelism,
    "folder": args.slurm_folder,
    "setup": args.slurm_setup,
    "extra": extra,
  }


def _compare(args):
  from gence_jax.train.compare import compare
  from gence_jax.train.errors import ConfigError

  config = _config(args)
  regimes = ["" if r == "clean" else r for r in args.regimes]
  try:
    from gence_jax.train.compare import plan_grid
    from gence_jax.train.grid import parse_shard
    from gence_jax.train.report import parse_columns, selection_groups

    parse_columns(args.columns)
    if args.select is not None:
      selection_groups(args.losses, args.select)
    plan_grid(config, args.workdir, losses=args.losses, seeds=args.seeds, regimes=regimes)
    shard = parse_shard(args.shard) if args.shard else None
    if args.jobs < 1 or (args.devices_per_job is not None and args.devices_per_job < 1):
      raise ValueError(f"--jobs and --devices-per-job must be positive, got {args.jobs} and {args.devices_per_job}")
    launcher_options = _slurm_options(args)
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
    jobs=args.jobs,
    devices_per_job=args.devices_per_job,
    shard=shard,
    launcher=args.launcher,
    launcher_options=launcher_options,
  )


def _calibrate(args):
  from gence_jax.train.posthoc import calibrate_predictions, markdown

  results = calibrate_predictions(
    args.predictions, args.workdir, methods=args.methods, num_bins=args.num_bins, bootstrap=args.bootstrap,
    seed=args.seed,
  )
  print(
    f"{results['num_val']} held-out and {results['num_test']} test examples, {results['num_classes']} classes, "
    f"{results['inputs']} through {results['link']}"
  )
  print(markdown(results))
  for method, summary in results["calibrators"].items():
    if "degenerate" in summary:
      print(f"warning: {method}: {summary['degenerate']}")
  print(f"results: {args.workdir}/calibration.json, calibration.md, reliability_*.png")


def _status(args):
  from gence_jax.train.errors import ConfigError
  from gence_jax.train.grid import status_table

  try:
    print(status_table(args.workdir))
  except FileNotFoundError as e:
    raise ConfigError(str(e)) from e


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
  cmp.add_argument(
    "--jobs",
    type=int,
    default=1,
    help="cells trained at once, each in its own process with its share of the GPUs (or CPU cores); each cell's "
    "output goes to train.log in its folder (default 1: in this process)",
  )
  cmp.add_argument(
    "--devices-per-job",
    type=int,
    default=None,
    help="GPUs per job (CUDA_VISIBLE_DEVICES), or CPU cores per job without GPUs (default: an equal share)",
  )
  cmp.add_argument(
    "--shard",
    default=None,
    metavar="K/N",
    help="train only the K-th (0-based) of N disjoint, stable slices of the grid, e.g. "
    "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT; the process that completes the grid writes the summary",
  )
  cmp.add_argument(
    "--launcher",
    default=None,
    choices=["slurm", "submitit-local"],
    help="submit the cells as one job array through submitit (pip install -e '.[cluster]'), wait, summarise; "
    "submitit-local runs the same jobs as local processes",
  )
  slurm = cmp.add_argument_group("SLURM (with --launcher)")
  slurm.add_argument("--slurm-partition", default=None)
  slurm.add_argument("--slurm-account", default=None)
  slurm.add_argument("--slurm-gpus-per-job", type=int, default=None)
  slurm.add_argument("--slurm-cpus-per-job", type=int, default=None)
  slurm.add_argument("--slurm-mem-gb", type=float, default=None)
  slurm.add_argument("--slurm-time", type=int, default=None, metavar="MINUTES", help="per cell (default 60)")
  slurm.add_argument("--slurm-array-parallelism", type=int, default=None, help="array tasks running at once")
  slurm.add_argument(
    "--slurm-folder", default=None, help="submitit's logs, on a file system the nodes share (default <workdir>/.grid)"
  )
  slurm.add_argument(
    "--slurm-setup", action="append", default=[], metavar="COMMAND", help="a shell line run before each job"
  )
  slurm.add_argument(
    "--slurm-extra", action="append", default=[], metavar="KEY=VALUE", help="any other sbatch option (qos=high)"
  )
  cmp.add_argument("--debug", action="store_true", help="show the traceback of user errors")
  cmp.set_defaults(func=_compare)

  cal = sub.add_parser(
    "calibrate",
    help="fit and score every post-hoc calibrator on predictions saved by any framework (.npz of logits or probs)",
    description="Fits calibrators on the held-out split of a predictions file and scores them on its test split. "
    "Keys: val_logits or val_probs, val_labels, test_logits or test_probs, test_labels, optional link "
    "('softmax' or a loss spec such as mgce:beta=2.0).",
  )
  cal.add_argument("--predictions", required=True, metavar="FILE.npz", help="the saved predictions (see above)")
  cal.add_argument("--workdir", required=True, help="where calibration.json, calibration.md and the diagrams go")
  cal.add_argument("--methods", nargs="+", default=None, help="calibrators to fit (default: every one)")
  cal.add_argument("--num-bins", type=int, default=15, help="bins of the binned metrics (default 15)")
  cal.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the test split (0 = none)")
  cal.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
  cal.add_argument("--debug", action="store_true", help="show the traceback of user errors")
  cal.set_defaults(func=_calibrate)

  st = sub.add_parser("status", help="the state of a compare grid: one row per cell")
  st.add_argument("--workdir", required=True, help="the grid's work directory (as given to compare)")
  st.add_argument("--debug", action="store_true", help="show the traceback of user errors")
  st.set_defaults(func=_status)
  return parser


def exit_status(error: BaseException) -> int | None:
  """The exit status of a user error (see the module docstring); None for a programming error."""
  from gence_jax.train.errors import classify

  kind = classify(error)
  return None if kind is None else kind[1]


def main(argv=None) -> int:
  args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
  try:
    args.func(args)
  except KeyboardInterrupt:
    if args.debug:
      traceback.print_exc()
    print("gence-jax: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
    return 130
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
