"""A pixel-space diffusion prior: any diffusers ``UNet2DModel`` plus its noise schedule.

Forward process (DDPM, Ho et al. 2020), images in [-1, 1]:

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,   eps ~ N(0, I),  t = 0..T-1

The prior exposes what the samplers need: the schedule ``abar`` (``alphas_cumprod``),
``eps(x_t, t)`` and the Tweedie/x0 estimate ``x0 = (x_t - sqrt(1-abar_t) eps) / sqrt(abar_t)``.
Epsilon-, v- and sample-prediction models are converted to eps and x0 here, so samplers
never see the parametrisation.

Models load only from safetensors (a directory holding only pickled weights is refused).
A model is identified by a content hash of its config and weights files.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

PredictionType = Literal["epsilon", "v_prediction", "sample"]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt", ".pickle")
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
DEFAULT_PRIOR_DIR = Path(__file__).resolve().parent.parent / "weights" / "default-prior"


def noise_ratio(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """s_t = sqrt((1 - abar_t) / abar_t) for every t: the std of the noise on x0 in model
    units, as x_t / sqrt(abar_t) = x0 + s_t eps."""
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


def last_timestep_within(alphas_cumprod: torch.Tensor, sigma: float) -> int:
    """The largest t with s_t <= ``sigma`` (model units; 0 if none)."""
    inside = (noise_ratio(alphas_cumprod) <= sigma * (1 + 1e-6)).nonzero()
    return int(inside.max()) if len(inside) else 0


class ModelLoadError(ValueError):
    """A model directory or hub id that cannot be loaded safely."""


def hash_model_dir(path: str | Path) -> str:
    """sha256 over the config (.json) and safetensors files below ``path`` (sorted).

    Renaming or moving the directory does not change the hash; any byte of config or
    weights does.
    """
    root = Path(path).resolve()
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors")
    )
    # read once per process while no file's inode, size or change times change (a run
    # asks for its prior's hash several times)
    stats = [stat_key(p) for p in files]
    key = (str(root), *((p.relative_to(root).as_posix(), *st) for p, st in
                        zip(files, stats, strict=True)))
    if key in _DIR_SHA256:
        return _DIR_SHA256[key]
    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        hash_file_into(h, p)
    if all(settled(st) for st in stats):
        _DIR_SHA256[key] = h.hexdigest()
    return h.hexdigest()


_DIR_SHA256: dict[tuple, str] = {}


def hash_file_into(h, path: Path) -> None:
    """Feed a file's bytes to the hash ``h``, a MiB at a time."""
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def stat_key(p: Path) -> tuple[int, int, int, int]:
    """What changes when a file is rewritten or replaced: inode, size, mtime, ctime."""
    st = p.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


#: A file changed less than this long ago may change again within the same timestamp
#: tick (file times are coarse): its hash is not remembered (git's "racy" entries).
SETTLE_NS = 2_000_000_000


def settled(key: tuple[int, int, int, int]) -> bool:
    """Whether the file of :func:`stat_key` ``key`` last changed long enough ago that a
    later change must show in its times."""
    return time.time_ns() - max(key[2], key[3]) > SETTLE_NS


def resolve_dirs(root: Path) -> tuple[Path, Path | None]:
    """(unet dir, scheduler config file or None) for a pipeline or bare-UNet layout."""
    if (root / "unet").is_dir():
        sched = root / "scheduler" / "scheduler_config.json"
        return root / "unet", sched if sched.is_file() else None
    sched = root / "scheduler_config.json"
    return root, sched if sched.is_file() else None


def check_safetensors(unet_dir: Path) -> None:
    if not (unet_dir / "config.json").is_file():
        raise ModelLoadError(f"{unet_dir}: no config.json (not a diffusers UNet directory)")
    if not any(unet_dir.glob("*.safetensors")):
        pickled = [p.name for p in unet_dir.iterdir() if p.suffix in PICKLE_SUFFIXES]
        reason = (
            f"only pickled weights ({', '.join(pickled)}); refusing to unpickle, "
            "convert them to safetensors"
            if pickled
            else "no .safetensors weights"
        )
        raise ModelLoadError(f"{unet_dir}: {reason}")


def resolve_model_path(name_or_path: str | Path) -> Path:
    """A local directory, or a hub id fetched into the local cache (safetensors only).

    With ``HF_HUB_OFFLINE=1`` (or no network) a hub id resolves only if it is cached.
    """
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    name = str(name_or_path)
    if p.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelLoadError(f"{name}: not a model directory nor a hub id (owner/name)")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(
            name,
            allow_patterns=["*.json", "*.safetensors"],
            local_files_only=os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"),
        )
    except Exception as exc:  # noqa: BLE001 - re-raised with the model name and reason
        raise ModelLoadError(f"{name}: cannot fetch from the hub ({type(exc).__name__})") from exc
    return Path(local)


@dataclass
class DiffusionPrior:
    """A UNet with its DDPM schedule; the thing every sampler receives."""

    unet: torch.nn.Module
    alphas_cumprod: torch.Tensor  # abar_t, float64 on CPU, shape (T,)
    prediction_type: PredictionType = "epsilon"
    model_hash: str = "unsaved"
    source: str = "in-memory"
    extra: dict = field(default_factory=dict)
    # top of the noise range the prior covers (model units, s_t = sqrt((1-abar)/abar));
    # None: the whole schedule. Samplers start at the largest t inside it.
    sigma_max: float | None = None

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.numel())

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def size_multiple(self) -> int:
        """Spatial sizes must be multiples of this (2 ** number of downsamplings)."""
        own = getattr(self.unet, "size_multiple", None)
        if isinstance(own, int):
            return own
        cfg = getattr(self.unet, "config", None)
        n = len(getattr(cfg, "block_out_channels", (1,)))
        return 2 ** max(n - 1, 0)

    @property
    def t_start(self) -> int:
        """The largest timestep inside the prior's noise range (T - 1 for a diffusion UNet)."""
        if self.sigma_max is None:
            return self.num_train_timesteps - 1
        return last_timestep_within(self.alphas_cumprod, self.sigma_max)

    def abar(self, t: int | torch.Tensor) -> torch.Tensor:
        """abar_t as float64 (scalar or per-batch)."""
        return self.alphas_cumprod[torch.as_tensor(t, dtype=torch.long)]

    def model_output(self, x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """Raw network output for a batch (B, C, H, W) at timestep(s) t."""
        b = x_t.shape[0]
        tt = torch.as_tensor(t, device=x_t.device).long().reshape(-1).expand(b)
        out = self.unet(x_t.to(self.dtype), tt).sample
        return out.to(x_t.dtype)

    def eps_x0(
        self, x_t: torch.Tensor, t: int | torch.Tensor, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps, x0) estimates at timestep t; ``out`` is a precomputed model output."""
        out = self.model_output(x_t, t) if out is None else out
        ab = self.abar(t).to(x_t.device, x_t.dtype).reshape(-1, 1, 1, 1)
        sa, s1a = ab.sqrt(), (1 - ab).sqrt()
        if self.prediction_type == "epsilon":
            eps = out
            x0 = (x_t - s1a * eps).div_(sa)  # in place: one image-sized temporary less
        elif self.prediction_type == "v_prediction":
            # v = sqrt(abar) eps - sqrt(1-abar) x0
            x0 = sa * x_t - s1a * out
            eps = s1a * x_t + sa * out
        else:
            x0 = out
            eps = (x_t - sa * x0) / s1a
        return eps, x0

    def eps(self, x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        return self.eps_x0(x_t, t)[0]

    def x0(
        self, x_t: torch.Tensor, t: int | torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x0 estimate at timestep t. For an epsilon-prediction UNet it is computed in the
        model output's own buffer (same arithmetic as :meth:`eps_x0`, no image-sized
        temporary); ``out`` (a precomputed model output) is then overwritten."""
        out = self.model_output(x_t, t) if out is None else out
        if self.prediction_type != "epsilon" or out.requires_grad or out.dtype != x_t.dtype:
            return self.eps_x0(x_t, t, out=out)[1]
        ab = self.abar(t).to(x_t.device, x_t.dtype).reshape(-1, 1, 1, 1)
        # (x_t - s1a eps) / sa, bit for bit: -(s1a eps) + x_t rounds like x_t - s1a eps
        return out.mul_(-(1 - ab).sqrt()).add_(x_t).div_(ab.sqrt())

    def timestep_for_sigma(self, sigma: float) -> int:
        """t whose noise-to-signal ratio sqrt((1-abar)/abar) is closest to ``sigma``.

        ``sigma`` is the std of Gaussian noise on an image in [-1, 1] (twice the std in
        [0, 1] units). The noisy image y = x0 + sigma n is then x_t / sqrt(abar_t).
        """
        return int((noise_ratio(self.alphas_cumprod) - sigma).abs().argmin())

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        self.unet.to(device=device, dtype=dtype)
        return self

    def save_pretrained(self, path: str | Path) -> str:
        """Write a bare-UNet diffusers directory (safetensors) and return its hash."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(path, safe_serialization=True)
        sched = {
            "_class_name": "DDPMScheduler",
            "num_train_timesteps": self.num_train_timesteps,
            "prediction_type": self.prediction_type,
            **self.extra.get("scheduler_config", {}),
        }
        (path / "scheduler_config.json").write_text(json.dumps(sched, indent=2) + "\n")
        self.model_hash = hash_model_dir(path)
        return self.model_hash

    @classmethod
    def from_unet(
        cls,
        unet: torch.nn.Module,
        scheduler_config: dict | None = None,
        prediction_type: PredictionType | None = None,
    ) -> DiffusionPrior:
        """Wrap an in-memory UNet with a DDPM schedule built from ``scheduler_config``."""
        from diffusers import DDPMScheduler

        cfg = dict(scheduler_config or {"beta_schedule": "linear", "num_train_timesteps": 1000})
        sched = DDPMScheduler.from_config(cfg)
        pred = prediction_type or sched.config.prediction_type
        keep = {k: v for k, v in cfg.items() if not k.startswith("_")}
        return cls(
            unet=unet,
            alphas_cumprod=sched.alphas_cumprod.to(torch.float64).cpu(),
            prediction_type=pred,
            extra={"scheduler_config": keep},
        )

    @classmethod
    def load(
        cls,
        name_or_path: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> DiffusionPrior:
        """Load a prior from a diffusers directory (pipeline or bare UNet) or a hub id.

        ``None`` loads the default prior shipped with restoreflow. Only safetensors are
        read (``use_safetensors=True``); pickled weights are refused.
        """
        from diffusers import UNet2DModel

        from restoreflow.models.allocator import tune_allocator

        tune_allocator()  # model work in this process: keep step tensors in the heap
        root = resolve_model_path(name_or_path or DEFAULT_PRIOR_DIR)
        unet_dir, sched_file = resolve_dirs(root)
        check_safetensors(unet_dir)
        try:
            unet = UNet2DModel.from_pretrained(unet_dir, use_safetensors=True, torch_dtype=dtype)
        except Exception as exc:  # noqa: BLE001 - re-raised with the directory and reason
            raise ModelLoadError(f"{unet_dir}: cannot load UNet2DModel ({exc})") from exc
        sched_cfg = json.loads(sched_file.read_text()) if sched_file else None
        prior = cls.from_unet(unet, sched_cfg)
        prior.unet.eval().requires_grad_(False)
        prior.unet.to(device)
        prior.model_hash = hash_model_dir(root)
        prior.source = str(name_or_path or "default")
        return prior
