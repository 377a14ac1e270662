"""Inpainting: ``A x = M ⊙ x`` with a binary keep-mask M (1 = observed), shared by all
channels and batch items. y keeps the full image size with missing pixels set to 0.

A is an orthogonal projection (``A = A^T = A A^T = M``), so

    A^+_eta y = A^T (M + eta I)^{-1} y = M ⊙ y / (1 + eta),   A^+ = M ⊙ y.
"""

from __future__ import annotations

import torch

from .base import LinearOperator, ShapeError, check_input, check_shape
from .kernels import box_mask, random_box_mask, random_pixel_mask


class Inpainting(LinearOperator):
    """Pixel masking with a fixed (H, W) keep-mask (bool buffer; True = keep)."""

    closed_form_dagger = True
    channelwise = True
    halo = 0
    task = "inpaint"

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        m = torch.as_tensor(mask)
        if m.dim() == 4 and m.shape[:2] == (1, 1):
            m = m[0, 0]
        if m.dim() != 2:
            raise ValueError(f"an inpainting mask must be (H, W), got shape {tuple(m.shape)}")
        if m.dtype != torch.bool:
            if m.is_floating_point() and not bool(torch.isfinite(m).all()):
                raise ValueError("inpainting mask has NaN or infinite values")
            m = m != 0
        self.register_buffer("mask", m.clone())

    @classmethod
    def random_pixels(
        cls, height: int, width: int, ratio: float, generator: torch.Generator
    ) -> Inpainting:
        """A fraction ``ratio`` of pixels missing, uniformly at random."""
        return cls(random_pixel_mask(height, width, ratio, generator).cpu())

    @classmethod
    def random_boxes(
        cls, height: int, width: int, count: int, size: int, generator: torch.Generator
    ) -> Inpainting:
        """``count`` missing size x size squares at random positions."""
        return cls(random_box_mask(height, width, count, size, generator).cpu())

    @classmethod
    def box(
        cls, height: int, width: int, top: int, left: int, box_height: int, box_width: int
    ) -> Inpainting:
        """One missing rectangle."""
        return cls(box_mask(height, width, top, left, box_height, box_width))

    @property
    def missing_ratio(self) -> float:
        return 1.0 - float(self.mask.float().mean())

    def extra_repr(self) -> str:
        h, w = self.mask.shape
        return f"mask={h}x{w}, missing={self.missing_ratio:.3f}"

    def y_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        b, c, h, w = check_shape(x_shape)
        mh, mw = self.mask.shape
        if (h, w) != (mh, mw):
            raise ShapeError(f"image {h}x{w} does not match the {mh}x{mw} inpainting mask")
        return (b, c, h, w)

    def window(self, top: int, left: int, height: int, width: int) -> Inpainting:
        """The same operator restricted to a tile ``[top, top+height) x [left, left+width)``."""
        return Inpainting(self.mask[top : top + height, left : left + width])

    def A(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x)
        self.y_shape(tuple(x.shape))
        return x * self.mask.to(x.device)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.A(y)

    def A_dagger(self, y: torch.Tensor, eta: float = 0.0) -> torch.Tensor:
        """``M ⊙ y / (1 + eta)``."""
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        return self.A(y) / (1.0 + eta) if eta else self.A(y)
