"""Test configuration: 8 fake CPU devices for the sharding / pmap / shard_map tests.

XLA reads the flag when the backend starts, so it is set before anything imports jax.
"""

import os

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
