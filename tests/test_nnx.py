"""Linen and NNX models in the program, and a user's model by reference (``model.name=file.py:factory``).

* the NNX built-ins have the Linen ones' parameter paths, counts and outputs (eval and train mode, BatchNorm updates)
  when loaded with the same weights;
* the NNX adapter: dropout masks are a function of the key (RNG streams are not state), eval is deterministic, list
  attributes give string keys, equal architectures give equal adapters (one compilation for a grid);
* each bad reference (missing module, file or factory, not callable, returns something else, a keyword it does not
  take) exits 2 naming it, before any data is loaded;
* ``model.kwargs`` belong to the chosen model; ``--print-config`` and ``--help`` show every key;
* a user's Linen factory and a user's NNX factory (BatchNorm + Dropout) train 2 epochs through the CLI; the NNX run
  (with AdaFocal's state and mixup) resumes bit for bit after ``kill -9``; an edited model file is another run;
* an NNX model loaded with the Linen model's initial weights trains to the Linen run's parameters (jit), and the
  NNX model under pmap on 8 devices gives the jit parameters (GenCE and BatchNorm over the global batch).
"""

import hashlib
import json
import math
import os
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gence_jax import cli, models, train
from gence_jax.data import load_dataset
from gence_jax.models import nnx_models
from test_train import (
  FAST,
  REPO,
  TIMEOUT,
  assert_trees_close,
  assert_trees_equal,
  ckpt_steps,
  cli_command,
  final_state,
  leaves,
  make_config,
  subprocess_env,
)

USER_MODELS = '''
"""A user's models, Linen and NNX, for gence_jax's tests."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx


class LinenNet(nn.Module):
  num_classes: int
  width: int = 32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Dense(self.width)(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_classes)(x)


def linen_factory(num_classes, width=32, **kwargs):
  return LinenNet(num_classes, width)


def linen_cnn(num_classes, input_shape, features=(32, 64), hidden=128):
  from gence_jax.models import CNN

  return CNN(num_classes, features=features, hidden=hidden)


class NNXNet(nnx.Module):
  def __init__(self, num_classes, input_shape, *, hidden, dropout_rate, rngs):
    layers = [nnx.Linear(math.prod(input_shape), hidden, rngs=rngs), nnx.Linear(hidden, num_classes, rngs=rngs)]
    self.layers = nnx.List(layers)
    self.bn = nnx.BatchNorm(hidden, momentum=0.9, rngs=rngs)
    self.drop = nnx.Dropout(dropout_rate, rngs=rngs)

  def __call__(self, x):
    x = self.drop(nnx.relu(self.bn(self.layers[0](x.reshape(x.shape[0], -1)))))
    return self.layers[1](x)


def nnx_factory(num_classes, input_shape, rngs, hidden=16, dropout_rate=0.2):
  return NNXNet(num_classes, input_shape, hidden=hidden, dropout_rate=dropout_rate, rngs=rngs)


def nnx_cnn_with_linen_init(num_classes, input_shape, rngs, **kwargs):
  """gence_jax's NNX CNN holding the weights the program gives the Linen CNN for seed 0."""
  from gence_jax.models import CNN, nnx_models

  model = nnx_models.CNN(num_classes, input_shape, rngs=rngs, **kwargs)
  key = jax.random.split(jax.random.PRNGKey(0))[0]
  sample = jnp.zeros((1, *input_shape), jnp.float32)
  variables = CNN(num_classes, **kwargs).init({"params": key, "dropout": key}, sample, train=False)
  return nnx_models.load_linen_variables(model, variables)


def returns_a_dict(**kwargs):
  return {"not": "a module"}


NOT_CALLABLE = 3
'''


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("user") / "user_models.py"
  path.write_text(USER_MODELS)
  return str(path)


# --------------------------------------------------------------------------------------------------------------
# NNX built-ins == Linen built-ins
# --------------------------------------------------------------------------------------------------------------

# the counts documented in gence_jax/models/resnet.py and wide_resnet.py (10 classes, CIFAR-sized inputs)
DOCUMENTED_COUNTS = {"resnet18": 11_173_962, "resnet34": 21_282_122, "resnet50": 23_520_842, "wrn28_10": 36_479_194}


def _count(tree) -> int:
  return sum(math.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("name", sorted(DOCUMENTED_COUNTS))
def test_nnx_builtin_parameter_counts(name):
  model = nnx.eval_shape(lambda: nnx_models.get_nnx_model(name, 10, (32, 32, 3), rngs=nnx.Rngs(0)))
  assert _count(nnx.state(model, nnx.Param)) == DOCUMENTED_COUNTS[name]


TINY = [
  ("mlp", {"hidden": (7, 5), "initializer": "torch_default"}, (4, 4)),
  ("cnn", {"features": (4, 6), "hidden": 8}, (9, 7, 1)),  # odd sizes: SAME pooling rounds up
  ("resnet18", {"width": 4, "stage_sizes": (1, 1)}, (8, 8, 3)),  # projection and identity shortcuts
  ("resnet50", {"width": 2, "stem": "imagenet", "stage_sizes": (1, 1)}, (16, 16, 3)),
  ("wide_resnet", {"depth": 10, "widen_factor": 1}, (8, 8, 3)),
]


@pytest.mark.parametrize("name, kwargs, shape", TINY, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(TINY)])
def test_nnx_builtins_match_linen(name, kwargs, shape):
  """The NNX model holding the Linen model's weights: the same outputs in eval and train mode and the same
  BatchNorm updates (the NNX side through the program's adapter)."""
  linen = models.get_model(name, 5, **kwargs)
  variables = _random_variables(linen, shape)
  model = nnx.eval_shape(lambda: nnx_models.get_nnx_model(name, 5, shape, rngs=nnx.Rngs(1), **kwargs))
  # same paths and shapes, so the same parameter count
  assert jax.tree_util.tree_map(np.shape, nnx.to_pure_dict(nnx.state(model, nnx.Param))) == jax.tree_util.tree_map(
    np.shape, variables["params"]
  )
  adapter = models.as_adapter(nnx_models.load_linen_variables(model, variables))
  params, stats = adapter.init()
  x = jax.random.normal(jax.random.PRNGKey(2), (3, *shape))

  @jax.jit  # one compilation for both models
  def forward(params, stats, variables):
    got = adapter.apply(params, stats, x, train=False)[0], *adapter.apply(params, stats, x, train=True)
    out, updates = linen.apply(variables, x, train=True, mutable=["batch_stats"])
    return got, (linen.apply(variables, x, train=False), out, updates.get("batch_stats", {}))

  got, want = forward(params, stats, variables)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)  # eval
  np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-6)  # train
  assert bool(got[2]) == (name != "mlp")
  assert_trees_close(got[2], want[2], rtol=1e-6, atol=1e-7)


def _random_variables(linen, shape):
  """Random weights and running statistics of the Linen model's shapes (no initialiser run, nothing compiled)."""
  sample = jnp.zeros((1, *shape), jnp.float32)
  abstract = jax.eval_shape(lambda: linen.init(jax.random.PRNGKey(0), sample, train=False))
  rng = np.random.default_rng(0)

  def draw(path, a):
    name = jax.tree_util.keystr(path)
    if "'var'" in name:
      return rng.uniform(0.5, 1.5, a.shape).astype(np.float32)
    fan_in = math.prod(a.shape[:-1]) if len(a.shape) > 1 else 10
    return (rng.normal(size=a.shape) / math.sqrt(fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, dict(abstract))


def test_load_linen_variables_refuses_another_architecture():
  variables = _random_variables(models.get_model("mlp", 5, hidden=(8,)), (6,))
  with pytest.raises(ValueError, match="shape"):
    nnx_models.load_linen_variables(_abstract_mlp(hidden=(7,)), variables)
  with pytest.raises(ValueError, match="params differ"):
    nnx_models.load_linen_variables(_abstract_mlp(hidden=(8, 8)), variables)


def _abstract_mlp(**kwargs):
  return nnx.eval_shape(lambda: nnx_models.get_nnx_model("mlp", 5, (6,), rngs=nnx.Rngs(0), **kwargs))


# --------------------------------------------------------------------------------------------------------------
# the NNX adapter
# --------------------------------------------------------------------------------------------------------------


class _Net(nnx.Module):
  def __init__(self, rngs, rate=0.5):
    self.layers = nnx.List([nnx.Linear(4, 32, rngs=rngs), nnx.Linear(32, 3, rngs=rngs)])
    self.bn = nnx.BatchNorm(32, rngs=rngs)
    self.drop1, self.drop2 = nnx.Dropout(rate, rngs=rngs), nnx.Dropout(rate, rngs=rngs)

  def __call__(self, x):
    return self.layers[1](self.drop2(self.drop1(self.bn(self.layers[0](x)))))


def test_nnx_adapter_state_and_dropout_keys():
  adapter = models.as_adapter(_Net(nnx.Rngs(0)))
  params, stats = adapter.init()
  assert set(params) == {"bn", "layers"} and set(params["layers"]) == {"0", "1"}  # list indices as strings
  assert set(stats) == {"bn"} and set(stats["bn"]) == {"mean", "var"}  # RNG streams are not state
  x = jax.random.normal(jax.random.PRNGKey(3), (6, 4))

  @jax.jit
  def run(params, stats, key):
    logits, new_stats = adapter.apply(params, stats, x, train=True, key=key)
    model = nnx.merge(
      adapter._graph_train, adapter._params.from_dict(params), adapter._fresh_rngs(key), adapter._rest.from_dict(stats)
    )
    ones = jnp.ones((4, 32))
    return logits, new_stats, adapter.apply(params, stats, x, train=False)[0], (model.drop1(ones), model.drop2(ones))

  a, new_stats, eval_a, masks = run(params, stats, jax.random.PRNGKey(1))
  b, _, eval_b, _ = run(params, stats, jax.random.PRNGKey(1))
  c, _, eval_c, _ = run(params, stats, jax.random.PRNGKey(2))
  np.testing.assert_array_equal(a, b)  # a function of the key only
  assert not np.allclose(a, c)
  np.testing.assert_array_equal(eval_a, eval_c)  # eval: running averages, no dropout
  assert not np.array_equal(*masks)  # the two dropout layers draw different masks from one step key
  # BatchNorm's update by hand: momentum 0.99 (nnx default) towards the batch mean of the first layer's output
  h = x @ params["layers"]["0"]["kernel"] + params["layers"]["0"]["bias"]
  np.testing.assert_allclose(new_stats["bn"]["mean"], 0.01 * np.mean(h, axis=0), rtol=1e-5, atol=1e-7)


def test_module_reference_and_nnx_prefix_build_the_same_model():
  kwargs = {"features": (3,), "hidden": 8}
  key = jax.random.PRNGKey(4)
  by_name = models.build_model("nnx:cnn", 10, (8, 8, 1), key=key, kwargs=kwargs)
  by_ref = models.build_model("gence_jax.models.nnx_models:cnn", 10, (8, 8, 1), key=key, kwargs=kwargs)
  assert isinstance(by_ref, models.NNXAdapter) and by_ref == by_name
  assert_trees_equal(by_ref.init(), by_name.init())
  step_copy = by_ref.computation()
  assert step_copy == by_ref and step_copy._initial is None  # what a cached compiled step keeps
  ident = train.identity.model_fingerprint("gence_jax.models.nnx_models:cnn")
  assert ident["file"] == nnx_models.__file__
  assert ident["sha256"] == hashlib.sha256(open(nnx_models.__file__, "rb").read()).hexdigest()


def test_adapters_compare_by_architecture():
  a, b = models.as_adapter(_Net(nnx.Rngs(0))), models.as_adapter(_Net(nnx.Rngs(1)))
  assert a == b and hash(a) == hash(b)  # different weights, one computation: compiled steps are shared
  assert a != models.as_adapter(_Net(nnx.Rngs(0), rate=0.1))
  lin = models.as_adapter(models.get_model("mlp", 3, hidden=(4,)))
  assert lin == models.as_adapter(models.get_model("mlp", 3, hidden=(4,))) and lin != a


# --------------------------------------------------------------------------------------------------------------
# references, kwargs, --print-config, --help
# --------------------------------------------------------------------------------------------------------------


def _bad_references(user_file, tmp):
  return [
    ("no_such_module_xyz:make", "'model.name'", "no_such_module_xyz"),
    (f"{tmp}/missing.py:make", "'model.name'", "missing.py"),
    (f"{user_file}:no_factory", "'model.name'", "no_factory"),
    (f"{user_file}:NOT_CALLABLE", "'model.name'", "NOT_CALLABLE"),
    (f"{user_file}:returns_a_dict", "'model.name'", "returns_a_dict"),
    ("gence_jax.models:no_such_factory", "'model.name'", "no_such_factory"),
  ]


def test_bad_references_exit_2_before_loading_data(user_file, tmp_path, capsys, monkeypatch):
  from gence_jax.train import loop

  def no_data(*args, **kwargs):
    raise AssertionError("data loaded before the model reference was checked")

  monkeypatch.setattr(loop, "load_data", no_data)
  cases = _bad_references(user_file, tmp_path)
  cases.append((f"{user_file}:nnx_factory", "'model.kwargs'", "no_such_kwarg"))
  for ref, key, named in cases:
    extra = ["model.kwargs.no_such_kwarg=1"] if named == "no_such_kwarg" else []
    wd = tmp_path / "run"
    args = ["train", "--workdir", str(wd), "--set", f"model.name={ref}", "--set", "train.progress=False"]
    for o in extra:
      args += ["--set", o]
    assert cli.main(args) == 2, ref
    err = capsys.readouterr().err
    assert err.startswith("gence-jax: error: config key " + key) and named in err and err.count("\n") == 1, err
    assert not wd.exists() or not os.listdir(wd)


def test_model_kwargs_belong_to_the_chosen_model(capsys):
  config = train.apply_overrides(train.load_config(None), ["model.name=resnet18"])
  train.validate(config)  # not: ResNet.__init__() got an unexpected keyword argument 'hidden'
  assert dict(config.model.kwargs) == {}
  config = train.apply_overrides(train.load_config(None), ["model.kwargs.initializer=he_normal"])
  train.validate(config)
  assert dict(config.model.kwargs) == {"hidden": (256,), "initializer": "he_normal"}  # defaults, overrides on top
  config = train.apply_overrides(train.load_config(None), ["model.name=nnx:mlp", "model.kwargs.hidden=(8,)"])
  train.validate(config)
  assert dict(config.model.kwargs) == {"hidden": (8,)}

  assert cli.main(["train", "--print-config", "--set", "model.name=cnn", "--set", "loss.name=gence"]) == 0
  lines = capsys.readouterr().out.splitlines()
  printed = dict(line.split("=", 1) for line in lines)
  assert set(printed) == _flat_keys(train.default_config().to_dict())  # every key (model.kwargs: empty for the CNN)
  assert printed["model.name"] == "'cnn'" and printed["loss.name"] == "'gence'" and printed["model.kwargs"] == "{}"
  # every printed line is a valid --set: together they reproduce the config
  again = train.apply_overrides(train.load_config(None), lines)
  train.validate(again)
  want = train.apply_overrides(train.load_config(None), ["model.name=cnn", "loss.name=gence"])
  train.validate(want)
  assert again.to_dict() == want.to_dict()


def _flat_keys(d, prefix=""):
  out = set()
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out |= _flat_keys(v, f"{prefix}{k}.")
    else:
      out.add(f"{prefix}{k}")
  return out


def test_help_shows_the_defaults(capsys):
  with pytest.raises(SystemExit) as info:
    cli.main(["train", "--help"])
  assert info.value.code == 0
  out = capsys.readouterr().out
  for line in ("train.epochs=20", "model.name='mlp'", "optimizer.learning_rate=0.001", "--print-config"):
    assert line in out, line


# --------------------------------------------------------------------------------------------------------------
# through the CLI: a user's Linen factory; NNX == Linen; NNX pmap == jit; an edited model file
# --------------------------------------------------------------------------------------------------------------

CNN_KWARGS = "model.kwargs={'features': (4,), 'hidden': 16}"
COMMON = [
  *FAST,
  "train.epochs=2",
  "optimizer.name=sgd",
  "optimizer.learning_rate=0.1",
  "loss.name=gence",
  "dataset.as_images=True",
  CNN_KWARGS,
]


def _cli_train(workdir, sets):
  args = ["train", "--workdir", str(workdir)] + [a for s in sets for a in ("--set", s)]
  assert cli.main(args) == 0


@pytest.fixture(scope="module")
def cli_runs(user_file, tmp_path_factory):
  """2 epochs each through the CLI (this process, 8 devices): a user's Linen factory (gence_jax's CNN), and the NNX
  CNN holding the Linen CNN's initial weights under jit and under pmap. Returns their work directories."""
  tmp = tmp_path_factory.mktemp("cli_runs")
  noise = tmp / "noise.npz"  # an OOD set for the NNX run: uniform noise in the digits' pixel range
  np.savez(noise, x=np.random.default_rng(0).uniform(0, 16, (64, 8, 8, 1)).astype(np.float32))
  nnx_ref = f"model.name={user_file}:nnx_cnn_with_linen_init"
  runs = {
    "linen": [f"model.name={user_file}:linen_cnn"],
    "nnx_jit": [nnx_ref, f"ood.datasets={noise}"],
    "nnx_pmap": [nnx_ref, "train.mode=pmap"],
  }
  for name, extra in runs.items():
    _cli_train(tmp / name, [*COMMON, *extra])
  return {name: tmp / name for name in runs}


@pytest.mark.slow
def test_user_linen_factory_trains_through_the_cli(cli_runs, user_file):
  wd = cli_runs["linen"]
  results = json.load(open(wd / "results.json"))
  assert results["steps"] == 2 * load_dataset("digits", seed=0).steps_per_epoch(64) and results["devices"] == 8
  assert results["test"]["raw"]["accuracy"] > 0.8
  assert leaves(final_state(str(wd))["params"])["['conv1']['kernel']"].shape == (3, 3, 1, 4)
  digest = hashlib.sha256(open(user_file, "rb").read()).hexdigest()
  ident = json.load(open(wd / "run.json"))
  assert ident["model"] == {"reference": f"{user_file}:linen_cnn", "file": user_file, "sha256": digest}


@pytest.mark.slow
def test_nnx_model_trains_as_the_linen_model(cli_runs):
  a, b = final_state(str(cli_runs["nnx_jit"])), final_state(str(cli_runs["linen"]))
  assert int(a["step"]) == int(b["step"]) > 0
  for part in ("params", "batch_stats", "opt_state"):
    assert_trees_close(a[part], b[part], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_nnx_pmap_matches_jit(cli_runs):
  a, b = final_state(str(cli_runs["nnx_pmap"])), final_state(str(cli_runs["nnx_jit"]))
  assert leaves(a["batch_stats"])
  for part in ("params", "batch_stats", "opt_state"):
    assert_trees_close(a[part], b[part])
  pmap, jit = (json.load(open(cli_runs[n] / "results.json")) for n in ("nnx_pmap", "nnx_jit"))
  assert pmap["test"]["raw"]["accuracy"] == pytest.approx(jit["test"]["raw"]["accuracy"], abs=0.01)
  # OOD detection with the NNX model (2 epochs of a tiny CNN): every score tells noise from digits better than chance
  (entry,) = jit["ood"]["datasets"].values()
  assert entry["num_examples"] == 64
  for score in jit["ood"]["scores"]:
    assert 0.6 < entry[score]["auroc"] <= 1.0, (score, entry[score])


def test_an_edited_model_file_is_another_run(tmp_path, capsys):
  path = tmp_path / "model.py"
  path.write_text(USER_MODELS)
  sets = [*FAST, f"model.name={path}:linen_factory"]
  config = make_config(f"model.name={path}:linen_factory")
  train.validate(config)
  from gence_jax.train import identity

  wd = tmp_path / "run"
  wd.mkdir()
  identity.write_identity(str(wd), identity.run_identity(config))  # as a run of this file left it
  path.write_text(USER_MODELS + "\n# edited\n")
  args = ["train", "--workdir", str(wd)] + [a for s in sets for a in ("--set", s)]
  assert cli.main(args) == 4  # refused before anything loads
  assert "model.sha256" in capsys.readouterr().err


RESUME_NNX = [
  "train.epochs=2",
  "train.batch_size=64",
  "train.eval_batch_size=512",
  "train.progress=False",
  "train.checkpoint_every_steps=4",
  "train.keep_checkpoints=3",
  "train.log_every_steps=4",
  "train.eval_every_epochs=100",
  "optimizer.learning_rate=0.01",
  "model.kwargs={'hidden': 16, 'dropout_rate': 0.2}",
  "loss.name=adafocal",
  "train.mix=mixup",
  "calibration.bootstrap_resamples=0",
  "calibration.methods=('ts',)",
  "outputs.reliability_plot=False",
]


@pytest.mark.extended
@pytest.mark.slow
def test_user_nnx_factory_trains_and_resumes_bit_exact_after_sigkill(user_file, tmp_path):
  """A user's NNX model (BatchNorm, Dropout, a list of layers) given as file.py:factory, with AdaFocal's state and
  mixup: killed with SIGKILL mid-run and resumed, it ends where the uninterrupted 2-epoch CLI run ends."""
  sets = [*RESUME_NNX, f"model.name={user_file}:nnx_factory"]
  run_dir, ref_dir = tmp_path / "killed", tmp_path / "reference"
  with open(tmp_path / "killed.log", "w") as log:
    victim = subprocess.Popen(
      cli_command(run_dir, sets), env=subprocess_env(8), cwd=REPO, stdout=log, stderr=subprocess.STDOUT
    )
    try:
      deadline = time.time() + TIMEOUT
      while not any(s >= 8 for s in ckpt_steps(run_dir)):
        if victim.poll() is not None:
          pytest.fail(f"the run ended (rc {victim.returncode}) early:\n" + open(tmp_path / "killed.log").read()[-3000:])
        if time.time() > deadline:
          pytest.fail("no checkpoint >= 8 within the timeout")
        time.sleep(0.005)
      os.kill(victim.pid, signal.SIGKILL)
      assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
      if victim.poll() is None:
        victim.kill()
        victim.wait()
  killed_at = ckpt_steps(run_dir)
  total = 2 * load_dataset("digits", seed=0).steps_per_epoch(64)
  assert not (run_dir / "results.json").exists() and max(killed_at) < total, (killed_at, "killed too late")

  _cli_train(ref_dir, sets)  # in this process (8 devices, as the killed one)
  _cli_train(run_dir, sets)
  resumed, uninterrupted = (json.load(open(d / "results.json")) for d in (run_dir, ref_dir))
  assert resumed["steps"] == uninterrupted["steps"] == total
  assert 8 <= resumed["resumed_from_step"] < total and uninterrupted["resumed_from_step"] == 0
  a, b = final_state(str(run_dir)), final_state(str(ref_dir))
  assert set(a["params"]) == {"bn", "layers"} and set(a["params"]["layers"]) == {"0", "1"}
  assert set(a["batch_stats"]) == {"bn"} and leaves(a["loss_state"])
  assert_trees_equal(a, b)
  assert resumed["test"]["raw"] == uninterrupted["test"]["raw"]
  assert uninterrupted["test"]["raw"]["accuracy"] > 0.8
