"""Measurement noise models (not linear operators), in image units where x is in [0, 1].

Each model has ``sample(ax, generator) -> y`` drawing only from the given generator (on
the generator's device; the result is moved to ``ax``'s device and dtype) and
``sigma_y``, an effective Gaussian standard deviation for samplers that assume
``y = A x + sigma_y n``.
"""

from __future__ import annotations

import math

import torch

#: Intensity at which the Poisson variance ``x / photons`` is evaluated for ``sigma_y``
#: (mid-grey: the variance of a pixel of value v is v / photons).
POISSON_REFERENCE_INTENSITY = 0.5


def _check_nonneg(name: str, v: float) -> float:
    v = float(v)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {v}")
    return v


def _check_pos(name: str, v: float) -> float:
    v = float(v)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {v}")
    return v


class NoiseModel:
    """Base class: ``y = sample(A x, generator)``."""

    name = "noise"

    @property
    def sigma_y(self) -> float:
        raise NotImplementedError

    def sample(self, ax: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(vars(self).items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _randn_like(ax: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n = torch.randn(ax.shape, generator=generator, device=generator.device, dtype=ax.dtype)
    return n.to(ax.device)


class GaussianNoise(NoiseModel):
    """``y = A x + sigma n``, n ~ N(0, I); ``sigma_y = sigma``."""

    name = "gaussian_noise"

    def __init__(self, sigma: float) -> None:
        self.sigma = _check_nonneg("Gaussian noise sigma", sigma)

    @property
    def sigma_y(self) -> float:
        return self.sigma

    def sample(self, ax: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.sigma == 0:
            return ax.clone()
        return ax + self.sigma * _randn_like(ax, generator)


class PoissonNoise(NoiseModel):
    """Shot noise with gain: ``y = Poisson(photons * max(A x, 0)) / photons``.

    ``E[y] = A x`` and ``Var[y] = A x / photons``; ``sigma_y = sqrt(0.5 / photons)``
    (the standard deviation at mid-grey, POISSON_REFERENCE_INTENSITY).
    """

    name = "poisson_noise"

    def __init__(self, photons: float) -> None:
        self.photons = _check_pos("Poisson photons", photons)

    @property
    def sigma_y(self) -> float:
        return math.sqrt(POISSON_REFERENCE_INTENSITY / self.photons)

    def _poisson(self, ax: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        rate = (ax.detach().clamp_min(0) * self.photons).to(generator.device, torch.float64)
        counts = torch.poisson(rate, generator=generator)
        return (counts / self.photons).to(device=ax.device, dtype=ax.dtype)

    def sample(self, ax: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self._poisson(ax, generator)


class PoissonGaussianNoise(PoissonNoise):
    """``y = Poisson(photons * max(A x, 0)) / photons + sigma n``;
    ``sigma_y = sqrt(0.5 / photons + sigma^2)``."""

    name = "poisson_gaussian_noise"

    def __init__(self, photons: float, sigma: float) -> None:
        super().__init__(photons)
        self.sigma = _check_nonneg("Gaussian noise sigma", sigma)

    @property
    def sigma_y(self) -> float:
        return math.sqrt(POISSON_REFERENCE_INTENSITY / self.photons + self.sigma**2)

    def sample(self, ax: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        y = self._poisson(ax, generator)
        if self.sigma == 0:
            return y
        return y + self.sigma * _randn_like(ax, generator)
