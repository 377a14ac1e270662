"""Restore one image with a guided diffusion sampler: the core of the ``restore`` step.

Units. Callers work in [0, 1]: ``y = A x + n`` with x in [0, 1] and n ~ N(0, sigma_y^2).
The prior works in model space [-1, 1] (``x_m = 2 x - 1``), so by linearity of A

    y_m = 2 y - A 1 = A x_m + 2 n,      sigma_m = 2 sigma_y,

and the samplers receive ``(y_m, sigma_m)``. The output is mapped back with
``x = (x_m + 1) / 2`` and clamped to [0, 1].

Large images. The prior is wrapped in :class:`~restoreflow.models.tiled.TiledPrior`: the
UNet runs on overlapping tiles (``tile``, ``overlap``, ``tile_batch``) blended into one
image-sized eps, while the guidance (A, A^T, A^+) acts on the whole image. An image no
larger than one tile is evaluated in one piece (padded to the UNet's size multiple).
Memory: the default sampler (DDPG) holds three image-sized tensors (x_t, x0, y in model
units) plus, for channel-wise operators, the scratch of one channel. ``y`` may be given
as a loader (a function returning it): the [0, 1] tensor is then freed as soon as its
model-units copy exists (a tensor argument stays referenced by the caller).

Greyscale. The operator is built for the prior's channels (3 for an RGB prior). A 1-channel
``y`` whose ``A^T y`` has 1 channel (blur, SR, masks act per channel) is replicated to 3
channels, restored as a grey RGB image and the output averaged back to 1 channel. A
1-channel ``y`` for a colourisation operator (``A^T y`` has 3 channels) is kept as it is.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch

from restoreflow.samplers import DEFAULT_SAMPLER, TASK_DEFAULTS, get_sampler
from restoreflow.samplers.schedule import Progress

TaskKind = Literal["deblur", "sr", "inpaint", "denoise", "other"]

DEFAULT_OPTIONS: dict[str, dict[str, dict]] = TASK_DEFAULTS  # per sampler, per task kind


def task_kind(operator) -> TaskKind:
    """The task kind an operator declares (its ``task`` attribute); "other" without one."""
    return getattr(operator, "task", "other")


def default_options(sampler: str, task: str, sigma_y: float | None = None) -> dict:
    """A copy of the default options of ``sampler`` for ``task``.

    For a noiseless problem (``sigma_y == 0``) DDPG uses the constant step size, so the
    last step enforces ``A x = y`` exactly, as in the paper's noiseless runs.
    """
    get_sampler(sampler)
    table = DEFAULT_OPTIONS.get(sampler, {})
    if task not in table:
        raise ValueError(f"unknown task kind {task!r}; choose one of {', '.join(table)}")
    opts = copy.deepcopy(table[task])
    if sampler == "ddpg" and sigma_y == 0:
        opts["step_size"] = "constant"
    return opts


def _prior_channels(prior) -> int:
    unet = getattr(prior, "unet", None)
    cfg = getattr(unet, "config", None)
    return int(getattr(cfg, "in_channels", 3))


def restore_image(
    prior,
    operator,
    y: torch.Tensor,
    sigma_y: float,
    sampler: str = DEFAULT_SAMPLER,
    steps: int = 100,
    generator: torch.Generator | None = None,
    num_samples: int = 1,
    tile: int = 256,
    overlap: int = 64,
    tile_batch: int = 4,
    options: dict | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Restore one degraded image; returns (num_samples, C, H, W) in [0, 1] (clamped).

    Args:
        prior: a DiffusionPrior (or TiledPrior; it is then used as it is).
        operator: LinearOperator A built for the prior's channel count (see module doc).
        y: measurements (C', H', W') in [0, 1] units, ``y = A x + n``, or a function
            returning them (see the module docstring: memory).
        sigma_y: std of n in [0, 1] units (0 = noiseless).
        sampler: name in :data:`restoreflow.samplers.SAMPLERS`.
        steps: UNet evaluations (DPS also runs a backward pass per step).
        generator: the only source of randomness; None = ``torch.Generator().manual_seed(0)``
            on the CPU (reproducible by default).
        num_samples: J posterior samples (for uncertainty), returned on dim 0.
        tile, overlap, tile_batch: tiled UNet evaluation for images larger than ``tile``.
        options: sampler options; they override :func:`default_options` for the task
            kind of ``operator`` key by key.
        progress: optional callback(step_number, total).
    """
    from restoreflow.models.tiled import TiledPrior

    sample = get_sampler(sampler)
    if not callable(y) and y.dim() != 3:
        raise ValueError(f"y must be one image (C, H, W), got shape {tuple(y.shape)}")
    if not (math.isfinite(sigma_y) and sigma_y >= 0):
        raise ValueError(f"sigma_y must be finite and >= 0, got {sigma_y}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    opts = default_options(sampler, task_kind(operator), sigma_y)
    opts.update(options or {})

    from restoreflow.operators.base import x_shape_of

    device = prior.device
    if callable(y):  # a loader: then nothing outside holds y, and it is freed below
        y = y()
        if not isinstance(y, torch.Tensor) or y.dim() != 3:
            raise ValueError("the y loader must return one image tensor (C, H, W)")
    y = y.to(device=device, dtype=torch.float64 if y.dtype == torch.float64 else torch.float32)
    yb = y[None]
    del y  # a caller that passes y without keeping it frees it as soon as y_m exists
    grey = yb.shape[1] == 1 and x_shape_of(operator, yb)[1] == 1 and _prior_channels(prior) == 3
    if grey:
        yb = yb.expand(-1, 3, -1, -1).contiguous()
    x_shape = x_shape_of(operator, yb)
    # model units: A (2x - 1) + 2n = 2y - A 1 (A 1 on one channel for channel-wise A)
    ones_shape = (1, 1, *x_shape[2:]) if getattr(operator, "channelwise", False) else x_shape
    a1 = operator.A(torch.ones(ones_shape, device=device, dtype=yb.dtype))
    y_m = (2.0 * yb).sub_(a1)
    del yb, a1
    sigma_m = 2.0 * float(sigma_y)

    if not isinstance(prior, TiledPrior):
        prior = TiledPrior(prior, tile=tile, overlap=min(overlap, tile - 1), batch=tile_batch)
    x_m = sample(
        prior,
        operator,
        y_m,
        sigma_m,
        steps,
        generator,
        num_samples=num_samples,
        progress=progress,
        **opts,
    )
    del y_m
    x = x_m.add_(1.0).div_(2.0).clamp_(0.0, 1.0)
    if grey:
        x = x.mean(dim=1, keepdim=True)
    return x
