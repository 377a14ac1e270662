"""The OpenAI guided-diffusion ``UNetModel`` (Dhariwal & Nichol 2021), loadable from the
released checkpoints (``256x256_diffusion_uncond.pt``, the FFHQ model of DPS, ...).

The state-dict keys are those of ``guided_diffusion/unet.py``:

    time_embed.{0,2}            Linear(C, 4C), SiLU, Linear(4C, 4C) on the sinusoidal
                                embedding of the raw integer timestep t
    input_blocks.0.0            conv3x3(in, m_0 C)
    input_blocks.N.0            ResBlock; .1 AttentionBlock where the level's downsample
                                rate is in ``attention_resolutions``; between levels a
                                downsampling ResBlock (``resblock_updown``) or ``.0.op`` conv
    middle_block.{0,1,2}        ResBlock, AttentionBlock, ResBlock
    output_blocks.N.0           ResBlock on [h, skip]; .1 attention; last block of a level
                                ends with an upsampling ResBlock or ``.conv``
    out.{0,2}                   GroupNorm32, SiLU, conv3x3(m_0 C, out)

ResBlock: ``in_layers`` (GroupNorm32, SiLU, conv), ``emb_layers`` (SiLU, Linear to C_out,
or 2 C_out for scale-shift norm ``GN(h) (1 + s) + b``), ``out_layers`` (GroupNorm32, SiLU,
Dropout, conv), ``skip_connection`` (1x1 conv when the channel count changes).
AttentionBlock: ``norm``, ``qkv`` (1x1 conv1d to 3C), ``proj_out``; heads of
``num_head_channels`` channels (or ``num_heads`` heads), split legacy-style: the qkv
channels are grouped per head, then into q, k, v. GroupNorm32: 32 groups, in float32.

Learned-sigma checkpoints output 2 C channels (eps, variance interpolation); the prior
keeps eps. Schedule: 1000 linear betas from 1e-4 to 0.02, epsilon prediction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from restoreflow.models.denoiser import file_sha256, read_state_dict
from restoreflow.models.prior import DiffusionPrior, ModelLoadError

NUM_TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 1e-4, 0.02


@dataclass(frozen=True)
class GuidedUNetConfig:
    """``UNetModel`` hyper-parameters (``attention_resolutions`` are downsample rates:
    attention at ``image_size // r`` pixels). ``num_head_channels > 0`` overrides
    ``num_heads``. ``use_new_attention_order`` changes no weights."""

    image_size: int = 256
    in_channels: int = 3
    model_channels: int = 256
    out_channels: int = 6
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (8, 16, 32)
    channel_mult: tuple[float, ...] = (1, 1, 2, 2, 4, 4)
    num_head_channels: int = 64
    num_heads: int = 4
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    dropout: float = 0.0
    use_new_attention_order: bool = False

    @property
    def learn_sigma(self) -> bool:
        return self.out_channels == 2 * self.in_channels

    @property
    def size_multiple(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    def structure(self) -> tuple:
        """The fields the weights determine (all but image size, heads and dropout)."""
        return (self.in_channels, self.model_channels, self.out_channels,
                self.num_res_blocks, tuple(sorted(self.attention_resolutions)),
                tuple(self.channel_mult), self.use_scale_shift_norm, self.resblock_updown)


#: ``256x256_diffusion_uncond.pt`` (also the layout of the 256 px class-conditional and
#: LSUN checkpoints): --num_channels 256 --num_res_blocks 2 --attention_resolutions
#: 32,16,8 --num_head_channels 64 --learn_sigma --use_scale_shift_norm --resblock_updown
IMAGENET_256_UNCOND = GuidedUNetConfig()
#: ``ffhq_10m.pt`` of DPS: --num_channels 128 --num_res_blocks 1 --attention_resolutions 16
#: --num_heads 4 --num_head_channels 64 --learn_sigma --use_scale_shift_norm
#: --resblock_updown
FFHQ_256 = GuidedUNetConfig(model_channels=128, num_res_blocks=1, attention_resolutions=(16,))
PRESETS = {"imagenet-256-uncond": IMAGENET_256_UNCOND, "ffhq-256": FFHQ_256}


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[cos(t w_k), sin(t w_k)], w_k = max_period^(-k/half), k < half = dim // 2."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32) / half
    ).to(t.device)
    args = t.reshape(-1, 1).float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups, computed in float32."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float(),
                            self.bias.float(), self.eps).to(x.dtype)


class TimestepEmbedSequential(nn.Sequential):
    """Sequential whose ResBlocks also receive the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResBlock(nn.Module):
    """h = conv(SiLU(GN(x))) (resampled between the SiLU and conv when up/down);
    h = conv(Dropout(SiLU(GN(h) (1 + s) + b))) or conv(...(GN(h + e))); out = skip(x) + h."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None,
                 dropout: float = 0.0, use_scale_shift_norm: bool = False,
                 up: bool = False, down: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.resample = "up" if up else "down" if down else None
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels),
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(p=dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.avg_pool2d(x, 2) if self.resample == "down" else x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.resample:
            h = self.in_layers[2](self._resample(self.in_layers[1](self.in_layers[0](x))))
            x = self._resample(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            for layer in self.out_layers[1:]:
                h = layer(h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """x + proj_out(attention(qkv(GN(x)))) over the H W positions, softmax(q k^T / sqrt(d)) v
    per head of d channels."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1,
                 new_order: bool = False):
        super().__init__()
        if num_head_channels > 0:
            if channels % num_head_channels:
                raise ValueError(f"{channels} channels do not split into heads of "
                                 f"{num_head_channels}")
            num_heads = channels // num_head_channels
        self.num_heads, self.new_order = num_heads, new_order
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        n, d, length = self.num_heads, c // self.num_heads, x.shape[-1]
        if self.new_order:  # split q, k, v first, then heads
            q, k, v = (u.reshape(b * n, d, length) for u in qkv.chunk(3, dim=1))
        else:  # legacy: heads first, each head's channels holding its q, k, v
            q, k, v = qkv.reshape(b * n, 3 * d, length).split(d, dim=1)
        a = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )  # (b n, length, d)
        h = self.proj_out(a.transpose(1, 2).reshape(b, c, length))
        return (x + h).reshape(b, c, *spatial)


class GuidedUNet(nn.Module):
    """guided-diffusion ``UNetModel`` (unconditional): ``forward(x, t)`` with t the raw
    integer timesteps (B,); returns (B, out_channels, H, W)."""

    def __init__(self, cfg: GuidedUNetConfig):
        super().__init__()
        self.config = cfg
        mc, emb_ch = cfg.model_channels, 4 * cfg.model_channels
        heads = {"num_heads": cfg.num_heads, "num_head_channels": cfg.num_head_channels,
                 "new_order": cfg.use_new_attention_order}
        res = {"dropout": cfg.dropout, "use_scale_shift_norm": cfg.use_scale_shift_norm}
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_ch), nn.SiLU(),
                                        nn.Linear(emb_ch, emb_ch))
        ch = first = int(cfg.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))]
        )
        skips, ds = [ch], 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                out = int(mult * mc)
                layers: list[nn.Module] = [ResBlock(ch, emb_ch, out, **res)]
                ch = out
                if ds in cfg.attention_resolutions:
                    layers.append(AttentionBlock(ch, **heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skips.append(ch)
            if level != len(cfg.channel_mult) - 1:
                down = ResBlock(ch, emb_ch, ch, down=True, **res) if cfg.resblock_updown \
                    else Downsample(ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skips.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, emb_ch, **res), AttentionBlock(ch, **heads), ResBlock(ch, emb_ch, **res)
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                out = int(mult * mc)
                layers = [ResBlock(ch + skips.pop(), emb_ch, out, **res)]
                ch = out
                if ds in cfg.attention_resolutions:
                    layers.append(AttentionBlock(ch, **heads))
                if level and i == cfg.num_res_blocks:
                    layers.append(ResBlock(ch, emb_ch, ch, up=True, **res)
                                  if cfg.resblock_updown else Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(),
                                 nn.Conv2d(first, cfg.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels).to(x.dtype))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


class GuidedEps(nn.Module):
    """The prior's UNet: ``forward(x_t, t).sample`` is eps, the first ``in_channels``
    output channels of the wrapped :class:`GuidedUNet`."""

    def __init__(self, net: GuidedUNet):
        super().__init__()
        self.net = net
        self.config = net.config
        self.size_multiple = net.config.size_multiple

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(sample=self.net(x_t, t)[:, : self.config.in_channels])


def matches(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` has the keys of a guided-diffusion UNetModel."""
    return "input_blocks.0.0.weight" in state and "time_embed.0.weight" in state


def _has(state: dict, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in state)


def config_from_state_dict(
    state: dict[str, torch.Tensor],
    image_size: int = 256,
    num_head_channels: int | None = None,
    num_heads: int | None = None,
) -> GuidedUNetConfig:
    """The config whose ``GuidedUNet`` has ``state``'s keys and shapes.

    Channels, channel_mult, num_res_blocks, attention levels, scale-shift norm and
    resblock up/down are read from the keys and shapes. The attention head split leaves
    no trace in the weights: it comes from ``num_head_channels`` / ``num_heads``, else the
    preset with the same structure, else 64-channel heads (as every released checkpoint)
    where the attention widths allow it; otherwise ModelLoadError.
    """
    if not matches(state):
        raise ModelLoadError("not a guided-diffusion UNet state dict (no input_blocks.0.0.weight"
                             " / time_embed.0.weight)")
    if _has(state, "label_emb."):
        raise ModelLoadError("class-conditional guided-diffusion checkpoint (label_emb); only "
                             "unconditional models are supported")
    try:
        mc = int(state["time_embed.0.weight"].shape[1])
        conv_in = state["input_blocks.0.0.weight"]
        n_out = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("output_blocks."))

        def has_upsampler(i: int) -> bool:
            p = f"output_blocks.{i}."
            return _has(state, p + "1.in_layers.") or _has(state, p + "2.in_layers.") or \
                _has(state, p + "1.conv.") or _has(state, p + "2.conv.")

        ups = [i for i in range(n_out) if has_upsampler(i)]
        nrb = ups[0] if ups else n_out - 1
        if nrb == 0 or n_out % (nrb + 1):
            raise ModelLoadError(f"guided-diffusion state dict has {n_out} output blocks, "
                                 f"not a whole number of levels of {nrb} + 1 blocks")
        levels = n_out // (nrb + 1)
        mult: list[float] = []
        attention: list[int] = []
        for level in range(levels):
            block = level * (nrb + 1) + 1
            width = int(state[f"input_blocks.{block}.0.out_layers.3.weight"].shape[0])
            m = width / mc
            mult.append(int(m) if m == int(m) else m)
            if _has(state, f"input_blocks.{block}.1.norm."):
                attention.append(2**level)
        first_res = state["input_blocks.1.0.out_layers.3.weight"].shape[0]
        scale_shift = state["input_blocks.1.0.emb_layers.1.weight"].shape[0] == 2 * first_res
        updown = levels > 1 and _has(state, f"input_blocks.{nrb + 1}.0.in_layers.")
        cfg = GuidedUNetConfig(
            image_size=image_size, in_channels=int(conv_in.shape[1]), model_channels=mc,
            out_channels=int(state["out.2.weight"].shape[0]), num_res_blocks=nrb,
            attention_resolutions=tuple(attention), channel_mult=tuple(mult),
            use_scale_shift_norm=bool(scale_shift), resblock_updown=bool(updown),
        )
    except ModelLoadError:
        raise
    except (KeyError, IndexError, ValueError, ZeroDivisionError) as exc:
        raise ModelLoadError(f"guided-diffusion state dict has an unexpected layout "
                             f"({type(exc).__name__}: {exc})") from None
    if num_head_channels is not None or num_heads is not None:
        return replace(cfg, num_head_channels=num_head_channels or -1,
                       num_heads=num_heads or cfg.num_heads)
    for preset in PRESETS.values():
        if preset.structure() == cfg.structure():
            return replace(preset, image_size=image_size)
    widths = [int(mc * m) for lv, m in enumerate(cfg.channel_mult) if 2**lv in attention]
    if all(w % 64 == 0 for w in widths):  # every released checkpoint: 64-channel heads
        return replace(cfg, num_head_channels=64)
    raise ModelLoadError(
        f"guided-diffusion UNet (model_channels {mc}, channel_mult {cfg.channel_mult}, "
        f"num_res_blocks {nrb}) matches no preset ({', '.join(PRESETS)}) and its attention "
        "heads cannot be read from the weights: pass num_head_channels (or num_heads)"
    )


def _first_error(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    detail = lines[1:] or lines or [type(exc).__name__]
    more = f" (+{len(detail) - 1} more)" if len(detail) > 1 else ""
    first = detail[0].rstrip(".")
    return (first if len(first) <= 300 else first[:297] + "...") + more


def build_unet(cfg: GuidedUNetConfig, state: dict[str, torch.Tensor] | None = None,
               source: str = "guided-diffusion") -> GuidedUNet:
    """A GuidedUNet for ``cfg``; with ``state``, its weights loaded strictly (built on the
    meta device and assigned the tensors, so no random initialisation is spent)."""
    try:
        if state is None:
            return GuidedUNet(cfg)
        with torch.device("meta"):
            net = GuidedUNet(cfg)
        net.load_state_dict(state, strict=True, assign=True)
    except (RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"{source}: state dict does not fit the guided-diffusion UNet "
                             f"({_first_error(exc)})") from None
    return net


def linear_alphas_cumprod(n: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """abar_t = prod_{s<=t} (1 - beta_s), betas = linspace(1e-4, 0.02, n) scaled to 1000
    steps, in float64 (as the checkpoints were trained)."""
    scale = 1000 / n
    betas = np.linspace(scale * BETA_START, scale * BETA_END, n, dtype=np.float64)
    return torch.from_numpy(np.cumprod(1.0 - betas))


def load_guided_prior(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    image_size: int = 256,
    num_head_channels: int | None = None,
    num_heads: int | None = None,
) -> DiffusionPrior:
    """A :class:`DiffusionPrior` from a guided-diffusion checkpoint file (.pt read with
    ``weights_only=True``, or .safetensors). The head split comes from the matching preset
    unless ``num_head_channels`` / ``num_heads`` are given."""
    from restoreflow.models.allocator import tune_allocator

    tune_allocator()
    path = Path(path).expanduser()
    state = read_state_dict(path)
    try:
        cfg = config_from_state_dict(state, image_size, num_head_channels, num_heads)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None
    net = build_unet(cfg, state, source=str(path))
    unet = GuidedEps(net).to(device=device, dtype=dtype).eval().requires_grad_(False)
    return DiffusionPrior(
        unet=unet,
        alphas_cumprod=linear_alphas_cumprod(),
        prediction_type="epsilon",
        model_hash=file_sha256(path),
        source=str(path),
        extra={
            "architecture": "guided-diffusion",
            "config": asdict(cfg),
            "scheduler_config": {"beta_schedule": "linear", "beta_start": BETA_START,
                                 "beta_end": BETA_END,
                                 "num_train_timesteps": NUM_TRAIN_TIMESTEPS},
        },
    )
