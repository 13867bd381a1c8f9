"""Shared numerical helpers for the tests (independent of the library)."""

import numpy as np


def central_difference(f, z, eps=1e-6):
  """Float64 central-difference gradient of the scalar function `f` at `z`, one coordinate at a time."""
  z = np.asarray(z, np.float64)
  grad = np.zeros_like(z)
  for idx in np.ndindex(*z.shape):
    zp, zm = z.copy(), z.copy()
    zp[idx] += eps
    zm[idx] -= eps
    grad[idx] = (f(zp) - f(zm)) / (2 * eps)
  return grad
