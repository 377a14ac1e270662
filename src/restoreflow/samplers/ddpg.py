"""DDPG: Denoising Diffusion with iteratively Preconditioned Guidance.

Garber & Tirer, "Image Restoration by Denoising Diffusion Models with Iteratively
Preconditioned Guidance", CVPR 2024 (arXiv:2312.16519), Algorithm "DDPG".

Forward model (model space, images in [-1, 1]): ``y = A x + e``, ``e ~ N(0, sigma_y^2 I)``.
At each respaced step t (abar_t, abar_{t-1}; see :mod:`.schedule`):

    x0_t   = (x_t - sqrt(1 - abar_t) eps(x_t, t)) / sqrt(abar_t)            (Tweedie)
    r      = A x0_t - y
    g_BP   = A^T (A A^T + eta I)^{-1} r        (back-projection,  = A_dagger(r, eta))
    g_LS   = A^T r                              (least squares)
    delta  = abar_{t-1}^gamma                   (0 when sigma_y = 0: pure BP)
    g      = (1 - delta) g_BP + delta c g_LS    (preconditioner W_t = (1-delta)(AA^T+eta)^-1
                                                 + delta c I)
    x~     = x0_t - mu_t g
    eps^   = (x_t - sqrt(abar_t) x~) / sqrt(1 - abar_t)                   (effective noise)
    x_{t-1}= sqrt(abar_{t-1}) x~
             + sqrt(1 - abar_{t-1}) (sqrt(zeta) z + sqrt(1 - zeta) w_t eps^),  z ~ N(0, I)

with ``eta = max(1e-4, eta_tilde sigma_y^2)``, ``w_t = delta`` when sigma_y > 0 (1 when
noiseless) and the step size ``mu_t = mu_scale`` ("constant") or
``mu_t = mu_scale (1 - abar_{t-1}) / (1 - abar_t)`` ("decay", which vanishes at the last
step). The output is x~ of the last step (abar_{t-1} = 1 there), in model space.

Early on delta ~ 0 and the guidance is BP (fast, exact data consistency); as abar_{t-1}
grows the preconditioner moves to LS, whose noise is not amplified by (AA^T)^{-1}.
``c`` (``ls_scale``) should be <= 1/||A||^2 for a stable LS step; "auto" estimates
||A||^2 by power iteration. The paper's own settings (CelebA/ImageNet, T = 100) are in
its evaluation scripts; ours, tuned on our images, are in :func:`resolve_options`.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from annotated_types import Ge, Gt, Interval

from restoreflow.operators.base import channel_groups

from .schedule import Progress, initial_x, operator_norm_sq, randn, report, setup, tweedie_x0

StepSize = Literal["auto", "constant", "decay"]

# Options per restoration task (an operator's ``task``) where they differ from the
# signature's: chosen by ``benchmarks/bench_samplers.py --tune``
# (benchmarks/results/sampler_defaults.md).
_TASK_OPTIONS: dict[str, dict] = {
    "deblur": dict(gamma=8.0, zeta=1.0, eta_tilde=0.7, step_size="decay"),
    "sr": dict(gamma=300.0, zeta=0.7, eta_tilde=1.0, step_size="constant"),
    "inpaint": dict(gamma=300.0, zeta=0.2, eta_tilde=1.0, step_size="constant"),
    "denoise": dict(gamma=8.0, zeta=1.0, eta_tilde=0.7, step_size="decay"),
    "other": {},
}

def resolve_options(task: str, sigma_y: float) -> dict:
    """The options DDPG takes for ``task`` at noise ``sigma_y`` ([0, 1] units) where they
    differ from its signature's defaults. A noiseless problem takes the constant step
    size: the last step then enforces ``A x = y`` exactly, as in the paper's noiseless
    runs."""
    opts = dict(_TASK_OPTIONS[task])
    if sigma_y == 0:
        opts["step_size"] = "constant"
    return opts


def sample(
    prior,
    operator,
    y: torch.Tensor,
    sigma_y: float,
    steps: int = 100,
    generator: torch.Generator | None = None,
    *,
    num_samples: int = 1,
    gamma: float = 8.0,
    zeta: Annotated[float, Interval(ge=0, le=1)] = 0.5,
    eta_tilde: Annotated[float, Ge(0)] = 0.7,
    step_size: StepSize = "auto",
    mu_scale: Annotated[float, Gt(0)] = 1.0,
    ls_scale: Annotated[float, Gt(0)] | Literal["auto"] = "auto",
    eta_min: Annotated[float, Gt(0)] = 1e-4,
    clip_x0: bool = True,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Restore ``y`` (model space) with DDPG; returns (B*num_samples, C, H, W) in model space.

    Args:
        prior: DiffusionPrior or TiledPrior.
        operator: LinearOperator A.
        y: measurements (B, ...) in model units (``2 y - A 1`` for y in [0, 1]).
        sigma_y: noise std in model units (2x the [0, 1] std); 0 = noiseless.
        steps: number of UNet evaluations (respaced timesteps).
        generator: torch.Generator, the only source of randomness.
        num_samples: J posterior samples per measurement, stacked on the batch dim.
        gamma: delta_t = abar_{t-1}^gamma; larger keeps BP guidance longer.
        zeta: share of fresh noise vs. effective noise in the update (1 = all fresh).
        eta_tilde: eta = max(eta_min, eta_tilde sigma_y^2) regularises (AA^T)^{-1}.
        step_size: "constant" mu_t = mu_scale, or "decay" (see module docstring); "auto"
            is "constant" when sigma_y = 0 (exact consistency at the last step, as the
            paper's noiseless runs) and "decay" otherwise.
        mu_scale: constant factor of mu_t.
        ls_scale: c, the LS step constant; "auto" = 1 / ||A||^2 (power iteration).
        eta_min: floor of eta (keeps A_dagger well conditioned when sigma_y = 0).
        clip_x0: clamp x0_t to [-1, 1] before the guidance (see :mod:`.schedule`).
        progress: optional callback(step_number, total).
    """
    if step_size not in ("auto", "constant", "decay"):
        raise ValueError(f"step_size must be 'auto', 'constant' or 'decay', got {step_size!r}")
    if not 0.0 <= zeta <= 1.0:
        raise ValueError(f"zeta must be in [0, 1], got {zeta}")
    s = setup(prior, operator, y, sigma_y, steps, generator, num_samples)
    y, sig = s.y, s.sigma_y
    noisy = sig > 0
    if step_size == "auto":
        step_size = "decay" if noisy else "constant"
    eta = max(eta_min, eta_tilde * sig**2)  # regularisation of (A A^T)^{-1}
    groups = channel_groups(operator, s.x_shape[1])
    b, ch, h, w = s.x_shape
    with torch.no_grad():
        c = 1.0 / operator_norm_sq(operator, s.x_shape, y) if ls_scale == "auto" else ls_scale
        x = initial_x(prior, operator, s, generator)  # x_T (see schedule)
        for st in s.steps:
            ab, ab_prev = st.abar_t, st.abar_prev
            # Image-sized tensors are updated in place, and the guidance runs one channel
            # at a time for channel-wise operators: peak memory on large images is x_t,
            # x0 and y plus the scratch of one channel.
            x0 = tweedie_x0(prior, x, st.t, clip_x0)
            delta = ab_prev**gamma if noisy else 0.0  # delta_t
            mu = mu_scale
            if step_size == "decay":
                mu *= (1.0 - ab_prev) / (1.0 - ab)
            for cs in groups:  # x0 -> x~_t = x0_t - mu_t g
                r = operator.A(x0[:, cs]).sub_(y[:, cs])  # A x0_t - y
                # g = (1 - delta) g_BP + delta c g_LS
                g = operator.dagger_adjoint(r, eta, 1.0 - delta, delta * c, overwrite=True)
                del r
                x0[:, cs].sub_(g.mul_(mu))
                del g
            x_tilde = x0
            del x0
            if ab_prev < 1.0:  # else last step: x_{-1} = x~
                wt = delta if noisy else 1.0  # w_t
                for k in range(ch):  # x_{t-1}, channel by channel, into x~'s buffer
                    xt, xk = x_tilde[:, k : k + 1], x[:, k : k + 1]
                    eps_hat = xk.sub_(xt * math.sqrt(ab)).div_(math.sqrt(1.0 - ab))
                    noise = randn((b, 1, h, w), generator, y).mul_(math.sqrt(zeta))
                    noise.add_(eps_hat.mul_(math.sqrt(1.0 - zeta) * wt))
                    xt.mul_(math.sqrt(ab_prev)).add_(noise.mul_(math.sqrt(1.0 - ab_prev)))
                    del noise, eps_hat, xt, xk  # the views would keep x_t alive
            x = x_tilde
            del x_tilde
            report(progress, st, len(s.steps))
    return x
