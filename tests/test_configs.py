"""Every config in ``experiments/configs/`` loads and passes `gence_jax.train.validate` (no data is loaded: TFDS names
are checked by name only), and every ``gence-jax`` command in its docstring parses and plans: each (loss spec, regime)
cell of a ``compare`` command validates, its ``--select`` groups and ``--columns`` are accepted.

The paper-protocol configs are also checked against the protocols they document (experiments/PROTOCOLS.md). The
configs of the real-world releases (WebVision, Clothing-1M, MedMNIST) name placeholder folders and files; here they
are pointed at the replicas of tests/_replicas.py, and each of them also runs end to end on its replica with a small
model.
"""

import glob
import os
import shlex

import pytest

import _replicas as R
from gence_jax import cli, train
from gence_jax.data.spec import parse_dataset_spec
from gence_jax.train.compare import parse_columns, plan_grid, selection_groups

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "experiments", "configs", "*.py")))
SHARED_DATA = "../shared/data/"  # the offline CIFAR-10 subset of this project's machine (see SPEC.md)


def docstring_commands(path):
  """The ``gence-jax ...`` commands of a config's docstring, continuation lines joined."""
  import ast

  doc = ast.get_docstring(ast.parse(open(path).read())) or ""
  commands, current = [], None
  for line in doc.splitlines():
    text = line.strip().strip("`")
    if current is None and text.startswith("gence-jax "):
      current = ""
    if current is not None:
      current += " " + text.rstrip("\\").strip().strip("`")
      if not text.endswith("\\"):
        commands.append(shlex.split(current))
        current = None
  return commands


def needs_missing_shared_data(path):
  text = open(path).read()
  return SHARED_DATA in text and not os.path.isdir(os.path.join(REPO, SHARED_DATA))


def on_replicas(config, replicas, tmp_path):
  """``config`` with its release folder, MedMNIST file, extra test folder and pretrained weights (placeholders under
  the repository root in the configs) pointed at the test's replicas; the weights at an empty file (validation only
  checks that it exists)."""
  spec = parse_dataset_spec(config.dataset.name)
  local = {
    "webvision_mini": f"webvision_mini:{replicas['webvision']}",
    "clothing1m": f"clothing1m:{replicas['clothing1m']}",
    "medmnist": f"medmnist:{spec.tfds_name}:{replicas['medmnist']}",
  }
  config.dataset.name = local.get(spec.kind, config.dataset.name)
  if config.dataset.get("extra_test"):
    config.dataset.extra_test = f"imagenet_val:{replicas['imagenet_val']}"
  if config.model.get("pretrained"):
    weights = tmp_path / "weights.safetensors"
    weights.touch()
    config.model.pretrained = str(weights)
  return config


def test_configs_found():
  names = {os.path.basename(p) for p in CONFIGS}
  assert {
    "mgce_table1_fashion_mnist.py",
    "mgce_table1_cifar10.py",
    "mgce_table1_svhn.py",
    "mgce_table1_cifar100.py",
    "mgce_table3_tabular_mlp.py",
    "gence_cifar10_resnet18.py",
    "gence_cifar100_resnet18.py",
    "mgce_webvision_mini.py",
    "mgce_clothing1m.py",
    "gence_medmnist.py",
  } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_validates_and_its_commands_plan(path, tmp_path, monkeypatch, replicas):
  if needs_missing_shared_data(path):
    pytest.skip(f"{SHARED_DATA} is not on this machine")
  monkeypatch.chdir(REPO)  # relative data paths in configs are relative to the repository root
  train.validate(on_replicas(train.load_config(path), replicas, tmp_path))
  commands = docstring_commands(path)
  assert commands, f"{path}: no gence-jax command in the docstring"
  npz = tmp_path / "data.npz"  # stands in for a user's data file ("path/to/data.npz")
  import numpy as np

  rng = np.random.default_rng(0)
  np.savez(npz, x=rng.normal(size=(100, 5)).astype(np.float32), y=np.arange(100) % 3)
  for argv in commands:
    assert argv[0] == "gence-jax"
    argv = [a.replace("dataset.name=path/to/data.npz", f"dataset.name={npz}") for a in argv[1:]]
    args = cli.build_parser().parse_args(argv)
    assert args.config and os.path.samefile(args.config, path), argv
    config = on_replicas(train.apply_overrides(train.load_config(args.config), args.set), replicas, tmp_path)
    train.validate(config)
    if args.command == "compare":
      regimes = ["" if r == "clean" else r for r in args.regimes]
      plans = plan_grid(config, str(tmp_path / "w"), losses=args.losses, seeds=args.seeds[:1], regimes=regimes)
      assert len(plans) == len(args.losses) * len(regimes)
      if args.select is not None:
        selection_groups(args.losses, args.select)
      parse_columns(args.columns)


def _load(name):
  return train.load_config(os.path.join(REPO, "experiments", "configs", name))


@pytest.mark.parametrize(
  "name, dataset, model",
  [
    ("mgce_table1_fashion_mnist.py", "fashion_mnist", "resnet18"),
    ("mgce_table1_cifar10.py", "cifar10", "resnet18"),
    ("mgce_table1_svhn.py", "svhn_cropped", "resnet18"),
    ("mgce_table1_cifar100.py", "cifar100", "resnet34"),
  ],
)
def test_mgce_table1_protocol(name, dataset, model):
  c = _load(name)
  assert (c.dataset.name, c.model.name) == (dataset, model)
  assert (c.optimizer.name, c.optimizer.learning_rate, c.optimizer.momentum) == ("sgd", 0.01, 0.9)
  assert (c.optimizer.grad_clip_norm, c.train.batch_size, c.train.epochs, c.dataset.val_fraction) == (
    5.0,
    128,
    150,
    0.1,
  )
  assert c.loss.l1 < 0  # MGCE's default lambda = 1e-5
  (compare,) = [a for a in docstring_commands(os.path.join(REPO, "experiments", "configs", name)) if a[1] == "compare"]
  args = cli.build_parser().parse_args(compare[1:])
  betas = [float(s.split("=")[1]) for s in args.losses if s.startswith("mgce:")]
  assert len(betas) == 8 and min(betas) == 1 and max(betas) == 11 and len(set(betas)) == 8
  assert set(args.losses) - {f"mgce:beta={b:g}" for b in betas} == {"generalized_ce:q=0.7", "cross_entropy", "mae"}
  assert args.regimes == ["clean", "symmetric:0.2", "symmetric:0.4"] and args.seeds == [0, 1, 2, 3, 4]
  assert args.select == ["mgce"] and {"accuracy", "sce"} <= set(args.columns)


def test_mgce_table3_and_gence_protocols():
  c = _load("mgce_table3_tabular_mlp.py")
  assert (c.model.name, tuple(c.model.kwargs.hidden), c.optimizer.name, c.optimizer.learning_rate) == (
    "mlp",
    (1024,),
    "sgd",
    0.001,
  )
  # The one Table 3 protocol the Adult and MNIST configs and the write-up use (PyTorch's default initialisation).
  adult = _load("mgce_table3_adult.py")
  assert c.model.kwargs.initializer == "torch_default"
  assert {k: v for k, v in c.to_dict().items() if k != "dataset"} == {
    k: v for k, v in adult.to_dict().items() if k != "dataset"
  }
  for name, dataset in (("gence_cifar10_resnet18.py", "cifar10"), ("gence_cifar100_resnet18.py", "cifar100")):
    c = _load(name)
    assert (c.dataset.name, c.calibration.num_bins, c.ood.datasets) == (dataset, 20, "svhn_cropped")
    (compare,) = docstring_commands(os.path.join(REPO, "experiments", "configs", name))
    args = cli.build_parser().parse_args(compare[1:])
    assert args.losses == ["cross_entropy", "gence", "flsd53", "adafocal", "dual_focal:gamma=2.0"]
    assert args.seeds == list(range(10)) and args.regimes[0] == "clean" and "longtail:exp:100" in args.regimes
    assert {"ece", "classwise_ece", "ece:ts", "ece:ats"} <= set(args.columns)


def test_mgce_real_world_protocols():
  """Appendix G.2 (WebVision mini) and G.3 (Clothing-1M): ResNet-50 (ImageNet stem) at 224x224, SGD momentum 0.9,
  batch 512, MGCE's L1 weight; WebVision 250 epochs of lr 0.4 x 0.97 per epoch with shift + jitter + flip and the
  ILSVRC2012 classes as a second test split; Clothing-1M 10 epochs of lr 0.002 / 10 halfway, from ImageNet weights."""
  from gence_jax.train.optim import make_schedule

  for name in ("mgce_webvision_mini.py", "mgce_clothing1m.py"):
    c = _load(name)
    assert (c.model.name, c.model.kwargs.stem, c.dataset.image_size) == ("resnet50", "imagenet", 224)
    assert (c.optimizer.name, c.optimizer.momentum, c.train.batch_size, c.optimizer.weight_decay) == ("sgd", 0.9, 512, 0)
    assert c.loss.l1 < 0  # MGCE's default lambda = 1e-5
    (compare,) = [a for a in docstring_commands(os.path.join(REPO, "experiments", "configs", name)) if a[1] == "compare"]
    args = cli.build_parser().parse_args(compare[1:])
    assert args.regimes == ["clean"] and args.select == ["mgce"] and "mgce:beta=1.43" in args.losses
  wv = _load("mgce_webvision_mini.py")
  assert wv.dataset.name.startswith("webvision_mini:") and wv.dataset.extra_test.startswith("imagenet_val:")
  assert (wv.train.epochs, wv.optimizer.learning_rate, wv.dataset.augment, wv.model.pretrained) == (250, 0.4, "default", "")
  spe = 116  # floor(0.9 * 66k / 512)
  lr = make_schedule(wv.optimizer, 250 * spe, spe)
  for step, expected in ((0, 0.4), (spe - 1, 0.4), (spe, 0.4 * 0.97), (10 * spe + 5, 0.4 * 0.97**10)):
    assert float(lr(step)) == pytest.approx(expected, rel=1e-6), step  # float32
  from gence_jax.data.stream import DEFAULT_AUGMENT

  assert DEFAULT_AUGMENT["webvision_mini"] == ("shift", "jitter", "flip")
  cl = _load("mgce_clothing1m.py")
  assert cl.dataset.name.startswith("clothing1m:") and cl.model.pretrained.endswith("resnet50-0676ba61.pth")
  assert (cl.train.epochs, cl.optimizer.learning_rate, cl.train.eval_every_epochs) == (10, 0.002, 1)
  spe = 1953  # floor(1M / 512)
  lr = make_schedule(cl.optimizer, 10 * spe, spe)
  assert [round(float(lr(s)), 7) for s in (0, 5 * spe - 1, 5 * spe, 10 * spe - 1)] == [0.002, 0.002, 0.0002, 0.0002]


@pytest.mark.parametrize("name", ["mgce_webvision_mini.py", "mgce_clothing1m.py", "gence_medmnist.py"])
def test_real_world_configs_run_on_replicas(name, replicas, tmp_path):
  """Each new config end to end on its replica, with the default MLP instead of the ResNet (no weights to load), one
  epoch of batch 8 at 28x28 (the shapes of tests/test_stream.py's runs), batches prepared in the training thread."""
  import json

  config = os.path.join(REPO, "experiments", "configs", name)
  local = on_replicas(train.load_config(config), replicas, tmp_path)
  sets = [f"dataset.name={local.dataset.name}", f"dataset.extra_test={local.dataset.extra_test}", "model.name=mlp",
          "model.kwargs={'hidden': (256,)}", "model.pretrained=", "train.epochs=1", *R.SHAPE, "train.data_workers=0",
          "train.steps_per_dispatch=1"]
  if name == "mgce_webvision_mini.py":
    sets.append("dataset.val_fraction=0.5")  # validation, test and ImageNet splits of 50, as tests/test_stream.py's run
  assert R.train(tmp_path / "w", *sets, config=config) == 0
  results = json.load(open(tmp_path / "w" / "results.json"))
  assert results["steps"] == {"mgce_webvision_mini.py": 50, "mgce_clothing1m.py": 40, "gence_medmnist.py": 64}[name] // 8
  assert 0 <= results["test"]["raw"]["accuracy"] <= 1
  if name == "mgce_webvision_mini.py":
    assert list(results["extra_test"]) == [local.dataset.extra_test]


@pytest.mark.extended
@pytest.mark.slow
def test_data_workers_give_the_same_run(tmp_path):
  # train.data_workers (set in the GPU protocol configs) prepares batches in threads: the run must not change.
  import numpy as np

  fast = ["train.epochs=1", "train.batch_size=64", "train.progress=False", "model.kwargs={'hidden': (32,)}"]
  fast += ["calibration.bootstrap_resamples=0", "calibration.methods=('ts',)", "outputs.reliability_plot=False"]
  logits = []
  for workers in (0, 2):
    config = train.apply_overrides(train.load_config(None), [*fast, f"train.data_workers={workers}"])
    train.train_and_evaluate(config, str(tmp_path / f"w{workers}"))
    logits.append(np.load(tmp_path / f"w{workers}" / "predictions.npz")["test_logits"])
  np.testing.assert_array_equal(logits[0], logits[1])
  with pytest.raises(ValueError, match="train.data_workers"):
    train.validate(train.apply_overrides(train.load_config(None), ["train.data_workers=-1"]))
