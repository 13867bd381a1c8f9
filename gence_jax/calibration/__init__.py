"""Post-hoc calibrators: temperature scaling (TS) and adaptive piecewise temperature scaling (ATS).

Pure functions: ``fit_*(logits, labels, *, link=jax.nn.softmax, where=None, ...) -> params`` (a pytree) and
``apply_*(params, logits) -> calibrated logits``; ``calibrated_probs(params, logits)`` applies the link. The link is
used when fitting (the NLL is computed on ``link(scaled_logits)``), so the same calibrators serve softmax models and
models with another probability link (e.g. MGCE). Recipes and conventions: ``docs/calibration.md``.
"""

from gence_jax.calibration._temperature import (
  DEFAULT_LOG_T_BOUNDS,
  ATSParams,
  TemperatureParams,
  apply_ats,
  apply_calibrator,
  apply_temperature,
  ats_pieces,
  calibrated_probs,
  fit_ats,
  fit_temperature,
)

__all__ = [
  "ATSParams",
  "DEFAULT_LOG_T_BOUNDS",
  "TemperatureParams",
  "apply_ats",
  "apply_calibrator",
  "apply_temperature",
  "ats_pieces",
  "calibrated_probs",
  "fit_ats",
  "fit_temperature",
]
