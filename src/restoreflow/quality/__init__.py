"""Quality of restorations: full-reference metrics, no-reference features, conformal
lower bounds (full and split) on PSNR/SSIM and risk-controlled per-pixel intervals (RCPS).

Pure numpy/scipy/torch core; no Prefect, no storage.
"""

from .conformal import ConformalLowerBound, TrivialLowerBound, calibration_from_dict, flag
from .features import (
    FEATURE_NAMES,
    compute_features,
    feature_vector,
    gradient_magnitude_mean,
    high_frequency_energy,
    measurement_consistency,
    noise_level,
    posterior_spread,
    rca_feature,
)
from .full_conformal import FullConformalBound
from .linear import LinearModel
from .metrics import mse, psnr, psnr_from_mse, ssim
from .quantiles import conformal_lower_quantile, conformal_quantile
from .quantreg import fit_quantile_regression, pinball_loss
from .rcps import (
    Intervals,
    PixelCalibration,
    RiskControlError,
    base_intervals,
    calibrate_lambda,
    hb_pvalue,
    hb_ucb,
    loss_matrix,
    miscoverage,
    pixel_intervals,
    risk_ucb,
)
from .ridge import fit_ridge
from .wsr import wsr_ucb

__all__ = [
    "FEATURE_NAMES",
    "ConformalLowerBound",
    "Intervals",
    "LinearModel",
    "PixelCalibration",
    "RiskControlError",
    "TrivialLowerBound",
    "FullConformalBound",
    "base_intervals",
    "calibrate_lambda",
    "calibration_from_dict",
    "compute_features",
    "conformal_lower_quantile",
    "conformal_quantile",
    "feature_vector",
    "fit_quantile_regression",
    "fit_ridge",
    "flag",
    "gradient_magnitude_mean",
    "hb_pvalue",
    "hb_ucb",
    "high_frequency_energy",
    "loss_matrix",
    "measurement_consistency",
    "miscoverage",
    "mse",
    "noise_level",
    "pinball_loss",
    "pixel_intervals",
    "posterior_spread",
    "psnr",
    "psnr_from_mse",
    "rca_feature",
    "risk_ucb",
    "ssim",
    "wsr_ucb",
]
