"""Identity (denoising) and colourisation operators."""

from __future__ import annotations

import torch

from .base import LinearOperator, ShapeError, check_input, check_shape


class Identity(LinearOperator):
    """Denoising: ``A = I``; ``A^+_eta y = y / (1 + eta)``."""

    closed_form_dagger = True
    channelwise = True
    halo = 0
    task = "denoise"

    def A(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x)
        return x.clone()  # operators return new tensors (samplers update them in place)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        check_input(y)
        return y.clone()

    def A_dagger(self, y: torch.Tensor, eta: float = 0.0) -> torch.Tensor:
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        check_input(y)
        return y / (1.0 + eta) if eta else y.clone()


class Colorise(LinearOperator):
    """Colourisation: grey = mean of the C channels, ``(A x) = (1/C) sum_c x_c`` (1 channel).

    ``A^T y`` copies ``y / C`` to every channel, so ``A A^T = I / C`` and
    ``A^+_eta y = A^T y / (1/C + eta)``; at eta = 0 A^+ copies y to every channel.
    """

    closed_form_dagger = True
    halo = 0

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = int(channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"

    def y_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        b, c, h, w = check_shape(x_shape)
        if c != self.channels:
            raise ShapeError(f"colorisation expects {self.channels} channels, got {c}")
        return (b, 1, h, w)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x)
        self.y_shape(tuple(x.shape))
        return x.mean(dim=1, keepdim=True)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        check_input(y)
        if y.shape[1] != 1:
            raise ShapeError(f"colorisation measurements have 1 channel, got {y.shape[1]}")
        return y.expand(-1, self.channels, -1, -1) / self.channels

    def A_dagger(self, y: torch.Tensor, eta: float = 0.0) -> torch.Tensor:
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        c = float(self.channels)
        return self.A_adjoint(y) / (1.0 / c + eta)
