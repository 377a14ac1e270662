"""FFDNet (Zhang, Zuo & Zhang, "FFDNet: Toward a Fast and Flexible Solution for CNN-Based
Image Denoising", IEEE TIP 2018), in the state-dict layout of the authors' KAIR code.

The network works at half resolution on a noise-level map:

    u   = pixel_unshuffle(x, 2)                       (4C channels, H/2 x W/2)
    out = pixel_shuffle(F([u, M]), 2)                 M: sigma map at H/2 x W/2, [0, 1] units

where F is a plain stack of 3x3 convolutions with ReLU between them (``model.0`` ...
``model.{2(L-1)}``; the colour model: L = 12, 96 features, trained on sigma in
[0, 75/255]). The output is the clean estimate itself (not a residual). Odd sizes are
padded by replication and cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from restoreflow.models.denoiser import Denoiser, load_strict
from restoreflow.models.prior import ModelLoadError


def conv_stack(in_ch: int, features: int, out_ch: int, layers: int) -> nn.Sequential:
    """``layers`` 3x3 convolutions (bias) with ReLU between: keys model.0 ... model.2(L-1)."""
    mods: list[nn.Module] = []
    for i in range(layers):
        mods.append(nn.Conv2d(in_ch if i == 0 else features,
                              out_ch if i == layers - 1 else features, 3, padding=1))
        if i < layers - 1:
            mods.append(nn.ReLU(inplace=True))
    return nn.Sequential(*mods)


def conv_layers(state: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    keys = sorted(int(k.split(".")[1]) for k in state
                   if k.startswith("model.") and k.endswith(".weight"))
    return [state[f"model.{i}.weight"] for i in keys]


class FFDNet(nn.Module):
    def __init__(self, channels: int = 3, features: int = 96, layers: int = 12):
        super().__init__()
        self.channels = channels
        self.model = conv_stack(4 * channels + 1, features, 4 * channels, layers)

    def forward(self, x: torch.Tensor, sigma_map: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = h % 2, w % 2
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
            sigma_map = F.pad(sigma_map, (0, pw, 0, ph), mode="replicate")
        u = F.pixel_unshuffle(x, 2)
        m = F.avg_pool2d(sigma_map, 2)
        return F.pixel_shuffle(self.model(torch.cat((u, m), dim=1)), 2)[..., :h, :w]


class FFDNetDenoiser(Denoiser):
    """FFDNet as a :class:`Denoiser` (per-pixel sigma maps are native to it)."""

    name = "ffdnet"
    sigma_max = 75 / 255


    def _denoise(self, x, sigma_map):
        return self.net(x, sigma_map)

    @staticmethod
    def matches(state: dict[str, torch.Tensor]) -> bool:
        w = state.get("model.0.weight")
        return w is not None and w.dim() == 4 and w.shape[1] in (5, 13)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> FFDNetDenoiser:
        convs = conv_layers(state)
        if not convs or not cls.matches(state):
            raise ModelLoadError("not an FFDNet state dict (model.0.weight with 5 or 13 "
                                 "input channels expected)")
        channels = (convs[0].shape[1] - 1) // 4
        net = FFDNet(channels, convs[0].shape[0], len(convs))
        load_strict(net, state, "FFDNet")
        return cls(net)
