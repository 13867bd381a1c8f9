"""The lower bounds in pyproject.toml are versions the code runs on.

* Always: the installed versions satisfy the bounds (the suite runs on versions the bounds admit).
* Opt-in (``GENCE_JAX_TEST_FLOORS=1``, needs PyPI access, several minutes): a fresh virtual environment with EXACTLY
  the lower bounds of the runtime dependencies, where a smoke script uses the APIs the package depends on (a sharded
  jit step over a Mesh with ``AxisType``, ``jax.shard_map`` with GenCE's psum, orbax save/restore, a one-epoch
  training run): an API newer than a floor fails here.

    GENCE_JAX_TEST_FLOORS=1 .venv/bin/python -m pytest -q tests/test_dependency_floors.py
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def floors(section: str = "dependencies") -> dict[str, str]:
  """``{distribution: lower bound}`` of the ``[project] dependencies`` list in pyproject.toml."""
  import tomllib

  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
  out = {}
  for req in project[section]:
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)>=([0-9][0-9A-Za-z.]*)", req.strip())
    assert m, f"dependency {req!r} must be written name>=version"
    out[m.group(1)] = m.group(2)
  return out


def _version_tuple(v: str) -> tuple:
  return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.]", v))


def test_installed_versions_satisfy_the_floors():
  for dist, floor in floors().items():
    installed = md.version(dist)
    assert _version_tuple(installed)[: len(_version_tuple(floor))] >= _version_tuple(floor), (dist, installed, floor)


SMOKE = textwrap.dedent(
  """
  import os, tempfile
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
  import jax, jax.numpy as jnp, numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P
  from gence_jax.losses import gence, mgce
  mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  z = jnp.asarray(np.random.default_rng(0).normal(size=(8, 3)), jnp.float32)
  y = jnp.asarray(np.arange(8) % 3)
  full = gence(z, y)
  f = jax.shard_map(lambda a, b: gence(a, b, axis_name="data"), mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P("data"))
  np.testing.assert_allclose(f(z, y), full, rtol=1e-5)
  jax.grad(lambda a: mgce(a, y, beta=1.43).mean())(z)
  from gence_jax import train
  config = train.apply_overrides(train.load_config(None), ["train.epochs=5", "train.progress=False", "model.kwargs.hidden=(32,)"])
  out = train.train_and_evaluate(config, tempfile.mkdtemp())
  assert out["test"]["raw"]["accuracy"] > 0.2  # twice chance: it trained
  print("floors ok")
  """
)


@pytest.mark.skipif(os.environ.get("GENCE_JAX_TEST_FLOORS") != "1", reason="opt-in: GENCE_JAX_TEST_FLOORS=1")
def test_the_floor_versions_run_the_package(tmp_path):
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
  pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
  pins = [f"{dist}=={floor}" for dist, floor in floors().items()]
  subprocess.run(pip + pins, check=True, timeout=1800)
  subprocess.run(pip + ["--no-deps", "-e", ROOT], check=True, timeout=600)
  out = subprocess.run(
    [str(venv / "bin" / "python"), "-c", SMOKE], cwd=str(tmp_path), capture_output=True, text=True, timeout=900
  )
  assert out.returncode == 0 and "floors ok" in out.stdout, out.stderr[-4000:]
