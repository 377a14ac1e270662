"""Blur kernels and inpainting masks.

All random kernels and masks are drawn from an explicit ``torch.Generator`` (never the
global RNG) on the generator's device, in float64, so the same generator state gives
bit-identical results. Kernels are 2-D float64 tensors that sum to 1; masks are 2-D
bool tensors, True = pixel kept (observed).
"""

from __future__ import annotations

import math

import torch

MAX_KERNEL_SIZE = 1025


def gaussian_size(sigma: float) -> int:
    """Default Gaussian kernel size ``2 * ceil(3 sigma) + 1`` (covers +-3 sigma)."""
    return 2 * math.ceil(3 * sigma) + 1


def gaussian_kernel(sigma: float, size: int | None = None) -> torch.Tensor:
    """Isotropic Gaussian ``k[i, j] ∝ exp(-((i-c)^2 + (j-c)^2) / (2 sigma^2))``, sum 1.

    ``size`` (odd) defaults to :func:`gaussian_size`; ``c = size // 2``. Units: pixels.
    """
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"Gaussian sigma must be a finite number > 0, got {sigma}")
    size = gaussian_size(sigma) if size is None else int(size)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"Gaussian kernel size must be odd and >= 1, got {size}")
    t = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    k = g[:, None] * g[None, :]
    return k / k.sum()


def uniform_kernel(size: int) -> torch.Tensor:
    """Box kernel ``k = 1 / size^2`` on a size x size square."""
    if size < 1:
        raise ValueError(f"uniform kernel size must be >= 1, got {size}")
    return torch.full((size, size), 1.0 / size**2, dtype=torch.float64)


def motion_kernel(
    length: int, generator: torch.Generator, intensity: float = 0.5, size: int | None = None
) -> torch.Tensor:
    """Random camera-shake kernel: a random-walk trajectory rasterised and normalised.

    The trajectory has ``2 * length`` steps of 0.5 px (total path length ``length`` px).
    Its heading starts uniformly in [0, 2 pi) and changes at each step by
    ``intensity * N(0, 1) * pi / 4`` radians (intensity 0 = straight line). The path is
    centred on its mean, bilinearly splatted onto a ``size`` x ``size`` grid (default:
    ``length`` rounded up to odd), clipped to the grid, and normalised to sum 1.
    """
    if length < 1:
        raise ValueError(f"motion blur length must be >= 1, got {length}")
    if not 0 <= intensity <= 1:
        raise ValueError(f"motion blur intensity must be in [0, 1], got {intensity}")
    size = length + (1 - length % 2) if size is None else int(size)
    dev = generator.device
    n = 2 * length
    angle0 = torch.rand((), generator=generator, device=dev, dtype=torch.float64) * 2 * math.pi
    turns = torch.randn(n, generator=generator, device=dev, dtype=torch.float64)
    heading = angle0 + torch.cumsum(intensity * (math.pi / 4) * turns, 0)
    steps = 0.5 * torch.stack([torch.sin(heading), torch.cos(heading)], dim=1)
    pts = torch.cat([steps.new_zeros(1, 2), torch.cumsum(steps, 0)], 0)
    c = (size - 1) / 2
    pts = (pts - pts.mean(0) + c).clamp(0, size - 1)
    k = torch.zeros(size * size, dtype=torch.float64, device=dev)
    i0 = pts.floor().clamp(max=size - 2 if size > 1 else 0)
    frac = pts - i0
    i0 = i0.long()
    for di in (0, 1):
        for dj in (0, 1):
            wi = frac[:, 0] if di else 1 - frac[:, 0]
            wj = frac[:, 1] if dj else 1 - frac[:, 1]
            ii = (i0[:, 0] + di).clamp(max=size - 1)
            jj = (i0[:, 1] + dj).clamp(max=size - 1)
            k.index_add_(0, ii * size + jj, wi * wj)
    k = k.view(size, size)
    return k / k.sum()


def validate_kernel(kernel: torch.Tensor, source: str = "kernel") -> torch.Tensor:
    """Check that a kernel is 2-D, finite and non-negative with a positive sum; normalise.

    Returns a float64 copy with ``sum(k) = 1``.
    """
    k = torch.as_tensor(kernel)
    if k.dim() != 2:
        raise ValueError(f"{source}: a blur kernel must be 2-D, got shape {tuple(k.shape)}")
    if k.numel() == 0 or max(k.shape) > MAX_KERNEL_SIZE:
        raise ValueError(
            f"{source}: kernel shape {tuple(k.shape)} must be non-empty and at most "
            f"{MAX_KERNEL_SIZE} px per side"
        )
    k = k.to(torch.float64)
    if not bool(torch.isfinite(k).all()):
        raise ValueError(f"{source}: kernel has NaN or infinite values")
    if bool((k < 0).any()):
        raise ValueError(f"{source}: kernel has negative values (min {float(k.min()):.3g})")
    s = float(k.sum())
    if not s > 0:
        raise ValueError(f"{source}: kernel sums to {s}, need a positive sum")
    return k / s


def random_pixel_mask(
    height: int, width: int, ratio: float, generator: torch.Generator
) -> torch.Tensor:
    """Mask with exactly ``round(ratio * H * W)`` missing pixels chosen uniformly."""
    if not 0 <= ratio < 1:
        raise ValueError(f"missing-pixel ratio must be in [0, 1), got {ratio}")
    n = height * width
    n_missing = round(ratio * n)
    perm = torch.randperm(n, generator=generator, device=generator.device)
    mask = torch.ones(n, dtype=torch.bool, device=generator.device)
    mask[perm[:n_missing]] = False
    return mask.view(height, width)


def box_mask(height: int, width: int, top: int, left: int, box_height: int, box_width: int):
    """Mask with one missing rectangle ``[top, top+box_height) x [left, left+box_width)``."""
    if top < 0 or left < 0 or box_height < 1 or box_width < 1:
        raise ValueError("box top/left must be >= 0 and height/width >= 1")
    if top + box_height > height or left + box_width > width:
        raise ValueError(
            f"box (top={top}, left={left}, height={box_height}, width={box_width}) does not "
            f"fit in a {height}x{width} image"
        )
    mask = torch.ones(height, width, dtype=torch.bool)
    mask[top : top + box_height, left : left + box_width] = False
    return mask


def random_box_mask(
    height: int, width: int, count: int, size: int, generator: torch.Generator
) -> torch.Tensor:
    """Mask with ``count`` missing size x size squares at uniform positions (may overlap)."""
    if size > height or size > width:
        raise ValueError(f"box size {size} does not fit in a {height}x{width} image")
    dev = generator.device
    tops = torch.randint(0, height - size + 1, (count,), generator=generator, device=dev)
    lefts = torch.randint(0, width - size + 1, (count,), generator=generator, device=dev)
    mask = torch.ones(height, width, dtype=torch.bool, device=dev)
    for t, ll in zip(tops.tolist(), lefts.tolist(), strict=True):
        mask[t : t + size, ll : ll + size] = False
    return mask
