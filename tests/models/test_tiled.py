"""Tiled prior evaluation: coverage, weights, agreement with untiled evaluation."""

from __future__ import annotations

import pytest
import torch

from restoreflow.models.prior import DiffusionPrior
from restoreflow.models.tiled import TiledPrior, tile_starts


@pytest.mark.parametrize("length,tile,overlap", [(100, 32, 8), (256, 64, 16), (65, 64, 16)])
def test_tile_starts_cover_with_overlap(length, tile, overlap):
    s = tile_starts(length, tile, overlap)
    assert s[0] == 0 and s[-1] + tile == length
    assert all(b - a <= tile - overlap for a, b in zip(s, s[1:], strict=False))


class Pointwise(torch.nn.Module):
    """A 1x1 conv 'UNet': output depends only on the pixel, so tiling must be exact."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x, t):
        class R:
            sample = self.conv(x) * (1 + t.reshape(-1, 1, 1, 1).float() / 1000)

        return R()


def test_tiling_exact_for_pointwise_model():
    prior = DiffusionPrior.from_unet(Pointwise())
    x = torch.randn(2, 3, 70, 90, generator=torch.Generator().manual_seed(0))
    tiled = TiledPrior(prior, tile=32, overlap=8, batch=3)
    with torch.no_grad():
        a = prior.eps_x0(x, 400)
        b = tiled.eps_x0(x, 400)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)


def test_tiled_close_to_untiled_for_conv_unet(tiny_unet):
    # A UNet's receptive field is larger than the overlap, so tiles see less context than
    # the whole image. Stated tolerance: relative L2 difference < 10% for a random UNet
    # (the trained prior is much closer, see benchmarks), and blending overlaps must beat
    # butting tiles edge to edge.
    prior = DiffusionPrior.from_unet(tiny_unet())
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = prior.eps(x, 200)
        blended = TiledPrior(prior, tile=48, overlap=16, batch=4).eps(x, 200)
        butted = TiledPrior(prior, tile=48, overlap=0, batch=4).eps(x, 200)
    rel = float((full - blended).norm() / full.norm())
    rel0 = float((full - butted).norm() / full.norm())
    assert rel < 0.10 and rel < 0.8 * rel0, (rel, rel0)


def test_size_not_multiple_is_padded_and_cropped(tiny_unet):
    prior = DiffusionPrior.from_unet(tiny_unet())
    x = torch.randn(1, 3, 37, 51, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        e = TiledPrior(prior, tile=32, overlap=8).eps(x, 100)
    assert e.shape == x.shape and torch.isfinite(e).all()


def test_bad_tile_settings(tiny_unet):
    prior = DiffusionPrior.from_unet(tiny_unet())
    with pytest.raises(ValueError, match="multiple"):
        TiledPrior(prior, tile=33)
    with pytest.raises(ValueError, match="overlap"):
        TiledPrior(prior, tile=32, overlap=32)
