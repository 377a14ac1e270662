"""Waudby-Smith-Ramdas (WSR) upper confidence bound of a mean risk, by betting.

For n losses ``L_1..L_n`` in [0, 1], drawn i.i.d. from a distribution with mean ``R``
(Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting",
JRSSB 2023; the form of Bates, Angelopoulos, Lei, Malik & Jordan, "Distribution-free,
risk-controlling prediction sets", JACM 2021, Prop. 5):

    mu_i      = (1/2 + sum_{j<=i} L_j) / (1 + i)
    sigma2_i  = (1/4 + sum_{j<=i} (L_j - mu_j)^2) / (1 + i)
    nu_i      = min(1, sqrt(2 log(1/delta) / (n sigma2_{i-1})))
    K_i(R)    = prod_{j<=i} (1 - nu_j (L_j - R))
    R^+       = inf{R >= 0 : max_i K_i(R) > 1/delta}

``K_i(R)`` is the wealth of a bettor who bets that the losses fall below ``R``; under the
null ``E L >= R`` it is a nonnegative supermartingale, so by Ville's inequality it
exceeds ``1/delta`` with probability at most ``delta``: ``P(R > R^+) <= delta``. Unlike
the Hoeffding-Bentkus bound, which must assume the worst variance a mean allows (losses
of 0 and 1), the bet sizes adapt to the losses' spread: per-image miscoverages that stay
near their mean give a bound much closer to it.

The bound depends on the order of the losses. They are taken in an order drawn by a
seeded generator (:func:`wsr_ucb`'s ``seed``), so that a list the user sorted (by name,
by difficulty) cannot steer it, and the same losses always give the same bound.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["wsr_ucb"]

_BISECTION_STEPS = 60


def _bet_sizes(L: np.ndarray, delta: float) -> np.ndarray:
    """``nu_i`` of each column of ``L`` (n, m), predictable: row i uses rows < i."""
    n = L.shape[0]
    i = np.arange(1, n + 1, dtype=np.float64)[:, None]
    mu = (0.5 + np.cumsum(L, axis=0)) / (1.0 + i)
    sigma2 = (0.25 + np.cumsum((L - mu) ** 2, axis=0)) / (1.0 + i)
    prev = np.vstack([np.full((1, L.shape[1]), 0.25), sigma2[:-1]])
    return np.minimum(1.0, np.sqrt(2.0 * math.log(1.0 / delta) / (n * prev)))


def wsr_ucb(losses: Any, delta: float, seed: int = 0) -> Any:
    """WSR upper confidence bound of the mean of ``losses`` (shape ``(n,)``: a float;
    ``(n, m)``: one bound per column, the rows taken in one shared seeded order), by
    bisection on [0, 1] (the wealth is non-decreasing in ``R``); the upper end of the
    final bracket is returned, so it errs on the conservative side."""
    L = np.asarray(losses, dtype=np.float64)
    scalar = L.ndim == 1
    L = L[:, None] if scalar else L
    if L.ndim != 2 or L.shape[0] < 1:
        raise ValueError(f"losses must have shape (n,) or (n, m) with n >= 1, got {L.shape}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if ((L < 0) | (L > 1) | np.isnan(L)).any():
        raise ValueError("losses must lie in [0, 1]")
    L = L[np.random.default_rng(seed).permutation(L.shape[0])]
    nu = _bet_sizes(L, delta)
    threshold = math.log(1.0 / delta)

    def rejected(R: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            log_wealth = np.cumsum(np.log1p(-nu * (L - R)), axis=0)
        return log_wealth.max(axis=0) > threshold

    lo = np.zeros(L.shape[1])
    hi = np.ones(L.shape[1])
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        rej = rejected(mid)
        hi = np.where(rej, mid, hi)
        lo = np.where(rej, lo, mid)
    return float(hi[0]) if scalar else hi
