"""The shift guard: calibrated false-flag rate in distribution, detection under shift."""

import json

import numpy as np
import pytest

from restoreflow.quality.novelty import NoveltyGuard

NAMES = ("a", "b", "c")


def _draw(rng, n_sources, per_source, shift=0.0):
    """Features of crops: a source effect plus crop noise; column a is positive."""
    rows, groups = [], []
    for g in range(n_sources):
        mu = rng.normal(size=3) + shift
        for _ in range(per_source):
            x = mu + 0.3 * rng.normal(size=3)
            x[0] = np.exp(x[0])
            rows.append(x)
            groups.append(g)
    return np.array(rows), np.array(groups)


def test_false_flag_rate_is_at_most_the_level_and_a_shift_is_flagged():
    rng = np.random.default_rng(0)
    flagged_in, flagged_out = [], []
    for _ in range(40):
        X, g = _draw(rng, 30, 3)
        guard = NoveltyGuard.fit(X, g, NAMES, level=0.1)
        Xin, _ = _draw(rng, 20, 1)
        Xout, _ = _draw(rng, 20, 1, shift=4.0)
        flagged_in.append(np.mean(guard.pvalue(Xin) <= 0.1))
        flagged_out.append(np.mean(guard.pvalue(Xout) <= 0.1))
    assert np.mean(flagged_in) <= 0.1 + 0.02
    assert np.mean(flagged_out) >= 0.9


def test_round_trip_and_check():
    rng = np.random.default_rng(1)
    X, g = _draw(rng, 10, 2)
    guard = NoveltyGuard.fit(X, g, NAMES)
    back = NoveltyGuard.from_dict(json.loads(json.dumps(guard.to_dict())))
    assert back == guard
    far = {"a": 1e6, "b": 50.0, "c": -50.0}
    assert back.check(far) == {"novelty_pvalue": pytest.approx(1 / 11),
                               "out_of_calibration": True}  # the smallest p: 1/11 <= 0.1
    strict = NoveltyGuard.fit(X, g, NAMES, level=0.05)
    assert not strict.check(far)["out_of_calibration"]  # 10 sources: p >= 1/11 > 0.05
    assert not back.check(dict(zip(NAMES, X[0], strict=True)))["out_of_calibration"]


def test_needs_more_sources_than_k():
    rng = np.random.default_rng(2)
    X, g = _draw(rng, 3, 4)
    with pytest.raises(ValueError, match="at least 4 calibration sources"):
        NoveltyGuard.fit(X, g, NAMES)
