"""A Gaussian denoiser seen as a diffusion prior, a diffusion UNet seen as a denoiser, and
the hybrid of the two.

Diffusion samplers ask a prior for Tweedie's estimate ``x0(x_t, t)`` on the DDPM schedule
(model space, images in [-1, 1]):

    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps   <=>   x_t / sqrt(abar_t) = x0 + s_t eps,
    s_t = sqrt((1 - abar_t) / abar_t)              (noise std in model units).

So a denoiser D(x, sigma) on [0, 1] images gives

    x0(x_t, t) = 2 D((x_t / sqrt(abar_t) + 1) / 2,  s_t / 2) - 1,

valid where ``s_t / 2 <= sigma_max`` of the denoiser: :func:`denoiser_prior` wraps it in a
:class:`~restoreflow.models.prior.DiffusionPrior` (``prediction_type = "sample"``) whose
``sigma_max`` makes the samplers start at the top of that range (from ``A^+ y`` plus noise,
:func:`restoreflow.samplers.schedule.initial_x`). With a ``fallback`` diffusion prior (the
hybrid), timesteps above the denoiser's range go to the fallback's x0 and the schedule
covers [0, T-1]. Conversely :class:`UNetDenoiser` runs a diffusion prior as a denoiser:
``D(x, sigma) = (x0(sqrt(abar_t) (2x - 1), t) + 1) / 2`` at the t with ``s_t`` nearest
``2 sigma``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn

from restoreflow.models.denoiser import Denoiser
from restoreflow.models.prior import DiffusionPrior

DEFAULT_SCHEDULE = {"beta_schedule": "linear", "num_train_timesteps": 1000}


def noise_ratio(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """s_t = sqrt((1 - abar_t) / abar_t) for every t (model units)."""
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


class DenoiserNet(nn.Module):
    """The network slot of a DiffusionPrior for a denoiser: ``forward(x_t, t).sample`` is
    x0 in model space (the fallback prior's x0 above the denoiser's range)."""

    def __init__(self, denoiser: Denoiser, alphas_cumprod: torch.Tensor,
                 fallback: DiffusionPrior | None = None):
        super().__init__()
        self.denoiser = denoiser
        self.net = denoiser.net  # registered: .to(), parameters() and LoRA reach it
        self.fallback = fallback
        self.high = fallback.unet if fallback is not None else None
        self.abar = alphas_cumprod.to(torch.float64).cpu()
        ratio = noise_ratio(self.abar)
        inside = (ratio / 2 <= denoiser.sigma_max * (1 + 1e-6)).nonzero()
        self.t_switch = int(inside.max()) if len(inside) else 0  # top t the denoiser covers
        self.size_multiple = fallback.size_multiple if fallback is not None else 1

    def x0_at(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        if self.fallback is not None and t > self.t_switch:
            return self.fallback.x0(x_t, t)
        ab = float(self.abar[t])
        sigma = math.sqrt((1 - ab) / ab) / 2  # [0, 1] units
        v = x_t / math.sqrt(ab)
        return self.denoiser.denoise((v + 1) / 2, sigma).mul(2).sub(1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> SimpleNamespace:
        tt = torch.as_tensor(t).reshape(-1).long().cpu()
        if tt.numel() == 1 or bool((tt == tt[0]).all()):
            return SimpleNamespace(sample=self.x0_at(x_t, int(tt[0])))
        out = torch.empty_like(x_t)
        for tv in tt.unique().tolist():
            idx = (tt == tv).nonzero().flatten().to(x_t.device)
            out[idx] = self.x0_at(x_t[idx], tv)
        return SimpleNamespace(sample=out)


def denoiser_prior(denoiser: Denoiser, fallback: DiffusionPrior | None = None) -> DiffusionPrior:
    """The denoiser as a DiffusionPrior on the fallback's schedule (else the linear DDPM
    schedule, T = 1000); with a fallback, the hybrid prior."""
    if fallback is not None:
        abar = fallback.alphas_cumprod
        sched = fallback.extra.get("scheduler_config", DEFAULT_SCHEDULE)
    else:
        from diffusers import DDPMScheduler

        sched = DEFAULT_SCHEDULE
        abar = DDPMScheduler.from_config(sched).alphas_cumprod.to(torch.float64)
    net = DenoiserNet(denoiser, abar, fallback)
    if fallback is None:
        model_hash, source = denoiser.model_hash, denoiser.source
        sigma_max = 2 * denoiser.sigma_max
    else:
        from restoreflow.models.priors import hybrid_hash

        model_hash = hybrid_hash(denoiser.model_hash, fallback.model_hash)
        source, sigma_max = f"hybrid({denoiser.source} + {fallback.source})", None
    return DiffusionPrior(unet=net, alphas_cumprod=abar, prediction_type="sample",
                          model_hash=model_hash, source=source, sigma_max=sigma_max,
                          extra={"scheduler_config": sched, "denoiser": denoiser.describe()})


class UNetDenoiser(Denoiser):
    """A diffusion prior (e.g. the shipped UNet) as a denoiser: Tweedie's x0 at the t whose
    noise level matches sigma (the image mean of a per-pixel map)."""

    name = "unet"

    def __init__(self, prior: DiffusionPrior):
        super().__init__(prior.unet)
        self.prior = prior
        ratio = noise_ratio(prior.alphas_cumprod)
        self.sigma_max = float(ratio.max()) / 2
        self.channels = int(getattr(getattr(prior.unet, "config", None), "in_channels", 3))
        self.model_hash, self.source = prior.model_hash, prior.source

    def _denoise(self, x, sigma_map):
        out = torch.empty_like(x)
        for i in range(x.shape[0]):
            sigma = float(sigma_map[i].mean())
            t = self.prior.timestep_for_sigma(2 * sigma)
            ab = float(self.prior.abar(t))
            x_t = (2 * x[i : i + 1] - 1) * math.sqrt(ab)
            out[i : i + 1] = (self.prior.x0(x_t, t) + 1) / 2
        return out
