"""DnCNN (Zhang et al., "Beyond a Gaussian Denoiser: Residual Learning of Deep CNN for Image
Denoising", IEEE TIP 2017), in the state-dict layout of the authors' KAIR code (batch norm
merged into the convolutions: ``model.0`` ... ``model.{2(L-1)}``).

A blind residual denoiser: ``D(x) = x - F(x)`` with F a stack of 3x3 convolutions and
ReLU; it takes no noise level (sigma is ignored) and covers the range it was trained on
(``sigma_max``: 50/255 for the released blind colour model).
"""

from __future__ import annotations

import torch
from torch import nn

from restoreflow.models.denoiser import Denoiser, load_strict
from restoreflow.models.ffdnet import conv_layers, conv_stack
from restoreflow.models.prior import ModelLoadError


class DnCNN(nn.Module):
    def __init__(self, channels: int = 3, features: int = 64, layers: int = 20):
        super().__init__()
        self.channels = channels
        self.model = conv_stack(channels, features, channels, layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.model(x)


class DnCNNDenoiser(Denoiser):
    name = "dncnn"
    sigma_max = 50 / 255


    def _denoise(self, x, sigma_map):
        return self.net(x)

    @staticmethod
    def matches(state: dict[str, torch.Tensor]) -> bool:
        w = state.get("model.0.weight")
        return w is not None and w.dim() == 4 and w.shape[1] in (1, 3)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> DnCNNDenoiser:
        convs = conv_layers(state)
        if not convs or not cls.matches(state):
            raise ModelLoadError("not a DnCNN state dict (model.0.weight with 1 or 3 input "
                                 "channels expected)")
        net = DnCNN(convs[0].shape[1], convs[0].shape[0], len(convs))
        load_strict(net, state, "DnCNN")
        return cls(net)
