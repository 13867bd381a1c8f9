"""Post-hoc calibrators: temperature scaling (by NLL or ECE), ATS, vector/matrix scaling, Dirichlet calibration,
histogram binning, isotonic regression and scaling-binning.

Pure functions: ``fit_*(logits, labels, *, link=jax.nn.softmax, where=None, ...) -> params`` (a pytree whose static
metadata records the link) and ``calibrated_probs(params, logits)`` -> calibrated probabilities (jit-able). The
top-label calibrators (histogram binning and isotonic regression, top-label variant; scaling-binning) output the
pair (the model's unchanged prediction, its calibrated confidence) instead: ``calibrated_top_label(params, logits)``
-> :class:`TopLabel`, which every calibrator answers.
Temperature scaling and ATS also expose calibrated logits (``apply_temperature``, ``apply_ats``). The link is
used when fitting, so the same calibrators serve softmax models and models with another probability link (e.g.
MGCE). One entry point for programs: ``fit(method, logits, labels, link=..., **options) -> Calibrator`` with
``available_methods()``. Recipes and conventions: ``docs/calibration.md``.
"""

from gence_jax.calibration._api import (
  Calibrator,
  apply_calibrator,
  available_methods,
  calibrated_probs,
  calibrated_top_label,
  fit,
  is_top_label,
)
from gence_jax.calibration._common import TopLabel
from gence_jax.calibration._binning import (
  HistogramBinningParams,
  IsotonicParams,
  ScalingBinningParams,
  apply_histogram_binning,
  apply_isotonic,
  apply_scaling_binning,
  fit_histogram_binning,
  fit_isotonic,
  fit_scaling_binning,
)
from gence_jax.calibration._scaling import (
  MatrixScalingParams,
  VectorScalingParams,
  apply_matrix_scaling,
  apply_vector_scaling,
  fit_dirichlet,
  fit_matrix_scaling,
  fit_vector_scaling,
  odir_penalty,
  scaling_objective,
)
from gence_jax.calibration._temperature import (
  DEFAULT_ECE_TEMPERATURES,
  DEFAULT_LOG_T_BOUNDS,
  ATSParams,
  TemperatureParams,
  apply_ats,
  apply_temperature,
  ats_pieces,
  ats_temperatures,
  example_log_gap,
  fit_ats,
  fit_temperature,
  fit_temperature_ece,
  ref_log_gap,
)

__all__ = [
  "ATSParams",
  "Calibrator",
  "DEFAULT_ECE_TEMPERATURES",
  "DEFAULT_LOG_T_BOUNDS",
  "HistogramBinningParams",
  "IsotonicParams",
  "MatrixScalingParams",
  "ScalingBinningParams",
  "TemperatureParams",
  "TopLabel",
  "VectorScalingParams",
  "apply_ats",
  "apply_calibrator",
  "apply_histogram_binning",
  "apply_isotonic",
  "apply_matrix_scaling",
  "apply_scaling_binning",
  "apply_temperature",
  "apply_vector_scaling",
  "ats_pieces",
  "ats_temperatures",
  "available_methods",
  "calibrated_probs",
  "calibrated_top_label",
  "example_log_gap",
  "fit",
  "fit_ats",
  "fit_dirichlet",
  "fit_histogram_binning",
  "fit_isotonic",
  "fit_matrix_scaling",
  "fit_scaling_binning",
  "fit_temperature",
  "fit_temperature_ece",
  "fit_vector_scaling",
  "is_top_label",
  "odir_penalty",
  "ref_log_gap",
  "scaling_objective",
]
