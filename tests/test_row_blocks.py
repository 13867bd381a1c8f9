"""The CPU row-block path of MGCE (`gence_jax.losses._common.map_row_blocks`) against float64 references.

The test process has 8 fake CPU devices, where the block path is off (blocks would cut across shards), and its
blocks hold 2 MiB of logits, more than any test batch; here both are patched so that small batches run in blocks of
a few rows, padding included.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_mgce import ref_all

from gence_jax.losses import _common, mgce, mgce_probs


@pytest.fixture
def small_blocks(monkeypatch):
  k = 7
  monkeypatch.setattr(_common, "_single_cpu_device", lambda: True)
  monkeypatch.setattr(_common, "CPU_BLOCK_BYTES", 5 * k * 4)  # 5 rows of 7 float32 logits: 23 rows -> 5 blocks + pad
  return k


def _data(n, k, seed, scale=2.0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, k)) * scale).astype(np.float32), rng.integers(0, k, n).astype(np.int32)


def test_map_row_blocks_runs_in_blocks_and_pads(small_blocks):
  k = small_blocks
  x = jnp.arange(23 * k, dtype=jnp.float32).reshape(23, k)
  valid = jnp.arange(23) % 3 != 0

  def fn(xb, vb):
    return (jnp.sum(xb, axis=-1),), jnp.sum(jnp.where(vb[:, None], xb, 0.0), axis=0)

  (rows,), totals = jax.jit(lambda x, v: _common.map_row_blocks(fn, x, v))(x, valid)
  np.testing.assert_allclose(rows, np.asarray(x).sum(1))
  np.testing.assert_allclose(totals, np.asarray(x)[np.asarray(valid)].sum(0))
  text = jax.jit(lambda x, v: _common.map_row_blocks(fn, x, v)).lower(x, valid).as_text()
  assert "while" in text  # the lax.map over blocks


@pytest.mark.parametrize("beta", [1.0, 1.43, 1.5, 2.0, 11.0])
def test_mgce_in_blocks_matches_reference(small_blocks, beta):
  z, y = _data(23, small_blocks, seed=int(beta * 10))
  _, loss, grad, probs = ref_all(z, y, beta)
  np.testing.assert_allclose(mgce(z, y, beta=beta), loss, rtol=1e-5, atol=2e-5)
  np.testing.assert_allclose(mgce_probs(z, beta=beta), probs, atol=2e-5)
  g = jax.grad(lambda z: jnp.sum(mgce(z, y, beta=beta)))(jnp.asarray(z))
  np.testing.assert_allclose(g, grad, atol=2e-5)


@pytest.mark.parametrize("beta", [3.33, 64.0])
def test_mgce_newton_passes_in_blocks_match_reference(small_blocks, beta):
  z, y = _data(23, small_blocks, seed=int(beta * 3))
  _, loss, grad, probs = ref_all(z, y, beta)
  np.testing.assert_allclose(mgce(z, y, beta=beta), loss, rtol=1e-5, atol=2e-5)
  g = jax.grad(lambda z: jnp.sum(mgce(z, y, beta=beta)))(jnp.asarray(z))
  np.testing.assert_allclose(g, grad, atol=2e-5)
