"""DiffPIR: Denoising Diffusion Models for Plug-and-Play Image Restoration.

Zhu, Zhang, Liang, Cao, Wen, Timofte & Van Gool, CVPR 2023 workshops (arXiv:2305.08995),
Algorithm 1 with the analytic data step.

At each respaced step t -> t-1, with sigma_bar_t = sqrt((1 - abar_t) / abar_t) the noise
level of x_t / sqrt(abar_t) (model units):

    x0^(t) = (x_t - sqrt(1 - abar_t) eps(x_t, t)) / sqrt(abar_t)        (denoiser prior)
    rho_t  = lambda sigma_n^2 / sigma_bar_t^2
    ^x0    = argmin_x ||y - A x||^2 + rho_t ||x - x0^(t)||^2               (data step)
           = x0^(t) + A^T (A A^T + rho_t I)^{-1} (y - A x0^(t))
           = x0^(t) + A_dagger(y - A x0^(t), eta=rho_t)       (exact when A_dagger is)
    eps^   = (x_t - sqrt(abar_t) ^x0) / sqrt(1 - abar_t)
    x_{t-1}= sqrt(abar_{t-1}) ^x0 + sqrt(1 - abar_{t-1}) (sqrt(1 - zeta) eps^ + sqrt(zeta) z)

sigma_n = max(sigma_y, sigma_min) in model units, so a noiseless problem keeps a
well-conditioned data step. Units: the authors' code takes sigma_n in [0, 1] units but
sigma_bar_t in model units, so their lambda equals 4x the lambda here for the same rho_t
(their deblur setting lambda = 7 is lambda = 1.75 here).
``eta`` adds DDIM stochasticity inside the (1 - zeta) branch as in the authors' code
(their default eta = 0): sqrt(1-zeta) (sqrt(1-abar_{t-1}-s^2) eps^ + s z') with
s^2 = eta^2 (1 - abar_{t-1}) / (1 - abar_t) beta_t. The data step is also applied at
the last step (t = 0), where rho_t is large unless the problem is noiseless.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from annotated_types import Gt, Interval

from .schedule import Progress, initial_x, options_by_task, randn, report, setup, tweedie_x0

# Options per restoration task (an operator's ``task``) where they differ from the
# signature's: chosen by ``benchmarks/bench_samplers.py --tune``
# (benchmarks/results/sampler_defaults.md).
_TASK_OPTIONS: dict[str, dict] = {
    "deblur": dict(lam=1.75, zeta=1.0),
    "sr": dict(lam=0.25, zeta=1.0),
    "inpaint": dict(lam=0.25, zeta=1.0),
    "denoise": dict(lam=1.75, zeta=1.0),
    "other": {},
}


resolve_options = options_by_task(_TASK_OPTIONS)


def sample(
    prior,
    operator,
    y: torch.Tensor,
    sigma_y: float,
    steps: int = 100,
    generator: torch.Generator | None = None,
    *,
    num_samples: int = 1,
    eta: Annotated[float, Interval(ge=0, le=1)] = 0.0,
    lam: Annotated[float, Gt(0)] = 1.0,
    zeta: Annotated[float, Interval(ge=0, le=1)] = 0.3,
    sigma_min: Annotated[float, Gt(0)] = 2e-3,
    clip_x0: bool = True,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Restore ``y`` (model space) with DiffPIR; returns (B*num_samples, C, H, W), model space.

    Args:
        prior, operator, y, sigma_y, steps, generator, num_samples, progress: as in
            :func:`restoreflow.samplers.ddpg.sample` (y and sigma_y in model units).
        eta: DDIM stochasticity of the effective-noise branch (paper: 0).
        lam: lambda, weight of the prior in rho_t = lambda sigma_n^2 / sigma_bar_t^2.
        zeta: share of fresh noise in the update (paper: 0.3 deblur, 1.0 inpainting).
        sigma_min: floor of sigma_n (model units) for noiseless problems.
        clip_x0: clamp x0^(t) to [-1, 1] before the data step (see :mod:`.schedule`).
    """
    if not 0.0 <= zeta <= 1.0:
        raise ValueError(f"zeta must be in [0, 1], got {zeta}")
    if lam <= 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    s = setup(prior, operator, y, sigma_y, steps, generator, num_samples)
    y = s.y
    sigma_n = max(s.sigma_y, sigma_min)
    with torch.no_grad():
        x = initial_x(prior, operator, s, generator)  # x_T (see schedule)
        for st in s.steps:
            ab, ab_prev = st.abar_t, st.abar_prev
            x0 = tweedie_x0(prior, x, st.t, clip_x0)  # x0^(t)
            rho = lam * sigma_n**2 * ab / (1.0 - ab)  # lambda sigma_n^2 / sigma_bar_t^2
            x0_hat = x0 + operator.A_dagger(y - operator.A(x0), eta=rho)  # data step
            if ab_prev >= 1.0:
                x = x0_hat
            else:
                eps_hat = (x - math.sqrt(ab) * x0_hat) / math.sqrt(1.0 - ab)
                var = eta**2 * (1.0 - ab_prev) / (1.0 - ab) * st.beta
                branch = math.sqrt(max(1.0 - ab_prev - var, 0.0)) * eps_hat
                if var > 0.0:
                    branch = branch + math.sqrt(var) * randn(s.x_shape, generator, y)
                x = math.sqrt(ab_prev) * x0_hat + math.sqrt(1.0 - zeta) * branch
                if zeta > 0.0:
                    z = randn(s.x_shape, generator, y)
                    x = x + math.sqrt(zeta) * math.sqrt(1.0 - ab_prev) * z
            report(progress, st, len(s.steps))
    return x
