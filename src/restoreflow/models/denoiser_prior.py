"""A Gaussian denoiser seen as a diffusion prior, and the hybrid of a denoiser and a
diffusion UNet.

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
covers [0, T-1]. Conversely any prior is a denoiser through
:func:`restoreflow.samplers.schedule.denoise` (Tweedie's x0 at the t whose s_t is nearest
sigma), which is how HQS and IDBP use a diffusion UNet.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn

from restoreflow.models.denoiser import Denoiser
from restoreflow.models.prior import DiffusionPrior, last_timestep_within

DEFAULT_SCHEDULE = {"beta_schedule": "linear", "num_train_timesteps": 1000}


class DenoiserNet(nn.Module):
    """The network slot of a DiffusionPrior for a denoiser: ``forward(x_t, t).sample`` is
    x0 in model space (the fallback prior's x0 above the denoiser's range)."""

    def __init__(self, denoiser: Denoiser, alphas_cumprod: torch.Tensor,
                 fallback: DiffusionPrior | None = None):
        super().__init__()
        self.denoiser = denoiser
        self.net = denoiser.net  # registered: .to(), parameters() and LoRA reach it
        self.fallback = fallback
        # the fallback's network registered too, so .to() and parameters() reach it
        self.high = fallback.unet if fallback is not None else None
        self.abar = alphas_cumprod.to(torch.float64).cpu()
        # the top t the denoiser covers (s_t in model units, twice the [0, 1] sigma)
        self.t_switch = last_timestep_within(self.abar, 2 * denoiser.sigma_max)
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
