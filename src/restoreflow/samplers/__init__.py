"""Guided diffusion samplers for linear inverse problems, one algorithm per module.

Every sampler has the call shape

    sample(prior, operator, y, sigma_y, steps, generator, *, num_samples=1, <options>,
           progress=None) -> x0

and works in model space: images in [-1, 1], ``y`` and ``sigma_y`` in model units
(:func:`restoreflow.restore.restore_image` converts from [0, 1]: ``x_m = 2 x - 1``,
``y_m = 2 y - A 1``, ``sigma_m = 2 sigma_y``). ``num_samples = J`` returns J posterior
samples per measurement stacked on the batch dimension (sample ``b * J + j`` belongs to
``y[b]``). All noise comes from ``generator``: a run is bit-identical for a given seed.

    ddpg     Garber & Tirer, CVPR 2024 (default)
    ddnm     Wang et al., ICLR 2023 (DDNM+, noise-aware)
    dps      Chung et al., ICLR 2023 (gradient through the UNet)
    diffpir  Zhu et al., CVPR 2023
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import ddnm, ddpg, diffpir, dps
from .schedule import respaced_steps, respaced_timesteps

Sampler = Callable[..., torch.Tensor]

SAMPLERS: dict[str, Sampler] = {
    "ddpg": ddpg.sample,
    "ddnm": ddnm.sample,
    "dps": dps.sample,
    "diffpir": diffpir.sample,
}
DEFAULT_SAMPLER = "ddpg"


def get_sampler(name: str) -> Sampler:
    """The sampler function registered under ``name`` (ValueError listing the choices)."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(
            f"unknown sampler {name!r}; choose one of {', '.join(sorted(SAMPLERS))}"
        ) from None


__all__ = [
    "DEFAULT_SAMPLER",
    "SAMPLERS",
    "get_sampler",
    "respaced_steps",
    "respaced_timesteps",
]
