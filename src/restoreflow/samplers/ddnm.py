"""DDNM+: Denoising Diffusion Null-space Model, noise-aware version.

Wang, Yu & Zhang, "Zero-Shot Image Restoration Using Denoising Diffusion Null-Space
Model", ICLR 2023 (arXiv:2212.00490), Algorithm 2 / Eqs. 17-19, with a DDIM(eta) update.

Forward model (model space): ``y = A x + n``, ``n ~ N(0, sigma_y^2 I)``. At each respaced
step t -> t-1 (abar_t, abar_{t-1}, beta_t = 1 - abar_t / abar_{t-1}):

    x0|t   = (x_t - sqrt(1 - abar_t) eps(x_t, t)) / sqrt(abar_t)
    ^x0|t  = x0|t - Sigma_t A^+ (A x0|t - y),   Sigma_t = lambda_t I          (Eq. 17)

The DDIM(eta) step written as x_{t-1} = a_t ^x0|t + b_t x_t + sqrt(gamma_t) z has

    sigma_t^2 = eta^2 (1 - abar_{t-1}) / (1 - abar_t) beta_t      (DDPM variance at eta=1)
    c_t       = sqrt(1 - abar_{t-1} - sigma_t^2)                   (coefficient of eps^)
    a_t       = sqrt(abar_{t-1}) - c_t sqrt(abar_t) / sqrt(1 - abar_t)
    b_t       = c_t / sqrt(1 - abar_t)

(at eta = 1, a_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t), the paper's DDPM coefficient).
The correction carries the measurement noise a_t lambda_t A^+ n into x_{t-1}, so the
fresh noise is reduced to keep the total at sigma_t (Eq. 19):

    if sigma_t >= a_t sigma_y:  lambda_t = 1,  gamma_t = sigma_t^2 - (a_t sigma_y)^2
    else:                       lambda_t = sigma_t / (a_t sigma_y),  gamma_t = 0.

With sigma_y = 0 this is DDNM: lambda_t = 1 (exact range-space replacement, A x = y).
``eta`` must be > 0 when sigma_y > 0 (eta = 0 leaves no noise budget: no guidance).

A^+ is ``A_dagger(., pinv_eta)`` with ``pinv_eta = eta_tilde sigma_y^2``: 0 is the
paper's exact pseudo-inverse. The paper's SVD version uses a Sigma_t per singular value
s_i (lambda_{t,i} = min(1, sigma_t s_i / (a_t sigma_y))), which damps the components
where A^+ amplifies the noise; the SVD-free regularised pseudo-inverse plays that role for
ill-conditioned operators (blur) at sigma_y > 0 and barely changes well-conditioned ones.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from annotated_types import Ge, Interval

from .schedule import Progress, initial_x, options_by_task, randn, report, setup, tweedie_x0

# Options per restoration task (an operator's ``task``) where they differ from the
# signature's: chosen by ``benchmarks/bench_samplers.py --tune``
# (benchmarks/results/sampler_defaults.md).
_TASK_OPTIONS: dict[str, dict] = {
    "deblur": dict(eta=1.0, eta_tilde=4.0),
    "sr": dict(eta=1.0, eta_tilde=1.0),
    "inpaint": dict(eta=1.0, eta_tilde=1.0),
    "denoise": dict(eta=1.0, eta_tilde=4.0),
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
    eta: Annotated[float, Interval(ge=0, le=1)] = 0.85,
    eta_tilde: Annotated[float, Ge(0)] = 1.0,
    clip_x0: bool = True,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Restore ``y`` (model space) with DDNM+; returns (B*num_samples, C, H, W), model space.

    Args:
        prior, operator, y, sigma_y, steps, generator, num_samples, progress: as in
            :func:`restoreflow.samplers.ddpg.sample` (y and sigma_y in model units).
        eta: DDIM stochasticity in [0, 1] (1 = DDPM ancestral, the paper's Algorithm 2).
        eta_tilde: regularisation of A^+ relative to sigma_y^2 (0 = exact A^+).
        clip_x0: clamp x0|t to [-1, 1] before the correction (see :mod:`.schedule`).
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    s = setup(prior, operator, y, sigma_y, steps, generator, num_samples)
    y, sig = s.y, s.sigma_y
    pinv_eta = eta_tilde * sig**2
    with torch.no_grad():
        x = initial_x(prior, operator, s, generator)  # x_T (see schedule)
        for st in s.steps:
            ab, ab_prev = st.abar_t, st.abar_prev
            x0 = tweedie_x0(prior, x, st.t, clip_x0)  # x0|t
            var = eta**2 * (1.0 - ab_prev) / (1.0 - ab) * st.beta  # sigma_t^2
            c_eps = math.sqrt(max(1.0 - ab_prev - var, 0.0))
            a_t = math.sqrt(ab_prev) - c_eps * math.sqrt(ab) / math.sqrt(1.0 - ab)
            b_t = c_eps / math.sqrt(1.0 - ab)
            sigma_t = math.sqrt(var)
            if sigma_t >= a_t * sig:  # Eq. 19
                lam, gam = 1.0, var - (a_t * sig) ** 2
            else:
                lam, gam = sigma_t / (a_t * sig), 0.0
            x0_hat = x0
            if lam > 0.0:
                r = operator.A(x0) - y
                x0_hat = x0 - lam * operator.A_dagger(r, eta=pinv_eta)  # Eq. 17
            x = a_t * x0_hat + b_t * x
            if gam > 0.0:
                x = x + math.sqrt(gam) * randn(s.x_shape, generator, y)
            report(progress, st, len(s.steps))
    return x
