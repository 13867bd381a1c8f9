"""Kept for imports of the metrics' checks by their old name; the checks live in `gence_jax.checks`."""

from __future__ import annotations

from gence_jax.checks import (  # noqa: F401
  PROBS_SUM_ATOL,
  check_labels_where,
  check_logits,
  check_num_bins,
  check_probs,
  is_concrete,
  sum_tolerance,
)
