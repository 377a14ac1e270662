"""Linear quantile regression (pinball loss, solved exactly as a linear program): the
predictor of ``ConformalLowerBound(method="cqr")``, conformalised quantile regression.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .linear import LinearModel, regression_inputs


def pinball_loss(targets: Any, predictions: Any, tau: float) -> float:
    """Mean pinball (quantile) loss ``mean rho_tau(v - f)``,
    ``rho_tau(u) = max(tau u, (tau - 1) u)``."""
    u = np.asarray(targets, dtype=np.float64) - np.asarray(predictions, dtype=np.float64)
    return float(np.mean(np.maximum(tau * u, (tau - 1.0) * u)))


def fit_quantile_regression(features: Any, targets: Any, tau: float) -> LinearModel:
    """Linear quantile regression of level ``tau`` on standardised features:

        (b0, b) = argmin sum_i rho_tau(v_i - b0 - z_i^T b).

    Solved exactly as the dual linear program (Koenker & Bassett 1978)

        max_d v^T d   s.t.  [1 Z]^T d = 0,   tau - 1 <= d_i <= tau

    with HiGHS (``scipy.optimize.linprog``); ``(b0, b)`` are the multipliers of the
    equality constraints. Raises RuntimeError if the solver fails or if the primal and
    dual objectives disagree.
    """
    from scipy.optimize import linprog

    if not 0.0 < tau < 1.0:
        raise ValueError(f"tau must be in (0, 1), got {tau}")
    v, Z, mean, scale = regression_inputs(features, targets)
    n, d = Z.shape
    design = np.hstack([np.ones((n, 1)), Z])
    res = linprog(-v, A_eq=design.T, b_eq=np.zeros(d + 1), bounds=(tau - 1.0, tau), method="highs")
    if res.status != 0:
        raise RuntimeError(f"quantile regression LP failed: {res.message}")
    beta = -np.asarray(res.eqlin.marginals, dtype=np.float64)
    primal = float(np.sum(np.maximum(tau * (v - design @ beta), (tau - 1) * (v - design @ beta))))
    dual = float(-res.fun)
    if abs(primal - dual) > 1e-6 * (1.0 + abs(dual)):
        raise RuntimeError(f"quantile regression: primal {primal} != dual {dual} objective")
    return LinearModel(mean=mean, scale=scale, coef=beta[1:], intercept=float(beta[0]))
