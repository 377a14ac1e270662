"""Plumbing shared by every sampler: the respaced schedule, the noise source, set-up checks.

Respacing (DDIM, Song et al. 2021): a sampler with ``steps`` steps visits the timesteps

    tau_1 > tau_2 > ... > tau_S,   tau_i = round((T - 1) (S - i) / (S - 1)),

evenly spaced in [0, T-1] (T = 1000 for the default prior: 999, ..., 0), and steps from
tau_i to tau_{i+1}. In the samplers' notation ``abar_t = abar(tau_i)`` and
``abar_prev`` (the papers' abar_{t-1}) ``= abar(tau_{i+1})``, with ``abar_prev = 1`` after
the last step (t = -1 is the clean image). The one-step "beta" of a respaced step is
``beta_t = 1 - abar_t / abar_prev``.

All randomness goes through :func:`randn`: noise is drawn from the caller's
``torch.Generator`` on the generator's device and moved to the working device, so a run is
bit-identical for a given generator seed on a given device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from restoreflow.operators.base import x_shape_of

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Step:
    """One respaced step from timestep ``t`` to the next one (``abar_prev``)."""

    index: int  # 0-based position in the schedule
    t: int  # training timestep tau_i fed to the UNet
    abar_t: float  # abar at t
    abar_prev: float  # abar at the next (smaller) timestep; 1.0 after the last step

    @property
    def beta(self) -> float:
        """Respaced one-step beta_t = 1 - abar_t / abar_prev."""
        return 1.0 - self.abar_t / self.abar_prev


def respaced_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """``steps`` distinct timesteps evenly spaced in [0, T-1], descending (starts at T-1)."""
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"steps must be in [1, {num_train_timesteps}], got {steps}")
    if steps == 1:
        return [num_train_timesteps - 1]
    last = num_train_timesteps - 1
    return [round(last * (steps - 1 - i) / (steps - 1)) for i in range(steps)]


def respaced_steps(prior, steps: int) -> list[Step]:
    """The schedule of :func:`respaced_timesteps` with abar_t and abar_prev of each step,
    over [0, t_start] for a prior that covers only low noise levels (a denoiser prior's
    ``t_start``; T - 1 for a diffusion UNet). More steps than timesteps in that range are
    refused with the range."""
    top = int(getattr(prior, "t_start", prior.num_train_timesteps - 1))
    if steps > top + 1:
        raise ValueError(f"steps must be in [1, {top + 1}] for this prior (it covers "
                         f"timesteps 0..{top}), got {steps}")
    ts = respaced_timesteps(top + 1, steps)
    abar = prior.alphas_cumprod
    out = []
    for i, t in enumerate(ts):
        prev = float(abar[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        out.append(Step(index=i, t=t, abar_t=float(abar[t]), abar_prev=prev))
    return out


def randn(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """N(0, I) noise of ``shape`` from ``generator`` (on its device), moved to ``like``'s."""
    z = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return z.to(device=like.device, dtype=like.dtype)


@dataclass
class Setup:
    """Validated inputs of a sampler run."""

    y: torch.Tensor  # measurements repeated num_samples times: (B*J, ...), working dtype
    x_shape: tuple[int, ...]  # (B*J, C, H, W)
    sigma_y: float
    steps: list[Step]


def setup(
    prior,
    operator,
    y: torch.Tensor,
    sigma_y: float,
    steps: int,
    generator: torch.Generator,
    num_samples: int,
    schedule: bool = True,
) -> Setup:
    """Check the common arguments, move y to the prior's device and repeat it J times.
    ``schedule=False`` (plug-and-play solvers, which only count their ``steps`` denoiser
    calls) leaves ``steps`` empty instead of respacing the diffusion schedule.

    The image shape is read off ``A^T y``. The working dtype is float32 (float64 if y is
    float64), whatever the UNet's dtype. Output sample ``b * J + j`` belongs to y[b].
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator (got {type(generator).__name__}); "
            "samplers take no implicit randomness"
        )
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not (math.isfinite(sigma_y) and sigma_y >= 0):
        raise ValueError(f"sigma_y must be finite and >= 0, got {sigma_y}")
    if y.dim() != 4:
        raise ValueError(f"y must be a batch (B, C, H, W), got shape {tuple(y.shape)}")
    dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
    y = y.to(device=prior.device, dtype=dtype)
    if not all(bool(torch.isfinite(y[:, c]).all()) for c in range(y.shape[1])):
        raise ValueError("y has NaN or infinite values")
    x_shape = x_shape_of(operator, y)
    expected = tuple(operator.y_shape(x_shape))
    if expected != tuple(y.shape):
        raise ValueError(f"y has shape {tuple(y.shape)} but A maps {x_shape} to {expected}")
    if num_samples > 1:
        y = y.repeat_interleave(num_samples, dim=0)
    x_shape = (y.shape[0], *x_shape[1:])
    if not schedule and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return Setup(y=y, x_shape=x_shape, sigma_y=float(sigma_y),
                 steps=respaced_steps(prior, steps) if schedule else [])


def pinv_start(operator, y: torch.Tensor, eta: float) -> torch.Tensor:
    """clip(A^+_eta y) to [-1, 1]: where the samplers that do not start from pure noise
    start (HQS, IDBP, the diffusion samplers on a denoiser prior)."""
    return operator.A_dagger(y, eta=eta).clamp_(-1.0, 1.0)


def initial_x(prior, operator, s: Setup, generator: torch.Generator) -> torch.Tensor:
    """x at the first step. From pure noise, x_T ~ N(0, I), when the schedule starts at the
    top of the prior's range (a diffusion UNet); otherwise (a denoiser prior, whose range
    ends at t_start < T - 1) from the regularised pseudo-inverse:

        x_t = sqrt(abar_t) clip(A^+_eta y) + sqrt(1 - abar_t) z,   eta = max(1e-4, sigma_y^2),

    z ~ N(0, I) drawn per posterior sample, so samples start apart."""
    first = s.steps[0]
    z = randn(s.x_shape, generator, s.y)
    if first.t >= prior.num_train_timesteps - 1:
        return z
    x_init = pinv_start(operator, s.y, max(1e-4, s.sigma_y**2))
    return x_init.mul_(math.sqrt(first.abar_t)).add_(z.mul_(math.sqrt(1.0 - first.abar_t)))


def tweedie_x0(prior, x_t: torch.Tensor, t: int, clip: bool) -> torch.Tensor:
    """The prior's x0 estimate at x_t in x_t's dtype, clamped to [-1, 1] when ``clip``.

    Clamping (``clip_denoised`` in the DDPM/DDIM reference code, also used by DPS) bounds
    the estimate at large t, where x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
    multiplies any error of eps by up to 1/sqrt(abar_T) (~160 for the linear schedule);
    samplers that need eps use the one consistent with the clamped x0.
    """
    x0 = prior.x0(x_t, t).to(x_t.dtype)  # a new tensor: clamped in place
    if not clip:
        return x0
    return x0.clamp(-1.0, 1.0) if x0.requires_grad else x0.clamp_(-1.0, 1.0)


def denoise(prior, v: torch.Tensor, sigma: float, clip: bool = True) -> torch.Tensor:
    """The prior as a denoiser in model space: the MMSE estimate of x from v = x + sigma n
    (sigma in model units), as Tweedie's x0 at the timestep t whose s_t is nearest sigma:
    x0(sqrt(abar_t) v, t)."""
    t = prior.timestep_for_sigma(sigma)
    return tweedie_x0(prior, v * math.sqrt(float(prior.abar(t))), t, clip)


def operator_norm_sq(operator, x_shape: tuple[int, ...], like: torch.Tensor, iters: int = 20):
    """Largest eigenvalue of A^T A (= ||A||_2^2) by power iteration on one batch item
    (one channel of it for a channel-wise operator).

    The start vector comes from a private generator with a fixed seed (no global RNG, and
    the caller's generator is left untouched), so the estimate is deterministic.
    """
    g = torch.Generator(device="cpu").manual_seed(0)
    c = 1 if getattr(operator, "channelwise", False) else x_shape[1]  # same norm per channel
    v = torch.randn((1, c, *x_shape[2:]), generator=g, dtype=torch.float32)
    v = v.to(device=like.device, dtype=like.dtype)
    lam = 1.0
    for _ in range(iters):
        v.div_(v.norm().clamp_min(1e-30))
        w = operator.A_adjoint(operator.A(v))
        lam = float((v * w).sum())
        v = w
    return max(lam, 1e-12)


def report(progress: Progress | None, step: Step, total: int) -> None:
    if progress is not None:
        progress(step.index + 1, total)


def options_by_task(table: dict[str, dict]) -> Callable[[str, float], dict]:
    """A sampler module's ``resolve_options(task, sigma_y)`` when its options depend on
    the task only: ``table[task]``, the options that differ from its signature's."""
    def resolve_options(task: str, sigma_y: float) -> dict:
        return dict(table[task])

    return resolve_options
