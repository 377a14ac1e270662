"""Guided samplers: interface, determinism, measurement consistency, oracle algebra."""

from __future__ import annotations

import pytest
import torch

from restoreflow.operators import BicubicDownsample, GaussianBlur, Inpainting
from restoreflow.samplers import SAMPLERS, get_sampler
from restoreflow.samplers.schedule import respaced_steps, respaced_timesteps

NAMES = sorted(SAMPLERS)
H = W = 16


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mask_op(h: int = H, w: int = W, ratio: float = 0.5) -> Inpainting:
    return Inpainting.random_pixels(h, w, ratio, gen(123))


def measure(op, x: torch.Tensor, sigma: float = 0.0, seed: int = 7) -> torch.Tensor:
    y = op.A(x)
    if sigma:
        y = y + sigma * torch.randn(y.shape, generator=gen(seed))
    return y


# --- schedule and registry ------------------------------------------------------------


def test_respaced_timesteps_even_descending_and_end():
    ts = respaced_timesteps(1000, 100)
    assert ts[0] == 999 and ts[-1] == 0 and len(set(ts)) == 100
    assert all(a > b for a, b in zip(ts, ts[1:], strict=False))
    gaps = {a - b for a, b in zip(ts, ts[1:], strict=False)}
    assert gaps <= {10, 11}
    assert respaced_timesteps(1000, 1) == [999]
    with pytest.raises(ValueError, match="steps"):
        respaced_timesteps(1000, 0)


def test_respaced_steps_abar_prev(tiny_prior):
    steps = respaced_steps(tiny_prior, 5)
    ab = tiny_prior.alphas_cumprod
    assert [s.t for s in steps] == [999, 749, 500, 250, 0]
    assert steps[-1].abar_prev == 1.0
    assert steps[0].abar_prev == pytest.approx(float(ab[749]))
    assert all(0 < s.beta < 1 for s in steps)


def test_get_sampler_unknown_name():
    assert get_sampler("ddpg") is SAMPLERS["ddpg"]
    with pytest.raises(ValueError, match="ddpg"):
        get_sampler("ddrm")


# --- interface: shape, finiteness, determinism, posterior samples ---------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["inpaint", "blur"])
def test_shape_finite_deterministic(name, kind, tiny_prior, image):
    op = mask_op() if kind == "inpaint" else GaussianBlur(1.0)
    x = image(H, W)
    y = measure(op, x, 0.05)
    sample = get_sampler(name)
    calls = []
    a = sample(tiny_prior, op, y, 0.05, 8, gen(0), progress=lambda i, n: calls.append((i, n)))
    b = sample(tiny_prior, op, y, 0.05, 8, gen(0))
    c = sample(tiny_prior, op, y, 0.05, 8, gen(1))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)  # bit-identical for the same seed
    assert (a - c).abs().max() > 1e-3  # another seed, another sample
    assert calls == [(i, 8) for i in range(1, 9)]


@pytest.mark.parametrize("name", NAMES)
def test_num_samples_gives_distinct_samples(name, tiny_prior, image):
    op = mask_op()
    y = measure(op, torch.cat([image(H, W, 0), image(H, W, 1)]), 0.02)  # B = 2
    out = get_sampler(name)(tiny_prior, op, y, 0.02, 6, gen(0), num_samples=3)
    assert out.shape == (6, 3, H, W)
    flat = out.flatten(1)
    dist = torch.cdist(flat, flat)
    assert (dist + torch.eye(6) * 1e9).min() > 1e-3  # all six samples differ


@pytest.mark.parametrize("name", NAMES)
def test_sr_operator_shapes(name, tiny_prior, image):
    op = BicubicDownsample(2)
    y = measure(op, image(H, W))
    out = get_sampler(name)(tiny_prior, op, y, 0.0, 4, gen(0))
    assert out.shape == (1, 3, H, W) and torch.isfinite(out).all()


def test_bad_arguments(tiny_prior, image):
    op = mask_op()
    y = measure(op, image(H, W))
    sample = get_sampler("ddpg")
    with pytest.raises(TypeError, match="Generator"):
        sample(tiny_prior, op, y, 0.0, 4, None)
    with pytest.raises(ValueError, match="sigma_y"):
        sample(tiny_prior, op, y, -1.0, 4, gen(0))
    with pytest.raises(ValueError, match="match|shape"):  # the operator or the sampler says
        sample(tiny_prior, op, y[..., :8], 0.0, 4, gen(0))
    with pytest.raises(ValueError, match="step_size"):
        sample(tiny_prior, op, y, 0.0, 4, gen(0), step_size="fast")


# --- measurement consistency (holds whatever the network) -----------------------------


@pytest.mark.parametrize("name", ["ddpg", "ddnm"])
def test_noiseless_mask_consistency_with_random_unet(name, tiny_prior, image):
    op = mask_op(ratio=0.6)
    x = image(H, W)
    y = measure(op, x)
    out = get_sampler(name)(tiny_prior, op, y, 0.0, 10, gen(0), num_samples=2)
    kept = op.mask.expand_as(out)
    err = (out - y.expand_as(out))[kept].abs().max()
    assert err < 1e-4, float(err)
    # the prior fills the missing pixels with something other than y's zeros
    assert out[~kept].abs().mean() > 1e-2


def test_consistency_test_can_fail_without_guidance(tiny_prior, image):
    # DPS with a tiny step is (nearly) unguided: the same check must fail for it.
    op = mask_op(ratio=0.6)
    y = measure(op, image(H, W))
    out = get_sampler("dps")(tiny_prior, op, y, 0.0, 10, gen(0), zeta_prime=1e-3)
    kept = op.mask.expand_as(out)
    assert (out - y)[kept].abs().max() > 1e-2


# --- oracle prior: the algebra independently of the network ---------------------------


@pytest.mark.parametrize("name", ["ddpg", "ddnm", "diffpir", "dps"])
@pytest.mark.parametrize("kind", ["inpaint", "blur", "sr"])
@pytest.mark.parametrize("sigma", [0.0, 0.1])
def test_oracle_prior_recovers_x0(name, kind, sigma, oracle_prior, image):
    # An eps-model that knows x0 makes every Tweedie estimate exact; with noise-free data
    # (y = A x0, whatever sigma_y the sampler is told) every guidance term vanishes and
    # each update must return x0. A sign or scaling error in an update breaks this.
    x0 = image(H, W, 3)
    op = {"inpaint": mask_op(), "blur": GaussianBlur(1.0), "sr": BicubicDownsample(2)}[kind]
    out = get_sampler(name)(oracle_prior(x0), op, op.A(x0), sigma, 20, gen(0), num_samples=2)
    assert (out - x0).abs().max() < 1e-3


@pytest.mark.parametrize("name", ["ddpg", "ddnm", "diffpir"])
def test_zero_prior_gives_pseudo_inverse_on_mask(name, oracle_prior, image):
    # A prior that always predicts x0 = 0 leaves only the data term: noiseless inpainting
    # must return y on kept pixels and 0 (the prior) on missing ones.
    op = mask_op(ratio=0.5)
    y = measure(op, image(H, W, 4))
    opts = {"sigma_min": 1e-6} if name == "diffpir" else {}  # no floor on the noise level
    out = get_sampler(name)(oracle_prior(torch.zeros(1, 3, H, W)), op, y, 0.0, 20, gen(0), **opts)
    assert (out - op.A_dagger(y)).abs().max() < 1e-3


@pytest.mark.parametrize("name", ["ddpg", "ddnm", "diffpir"])
def test_gaussian_prior_posterior_on_mask(name, gaussian_prior, image):
    # Prior x0 ~ N(m, s^2) per pixel with its exact denoiser, noiseless mask: the posterior
    # keeps the observed pixels and leaves the missing ones N(m, s^2). Their spread checks
    # the eps^ and sqrt(abar) coefficients of each update, which the point-mass oracle
    # cannot see. Run as deterministic DDIM (zeta = 0 / eta = 0), which samples exactly in
    # the many-step limit; fresh-noise mixing (zeta > 0) re-noises the MMSE estimate and
    # is known to under-disperse (std 0.25-0.27 here), so it is not a sampler check.
    m, s = 0.2, 0.3
    op = mask_op(32, 32, ratio=0.5)
    y = measure(op, image(32, 32, 8))
    opts = {
        "ddpg": {"zeta": 0.0},
        "ddnm": {"eta": 0.0},
        "diffpir": {"zeta": 0.0, "sigma_min": 1e-6},
    }
    out = get_sampler(name)(
        gaussian_prior(m, s), op, y, 0.0, 200, gen(0), num_samples=4, **opts[name]
    )
    kept = op.mask.expand_as(out)
    assert (out - y)[kept].abs().max() < 1e-4
    miss = out[~kept]  # 6144 pixels
    assert abs(float(miss.mean()) - m) < 0.02, float(miss.mean())
    assert abs(float(miss.std()) / s - 1) < 0.05, float(miss.std())
