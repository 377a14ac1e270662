"""Fixtures for sampler tests: tiny random priors, an oracle prior, small operators."""

from __future__ import annotations

import pytest
import torch

from helpers import make_tiny_unet
from restoreflow.models.prior import DiffusionPrior


class _Out:
    def __init__(self, sample: torch.Tensor):
        self.sample = sample


class ConvNet(torch.nn.Module):
    """A fully convolutional eps-model without normalisation (receptive field radius 3)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.c2 = torch.nn.Conv2d(16, 16, 3, padding=1)
            self.c3 = torch.nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x, t):
        s = 1.0 + t.reshape(-1, 1, 1, 1).to(x.dtype) / 1000.0
        h = torch.nn.functional.silu(self.c1(x) * s)
        h = torch.nn.functional.silu(self.c2(h))
        return _Out(0.5 * x + 0.3 * self.c3(h))


class OracleUNet(torch.nn.Module):
    """Outputs the eps consistent with a fixed clean image x0: eps = (x_t - sqrt(ab) x0)
    / sqrt(1 - ab), so the prior's Tweedie estimate is exactly x0 at every step."""

    def __init__(self, x0: torch.Tensor, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.register_buffer("x0", x0)
        self.register_buffer("abar", alphas_cumprod.clone())
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # gives the prior a device/dtype

    def forward(self, x, t):
        ab = self.abar[t.long()].to(x.dtype).reshape(-1, 1, 1, 1)
        return _Out((x - ab.sqrt() * self.x0) / (1 - ab).sqrt())


class GaussianUNet(torch.nn.Module):
    """The exact eps-model of the prior x0 ~ N(m, s^2 I): the MMSE denoiser is
    E[x0 | x_t] = m + sqrt(ab) s^2 / (ab s^2 + 1 - ab) (x_t - sqrt(ab) m)."""

    def __init__(self, m: float, s: float, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.m, self.s = m, s
        self.register_buffer("abar", alphas_cumprod.clone())
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        ab = self.abar[t.long()].to(x.dtype).reshape(-1, 1, 1, 1)
        v = self.s**2
        x0 = self.m + ab.sqrt() * v / (ab * v + 1 - ab) * (x - ab.sqrt() * self.m)
        return _Out((x - ab.sqrt() * x0) / (1 - ab).sqrt())


@pytest.fixture()
def gaussian_prior():
    def make(m: float, s: float) -> DiffusionPrior:
        prior = DiffusionPrior.from_unet(torch.nn.Identity())
        prior.unet = GaussianUNet(m, s, prior.alphas_cumprod)
        return prior

    return make


class PerturbedGaussianUNet(GaussianUNet):
    """The Gaussian prior's exact eps plus a random-UNet term: outputs stay in range
    (unlike a bare random UNet, whose x0 estimates saturate) while the UNet's GroupNorm
    statistics change from tile to tile, as a trained UNet's do."""

    def __init__(self, alphas_cumprod: torch.Tensor, scale: float = 1.0):
        super().__init__(0.0, 0.5, alphas_cumprod)
        self.net, self.scale = make_tiny_unet(), scale

    def forward(self, x, t):
        return _Out(super().forward(x, t).sample + self.scale * self.net(x, t).sample)


@pytest.fixture()
def perturbed_prior():
    prior = DiffusionPrior.from_unet(torch.nn.Identity())
    prior.unet = PerturbedGaussianUNet(prior.alphas_cumprod)
    return prior


@pytest.fixture()
def tiny_prior():
    return DiffusionPrior.from_unet(make_tiny_unet())


@pytest.fixture()
def conv_prior():
    return DiffusionPrior.from_unet(ConvNet())


@pytest.fixture()
def oracle_prior():
    def make(x0: torch.Tensor) -> DiffusionPrior:
        prior = DiffusionPrior.from_unet(torch.nn.Identity())
        prior.unet = OracleUNet(x0, prior.alphas_cumprod)
        return prior

    return make


def smooth_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth test image (1, 3, h, w) in [-0.8, 0.8] (model space)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, max(h // 8, 2), max(w // 8, 2), generator=g)
    img = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
    return (img.clamp(0, 1) * 1.6 - 0.8).contiguous()


@pytest.fixture()
def image():
    return smooth_image
