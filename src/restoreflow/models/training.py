"""Train a small pixel-space diffusion prior (epsilon prediction, DDPM schedule).

Loss (Ho et al. 2020), with x_t = sqrt(abar_t) x0 + sqrt(1-abar_t) eps:

    E_{x0, t, eps} || eps - eps_theta(x_t, t) ||^2

with x0 random crops (flips, 90-degree rotations, several scales) of natural photos in
[-1, 1] and t uniform in 0..T-1. AdamW with linear warm-up, gradient clipping, and an
exponential moving average (EMA) of the weights, which is what gets exported.

Checkpoints (safetensors + JSON, never pickle) let a run resume where it stopped.
Device, batch size, steps and architecture are settings, so the same code trains a
larger prior on a GPU with a bigger corpus.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from restoreflow.models.prior import DiffusionPrior


@dataclass
class TrainConfig:
    out_dir: str
    steps: int = 20000
    batch_size: int = 16
    crop: int = 64
    lr: float = 2e-4
    warmup: int = 200
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    scales: tuple[float, ...] = (1.0, 0.5, 0.25)
    block_out_channels: tuple[int, ...] = (32, 64, 128, 128)
    layers_per_block: int = 1
    attention: bool = False
    num_train_timesteps: int = 1000
    device: str = "cpu"
    bf16_autocast: bool | None = None  # None: where the device computes bf16 natively
    num_threads: int | None = None
    seed: int = 0
    checkpoint_every: int = 250
    eval_every: int = 1000
    eval_sigmas: tuple[float, ...] = (5, 15, 25, 50)
    max_minutes: float | None = None
    init_from: str | None = None
    extra: dict = field(default_factory=dict)


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA GPU that supports it, or a CPU
    with oneDNN bf16 kernels (AVX-512 and up). Without them bf16 autocast is emulated,
    far slower than fp32, so training stays in fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def build_unet(cfg: TrainConfig):
    """A plain diffusers UNet2DModel; any size that is a multiple of 2^(levels-1) works.

    The middle block has self-attention (diffusers' default); ``attention`` adds it to
    the lowest-resolution down and up blocks too.
    """
    from diffusers import UNet2DModel

    n = len(cfg.block_out_channels)
    down = ["DownBlock2D"] * n
    up = ["UpBlock2D"] * n
    if cfg.attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(
        sample_size=cfg.crop,
        in_channels=3,
        out_channels=3,
        layers_per_block=cfg.layers_per_block,
        block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=tuple(down),
        up_block_types=tuple(up),
    )


def load_rgb(path: str | Path, scales: tuple[float, ...], min_side: int) -> list[torch.Tensor]:
    """An image file as uint8 (3, H, W) tensors at several scales (grey -> 3 channels)."""
    from PIL import Image

    im = Image.open(path).convert("RGB")
    out = []
    for s in scales:
        w, h = round(im.width * s), round(im.height * s)
        if min(w, h) < min_side:
            continue
        r = im if s == 1.0 else im.resize((w, h), Image.Resampling.LANCZOS)
        out.append(torch.from_numpy(np.asarray(r).copy()).permute(2, 0, 1).contiguous())
    return out


class CropSampler:
    """Random crops with flips and 90-degree rotations, drawn from an explicit generator.

    Images are picked with probability proportional to their area, so large photos
    contribute more crops.
    """

    def __init__(self, images: list[torch.Tensor], crop: int, generator: torch.Generator):
        if not images:
            raise ValueError("no training images large enough for the crop size")
        self.images, self.crop, self.g = images, crop, generator
        areas = torch.tensor([float(im.shape[1] * im.shape[2]) for im in images])
        self.p = areas / areas.sum()

    def batch(self, n: int) -> torch.Tensor:
        idx = torch.multinomial(self.p, n, replacement=True, generator=self.g)
        crops = []
        for i in idx.tolist():
            im = self.images[i]
            _, h, w = im.shape
            y = int(torch.randint(0, h - self.crop + 1, (1,), generator=self.g))
            x = int(torch.randint(0, w - self.crop + 1, (1,), generator=self.g))
            c = im[:, y : y + self.crop, x : x + self.crop]
            if torch.rand((), generator=self.g) < 0.5:
                c = c.flip(-1)
            k = int(torch.randint(0, 4, (1,), generator=self.g))
            crops.append(torch.rot90(c, k, (1, 2)))
        x = torch.stack(crops).float() / 127.5 - 1.0
        return x


def _optimizer_state_tensors(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state_keys": {}}
    for pid, st in sd["state"].items():
        keys = []
        for k, v in st.items():
            name = f"{pid}.{k}"
            tensors[name] = v if torch.is_tensor(v) else torch.tensor(v)
            keys.append(k)
        meta["state_keys"][str(pid)] = keys
    return tensors, meta


def _load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state = {}
    for pid, keys in meta["state_keys"].items():
        state[int(pid)] = {k: tensors[f"{pid}.{k}"] for k in keys}
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(ckpt: Path, unet, ema, opt, step: int, rng: torch.Generator) -> None:
    from safetensors.torch import save_file

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, tmp / "unet.safetensors")
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, tmp / "ema.safetensors")
    ot, om = _optimizer_state_tensors(opt)
    save_file(ot, tmp / "optimizer.safetensors")
    save_file({"rng": rng.get_state()}, tmp / "rng.safetensors")
    (tmp / "state.json").write_text(json.dumps({"step": step, "optimizer": om}))
    if ckpt.exists():
        old = ckpt.with_name(ckpt.name + ".old")
        ckpt.rename(old)
        tmp.rename(ckpt)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        tmp.rename(ckpt)


def evaluate_x0(
    prior: DiffusionPrior,
    clean: list[torch.Tensor],
    sigmas_255: tuple[float, ...],
    seed: int = 0,
) -> dict[str, float]:
    """Mean PSNR (dB, [0,1] units) of the one-step x0 estimate at each noise level.

    For y = x + n, n ~ N(0, s^2) in [0,1] units: in model units sigma = 2 s, pick t with
    sqrt((1-abar)/abar) = sigma, set x_t = sqrt(abar_t) (2y - 1), x0 = prior.x0(x_t, t).
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for s in sigmas_255:
        s01 = s / 255.0
        t = prior.timestep_for_sigma(2 * s01)
        ab = float(prior.abar(t))
        psnrs = []
        for x in clean:  # (3, H, W) float in [0,1]
            y = x + s01 * torch.randn(x.shape, generator=g)
            with torch.no_grad():
                x0 = prior.x0((math.sqrt(ab) * (2 * y - 1))[None].to(prior.device), t)[0].cpu()
            est = ((x0 + 1) / 2).clamp(0, 1)
            mse = float(((est - x) ** 2).mean())
            psnrs.append(10 * math.log10(1.0 / mse))
        out[f"{s:g}"] = float(np.mean(psnrs))
    return out


def train_prior(
    cfg: TrainConfig,
    train_files: list[Path],
    eval_images: list[torch.Tensor] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Train (or resume) and export the EMA prior to ``out_dir/prior``; returns that dir."""
    from safetensors.torch import load_file

    from restoreflow.models.allocator import tune_allocator

    tune_allocator()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    if cfg.bf16_autocast is None:
        cfg = replace(cfg, bf16_autocast=bf16_native(device))
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)

    images = []
    for f in train_files:
        images += load_rgb(f, cfg.scales, cfg.crop)
    log(f"training on {len(train_files)} photos, {len(images)} scaled images")

    unet = build_unet(cfg).to(device)
    ema = build_unet(cfg).to(device)
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    prior = DiffusionPrior.from_unet(
        ema, {"beta_schedule": "linear", "num_train_timesteps": cfg.num_train_timesteps}
    )
    abar = prior.alphas_cumprod.to(device=device, dtype=torch.float32)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = torch.Generator().manual_seed(cfg.seed)
    dev_rng = None if device.type == "cpu" else torch.Generator(device).manual_seed(cfg.seed + 1)
    step = 0
    ckpt = out / "checkpoint"
    if (ckpt / "state.json").is_file():
        state = json.loads((ckpt / "state.json").read_text())
        unet.load_state_dict(load_file(ckpt / "unet.safetensors"))
        ema.load_state_dict(load_file(ckpt / "ema.safetensors"))
        _load_optimizer_state(opt, load_file(ckpt / "optimizer.safetensors"), state["optimizer"])
        rng.set_state(load_file(ckpt / "rng.safetensors")["rng"])
        step = state["step"]
        if dev_rng is not None:  # device streams restart from a step-dependent seed
            dev_rng.manual_seed(cfg.seed + 1 + step)
        log(f"resumed from step {step}")
    elif cfg.init_from:
        # warm start: weights of an exported prior with the same architecture
        start = DiffusionPrior.load(cfg.init_from).unet.state_dict()
        unet.load_state_dict(start)
        ema.load_state_dict(start)
        log(f"initialised from {cfg.init_from}")
    sampler = CropSampler(images, cfg.crop, rng)
    n_params = sum(p.numel() for p in unet.parameters())
    log(f"UNet2DModel {n_params / 1e6:.2f}M parameters on {device}, "
        f"bf16 autocast {cfg.bf16_autocast}")

    t_start = time.monotonic()
    logf = (out / "log.jsonl").open("a")
    losses = []
    while step < cfg.steps:
        if cfg.max_minutes and (time.monotonic() - t_start) / 60 > cfg.max_minutes:
            log(f"time budget of {cfg.max_minutes} min reached at step {step}")
            break
        x0 = sampler.batch(cfg.batch_size).to(device, non_blocking=True)
        # t and the noise on the device itself (a CPU draw of a GPU batch would be the
        # bottleneck); on the CPU the one generator keeps old runs' sequences
        g = rng if dev_rng is None else dev_rng
        t = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), generator=g,
                          device=g.device)
        noise = torch.randn(x0.shape, generator=g, device=g.device)
        ab = abar[t.to(device)].reshape(-1, 1, 1, 1)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        lr = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))
        for group in opt.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16_autocast):
            pred = unet(x_t, t.to(device)).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.lerp_(p, 1 - cfg.ema_decay)
        step += 1
        losses.append(loss.item())
        if step % 50 == 0:
            rec = {"step": step, "loss": float(np.mean(losses)), "lr": lr,
                   "elapsed_s": round(time.monotonic() - t_start, 1)}
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            losses = []
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(ckpt, unet, ema, opt, step, rng)
            prior.save_pretrained(out / "prior")
        if eval_images and step % cfg.eval_every == 0:
            ev = evaluate_x0(prior, eval_images, cfg.eval_sigmas)
            logf.write(json.dumps({"step": step, "eval_psnr_x0": ev}) + "\n")
            logf.flush()
            log(f"step {step}: x0 PSNR {ev}")
    save_checkpoint(ckpt, unet, ema, opt, step, rng)
    prior.save_pretrained(out / "prior")
    logf.close()
    return out / "prior"


def center_crops(
    paths: list[Path], size: int = 256, short_side: int | None = None
) -> list[torch.Tensor]:
    """One centred size x size crop per image, float (3, size, size) in [0, 1].

    ``short_side`` first resizes larger images (Lanczos) so their shorter side is that
    many pixels: a 256 px crop of a 5120 px wallpaper is a nearly flat patch, while a
    photo at web resolution holds a representative amount of detail.
    """
    out = []
    for p in paths:
        im = load_rgb(p, (1.0,), size)[0]
        _, h, w = im.shape
        if short_side and min(h, w) > short_side:
            s = short_side / min(h, w)
            im = load_rgb(p, (s,), size)[0]
            _, h, w = im.shape
        y, x = (h - size) // 2, (w - size) // 2
        out.append(im[:, y : y + size, x : x + size].float() / 255.0)
    return out
