"""HQS plug-and-play with a denoiser prior (DPIR: Zhang et al., "Plug-and-Play Image
Restoration with Deep Denoiser Prior", IEEE TPAMI 2021).

Half-quadratic splitting of ``min_x 1/(2 sigma_y^2) ||y - A x||^2 + R(x)`` alternates,
for k = 1..K (K = ``steps``) with noise levels sigma_k log-spaced from ``sigma_start`` down
to ``max(sigma_y, sigma_floor)`` (model units inside, [0, 1] units in the options):

    alpha_k = lam sigma_y^2 / sigma_k^2
    x_k     = argmin ||y - A x||^2 + alpha_k ||x - z_{k-1}||^2
            = z_{k-1} - A^T (A A^T + alpha_k I)^{-1} (A z_{k-1} - y)     (= z - A^+_alpha r)
    z_k     = D(x_k, sigma_k)                                             (the prior)

from ``z_0 = clip(A^+_eta y) + restart_noise sigma_1 n`` (eta = sigma_y^2; n ~ N(0, I) per
posterior sample, so J samples start apart). With ``zeta > 0`` each x_k gets fresh noise
``sqrt(zeta) sigma_k n`` and is denoised at ``sqrt(1 + zeta) sigma_k``: J samples then
differ where the prior is unsure (a stochastic HQS; 0 for one sample by default). The
x-step is closed form wherever the operator's regularised pseudo-inverse is (circular
blur by FFT, SR, masks), conjugate gradients otherwise. The output is z_K. ``sigma_y`` is
floored at ``sigma_floor`` in alpha (a noiseless problem keeps a small weight on the
prior, as DPIR's 0.255/255 floor).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from annotated_types import Ge, Gt, Interval

from .schedule import Progress, denoise, pinv_start, randn, setup

# Options per restoration task (an operator's ``task``): lam tuned on images
# outside the benchmark set (benchmarks/results/denoiser_prior_tune1.md); inpainting starts
# at the top of FFDNet's range (holes need a large first noise level).
_TASK_OPTIONS: dict[str, dict] = {
    "deblur": dict(lam=0.1),
    "sr": dict(lam=0.1),
    "inpaint": dict(lam=0.1, sigma_start=75 / 255),
    "denoise": dict(lam=0.1),
    "other": dict(lam=0.1),
}


def resolve_options(task: str, sigma_y: float) -> dict:
    """The options HQS takes for ``task`` at noise ``sigma_y`` ([0, 1] units) where they
    differ from its signature's defaults. Deblurring at low noise (sigma_y < 0.03) weighs
    the data more, lam 0.3 (chosen on the tuning images,
    benchmarks/results/denoiser_prior_tune2.md). Denoising starts at sigma_y itself: with
    the task's one step, the prior's MMSE estimate D(y, sigma_y)."""
    opts = dict(_TASK_OPTIONS[task])
    if task == "denoise":
        opts["sigma_start"] = min(max(sigma_y, 1 / 255), 1.0)
    elif task == "deblur" and sigma_y < 0.03:
        opts["lam"] = 0.3
    return opts


def sample(
    prior,
    operator,
    y: torch.Tensor,
    sigma_y: float,
    steps: int = 8,
    generator: torch.Generator | None = None,
    *,
    num_samples: int = 1,
    lam: Annotated[float, Gt(0)] = 0.23,
    sigma_start: Annotated[float, Interval(gt=0, le=1)] = 49 / 255,
    sigma_floor: Annotated[float, Gt(0)] = 1 / 255,
    restart_noise: Annotated[float, Ge(0)] = 1.0,
    zeta: Annotated[float, Ge(0)] | Literal["auto"] = "auto",
    clip_x0: bool = True,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Restore ``y`` (model space) by HQS; returns (B*num_samples, C, H, W) in model space.

    Args:
        prior, operator, y, sigma_y, generator, num_samples, progress: as in
            :func:`restoreflow.samplers.ddpg.sample`.
        steps: K, the number of denoiser evaluations.
        lam: lambda of alpha_k = lam sigma_y^2 / sigma_k^2 (DPIR: 0.23).
        sigma_start: sigma_1 in [0, 1] units (capped at the prior's range).
        sigma_floor: lower bound of sigma_K and of sigma_y in alpha_k, [0, 1] units.
        restart_noise: std of the start's perturbation in units of sigma_1.
        zeta: fresh noise before each denoiser step, ``x_k + sqrt(zeta) sigma_k n``, the
            denoiser then called at ``sqrt(1 + zeta) sigma_k`` (posterior samples that
            differ where the prior is unsure); "auto": 0 for one sample (deterministic),
            0.5 for J >= 2.
        clip_x0: clamp each denoised estimate to the data range.
    """
    s = setup(prior, operator, y, sigma_y, steps, generator, num_samples, schedule=False)
    y = s.y
    floor = 2.0 * sigma_floor
    sig_y = max(s.sigma_y, floor)
    top = 2.0 * sigma_start
    if getattr(prior, "sigma_max", None) is not None:
        top = min(top, prior.sigma_max)
    end = min(max(s.sigma_y, floor), top)
    k = steps
    sigmas = [top * (end / top) ** (i / max(k - 1, 1)) for i in range(k)]
    if zeta == "auto":
        zeta = 0.5 if num_samples > 1 else 0.0
    with torch.no_grad():
        z = pinv_start(operator, y, max(1e-4, sig_y**2))
        if restart_noise > 0:
            z.add_(randn(s.x_shape, generator, y).mul_(restart_noise * sigmas[0]))
        for i, sk in enumerate(sigmas):
            alpha = lam * sig_y**2 / sk**2
            r = operator.A(z).sub_(y)  # A z - y
            x = z.sub_(operator.A_dagger(r, eta=alpha))  # z - A^+_alpha (A z - y)
            del r
            if zeta > 0:
                x.add_(randn(s.x_shape, generator, y).mul_(zeta**0.5 * sk))
            z = denoise(prior, x, sk * (1.0 + zeta) ** 0.5, clip_x0)
            del x
            if progress is not None:
                progress(i + 1, k)
    return z
