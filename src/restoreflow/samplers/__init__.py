"""Guided diffusion samplers for linear inverse problems, one algorithm per module.

Every sampler has the call shape

    sample(prior, operator, y, sigma_y, steps, generator, *, num_samples=1, <options>,
           progress=None) -> x0

and works in model space: images in [-1, 1], ``y`` and ``sigma_y`` in model units
(:func:`restoreflow.stages.restore.restore_image` converts from [0, 1]: ``x_m = 2 x - 1``,
``y_m = 2 y - A 1``, ``sigma_m = 2 sigma_y``). ``num_samples = J`` returns J posterior
samples per measurement stacked on the batch dimension (sample ``b * J + j`` belongs to
``y[b]``). All noise comes from ``generator``: a run is bit-identical for a given seed.

    ddpg     Garber & Tirer, CVPR 2024
    ddnm     Wang et al., ICLR 2023 (DDNM+, noise-aware)
    dps      Chung et al., ICLR 2023 (gradient through the UNet)
    diffpir  Zhu et al., CVPR 2023
    hqs      Zhang et al., TPAMI 2021 (DPIR: half-quadratic splitting, plug-and-play;
             the default)
    idbp     Tirer & Giryes, TIP 2019 (iterative denoising and backward projections)

The prior is anything with Tweedie's ``x0(x_t, t)`` on a DDPM schedule: a diffusion UNet or
a Gaussian denoiser wrapped by :func:`restoreflow.models.denoiser_prior.denoiser_prior`
(the diffusion samplers then run over the noise range it covers, from ``A^+ y`` plus
noise; HQS and IDBP call it as a denoiser through :func:`.schedule.denoise`).

Options: a sampler's keyword-only parameters are its options; :func:`options_model` makes
them a pydantic model (types, ranges, defaults from the signature). Each module's
``resolve_options(task, sigma_y)`` gives what it takes for a task where that differs from
the signature. :func:`canonical_options` validates what a user sets (coerced, or refused
in one line) into the one form that is stored and hashed; :func:`resolve_options` merges
the three into the options a run passes to ``sample``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from functools import cache
from typing import Literal

import torch

from restoreflow.errors import pydantic_message

from . import ddnm, ddpg, diffpir, dps, hqs, idbp
from .schedule import respaced_steps, respaced_timesteps

Sampler = Callable[..., torch.Tensor]

# The one list of samplers: name -> module (its ``sample`` and ``resolve_options``).
_MODULES = {"ddpg": ddpg, "ddnm": ddnm, "dps": dps, "diffpir": diffpir, "hqs": hqs,
            "idbp": idbp}
SAMPLER_NAMES: tuple[str, ...] = tuple(_MODULES)
SamplerName = Literal[SAMPLER_NAMES]  # type: ignore[valid-type]
SAMPLERS: dict[str, Sampler] = {name: m.sample for name, m in _MODULES.items()}
DEFAULT_SAMPLER = "hqs"
#: The default solver and its steps per task kind, on the default prior (FFDNet): chosen
#: by benchmarks/bench_denoiser_prior.py (results/denoiser_prior_*.md): HQS is the best
#: and fastest for blur and SR; for noise alone one step (the denoiser's own estimate)
#: beats 8; large holes need DDPG's noise injection.
DEFAULT_METHOD: dict[str, tuple[str, int]] = {
    "deblur": ("hqs", 8), "sr": ("hqs", 8), "denoise": ("hqs", 1), "inpaint": ("ddpg", 20),
    "other": ("hqs", 8),
}
#: The restoration task kinds an operator can declare (its ``task``).
TASKS: tuple[str, ...] = tuple(DEFAULT_METHOD)
# Parameters of the common call shape; every other keyword-only parameter is an option.
_CALL = ("prior", "operator", "y", "sigma_y", "steps", "generator", "num_samples", "progress")


def get_sampler(name: str) -> Sampler:
    """The sampler function registered under ``name`` (ValueError listing the choices)."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(
            f"unknown sampler {name!r}; choose one of {', '.join(sorted(SAMPLERS))}"
        ) from None


def default_steps(name: str) -> int:
    """The number of prior evaluations ``name`` takes by default (its signature's)."""
    return int(inspect.signature(get_sampler(name)).parameters["steps"].default)


@cache
def options_model(name: str):
    """A frozen pydantic model of the sampler's options, made from its signature: names,
    types, constraints (``Annotated``) and defaults. The signature is the config."""
    from pydantic import ConfigDict, create_model

    fn = get_sampler(name)
    hints = typing.get_type_hints(fn, include_extras=True)
    fields = {p.name: (hints[p.name], p.default)
              for p in inspect.signature(fn).parameters.values()
              if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _CALL}
    return create_model(f"{name}_options", __config__=ConfigDict(extra="forbid", frozen=True),
                        **fields)


def _canonical_value(v):
    """One spelling per value: an integral float as an int (``8``, ``8.0`` and ``"8"`` of a
    float option hash alike, and as ``gamma: 8`` always has)."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    return v


def canonical_options(name: str, options: Mapping[str, object]) -> dict:
    """The options a user set for sampler ``name``, validated and coerced by its options
    model (``"8"`` for a float option is 8; ``"abc"`` is refused), in one canonical form:
    only the options set, sorted by name, integral floats as ints. ValueError naming the
    option and what is allowed (unknown name, wrong type, out of range)."""
    from pydantic import ValidationError

    model = options_model(name)
    given = dict(options)
    try:
        typed = model(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = err["loc"][0] if err["loc"] else "?"
        if err["type"] == "extra_forbidden":
            raise ValueError(f"unknown option {key!r} of sampler {name}; its options: "
                             f"{', '.join(model.model_fields)}") from None
        raise ValueError(f"option {key}={given.get(key)!r} of sampler {name}: "
                         f"{pydantic_message(err)}") from None
    return {k: _canonical_value(getattr(typed, k)) for k in sorted(given)}


def check_options(name: str, options: Mapping[str, object]) -> None:
    """Raise ValueError as :func:`canonical_options` does when ``options`` are not
    options of sampler ``name``."""
    canonical_options(name, options)


def resolve_options(name: str, task: str, sigma_y: float,
                    options: Mapping[str, object] | None = None) -> dict:
    """Every option sampler ``name`` runs with for ``task`` at noise ``sigma_y`` ([0, 1]
    units): its signature's defaults, then its module's ``resolve_options(task,
    sigma_y)``, then the user's ``options`` (validated as :func:`canonical_options`
    does)."""
    get_sampler(name)
    if task not in TASKS:
        raise ValueError(f"unknown task kind {task!r}; choose one of {', '.join(TASKS)}")
    defaults = options_model(name)().model_dump()
    chosen = _MODULES[name].resolve_options(task, sigma_y)
    return {**defaults, **chosen, **canonical_options(name, options or {})}


__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_SAMPLER",
    "SAMPLERS",
    "SAMPLER_NAMES",
    "TASKS",
    "SamplerName",
    "canonical_options",
    "check_options",
    "default_steps",
    "get_sampler",
    "options_model",
    "resolve_options",
    "respaced_steps",
    "respaced_timesteps",
]
