"""DPS: Diffusion Posterior Sampling.

Chung, Kim, Mccann, Klasky & Ye, "Diffusion Posterior Sampling for General Noisy Inverse
Problems", ICLR 2023 (arXiv:2209.14687), Algorithm 1 (Gaussian noise).

At each respaced step t -> t-1, with x0 the Tweedie estimate as a function of x_t:

    ^x0     = (x_t - sqrt(1 - abar_t) eps(x_t, t)) / sqrt(abar_t)
    x'_{t-1}= sqrt(abar_{t-1}) ^x0 + sqrt(1 - abar_{t-1} - s_t^2) eps + s_t z   (DDIM(eta);
              eta = 1 is the DDPM ancestral step of the paper)
    x_{t-1} = x'_{t-1} - zeta' grad_{x_t} || y - A ^x0(x_t) ||_2

with s_t^2 = eta^2 (1 - abar_{t-1}) / (1 - abar_t) beta_t. The gradient of the norm (not
its square) equals the paper's step zeta_t grad ||y - A ^x0||^2 with
zeta_t = zeta' / (2 ||y - A ^x0||), as in the authors' code. The norm is taken per sample,
so the J posterior samples do not interact. The gradient flows through the UNet
(``torch.enable_grad``), so a step costs one forward and one backward pass, about 3x a
forward pass, and memory for the activations. Images are not clipped.

The step size scales with the measurement size (the gradient of a norm over m entries has
per-pixel size ~ 1/sqrt(m)); the paper's zeta' = 1 was tuned on 256x256 RGB images.
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
    "deblur": dict(eta=1.0, zeta_prime=10.0),
    "sr": dict(eta=1.0, zeta_prime=10.0),
    "inpaint": dict(eta=1.0, zeta_prime=10.0),
    "denoise": dict(eta=1.0, zeta_prime=10.0),
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
    eta: Annotated[float, Interval(ge=0, le=1)] = 1.0,
    zeta_prime: Annotated[float, Ge(0)] = 1.0,
    clip_x0: bool = True,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Restore ``y`` (model space) with DPS; returns (B*num_samples, C, H, W), model space.

    Args:
        prior, operator, y, sigma_y, steps, generator, num_samples, progress: as in
            :func:`restoreflow.samplers.ddpg.sample`. sigma_y is not used by the update
            (DPS folds it into zeta'); it is validated for a uniform interface.
        eta: DDIM stochasticity (1 = DDPM ancestral sampling, as in the paper).
        zeta_prime: step size zeta' of the measurement gradient.
        clip_x0: clamp ^x0 to [-1, 1] (as the authors' code); the DDIM step then uses
            the eps consistent with the clamped ^x0.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    s = setup(prior, operator, y, sigma_y, steps, generator, num_samples)
    y = s.y
    x = initial_x(prior, operator, s, generator)  # x_T (see schedule)
    for st in s.steps:
        ab, ab_prev = st.abar_t, st.abar_prev
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            x0 = tweedie_x0(prior, x, st.t, clip_x0)
            resid = (y - operator.A(x0)).flatten(1).norm(dim=1)  # ||y - A ^x0|| per sample
            (grad,) = torch.autograd.grad(resid.sum(), x)
        with torch.no_grad():
            x0 = x0.detach()
            eps = (x.detach() - math.sqrt(ab) * x0) / math.sqrt(1.0 - ab)
            var = eta**2 * (1.0 - ab_prev) / (1.0 - ab) * st.beta  # s_t^2
            x_prev = math.sqrt(ab_prev) * x0
            c_eps = math.sqrt(max(1.0 - ab_prev - var, 0.0))
            if c_eps > 0.0:
                x_prev = x_prev + c_eps * eps
            if var > 0.0:
                x_prev = x_prev + math.sqrt(var) * randn(s.x_shape, generator, y)
            x = x_prev - zeta_prime * grad
        report(progress, st, len(s.steps))
    return x.detach()
