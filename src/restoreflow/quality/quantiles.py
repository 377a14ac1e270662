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


def grouped_conformal_quantile(scores: Any, groups: Any, alpha: float) -> float:
    """Conformal quantile at level ``1 - alpha`` when the scores come in groups (several
    crops of one source image) and the new score is from a new group:

        q = min{s : sum_g F_g(s) >= (1 - alpha)(G + 1)},

    ``F_g`` the empirical CDF of group g's scores, ``G`` the number of groups: every
    group weighs one, however many scores it has (the pooled-CDF rule of Dunn, Wasserman
    & Ramdas, "Distribution-free prediction sets for two-layer hierarchical models",
    JASA 2022). With one score per group it is :func:`conformal_quantile`. ``+inf`` when
    ``(1 - alpha)(G + 1) > G`` (too few groups).
    """
    a = check_alpha(alpha)
    s = scores_1d(scores)
    g = np.asarray(groups)
    if g.shape != s.shape:
        raise ValueError(f"{g.size} groups for {s.size} scores")
    _, codes, counts = np.unique(g, return_inverse=True, return_counts=True)
    n_groups = counts.size
    need = (n_groups + 1) * (1.0 - a) - _RANK_EPS
    if need > n_groups:
        return math.inf
    order = np.argsort(s, kind="stable")
    mass = np.cumsum(1.0 / counts[codes[order]])
    k = int(np.searchsorted(mass, need - 1e-9, side="left"))
    return float(s[order[min(k, s.size - 1)]])
