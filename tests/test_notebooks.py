"""Execute the example notebooks headless and check a few of their results.

Needs the ``nbclient``, ``nbformat`` and ``ipykernel`` packages (skipped otherwise). The kernel is the Python running
the tests (a kernel spec named after ``sys.executable`` is written to a temporary folder), so the notebooks see the
same installed ``gence_jax``.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from jupyter_client.kernelspec import KernelSpecManager  # installed with nbclient
from jupyter_client.manager import KernelManager

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
KERNEL_NAME = "gence-jax-test-python3"
TIMEOUT_S = 300
MARKER = "__NOTEBOOK_RESULT__"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
  """A kernel spec running ``sys.executable``, and an environment without the test suite's 8 fake devices."""
  root = tmp_path_factory.mktemp("kernels")
  spec_dir = root / "kernels" / KERNEL_NAME
  spec_dir.mkdir(parents=True)
  spec = {
    "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
    "display_name": "gence_jax tests",
    "language": "python",
  }
  (spec_dir / "kernel.json").write_text(json.dumps(spec))
  env = dict(os.environ)
  flags = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f)
  env["XLA_FLAGS"] = flags
  env["JAX_PLATFORMS"] = "cpu"
  env["MPLBACKEND"] = "Agg"
  env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
  ksm = KernelSpecManager(kernel_dirs=[str(root / "kernels")])
  return ksm, env


def _run(name: str, result_expr: str, kernel_env, tmp_path) -> tuple[dict, nbformat.NotebookNode, float]:
  """Execute ``notebooks/<name>.ipynb`` plus one extra cell printing ``result_expr`` as JSON; return it."""
  ksm, env = kernel_env
  path = NOTEBOOKS / f"{name}.ipynb"
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  # Stored notebooks carry no outputs.
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, f"{name}: outputs stored in a cell"
  nb.cells.append(nbformat.v4.new_code_cell(f"import json as _json\nprint({MARKER!r} + _json.dumps({result_expr}))"))
  km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)
  client = nbclient.NotebookClient(
    nb,
    km=km,
    timeout=TIMEOUT_S,
    kernel_name=KERNEL_NAME,
    resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory: files go to a temp dir
    allow_errors=False,
  )
  t = time.perf_counter()
  client.execute(env=env)
  elapsed = time.perf_counter() - t
  text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
  line = next(ln for ln in text.splitlines() if ln.startswith(MARKER))
  return json.loads(line[len(MARKER) :]), nb, elapsed


def _has_png(nb) -> bool:
  return any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.extended
@pytest.mark.slow
def test_quickstart_notebook(kernel_env, tmp_path):
  summary, nb, elapsed = _run("quickstart", "SUMMARY", kernel_env, tmp_path)
  assert set(summary) == {"cross_entropy", "gence", "mgce beta=2"}
  for name, m in summary.items():
    assert m["accuracy"] > 0.8, (name, m)
    assert 0.0 < m["nll"] < 1.0, (name, m)
    assert 0.0 <= m["ece"] < 0.2, (name, m)
  assert _has_png(nb), "no reliability diagram displayed"
  assert elapsed < TIMEOUT_S


@pytest.mark.extended
@pytest.mark.slow
def test_calibration_notebook(kernel_env, tmp_path):
  result, nb, elapsed = _run("calibration", "dict(table=TABLE, ood=OOD)", kernel_env, tmp_path)
  table, ood = result["table"], result["ood"]
  assert set(table) == {"uncalibrated", "TS", "ATS"}
  assert table["uncalibrated"]["accuracy"] > 0.8
  for name in ("TS", "ATS"):  # a positive temperature never changes the argmax
    assert table[name]["accuracy"] == pytest.approx(table["uncalibrated"]["accuracy"])
    for k in ("nll", "ece", "sce", "adaptive_ece", "classwise_ece", "brier"):
      assert 0.0 <= table[name][k] < 1.0, (name, k, table[name])
  assert len(ood) == 9
  for key, row in ood.items():
    assert 0.0 <= row["auroc"] <= 1.0 and 0.0 <= row["aupr"] <= 1.0 and 0.0 <= row["fpr95"] <= 1.0, (key, row)
  # Pixels shuffled across images (each pixel's marginal kept) are easy to tell from digits with every score.
  assert min(ood[f"across/{s}"]["auroc"] for s in ("max_prob", "entropy", "energy")) > 0.8, ood
  assert _has_png(nb), "no reliability diagram displayed"
  assert elapsed < TIMEOUT_S


@pytest.mark.extended
@pytest.mark.slow
def test_nnx_notebook(kernel_env, tmp_path):
  result, nb, elapsed = _run("nnx", "dict(summary=SUMMARY, program=PROGRAM)", kernel_env, tmp_path)
  summary, program = result["summary"], result["program"]
  assert set(summary) == {"cross_entropy", "gence", "mgce beta=2"}
  for name, stages in summary.items():  # the hand-written nnx.jit loop, read through each loss's link
    assert set(stages) == {"raw", "ts"}
    assert stages["raw"]["accuracy"] > 0.8, (name, stages)
    for stage, m in stages.items():
      assert 0.0 < m["nll"] < 1.0 and 0.0 <= m["ece"] < 0.2, (name, stage, m)
    assert stages["ts"]["accuracy"] == pytest.approx(stages["raw"]["accuracy"])  # TS never changes the argmax
  assert program["model"] == "digits_nnx.py:make_model"  # the same model, trained by the program
  assert program["raw"]["accuracy"] > 0.8 and program["ts"]["accuracy"] == pytest.approx(program["raw"]["accuracy"])
  assert (tmp_path / "runs" / "nnx_gence" / "run.json").exists()
  assert json.load(open(tmp_path / "runs" / "nnx_gence" / "run.json"))["model"]["sha256"]
  assert elapsed < TIMEOUT_S
