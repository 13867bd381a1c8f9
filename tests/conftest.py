"""Test configuration: 8 fake CPU devices for the sharding / pmap / shard_map tests.

XLA reads the flag when the backend starts, so it is set before anything imports jax.
"""

import os

import pytest

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# One persistent XLA compilation cache for the whole run: the test workers and the processes the tests start
# (resume after kill -9, multi-host, notebooks) compile the same programs; the cache key is the program itself, so a
# changed function never hits an old entry.
_CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "jax-cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def pytest_collection_modifyitems(config, items):
  """The tests marked ``slow`` first (a stable sort): the test workers start on them and finish together, instead of
  one worker running a long end-to-end test at the end while the other waits."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def replicas(tmp_path_factory):
  """Small replicas of the release layouts (tests/_replicas.py), written once per test process and shared by the
  streaming, pretrained-weights and config tests: ``clothing1m`` (40 / 14 / 14 images, 14 classes), ``webvision``
  (104 listed, 100 kept in 50 classes; 51 validation rows, 50 kept), ``imagenet_val`` (one image per class),
  ``medmnist`` (a PathMNIST-style ``.npz``: 64 / 14 / 14 RGB 28x28 images, 9 classes). Their evaluation splits have
  the same sizes per class count, so the runs on them compile each metric once."""
  import _replicas as R

  root = tmp_path_factory.mktemp("releases")
  out = {
    "clothing1m": str(root / "c1m"),
    "webvision": str(root / "wv"),
    "imagenet_val": str(root / "inv"),
    "medmnist": str(root / "pathmnist.npz"),
  }
  out["clothing1m_rows"] = R.make_clothing1m(out["clothing1m"])
  out["webvision_rows"] = R.make_webvision(out["webvision"])
  R.make_imagenet_val(out["imagenet_val"])
  R.make_medmnist(out["medmnist"], n=(64, 14, 14))
  return out
