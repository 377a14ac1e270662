"""Downsampling operators for super-resolution (integer factor f in {2, 4, 8}).

Images must have H and W divisible by f (a ShapeError names the needed multiple; nothing
is cropped silently). The output is (B, C, H/f, W/f).

Box: ``(A x)[i, j] = mean of the f x f block (i, j)``. Then ``A A^T = I / f^2`` and

    A^+_eta y = A^T y / (1/f^2 + eta),   A^+ = f^2 A^T = nearest-neighbour upsampling.

Bicubic: MATLAB-style anti-aliased ``imresize(x, 1/f, "bicubic")``. It is separable,
``A x = K_H x K_W^T`` per channel, i.e. ``A = K_H ⊗ K_W``; each 1-D matrix has rows

    K[i, j] ∝ cubic((j - u_i) / f) / f,   u_i = (i + 1/2) f - 1/2,

with the Keys kernel (a = -1/2), rows normalised to sum 1, and out-of-range taps folded
back by half-sample symmetric reflection. With the 1-D SVDs ``K = U S V^T``,

    A^+_eta y = (V_H ⊗ V_W) diag(s / (s^2 + eta)) (U_H ⊗ U_W)^T y,  s = s_H ⊗ s_W,

and ``pinv(K_H ⊗ K_W) = pinv(K_H) ⊗ pinv(K_W)`` at eta = 0 (singular values
``<= rcond * max`` dropped). A and A^T use the banded form (4f + 2 taps per row);
A^+ uses dense (n/f x n) factors, cached per image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import LinearOperator, ShapeError, check_input, check_shape, eps_rcond

FACTORS: tuple[int, ...] = (2, 4, 8)


def _check_factor(factor: int) -> int:
    if isinstance(factor, bool) or int(factor) != factor or int(factor) not in FACTORS:
        raise ValueError(f"super-resolution factor must be one of {FACTORS}, got {factor!r}")
    return int(factor)


def _sr_shape(x_shape: tuple[int, ...], f: int) -> tuple[int, int, int, int]:
    b, c, h, w = check_shape(x_shape)
    if h % f or w % f or h < f or w < f:
        raise ShapeError(
            f"image {h}x{w} is not divisible by the super-resolution factor {f}; "
            f"height and width must be multiples of {f} (crop or pad the image)"
        )
    return (b, c, h // f, w // f)


class BoxDownsample(LinearOperator):
    """Block averaging by ``factor``; exact pseudo-inverse ``f^2 A^T``."""

    closed_form_dagger = True
    channelwise = True
    task = "sr"
    halo = 0  # tiles must start at multiples of the factor

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = _check_factor(factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"

    def y_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return _sr_shape(x_shape, self.factor)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x)
        self.y_shape(tuple(x.shape))
        return F.avg_pool2d(x, self.factor)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        check_input(y)
        f = self.factor
        up = y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)
        return up / (f * f)

    def A_dagger(self, y: torch.Tensor, eta: float = 0.0) -> torch.Tensor:
        """``A^T y / (1/f^2 + eta)`` (``= f^2 A^T y`` at eta = 0)."""
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        f2 = float(self.factor**2)
        return self.A_adjoint(y) / (1.0 / f2 + eta)


def cubic(s: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys cubic convolution kernel with parameter ``a`` (support [-2, 2])."""
    t = s.abs()
    t2, t3 = t * t, t * t * t
    inner = (a + 2) * t3 - (a + 3) * t2 + 1
    outer = a * t3 - 5 * a * t2 + 8 * a * t - 4 * a
    return torch.where(t <= 1, inner, torch.where(t < 2, outer, torch.zeros_like(t)))


def bicubic_taps(n: int, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Banded 1-D bicubic anti-aliased downsampling ``n -> n / factor``.

    Returns ``(index, weight)`` of shape (n/f, 4f + 2): ``y[i] = sum_t weight[i, t] *
    x[index[i, t]]`` (float64, rows sum to 1; indices may repeat after reflection).
    """
    f = factor
    m = n // f
    taps = 4 * f + 2
    i = torch.arange(m, dtype=torch.float64)
    u = (i + 0.5) * f - 0.5
    left = torch.floor(u - 2 * f)
    j = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    w = cubic((j - u[:, None]) / f) / f
    w = w / w.sum(1, keepdim=True)
    # half-sample symmetric reflection (MATLAB's "symmetric"): -1 -> 0, n -> n - 1
    jj = torch.remainder(j.long(), 2 * n)
    jj = torch.where(jj >= n, 2 * n - 1 - jj, jj)
    return jj, w


def bicubic_matrix(n: int, factor: int) -> torch.Tensor:
    """Dense (n/f x n) float64 matrix of :func:`bicubic_taps`."""
    idx, w = bicubic_taps(n, factor)
    m = idx.shape[0]
    k = torch.zeros(m, n, dtype=torch.float64)
    k.scatter_add_(1, idx, w)
    return k


class BicubicDownsample(LinearOperator):
    """Anti-aliased bicubic downsampling by ``factor`` (MATLAB ``imresize`` convention).

    Exact pseudo-inverse from the SVDs of the two 1-D matrices (module docstring).
    """

    closed_form_dagger = True
    channelwise = True
    task = "sr"

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = _check_factor(factor)
        self.halo = 2 * self.factor + 1  # taps reach (2f + 1) input px from a block
        self.rcond: float | None = None  # None: sqrt(eps) of the input dtype
        self._taps: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._svd: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def extra_repr(self) -> str:
        return f"factor={self.factor}"

    def y_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return _sr_shape(x_shape, self.factor)

    def _get_taps(self, n: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (n, x.device, x.dtype)
        if key not in self._taps:
            if len(self._taps) > 8:
                self._taps.clear()
            idx, w = bicubic_taps(n, self.factor)
            self._taps[key] = (idx.to(x.device), w.to(device=x.device, dtype=x.dtype))
        return self._taps[key]

    def _get_svd(self, n: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (n, x.device, x.dtype)
        if key not in self._svd:
            if len(self._svd) > 8:
                self._svd.clear()
            u, s, vh = torch.linalg.svd(bicubic_matrix(n, self.factor), full_matrices=False)
            self._svd[key] = tuple(t.to(device=x.device, dtype=x.dtype) for t in (u, s, vh))
        return self._svd[key]

    def _down_last(self, x: torch.Tensor) -> torch.Tensor:
        idx, w = self._get_taps(x.shape[-1], x)
        return (x[..., idx] * w).sum(-1)

    def _up_last(self, y: torch.Tensor, n: int) -> torch.Tensor:
        idx, w = self._get_taps(n, y)
        src = (y[..., :, None] * w).flatten(-2)
        out = y.new_zeros(*y.shape[:-1], n)
        return out.index_add(-1, idx.flatten(), src)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x)
        self.y_shape(tuple(x.shape))
        t = self._down_last(x)  # (B, C, H, W/f)
        return self._down_last(t.transpose(-1, -2)).transpose(-1, -2)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        check_input(y)
        f = self.factor
        h, w = y.shape[-2] * f, y.shape[-1] * f
        t = self._up_last(y, w)  # (B, C, H/f, W)
        return self._up_last(t.transpose(-1, -2), h).transpose(-1, -2)

    def A_dagger(self, y: torch.Tensor, eta: float = 0.0) -> torch.Tensor:
        """``(V_H ⊗ V_W) diag(s / (s^2 + eta)) (U_H ⊗ U_W)^T y`` (see module docstring)."""
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        check_input(y)
        f = self.factor
        uh, sh, vhh = self._get_svd(y.shape[-2] * f, y)
        uw, sw, vhw = self._get_svd(y.shape[-1] * f, y)
        z = uh.transpose(0, 1) @ y @ uw  # (m_H x m_W) spectral coefficients
        s = sh[:, None] * sw[None, :]
        if eta > 0:
            g = s / (s * s + eta)
        else:
            rcond = eps_rcond(y.dtype) if self.rcond is None else self.rcond
            keep = s > rcond * s.max()
            g = torch.where(keep, 1.0 / torch.where(keep, s, 1.0), 0.0)
        return vhh.transpose(0, 1) @ (z * g) @ vhw
