"""The full-conformal ridge lower bound: exact where it can be checked by hand or by
brute force, valid coverage, never looser than the feature-free bound when there is
nothing to learn, tighter when the features predict the quality."""

import math

import numpy as np
import pytest

from restoreflow.quality.conformal import (
    TrivialLowerBound,
    calibration_from_dict,
    fit_lower_bound,
    method_min_sources,
)
from restoreflow.quality.full_conformal import (
    FullConformalBound,
    _hat_matrices,
    full_min_sources,
    one_row_per_source,
)


def _brute(X, v, x, k, lo, hi, steps=20001):
    """The smallest y on a fine grid that the definition calls plausible."""
    Hs = _hat_matrices(np.vstack([X, x[None]]))
    N = v.size + 1
    for y in np.linspace(lo, hi, steps):
        vv = np.append(v, y)
        gcv = np.array([N * np.sum((vv - H @ vv) ** 2) / (N - np.trace(H)) ** 2 for H in Hs])
        r = vv - Hs[len(Hs) - 1 - int(np.argmin(gcv[::-1]))] @ vv
        if (r[:-1] <= r[-1] + 1e-9).sum() >= k:
            return y
    return math.inf


def test_without_features_it_is_the_trivial_order_statistic():
    rng = np.random.default_rng(0)
    v = rng.normal(30, 5, 24)
    b = FullConformalBound.fit(np.ones((24, 2)), v, 0.1, rng)
    assert b.bound(np.ones(2))[0] == pytest.approx(TrivialLowerBound.fit(v, 0.1).value)


@pytest.mark.parametrize("seed", range(4))
def test_matches_a_brute_force_search(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(20, 3))
    v = X @ np.array([2.0, 1.0, 0.0]) + 2 * rng.normal(size=20) + 30
    x = rng.normal(size=3)
    b = FullConformalBound.fit(X, v, 0.1, rng)
    exact = b.bound(x)[0]
    step = 60 / 20000
    assert _brute(X, v, x, b.k, v.min() - 30, v.max() + 30) == pytest.approx(exact, abs=step)


@pytest.mark.parametrize("signal", [True, False])
def test_coverage_and_tightness(signal):
    rng = np.random.default_rng(1)
    beta = np.array([3.0, 1.0, 0.0, 0.0]) if signal else np.zeros(4)
    hits, gap, trivial_gap = [], [], []
    for _ in range(600):
        X = rng.normal(size=(25, 4))
        v = X @ beta + 2 * rng.normal(size=25)
        b = FullConformalBound.fit(X[:24], v[:24], 0.1, rng)
        low = b.bound(X[24])[0]
        hits.append(v[24] >= low)
        gap.append(v[24] - low)
        trivial_gap.append(v[24] - TrivialLowerBound.fit(v[:24], 0.1).value)
    # exact coverage is in [0.9, 0.94) (k = 2 of 25); 600 draws: 3 standard errors
    assert 0.9 - 0.037 <= np.mean(hits) <= 0.94 + 0.037
    if signal:
        assert np.mean(gap) < 0.75 * np.mean(trivial_gap)
    else:
        assert np.mean(gap) < 1.1 * np.mean(trivial_gap)


def test_one_row_per_source_and_the_minimum():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(12), 3)
    keep = one_row_per_source(groups, rng)
    assert keep.size == 12 and sorted(groups[keep]) == list(range(12))
    X, v = rng.normal(size=(36, 2)), rng.normal(size=36)
    b = fit_lower_bound("full", X, v, 0.1, rng, ["a", "b"], groups=groups)
    assert b.n_cal_sources == 12 and b.n_rows == 36
    assert full_min_sources(0.1) == 9 == method_min_sources("full", 0.1)
    assert method_min_sources("residual", 0.1) == 17
    with pytest.raises(ValueError, match="needs at least 9"):
        FullConformalBound.fit(X[:8], v[:8], 0.1, rng)
    assert math.isfinite(FullConformalBound.fit(X[:9], v[:9], 0.1, rng).bound(X[0])[0])


def test_round_trip():
    rng = np.random.default_rng(4)
    X, v = rng.normal(size=(15, 2)), rng.normal(30, 3, 15)
    b = FullConformalBound.fit(X, v, 0.2, rng, ["a", "b"], target="ssim",
                               settings_hash="h")
    again = calibration_from_dict(b.to_dict())
    assert isinstance(again, FullConformalBound) and again.settings_hash == "h"
    assert again.bound_features({"a": 0.3, "b": -1.0}) == b.bound_features({"a": 0.3,
                                                                              "b": -1.0})
