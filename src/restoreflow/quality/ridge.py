"""Ridge regression of a quality value on standardised features, with the ridge chosen by
exact leave-one-out error: the predictor of ``ConformalLowerBound(method="residual")``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .linear import LinearModel, regression_inputs

RIDGE_GRID = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e4)


def fit_ridge(features: Any, targets: Any, ridge: float | str = "auto") -> LinearModel:
    """Ridge regression on standardised features ``z`` (closed form):

        b = argmin (1/n) ||v - vbar - Z b||^2 + ridge ||b||^2
          = (Z^T Z / n + ridge I)^{-1} Z^T (v - vbar) / n,   intercept = vbar

    (the intercept is not penalised). ``ridge="auto"`` picks it from ``RIDGE_GRID`` by
    exact leave-one-out error on these rows (``e_i = r_i / (1 - h_ii)``): with a few dozen
    calibration images and several features, a nearly unpenalised fit chases noise, and
    the largest ridge is close to the constant predictor. The choice uses only the fit
    fold, so the conformal guarantee is unchanged.
    """
    v, Z, mean, scale = regression_inputs(features, targets)
    n, d = Z.shape
    vbar = float(v.mean())
    if ridge == "auto":
        ridge = min(RIDGE_GRID, key=lambda lam: _loo_error(Z, v - vbar, lam))
    if not (isinstance(ridge, int | float) and ridge >= 0):
        raise ValueError(f"ridge must be >= 0 or 'auto', got {ridge!r}")
    coef = np.linalg.lstsq(Z.T @ Z / n + ridge * np.eye(d), Z.T @ (v - vbar) / n,
                           rcond=None)[0]
    return LinearModel(mean=mean, scale=scale, coef=coef, intercept=vbar)


def _loo_error(Z: np.ndarray, r: np.ndarray, ridge: float) -> float:
    """Mean squared leave-one-out residual of the ridge fit (centred Z and targets)."""
    n, d = Z.shape
    inv = np.linalg.pinv(Z.T @ Z / n + ridge * np.eye(d))
    fitted = Z @ (inv @ (Z.T @ r / n))
    h = 1.0 / n + np.einsum("ij,jk,ik->i", Z, inv, Z) / n  # leverage, intercept included
    e = (r - fitted) / np.maximum(1.0 - h, 1e-12)
    return float(np.mean(e**2))
