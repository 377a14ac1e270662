"""IDBP: Iterative Denoising and Backward Projections (Tirer & Giryes, "Image Restoration by
Iterative Denoising and Backward Projections", IEEE TIP 2019).

With ``A^+_eta = A^T (A A^T + eta I)^{-1}`` (eta = ``eps`` sigma_y^2, floored at 1e-4 in
model units) the method alternates, for k = 1..K (K = ``steps``):

    x_k   = D(y~_{k-1}, sigma_bp + delta_k)                       (denoise)
    y~_k  = A^+_eta y + (I - A^+_eta A) x_k = x_k - A^+_eta (A x_k - y)   (backward projection)

from ``y~_0 = clip(A^+_eta y) + restart_noise (sigma_bp + delta_1) n`` (n ~ N(0, I) per
posterior sample). ``sigma_bp`` is the noise level the back-projection leaves in y~: the
std of ``A^+_eta e`` for e ~ N(0, sigma_y^2 I) (= sigma_y for denoising, larger where A
is ill-conditioned), estimated once from a private, fixed-seed draw. The output is x_K.
The only parameter of the paper is delta; its rule
here (``delta="auto"``): delta starts at ``delta_start`` and shrinks by the factor
``delta_decay`` per iteration while the measurement residual of the denoised estimate
is above the noise, ``||A x_k - y||^2 > m sigma_y^2`` (m measurements; the discrepancy
principle), and is held once the residual reaches it. A number fixes delta for every
iteration, as in the paper's experiments. Units of the options: [0, 1].
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from annotated_types import Ge, Gt, Interval

from .schedule import Progress, denoise, pinv_start, randn, setup


def resolve_options(task: str, sigma_y: float) -> dict:
    """IDBP takes its signature's defaults for every task and noise level."""
    return {}


def sample(
    prior,
    operator,
    y: torch.Tensor,
    sigma_y: float,
    steps: int = 20,
    generator: torch.Generator | None = None,
    *,
    num_samples: int = 1,
    delta: Annotated[float, Gt(0)] | Literal["auto"] = "auto",
    delta_start: Annotated[float, Interval(gt=0, le=1)] = 40 / 255,
    delta_decay: Annotated[float, Interval(gt=0, le=1)] = 0.8,
    delta_min: Annotated[float, Gt(0)] = 1 / 255,
    eps: Annotated[float, Ge(0)] = 1.0,
    restart_noise: Annotated[float, Ge(0)] = 1.0,
    clip_x0: bool = True,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Restore ``y`` (model space) by IDBP; returns (B*num_samples, C, H, W) in model space.

    Args:
        prior, operator, y, sigma_y, generator, num_samples, progress: as in
            :func:`restoreflow.samplers.ddpg.sample`.
        steps: K, the number of denoiser evaluations.
        delta: the denoiser's extra noise level ([0, 1] units), or "auto" (module doc).
        delta_start, delta_decay, delta_min: the "auto" rule's start, factor and floor.
        eps: eta = eps sigma_y^2 regularises (A A^T)^{-1} in the projection.
        restart_noise: std of the start's perturbation, in units of the first level.
        clip_x0: clamp each denoised estimate to the data range.
    """
    s = setup(prior, operator, y, sigma_y, steps, generator, num_samples, schedule=False)
    y = s.y
    sig = s.sigma_y
    eta = max(1e-4, eps * sig**2)
    sig_bp = backprojected_noise(operator, y, sig, eta)
    auto = delta == "auto"
    d = 2.0 * (delta_start if auto else delta)  # model units
    d_min = 2.0 * delta_min
    top = getattr(prior, "sigma_max", None)
    m = y[0].numel()
    k = steps
    with torch.no_grad():
        yt = pinv_start(operator, y, eta)
        if restart_noise > 0:
            yt.add_(randn(s.x_shape, generator, y).mul_(restart_noise * (sig_bp + d)))
        for i in range(k):
            level = sig_bp + d if top is None else min(sig_bp + d, top)
            x = denoise(prior, yt, level, clip_x0)
            r = operator.A(x).sub_(y)  # A x_k - y
            if auto and float(r.flatten(1).pow(2).sum(1).max()) > m * sig**2:
                d = max(d * delta_decay, d_min)
            yt = x - operator.A_dagger(r, eta=eta)
            del r
            if progress is not None:
                progress(i + 1, k)
    return x


def backprojected_noise(operator, y: torch.Tensor, sigma_y: float, eta: float) -> float:
    """std of A^+_eta e, e ~ N(0, sigma_y^2 I) shaped like one measurement, from a private
    generator with a fixed seed (the caller's generator is left untouched)."""
    if sigma_y == 0:
        return 0.0
    g = torch.Generator(device="cpu").manual_seed(0)
    e = torch.randn((1, *y.shape[1:]), generator=g).to(device=y.device, dtype=y.dtype)
    return float(operator.A_dagger(e.mul_(sigma_y), eta=eta).std())
