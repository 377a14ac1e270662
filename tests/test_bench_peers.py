"""The classical peers of the sampler benchmark (benchmarks/peers.py) that need no bm3d."""

from __future__ import annotations

import math

import torch
from benchmarks import peers

from restoreflow import samples
from restoreflow.models.training import center_crops
from restoreflow.operators.blur import GaussianBlur


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / float(((a - b) ** 2).mean()))


def test_richardson_lucy_deblurs_a_circular_blur():
    x = center_crops(samples.sample_paths(["camera.png"]), 96)[0].double()
    op = GaussianBlur(2.0, 13, "circular", dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    y = op.A(x[None])[0] + 0.01 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    est = peers.richardson_lucy(y.float(), op.kernel)
    assert est.shape == x.shape
    # clearly sharper than the blurred input, borders included (wrap padding)
    assert _psnr(est.double(), x) > _psnr(y.clamp(0, 1), x) + 1.0
    border = (est.double() - x)[:, :6].pow(2).mean()
    assert border < 4 * (est.double() - x).pow(2).mean()


def test_upsampled_noise_sigma_is_the_std_of_upsampled_noise():
    s = peers.upsampled_noise_sigma(0.1, 4)
    g = torch.Generator().manual_seed(5)
    n = 0.1 * torch.randn(3, 96, 96, generator=g, dtype=torch.float64)
    measured = float(peers.bicubic_up(n, 4)[:, 8:-8, 8:-8].std())
    assert 0.0 < s < 0.1  # interpolation averages noise down
    assert abs(s - measured) / measured < 0.1
