"""Kernel and mask generators, noise models and shape errors."""

from __future__ import annotations

import math

import pytest
import torch

from restoreflow.operators import (
    BicubicDownsample,
    Blur,
    BoxDownsample,
    Colorise,
    GaussianBlur,
    GaussianNoise,
    Inpainting,
    PoissonGaussianNoise,
    PoissonNoise,
    ShapeError,
    gaussian_kernel,
    motion_kernel,
    random_box_mask,
    random_pixel_mask,
)


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gaussian_kernel_size_and_normalisation():
    k = gaussian_kernel(3.0)
    assert k.shape == (19, 19)
    assert math.isclose(float(k.sum()), 1.0, rel_tol=1e-12)
    assert torch.equal(k, k.flip(0)) and torch.equal(k, k.T)


def test_motion_kernel_is_deterministic_and_normalised():
    a, b = motion_kernel(15, _g(1)), motion_kernel(15, _g(1))
    c = motion_kernel(15, _g(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (15, 15) and bool((a >= 0).all())
    assert math.isclose(float(a.sum()), 1.0, rel_tol=1e-12)
    assert int((a > 0).sum()) >= 10  # a path, not a point


def test_random_generators_do_not_touch_global_rng():
    state = torch.random.get_rng_state()
    motion_kernel(9, _g(0))
    random_pixel_mask(8, 8, 0.5, _g(0))
    random_box_mask(8, 8, 2, 3, _g(0))
    GaussianNoise(0.1).sample(torch.zeros(1, 1, 4, 4), _g(0))
    PoissonGaussianNoise(10.0, 0.1).sample(torch.full((1, 1, 4, 4), 0.5), _g(0))
    assert torch.equal(state, torch.random.get_rng_state())


def test_random_pixel_mask_has_exact_ratio():
    m = random_pixel_mask(10, 20, 0.3, _g(0))
    assert m.dtype == torch.bool and int((~m).sum()) == 60
    assert torch.equal(m, random_pixel_mask(10, 20, 0.3, _g(0)))


def test_random_box_mask():
    m = random_box_mask(16, 16, 1, 5, _g(0))
    assert int((~m).sum()) == 25


@pytest.mark.parametrize(
    ("op", "shape", "message"),
    [
        (GaussianBlur(3.0), (1, 3, 16, 40), r"image 16x40 is smaller than the 19x19"),
        (Blur(torch.ones(5, 9), "reflect"), (1, 1, 6, 8), r"image 6x8 is smaller than the 5x9"),
        (BoxDownsample(4), (1, 3, 18, 16), r"18x16 .* multiples of 4"),
        (BicubicDownsample(8), (1, 3, 16, 20), r"16x20 .* multiples of 8"),
        (Inpainting(torch.ones(8, 8)), (1, 3, 8, 9), r"image 8x9 does not match the 8x8"),
        (Colorise(3), (1, 1, 8, 8), "expects 3 channels"),
    ],
)
def test_shape_errors_name_the_sizes(op, shape, message):
    with pytest.raises(ShapeError, match=message):
        op.A(torch.zeros(shape))


def test_negative_eta_is_rejected():
    with pytest.raises(ValueError, match="eta"):
        GaussianBlur(1.0).A_dagger(torch.zeros(1, 1, 8, 8), eta=-1.0)


def test_gaussian_noise_statistics_and_determinism():
    ax = torch.full((1, 1, 100, 100), 0.5, dtype=torch.float64)
    nm = GaussianNoise(0.1)
    y = nm.sample(ax, _g(0))
    assert torch.equal(y, nm.sample(ax, _g(0)))
    assert not torch.equal(y, nm.sample(ax, _g(1)))
    assert abs(float((y - ax).std()) - 0.1) < 0.005  # 1e4 samples: std error ~0.0007
    assert abs(float((y - ax).mean())) < 0.005
    assert nm.sigma_y == 0.1
    assert torch.equal(GaussianNoise(0.0).sample(ax, _g(0)), ax)


def test_poisson_noise_statistics():
    photons = 200.0
    ax = torch.full((1, 1, 100, 100), 0.4, dtype=torch.float64)
    y = PoissonNoise(photons).sample(ax, _g(0))
    counts = y * photons  # integer photon counts / gain
    assert torch.allclose(counts, counts.round(), rtol=0, atol=1e-9)
    assert abs(float(y.mean()) - 0.4) < 0.005
    assert abs(float(y.var()) - 0.4 / photons) < 0.1 * 0.4 / photons
    assert math.isclose(PoissonNoise(photons).sigma_y, math.sqrt(0.5 / photons))
    pg = PoissonGaussianNoise(photons, 0.02)
    assert math.isclose(pg.sigma_y, math.sqrt(0.5 / photons + 0.02**2))
    y2 = pg.sample(ax, _g(0))
    assert abs(float(y2.var()) - (0.4 / photons + 0.02**2)) < 0.1 * (0.4 / photons + 0.02**2)


@pytest.mark.parametrize("cls,args", [(GaussianNoise, (-0.1,)), (PoissonNoise, (0.0,))])
def test_invalid_noise_parameters(cls, args):
    with pytest.raises(ValueError):
        cls(*args)


def test_inpainting_window_crops_the_mask():
    mask = random_pixel_mask(12, 10, 0.5, _g(0))
    op = Inpainting(mask)
    tile = op.window(2, 3, 5, 4)
    assert torch.equal(tile.mask, mask[2:7, 3:7])
    assert GaussianBlur(1.0).window(0, 0, 4, 4) is not None


@pytest.mark.parametrize(
    "op", [GaussianBlur(1.0, boundary="reflect"), BicubicDownsample(2), BoxDownsample(4)]
)
def test_tile_with_halo_reproduces_the_whole_image(op):
    """Degrading a tile read with ``halo`` extra pixels (rounded up to the SR factor) and
    cropping gives the same pixels as degrading the whole image."""
    op = op.double()
    x = torch.rand(1, 2, 48, 48, generator=_g(0), dtype=torch.float64)
    f = getattr(op, "factor", 1)
    halo = -(-op.halo // f) * f
    top, left, size = 16, 16, 16
    tile = x[..., top - halo : top + size + halo, left - halo : left + size + halo]
    got = op.A(tile)[..., halo // f : (halo + size) // f, halo // f : (halo + size) // f]
    ref = op.A(x)[..., top // f : (top + size) // f, left // f : (left + size) // f]
    assert torch.allclose(got, ref, atol=1e-12)
