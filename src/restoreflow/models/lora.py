"""Per-image adaptation of the diffusion prior with LoRA (ADIR: Abu-Hussein, Tirer, Giryes).

ADIR fine-tunes a low-rank adapter of the prior's UNet on the K reference images most
similar to the degraded input, with the prior's own training loss, and then restores with
the adapted prior. Each adapted layer computes

    W' x = W x + (alpha / r) B A x,      A: r x fan_in (random init), B: out x r (zero init),

so before training the adapted prior equals the base prior. The loss is the DDPM
epsilon-prediction objective on the neighbours (Ho et al. 2020):

    L = E_{x0, t, eps} || eps - eps_theta'(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2

with x0 random crops (flips, 90-degree rotations) of the neighbours in [-1, 1], t uniform
in 0..T-1; only A and B are trained (Adam). v- and sample-prediction priors use their own
target. After training the adapter is merged into the (copied) weights, so sampling with
the adapted prior costs the same as with the base prior; the adapter stays available for
:func:`save_adapter`.

Defaults (``LoraSettings()``): rank 8, alpha 8, lr 2e-3, 100 steps of batch 4 at 64 px,
sized so that adapting costs about as much as sampling on a CPU; ``LoraSettings.adir()``
holds the paper's GPU settings. How they were chosen, and what adaptation measured on
the shipped prior: ``benchmarks/results/adapt_defaults.md`` and ``adapt*.md``.

Randomness (LoRA init, crops, t, eps) comes from one ``torch.Generator`` seeded with
``settings.seed``: the same settings on the same device give bit-identical adapters.
Saving and loading adapters (peft's layout, safetensors only): ``models/adapter_files.py``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from restoreflow.models.prior import (
    DEFAULT_PRIOR_DIR,
    DiffusionPrior,
)
from restoreflow.models.training import CropSampler

log = logging.getLogger(__name__)

# Resnet convolutions, the time-embedding MLP and attention projections (when present).
DEFAULT_TARGETS: tuple[str, ...] = (
    "conv1",
    "conv2",
    "time_embedding.linear_1",
    "time_embedding.linear_2",
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
)

Progress = Callable[[int, int, float], None]  # (step, total steps, loss)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adaptation settings (see the module docstring for the defaults)."""

    rank: int = 8
    alpha: float = 8.0
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    lr: float = 2e-3
    steps: int = 100
    batch_size: int = 4
    crop: int = 64
    seed: int = 0
    max_t: int | None = None

    def __post_init__(self) -> None:
        for name in ("rank", "steps", "batch_size", "crop"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"LoraSettings.{name} must be a positive integer, got {v!r}")
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise ValueError(f"LoraSettings.alpha must be > 0, got {self.alpha!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"LoraSettings.lr must be > 0, got {self.lr!r}")
        if self.max_t is not None and (
            not isinstance(self.max_t, int) or isinstance(self.max_t, bool) or self.max_t < 1
        ):
            raise ValueError(f"LoraSettings.max_t must be a positive integer or None, "
                             f"got {self.max_t!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"LoraSettings.seed must be an integer, got {self.seed!r}")
        targets = tuple(self.target_modules)
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError("LoraSettings.target_modules must be non-empty module names")
        object.__setattr__(self, "target_modules", targets)

    @classmethod
    def adir(cls, **overrides) -> LoraSettings:
        """ADIR's published settings (rank 16, alpha 8, lr 1e-4, 400 steps of batch 6)."""
        base = {"rank": 16, "alpha": 8.0, "lr": 1e-4, "steps": 400, "batch_size": 6}
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        if d["max_t"] is None:  # settings from before max_t keep their hash
            del d["max_t"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LoraSettings:
        d = dict(d)
        d["target_modules"] = tuple(d.get("target_modules", DEFAULT_TARGETS))
        return cls(**d)

    @property
    def hash(self) -> str:
        """sha256 of the settings (canonical JSON)."""
        d = self.to_dict()
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def adapter_key(
    image_id: str, prior_hash: str, neighbour_ids: Sequence[str], settings_hash: str
) -> str:
    """Cache key (sha256) of an adapter: the image, base prior, neighbours and settings.

    The neighbour order matters (crops are drawn from the list in order), so pass the ids
    in the order the images were given to :func:`adapt_prior`.
    """
    payload = {
        "image": str(image_id),
        "prior": str(prior_hash),
        "neighbours": [str(i) for i in neighbour_ids],
        "settings": str(settings_hash),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# -- helpers --------------------------------------------------------------------------------
def _present_targets(unet: torch.nn.Module, targets: Sequence[str]) -> list[str]:
    """The target names that match at least one Linear/Conv2d module (peft suffix match)."""
    names = [n for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)]
    found = [t for t in targets if any(n == t or n.endswith("." + t) for n in names)]
    if not found:
        raise ValueError(
            f"none of the LoRA target modules {list(targets)} is a Linear/Conv2d layer of "
            f"{type(unet).__name__}"
        )
    return found


def _fork_rng_devices(device: torch.device) -> list:
    return [device.index or 0] if device.type == "cuda" else []


def inject_lora(unet: torch.nn.Module, config) -> None:
    """Inject the LoRA layers without touching the caller's global RNG state."""
    from peft import inject_adapter_in_model

    with torch.random.fork_rng(devices=_fork_rng_devices(next(unet.parameters()).device)):
        inject_adapter_in_model(config, unet)


def _lora_layers(unet: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in unet.named_modules() if isinstance(m, LoraLayer)]


def _init_lora(unet: torch.nn.Module, g: torch.Generator) -> None:
    """A ~ kaiming-uniform (peft's default) from ``g``; B = 0 (adapter starts as identity)."""
    with torch.no_grad():
        for _, layer in _lora_layers(unet):
            for name in layer.lora_A:
                a = layer.lora_A[name].weight
                w = torch.empty(a.shape, dtype=a.dtype)
                torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
                a.copy_(w)
                layer.lora_B[name].weight.zero_()


def merge_lora(unet: torch.nn.Module) -> None:
    for _, layer in _lora_layers(unet):
        if not layer.merged:
            layer.merge()


def adapter_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {
        k: v.detach().to("cpu").contiguous() for k, v in get_peft_model_state_dict(unet).items()
    }


def prior_location(prior: DiffusionPrior) -> str | None:
    """Where the base prior can be loaded from: an absolute directory, a hub id, or None
    for an in-memory prior (peft's ``base_model_name_or_path``)."""
    src = str(prior.source or "")
    if src == "default":
        return str(DEFAULT_PRIOR_DIR)
    if not src or src == "in-memory" or "+lora:" in src:
        return None
    p = Path(src).expanduser()
    return str(p.resolve()) if p.is_dir() else src


def adapter_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the adapter tensors (names, dtypes, shapes and bytes, sorted by name)."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().to("cpu").contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}\0".encode())
        h.update(v.view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def _lora_config(settings: LoraSettings, targets: list[str]):
    from peft import LoraConfig

    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        target_modules=targets,
        lora_dropout=0.0,
        bias="none",
        init_lora_weights=True,
    )


def _prepare_images(images: Sequence[torch.Tensor], channels: int) -> list[torch.Tensor]:
    """(C, H, W) in [0, 1] -> (channels, H, W) float in [0, 255] (CropSampler's units)."""
    out = []
    for i, im in enumerate(images):
        if im.dim() != 3:
            raise ValueError(f"neighbour {i}: expected (C, H, W), got shape {tuple(im.shape)}")
        x = im.detach().to("cpu", torch.float32)
        c = x.shape[0]
        if c == channels:
            pass
        elif c == 1:
            x = x.expand(channels, -1, -1)
        elif channels == 1 and c in (3, 4):
            x = x[:3].mean(0, keepdim=True)
        elif c == 4 and channels == 3:
            x = x[:3]
        else:
            raise ValueError(f"neighbour {i}: {c} channels for a {channels}-channel prior")
        out.append((x.clamp(0, 1) * 255.0).contiguous())
    if not out:
        raise ValueError("no neighbour images to adapt on")
    return out


def _crop_size(images: list[torch.Tensor], crop: int, multiple: int) -> int:
    smallest = min(min(im.shape[-2:]) for im in images)
    c = min(crop, smallest) // multiple * multiple
    if c < multiple:
        raise ValueError(
            f"neighbour images ({smallest} px) are smaller than the prior's size multiple "
            f"({multiple} px)"
        )
    if c != crop:
        log.warning("LoRA crop reduced from %d to %d px to fit the smallest neighbour", crop, c)
    return c


def _loss(
    unet: torch.nn.Module,
    prior: DiffusionPrior,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """DDPM loss with the target of the prior's parametrisation (eps, v or x0)."""
    ab = prior.alphas_cumprod[t].to(x0.device, torch.float32).reshape(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    pred = unet(x_t.to(prior.dtype), t.to(x0.device)).sample.float()
    if prior.prediction_type == "epsilon":
        target = noise
    elif prior.prediction_type == "v_prediction":
        target = ab.sqrt() * noise - (1 - ab).sqrt() * x0
    else:
        target = x0
    return torch.nn.functional.mse_loss(pred, target)


def _draw(
    sampler: CropSampler, prior: DiffusionPrior, n: int, g: torch.Generator,
    max_t: int | None = None,
):
    x0 = sampler.batch(n).to(prior.device)
    t_end = min(max_t or prior.num_train_timesteps, prior.num_train_timesteps)
    t = torch.randint(0, t_end, (n,), generator=g)
    noise = torch.randn(x0.shape, generator=g).to(prior.device)
    return x0, t, noise


class LowNoiseAdaptedPrior(DiffusionPrior):
    """An adapted prior whose adapter acts only below ``max_t``: timesteps t < max_t use
    the adapted UNet, the others the base UNet (``base_unet``, shared, not copied). The
    adapter is then trained on t < max_t only (``LoraSettings.max_t``): it refines the
    fine detail of the neighbours' domain and leaves the coarse structure, which K
    neighbours cannot teach, to the base prior."""

    def __init__(self, *args, base_unet: torch.nn.Module, max_t: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.base_unet, self.max_t = base_unet, int(max_t)

    def model_output(self, x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        b = x_t.shape[0]
        tt = torch.as_tensor(t, device=x_t.device).long().reshape(-1).expand(b)
        low = tt < self.max_t
        if bool(low.all()):
            return super().model_output(x_t, tt)
        base = self.base_unet(x_t.to(self.dtype), tt).sample.to(x_t.dtype)
        if not bool(low.any()):
            return base
        return torch.where(low.reshape(-1, 1, 1, 1), super().model_output(x_t, tt), base)


def lora_adapted_prior(prior: DiffusionPrior, unet: torch.nn.Module, info: dict) -> DiffusionPrior:
    a_hash = info["adapter_hash"]
    model_hash = hashlib.sha256(f"{prior.model_hash}+lora:{a_hash}".encode()).hexdigest()
    max_t = (info.get("settings") or {}).get("max_t")
    kwargs = {"base_unet": prior.unet, "max_t": max_t} if max_t else {}
    return (LowNoiseAdaptedPrior if max_t else DiffusionPrior)(
        **kwargs,
        unet=unet,
        alphas_cumprod=prior.alphas_cumprod.clone(),
        prediction_type=prior.prediction_type,
        model_hash=model_hash,
        source=f"{prior.source}+lora:{a_hash[:12]}",
        extra={**prior.extra, "lora": info},
    )


# -- public API ------------------------------------------------------------------------------
def neighbour_loss(
    prior: DiffusionPrior,
    neighbour_images: Sequence[torch.Tensor],
    crop: int = 64,
    batches: int = 4,
    batch_size: int = 8,
    seed: int = 12345,
) -> float:
    """Mean training loss of ``prior`` on fixed draws (crops, t, eps from ``seed``).

    The same seed gives the same draws, so the value before and after adaptation measures
    how well the prior fits the neighbours.
    """
    channels = int(getattr(prior.unet.config, "in_channels", 3))
    images = _prepare_images(neighbour_images, channels)
    crop = _crop_size(images, crop, prior.size_multiple)
    g = torch.Generator().manual_seed(seed)
    sampler = CropSampler(images, crop, g)
    total = 0.0
    with torch.no_grad():
        for _ in range(batches):
            total += float(_loss(prior.unet, prior, *_draw(sampler, prior, batch_size, g)))
    return total / batches


def adapt_prior(
    prior: DiffusionPrior,
    neighbour_images: Sequence[torch.Tensor],
    settings: LoraSettings | None = None,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> DiffusionPrior:
    """A new prior: a copy of ``prior``'s UNet with a LoRA trained on the neighbours.

    ``neighbour_images``: (C, H, W) tensors in [0, 1] (any sizes; grey is repeated to the
    prior's channels). ``generator`` (CPU) defaults to one seeded with ``settings.seed``;
    adapter caches keyed by :func:`adapter_key` assume that default. ``progress`` is
    called after every step with (step, steps, loss). The base prior is not modified.
    The result's ``extra["lora"]`` records the settings, base hash, adapter hash and the
    per-step losses.
    """
    settings = settings or LoraSettings()
    if hasattr(prior.unet, "peft_config"):
        raise ValueError("the prior already carries an adapter; adapt the base prior")
    channels = int(getattr(prior.unet.config, "in_channels", 3))
    images = _prepare_images(neighbour_images, channels)
    crop = _crop_size(images, settings.crop, prior.size_multiple)
    g = generator if generator is not None else torch.Generator().manual_seed(settings.seed)

    t_start = time.perf_counter()
    unet = copy.deepcopy(prior.unet).eval().requires_grad_(False)
    targets = _present_targets(unet, settings.target_modules)
    inject_lora(unet, _lora_config(settings, targets))
    _init_lora(unet, g)
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=settings.lr)
    sampler = CropSampler(images, crop, g)
    losses: list[float] = []
    with torch.enable_grad():
        for step in range(settings.steps):
            batch = _draw(sampler, prior, settings.batch_size, g, settings.max_t)
            loss = _loss(unet, prior, *batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step + 1, settings.steps, losses[-1])
    unet.requires_grad_(False)
    state = adapter_state(unet)
    merge_lora(unet)
    info = {
        "base_hash": prior.model_hash,
        "base_model": prior_location(prior),
        "settings": settings.to_dict(),
        "settings_hash": settings.hash,
        "targets": targets,
        "crop": crop,
        "neighbours": len(images),
        "adapter_hash": adapter_hash(state),
        "losses": losses,
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    log.info(
        "LoRA adapted in %.1f s (%d steps, loss %.4f -> %.4f)",
        info["seconds"],
        settings.steps,
        losses[0],
        losses[-1],
    )
    return lora_adapted_prior(prior, unet, info)
