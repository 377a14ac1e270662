"""Finite-sample conformal quantiles, the rank rule every conformal bound here rests on.

For n scores exchangeable with a new one, the ``ceil((n + 1)(1 - alpha))``-th smallest
score ``q`` gives ``P(s_new <= q) >= 1 - alpha`` (:func:`conformal_quantile`); its mirror
image gives a lower quantile (:func:`conformal_lower_quantile`). Also the checks on
``alpha`` and on 1-D score or target arrays that the fitting code shares.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# (n+1)(1-alpha) is computed in floating point: 20 * 0.9 must give rank 18, not 19.
_RANK_EPS = 1e-9


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float in (0, 1); ValueError otherwise."""
    a = float(alpha)
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return a


def scores_1d(scores: Any, name: str = "scores") -> np.ndarray:
    """A non-empty 1-D float64 array without NaN (infinities allowed); ValueError naming
    ``name`` otherwise."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError(f"{name} contain NaN")
    return s


def conformal_quantile(scores: Any, alpha: float) -> float:
    """Finite-sample conformal quantile of ``n`` scores at level ``1 - alpha``:

        q = s_(k),   k = ceil((n + 1)(1 - alpha)),

    the k-th smallest score, and ``+inf`` when ``k > n`` (too few scores for level
    ``1 - alpha``). For a new score exchangeable with the ``n`` scores,
    ``P(s_new <= q) >= 1 - alpha``.
    """
    a = check_alpha(alpha)
    s = np.sort(scores_1d(scores))
    n = s.size
    k = math.ceil((n + 1) * (1.0 - a) - _RANK_EPS)
    if k > n:
        return math.inf
    return float(s[max(k, 1) - 1])


def conformal_lower_quantile(values: Any, alpha: float) -> float:
    """Finite-sample lower conformal quantile of ``n`` values:

        v_(k),   k = floor(alpha (n + 1)),

    the k-th smallest value, and ``-inf`` when ``k = 0``. For a new value exchangeable
    with the ``n`` values, ``P(v_new >= v_(k)) >= 1 - alpha`` (it equals
    ``-conformal_quantile(-values, alpha)``).
    """
    a = check_alpha(alpha)
    v = np.sort(scores_1d(values, "values"))
    k = math.floor(a * (v.size + 1) + _RANK_EPS)
    if k < 1:
        return -math.inf
    return float(v[k - 1])


def finite_quantile(scores: np.ndarray, alpha: float) -> float:
    """:func:`conformal_quantile`, or ValueError when the scores are too few for a finite
    one at this ``alpha``."""
    q = conformal_quantile(scores, alpha)
    if math.isinf(q):
        need = math.ceil((1.0 - alpha) / alpha - _RANK_EPS)
        raise ValueError(
            f"the calibration fold has {scores.size} images; alpha={alpha} needs at least "
            f"{need} for a finite bound"
        )
    return q
