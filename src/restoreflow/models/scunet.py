"""SCUNet (Zhang et al., "Practical Blind Denoising via Swin-Conv-UNet and Data Synthesis",
Machine Intelligence Research 2023), in the state-dict layout of the authors' code
(``models/network_scunet.py``).

A blind denoiser (sigma is ignored): ``D(x) = U(x)``, the clean estimate itself. U is a
four-level U-Net (``m_head``, ``m_down1..3``, ``m_body``, ``m_up3..1``, ``m_tail``; widths
dim, 2 dim, 4 dim, 8 dim; 2x2 stride-2 convolutions down, 2x2 stride-2 transposed
convolutions up, encoder features added before each decoder level) whose levels are
Swin-Conv blocks. A block on y (d channels) computes

    [c, t] = split(conv1x1_1(y), d/2)
    c'     = c + conv3x3(relu(conv3x3(c)))
    t'     = t + MSA(LN(t)),  t' = t' + MLP(LN(t'))          (tokens t of width d/2)
    y      = y + conv1x1_2([c', t'])

with MSA the window attention of Swin: p x p windows (p = 8), heads of width 32,
``softmax(q k^T / sqrt(32) + B) v`` with a learned relative-position bias B; every second
block shifts the windows by p/2 (cyclic roll, attention masked across the wrap). Released
models: dim = 64, four blocks per level. Sizes are padded to a multiple of 8 p by
replication and cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from restoreflow.models.denoiser import Denoiser, count_blocks, load_strict
from restoreflow.models.drunet import skip_unet
from restoreflow.models.prior import ModelLoadError

STAGES = ("m_down1", "m_down2", "m_down3", "m_body", "m_up3", "m_up2", "m_up1")


def shift_mask(nh: int, nw: int, p: int, device=None) -> torch.Tensor:
    """(nh nw, p p, p p) bool: True where a query and key of a shifted window come from
    different sides of the cyclic wrap (only the last window row / column is split)."""
    side = torch.arange(p, device=device) >= p - p // 2
    cross = side[:, None] != side[None, :]  # (query row, key row)
    rows = cross[:, None, :, None].expand(p, p, p, p).reshape(p * p, p * p)
    cols = cross[None, :, None, :].expand(p, p, p, p).reshape(p * p, p * p)
    mask = torch.zeros(nh, nw, p * p, p * p, dtype=torch.bool, device=device)
    mask[-1] |= rows
    mask[:, -1] |= cols
    return mask.reshape(nh * nw, p * p, p * p)


class WMSA(nn.Module):
    """(Shifted) window multi-head self-attention on (B, H, W, C) tokens."""

    def __init__(self, dim: int, head_dim: int, window_size: int, shifted: bool):
        super().__init__()
        self.heads, self.head_dim = dim // head_dim, head_dim
        self.p, self.shifted = window_size, shifted
        self.embedding_layer = nn.Linear(dim, 3 * dim)
        self.relative_position_params = nn.Parameter(
            torch.zeros(self.heads, 2 * window_size - 1, 2 * window_size - 1))
        self.linear = nn.Linear(dim, dim)
        r = torch.arange(window_size)
        coords = torch.stack(torch.meshgrid(r, r, indexing="ij")).flatten(1)  # (2, p p)
        rel = coords[:, :, None] - coords[:, None, :] + window_size - 1
        self.register_buffer("rel_index", rel, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, s = self.p, self.p // 2
        if self.shifted:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        b, h, w, c = x.shape
        nh, nw = h // p, w // p
        x = x.reshape(b, nh, p, nw, p, c).permute(0, 1, 3, 2, 4, 5).reshape(b, nh * nw, p * p, c)
        qkv = self.embedding_layer(x).reshape(b, nh * nw, p * p, 3 * self.heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 1, 2, 4).chunk(3, dim=0)  # each (heads, b, n, p p, hd)
        bias = self.relative_position_params[:, self.rel_index[0], self.rel_index[1]]
        sim = q @ k.transpose(-1, -2) * self.head_dim ** -0.5 + bias[:, None, None]
        if self.shifted:
            sim = sim.masked_fill(shift_mask(nh, nw, p, x.device), float("-inf"))
        out = (sim.softmax(dim=-1) @ v).permute(1, 2, 3, 0, 4).reshape(b, nh * nw, p * p, c)
        out = self.linear(out)
        out = out.reshape(b, nh, nw, p, p, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        if self.shifted:
            out = torch.roll(out, shifts=(s, s), dims=(1, 2))
        return out


class SwinBlock(nn.Module):
    """t + MSA(LN(t)), then t + MLP(LN(t)) with a 4x GELU MLP (keys ln1, msa, ln2, mlp)."""

    def __init__(self, dim: int, head_dim: int, window_size: int, shifted: bool):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.msa = WMSA(dim, head_dim, window_size, shifted)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.msa(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ConvTransBlock(nn.Module):
    """Swin-Conv block on 2 ``half`` channels (keys trans_block, conv1_1, conv1_2,
    conv_block)."""

    def __init__(self, half: int, head_dim: int, window_size: int, shifted: bool):
        super().__init__()
        self.half = half
        self.trans_block = SwinBlock(half, head_dim, window_size, shifted)
        self.conv1_1 = nn.Conv2d(2 * half, 2 * half, 1)
        self.conv1_2 = nn.Conv2d(2 * half, 2 * half, 1)
        self.conv_block = nn.Sequential(nn.Conv2d(half, half, 3, padding=1, bias=False),
                                        nn.ReLU(inplace=True),
                                        nn.Conv2d(half, half, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, t = torch.split(self.conv1_1(x), (self.half, self.half), dim=1)
        c = c + self.conv_block(c)
        t = self.trans_block(t.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x + self.conv1_2(torch.cat((c, t), dim=1))


class SCUNet(nn.Module):
    def __init__(self, channels: int = 3, config: tuple[int, ...] = (4,) * 7, dim: int = 64,
                 head_dim: int = 32, window_size: int = 8):
        super().__init__()
        if len(config) != len(STAGES):
            raise ValueError(f"SCUNet needs {len(STAGES)} block counts, got {config}")
        self.channels, self.window_size = channels, window_size

        def blocks(n: int, width: int) -> list[nn.Module]:  # W, SW, W, ... on width channels
            return [ConvTransBlock(width // 2, head_dim, window_size, i % 2 == 1)
                    for i in range(n)]

        self.m_head = nn.Sequential(nn.Conv2d(channels, dim, 3, padding=1, bias=False))
        for i in range(3):
            width = dim * 2 ** i
            setattr(self, f"m_down{i + 1}", nn.Sequential(
                *blocks(config[i], width), nn.Conv2d(width, 2 * width, 2, stride=2, bias=False)))
        self.m_body = nn.Sequential(*blocks(config[3], 8 * dim))
        for i in range(3, 0, -1):
            width = dim * 2 ** (i - 1)
            setattr(self, f"m_up{i}", nn.Sequential(
                nn.ConvTranspose2d(2 * width, width, 2, stride=2, bias=False),
                *blocks(config[7 - i], width)))
        self.m_tail = nn.Sequential(nn.Conv2d(dim, channels, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 8 * self.window_size
        ph, pw = -h % m, -w % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return skip_unet(self, x)[..., :h, :w]


def scunet_config(state: dict[str, torch.Tensor]) -> dict:
    """SCUNet constructor arguments (channels, config, dim, head_dim, window_size) read from
    a state dict's keys and tensor shapes."""
    head = state.get("m_head.0.weight")
    if head is None or head.dim() != 4:
        raise ModelLoadError("not an SCUNet state dict (no m_head.0.weight)")
    config = tuple(count_blocks(state, s, "conv1_1.weight") for s in STAGES)
    rel_key = next((k for k in state if k.endswith(".trans_block.msa.relative_position_params")),
                   None)
    if rel_key is None:
        raise ModelLoadError("not an SCUNet state dict (no trans_block.msa.* attention)")
    rel = state[rel_key]
    emb = state.get(rel_key.replace("relative_position_params", "embedding_layer.weight"))
    if rel.dim() != 3 or emb is None or rel.shape[0] < 1 or emb.shape[1] % rel.shape[0]:
        raise ModelLoadError(f"SCUNet state dict does not fit ({rel_key} has shape "
                             f"{tuple(rel.shape)})")
    return {"channels": int(head.shape[1]), "config": config, "dim": int(head.shape[0]),
            "head_dim": int(emb.shape[1]) // int(rel.shape[0]),
            "window_size": (int(rel.shape[-1]) + 1) // 2}


class SCUNetDenoiser(Denoiser):
    """SCUNet as a :class:`Denoiser` (blind: sigma is ignored)."""

    name = "scunet"
    sigma_max = 50 / 255


    def _denoise(self, x, sigma_map):
        return self.net(x)

    @staticmethod
    def matches(state: dict[str, torch.Tensor]) -> bool:
        head = state.get("m_head.0.weight")
        return (head is not None and head.dim() == 4 and "m_tail.0.weight" in state
                and any(".trans_block.msa." in k for k in state))

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> SCUNetDenoiser:
        if not cls.matches(state):
            raise ModelLoadError("not an SCUNet state dict (m_head.0.weight, m_tail.0.weight "
                                 "and trans_block.msa.* expected)")
        cfg = scunet_config(state)
        try:
            net = SCUNet(**cfg)
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"SCUNet state dict does not fit ({exc})") from None
        load_strict(net, state, "SCUNet")
        return cls(net)
