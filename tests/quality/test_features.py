"""No-reference features: known values on constructed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from restoreflow.quality.features import (
    FEATURE_NAMES,
    PSNR_CAP,
    compute_features,
    feature_vector,
    gradient_magnitude_mean,
    high_frequency_energy,
    measurement_consistency,
    measurement_statistics,
    noise_level,
    posterior_spread,
    rca_feature,
)


class Subsample:
    """Tiny stand-in operator: keep every second pixel; A^+ puts them back, zeros elsewhere."""

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., ::2, ::2]

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*y.shape[:-2], y.shape[-2] * 2, y.shape[-1] * 2, dtype=y.dtype)
        out[..., ::2, ::2] = y
        return out


def _smooth(c=3, h=32, w=32):
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    return np.stack([0.5 + 0.3 * np.sin(2 * np.pi * (xx + k * yy)) for k in range(c)])


def test_measurement_consistency_is_one_for_the_truth_under_gaussian_noise():
    gen = torch.Generator().manual_seed(0)
    x = torch.from_numpy(_smooth(3, 64, 64))
    sigma = 0.05
    y = Subsample().A(x) + sigma * torch.randn(3, 32, 32, generator=gen, dtype=torch.float64)
    mc = measurement_consistency(Subsample(), x, y, sigma)
    assert mc == pytest.approx(1.0, abs=0.05)  # m = 3072: relative sd ~ 1/sqrt(2m) = 1.3%
    # a wrong restoration is inconsistent with y
    assert measurement_consistency(Subsample(), x + 0.2, y, sigma) > 3.0
    # exact formula on a hand-made residual: ||r|| / (sigma sqrt(m))
    y0 = Subsample().A(x)
    r = measurement_consistency(Subsample(), x + 0.1, y0, 0.05)
    assert r == pytest.approx(0.1 / 0.05)


def test_measurement_consistency_guards_zero_sigma_and_checks_shapes():
    x = torch.from_numpy(_smooth(1, 8, 8))
    y = Subsample().A(x) + 1e-3
    v = measurement_consistency(Subsample(), x, y, 0.0)
    assert math.isfinite(v) and v == pytest.approx(1e-3 / 1e-6)
    with pytest.raises(ValueError, match="shape"):
        measurement_consistency(Subsample(), x, x, 0.1)
    with pytest.raises(ValueError):
        measurement_consistency(Subsample(), x, y, -1.0)


def test_posterior_spread_known_values():
    base = np.random.default_rng(0).random((1, 8, 8))
    d = 0.1
    two = np.stack([base, base + d])  # per-pixel std (ddof=1) = d / sqrt(2); MSE = d^2
    out = posterior_spread(two)
    assert out["pixel_std_mean"] == pytest.approx(d / math.sqrt(2))
    assert out["pairwise_psnr_mean"] == pytest.approx(20.0)
    # three samples at 0, d, 2d: pair MSEs d^2, d^2, 4 d^2
    three = np.stack([base, base + d, base + 2 * d])
    expected = (20.0 + 20.0 + 10 * math.log10(1 / (4 * d * d))) / 3
    assert posterior_spread(torch.from_numpy(three))["pairwise_psnr_mean"] == pytest.approx(
        expected
    )
    same = posterior_spread(np.stack([base, base]))
    assert same == {"pixel_std_mean": 0.0, "pairwise_psnr_mean": PSNR_CAP}
    with pytest.raises(ValueError, match="2 samples"):
        posterior_spread(base[None])


def test_rca_feature():
    assert rca_feature([30.0, 25.0, 28.0]) == {"mean": pytest.approx(83 / 3), "min": 25.0}
    assert rca_feature([math.inf, 20.0]) == {"mean": (PSNR_CAP + 20) / 2, "min": 20.0}
    with pytest.raises(ValueError):
        rca_feature([])


def test_image_statistics():
    const = np.full((3, 16, 16), 0.3)
    assert gradient_magnitude_mean(const) == 0.0
    assert high_frequency_energy(const) == 0.0
    ramp = np.tile(np.arange(16) * 0.01, (1, 16, 1))  # d/dx = 0.01, d/dy = 0
    assert gradient_magnitude_mean(ramp) == pytest.approx(0.01)
    rng = np.random.default_rng(0)
    smooth = _smooth()
    noisy = smooth + 0.1 * rng.normal(size=smooth.shape)
    assert high_frequency_energy(smooth) < 0.01 < 0.1 < high_frequency_energy(noisy)
    # white noise spreads its energy evenly over [-1/2, 1/2]^2: the share outside the
    # disc of radius 1/4 is 1 - pi / 16
    white = rng.normal(size=(3, 64, 64))
    assert high_frequency_energy(white) == pytest.approx(1 - math.pi / 16, abs=0.02)
    assert gradient_magnitude_mean(noisy) > gradient_magnitude_mean(smooth)


@pytest.mark.parametrize("sigma", [0.02, 0.1])
def test_noise_level_estimates_sigma(sigma):
    rng = np.random.default_rng(3)
    y = _smooth(3, 64, 64) + sigma * rng.normal(size=(3, 64, 64))
    assert noise_level(y) == pytest.approx(sigma, rel=0.15)


def test_compute_features_and_vector():
    gen = torch.Generator().manual_seed(1)
    x = torch.from_numpy(_smooth(3, 32, 32))
    y = Subsample().A(x) + 0.05 * torch.randn(3, 16, 16, generator=gen, dtype=torch.float64)
    samples = x[None] + 0.02 * torch.randn(4, 3, 32, 32, generator=gen, dtype=torch.float64)
    f = compute_features(Subsample(), x, y, 0.05, samples=samples, neighbour_psnrs=[27.0, 29.0])
    assert tuple(f) == FEATURE_NAMES
    v = feature_vector(f)
    assert v.shape == (len(FEATURE_NAMES),) and np.isfinite(v).all()
    assert v[FEATURE_NAMES.index("rca_min")] == 27.0
    # without samples / neighbours, the full vector names what is missing
    g = compute_features(Subsample(), x, y, 0.05)
    with pytest.raises(KeyError, match="pixel_std_mean"):
        feature_vector(g)
    assert feature_vector(g, ["noise_sigma_y", "measurement_consistency"]).shape == (2,)
    with pytest.raises(ValueError, match="non-finite"):
        feature_vector({"a": math.nan}, ["a"])


def test_measurement_statistics_known_values():
    """The shift guard's covariates on a star field (dark sky, a few bright grey stars)
    and a colourful photo-like image: dark floor (10th percentile) and saturation."""
    from restoreflow.quality.features import GUARD_FEATURES

    sky = np.full((3, 10, 10), 0.02)
    sky[:, :2, :5] = 1.0  # 10 grey stars of 100 pixels
    f = measurement_statistics(sky)
    assert tuple(f) == GUARD_FEATURES
    assert f["y_p10"] == pytest.approx(0.02) and f["y_saturation"] == pytest.approx(0.0)
    assert f["y_dark_fraction"] == pytest.approx(0.9) and f["y_p99"] == pytest.approx(1.0)
    photo = np.zeros((3, 10, 10))
    photo[0] = 0.8
    photo[1] = np.linspace(0.2, 0.6, 10)[None, :]  # green ramp, blue 0: saturation 1
    g = measurement_statistics(torch.from_numpy(photo)[None])
    assert g["y_saturation"] == pytest.approx(1.0)
    assert g["y_p10"] == pytest.approx((0.8 + 0.2 + 0.4 / 9) / 3, abs=0.01)
    assert measurement_statistics(np.zeros((1, 4, 4)))["y_saturation"] == 0.0  # black


def test_log10_features():
    from restoreflow.quality.features import LOG_FLOOR, feature_vector

    v = feature_vector({"a": 100.0, "b": 0.0}, ["log10:a", "b", "log10:b", "a"])
    np.testing.assert_allclose(v, [2.0, 0.0, math.log10(LOG_FLOOR), 100.0])
    with pytest.raises(KeyError, match="'c'"):
        feature_vector({"a": 1.0}, ["log10:c"])
    with pytest.raises(ValueError, match="log10:a"):
        feature_vector({"a": float("inf")}, ["log10:a"])
