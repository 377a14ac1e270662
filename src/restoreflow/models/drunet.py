"""DRUNet (Zhang et al., "Plug-and-Play Image Restoration with Deep Denoiser Prior", IEEE
TPAMI 2021), in the state-dict layout of the authors' KAIR code (``UNetRes``).

A non-blind denoiser on the image and a noise-level map:

    D(x, sigma) = U([x, M])                M: sigma map, [0, 1] units (C + 1 input channels)

U is a four-level U-Net without biases: a 3x3 head (``m_head``), three encoder levels of
``nb`` residual blocks ``y = y + conv(relu(conv(y)))`` followed by a 2x2 stride-2
convolution (``m_down1`` ... ``m_down3``), ``nb`` residual blocks at the bottom
(``m_body``), three decoder levels of a 2x2 stride-2 transposed convolution followed by
``nb`` residual blocks (``m_up3`` ... ``m_up1``) and a 3x3 tail (``m_tail``). Encoder and
decoder features of the same level are added (``m_up3(y + x4)`` ...). The output is the
clean estimate itself. Widths ``nc = (64, 128, 256, 512)``, ``nb = 4`` for the released
models, trained on sigma in [0, 50/255]. Sizes are padded to a multiple of 8 by
replication and cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from restoreflow.models.denoiser import Denoiser, count_blocks, load_strict
from restoreflow.models.prior import ModelLoadError

LEVELS = 4  # nc has one width per level; three 2x downsamplings, sizes a multiple of 8


class ResBlock(nn.Module):
    """y + conv(relu(conv(y))), 3x3 convolutions without bias (keys res.0, res.2)."""

    def __init__(self, nc: int):
        super().__init__()
        self.res = nn.Sequential(nn.Conv2d(nc, nc, 3, padding=1, bias=False),
                                 nn.ReLU(inplace=True),
                                 nn.Conv2d(nc, nc, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res(x)


class DRUNet(nn.Module):
    def __init__(self, channels: int = 3, nc: tuple[int, ...] = (64, 128, 256, 512),
                 nb: int = 4):
        super().__init__()
        if len(nc) != LEVELS or nb < 1:
            raise ValueError(f"DRUNet needs {LEVELS} widths and nb >= 1, got {nc}, {nb}")
        self.channels = channels
        self.m_head = nn.Conv2d(channels + 1, nc[0], 3, padding=1, bias=False)
        for i in range(1, LEVELS):
            setattr(self, f"m_down{i}", nn.Sequential(
                *[ResBlock(nc[i - 1]) for _ in range(nb)],
                nn.Conv2d(nc[i - 1], nc[i], 2, stride=2, bias=False)))
        self.m_body = nn.Sequential(*[ResBlock(nc[-1]) for _ in range(nb)])
        for i in range(LEVELS - 1, 0, -1):
            setattr(self, f"m_up{i}", nn.Sequential(
                nn.ConvTranspose2d(nc[i], nc[i - 1], 2, stride=2, bias=False),
                *[ResBlock(nc[i - 1]) for _ in range(nb)]))
        self.m_tail = nn.Conv2d(nc[0], channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor, sigma_map: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2 ** (LEVELS - 1)
        y = torch.cat((x, sigma_map), dim=1)
        ph, pw = -h % m, -w % m
        if ph or pw:
            y = F.pad(y, (0, pw, 0, ph), mode="replicate")
        return skip_unet(self, y)[..., :h, :w]


def skip_unet(net: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """The four-level U of KAIR's networks (DRUNet, SCUNet): head, three downsampling
    stages, body, three upsampling stages each fed the sum with its skip, tail."""
    x1 = net.m_head(y)
    x2 = net.m_down1(x1)
    x3 = net.m_down2(x2)
    x4 = net.m_down3(x3)
    y = net.m_body(x4)
    y = net.m_up3(y + x4)
    y = net.m_up2(y + x3)
    y = net.m_up1(y + x2)
    return net.m_tail(y + x1)


def drunet_config(state: dict[str, torch.Tensor]) -> tuple[int, tuple[int, ...], int]:
    """(channels, nc, nb) of a DRUNet state dict, read from its tensor shapes."""
    nb = count_blocks(state, "m_body", "res.0.weight")
    if nb < 1:
        raise ModelLoadError("not a DRUNet state dict (no m_body.0.res.0.weight)")
    try:
        nc = (state["m_head.weight"].shape[0],
              *(state[f"m_down{i}.{nb}.weight"].shape[0] for i in range(1, LEVELS)))
        channels = state["m_tail.weight"].shape[0]
    except KeyError as exc:
        raise ModelLoadError(f"not a DRUNet state dict (no {exc.args[0]})") from None
    return channels, tuple(int(n) for n in nc), nb


class DRUNetDenoiser(Denoiser):
    """DRUNet as a :class:`Denoiser` (per-pixel sigma maps are native to it)."""

    name = "drunet"
    sigma_max = 50 / 255


    def _denoise(self, x, sigma_map):
        return self.net(x, sigma_map)

    @staticmethod
    def matches(state: dict[str, torch.Tensor]) -> bool:
        head, tail = state.get("m_head.weight"), state.get("m_tail.weight")
        return (head is not None and tail is not None and head.dim() == 4 and tail.dim() == 4
                and head.shape[1] == tail.shape[0] + 1 and "m_body.0.res.0.weight" in state)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> DRUNetDenoiser:
        if not cls.matches(state):
            raise ModelLoadError("not a DRUNet state dict (m_head.weight with C + 1 input "
                                 "channels, m_tail.weight with C outputs, m_body.* expected)")
        channels, nc, nb = drunet_config(state)
        net = DRUNet(channels, nc, nb)
        load_strict(net, state, "DRUNet")
        return cls(net)
