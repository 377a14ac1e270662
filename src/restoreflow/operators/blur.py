"""Convolution (blur) operators.

A blur with a kernel ``k`` of shape (kh, kw) and centre ``c = (kh // 2, kw // 2)`` is

    (A x)[i, j] = sum_{a, b} k[a, b] x[i - a + c_h, j - b + c_w],

applied to each channel, with ``x`` extended outside the image either periodically
(``boundary="circular"``) or by mirror reflection without repeating the edge pixel
(``boundary="reflect"``: x[-1] = x[1], torch's "reflect" pad, scipy.ndimage's "mirror").
This is ``scipy.ndimage.convolve(x, k, mode="wrap" | "mirror")`` (odd and even kernels).
The output has the input's shape.

Circular: A, A^T and A^+ are diagonal in the 2-D DFT with eigenvalues K = DFT(k):
``A^+_eta y = IDFT(conj(K) Y / (|K|^2 + eta))``; at eta = 0 frequencies with
``|K| <= rcond * max|K|`` are treated as exact zeros (minimum-norm solution).
Reflect: A = crop(conv(pad(x))) (direct convolution for kernels up to 7x7, FFT of the
padded image above); A^T = pad^T(conv^T(crop^T y)) where pad^T folds the values of the
reflected border back onto the pixels they were copied from; A^+ by CGLS.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from . import fft
from .base import LinearOperator, ShapeError, check_input, check_shape, eps_rcond, like
from .kernels import gaussian_kernel, motion_kernel, uniform_kernel, validate_kernel

Boundary = Literal["circular", "reflect"]
FFT_MIN_TAPS = 49  # reflect boundary: kernels with more taps are applied by FFT
BOUNDARIES: tuple[str, ...] = ("circular", "reflect")


class Blur(LinearOperator):
    """Shift-invariant blur with an arbitrary kernel (normalised to sum 1).

    Args:
        kernel: 2-D tensor, finite, non-negative, positive sum.
        boundary: "circular" (FFT; exact A^+) or "reflect" (real photos; A^+ by CGLS).
        dtype: dtype of the kernel buffer (default: torch's default dtype).
    """

    channelwise = True
    task = "deblur"

    def __init__(
        self,
        kernel: torch.Tensor,
        boundary: Boundary = "circular",
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
        k = validate_kernel(kernel)
        self.boundary = boundary
        self.register_buffer("kernel", k.to(dtype or torch.get_default_dtype()))
        kh, kw = k.shape
        self.center = (kh // 2, kw // 2)
        # pad before/after along H and W so that out[i] uses x[i - a + c]
        self.pads = (kh - 1 - kh // 2, kh // 2, kw - 1 - kw // 2, kw // 2)
        self.halo = max(self.pads)
        self.closed_form_dagger = boundary == "circular"
        self.rcond: float | None = None  # None: sqrt(eps) of the input dtype

    def extra_repr(self) -> str:
        return f"kernel={tuple(self.kernel.shape)}, boundary={self.boundary!r}"

    def y_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        b, c, h, w = check_shape(x_shape)
        kh, kw = self.kernel.shape
        if h < kh or w < kw:
            raise ShapeError(
                f"image {h}x{w} is smaller than the {kh}x{kw} blur kernel; "
                f"images must be at least {kh}x{kw}"
            )
        return (b, c, h, w)

    # --- circular (FFT) ---
    def _otf(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """rfft2 of the kernel embedded in an H x W image with its centre at (0, 0)."""
        h, w = size or x.shape[-2:]
        k = like(self.kernel, x)
        kh, kw = k.shape
        kp = x.new_zeros(h, w)
        # the kernel's centre at (0, 0), wrapping around (= torch.roll, without a copy)
        rows = (torch.arange(kh, device=x.device) - self.center[0]) % h
        cols = (torch.arange(kw, device=x.device) - self.center[1]) % w
        kp[rows[:, None], cols[None, :]] = k
        return torch.fft.rfft2(kp)

    # --- reflect: direct convolution for small kernels, FFT on the padded image else ---
    def _weight(self, x: torch.Tensor) -> torch.Tensor:
        # conv2d is a correlation: flip the kernel to convolve
        return like(self.kernel, x).flip(0, 1)[None, None]

    def _use_fft(self) -> bool:
        return self.kernel.numel() > FFT_MIN_TAPS

    def _reflect_A(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        pt, pb, pl, pr = self.pads
        xp = F.pad(x.reshape(b * c, 1, h, w), (pl, pr, pt, pb), mode="reflect")
        if not self._use_fft():
            return F.conv2d(xp, self._weight(x)).view(b, c, h, w)
        # linear convolution = circular convolution of the padded image, cropped: the
        # kept pixels only read padded pixels, never wrapped ones
        hp, wp = xp.shape[-2:]
        full = torch.fft.irfft2(torch.fft.rfft2(xp) * self._otf(x, (hp, wp)), s=(hp, wp))
        return full[..., pt : pt + h, pl : pl + w].reshape(b, c, h, w)

    def _reflect_At(self, y: torch.Tensor) -> torch.Tensor:
        b, c, h, w = y.shape
        pt, pb, pl, pr = self.pads
        y2 = y.reshape(b * c, 1, h, w)
        if not self._use_fft():
            # conv_transpose2d(y, w) as a (faster) correlation of the zero-padded y
            kh, kw = self.kernel.shape
            yp = F.pad(y2, (kw - 1, kw - 1, kh - 1, kh - 1))
            g = F.conv2d(yp, self._weight(y).flip(-2, -1))
        else:  # adjoint of crop(circconv(.)): zero-embed, then conjugate filter
            yp = F.pad(y2, (pl, pr, pt, pb))
            hp, wp = yp.shape[-2:]
            otf = self._otf(y, (hp, wp)).conj()
            g = torch.fft.irfft2(torch.fft.rfft2(yp) * otf, s=(hp, wp))
        g = _fold_reflect(g, pt, pb, dim=2)
        g = _fold_reflect(g, pl, pr, dim=3)
        return g.reshape(b, c, h, w)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x)
        self.y_shape(tuple(x.shape))
        if self.boundary == "circular":
            return self._circular(x, lambda otf: otf)
        return self._reflect_A(x)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        check_input(y)
        self.y_shape(tuple(y.shape))
        if self.boundary == "circular":
            return self._circular(y, torch.conj)
        return self._reflect_At(y)

    def A_dagger(self, y: torch.Tensor, eta: float = 0.0) -> torch.Tensor:
        """Circular: ``IDFT(conj(K) Y / (|K|^2 + eta))``, zero where |K| <= rcond max|K|
        at eta = 0. Reflect: CGLS fallback (see LinearOperator.A_dagger)."""
        if self.boundary != "circular":
            return super().A_dagger(y, eta)
        return self.dagger_adjoint(y, eta, 1.0, 0.0)  # checks eta

    def dagger_adjoint(
        self, y: torch.Tensor, eta: float, a: float, b: float, overwrite: bool = False
    ) -> torch.Tensor:
        """``a A^+_eta y + b A^T y``; circular: one filter ``conj(K) (a / (|K|^2 + eta) + b)``
        (one FFT pair instead of two). ``overwrite``: y may be used as the output buffer."""
        if self.boundary != "circular":
            return super().dagger_adjoint(y, eta, a, b, overwrite)
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        check_input(y)
        self.y_shape(tuple(y.shape))
        rcond = eps_rcond(y.dtype) if self.rcond is None else self.rcond
        # max |K| = K(0) = sum(k) for a non-negative kernel
        cut = (rcond * float(self.kernel.sum())) ** 2

        def filt(o: torch.Tensor) -> torch.Tensor:
            mag2 = o.real**2 + o.imag**2
            if eta > 0:
                inv = mag2.add_(eta).reciprocal_()
            else:  # exact pseudo-inverse: frequencies below the cut are zeros of K
                keep = mag2 > cut
                inv = torch.where(keep, 1.0 / torch.where(keep, mag2, 1.0), 0.0)
            return o.conj() * inv.mul_(a).add_(b)

        return self._circular(y, filt, out=y if overwrite else None)

    def _otf_rows(self, x: torch.Tensor, size: tuple[int, int]):
        """A function (i0, i1) -> rows [i0, i1) of the kernel's H x (W//2+1) spectrum with
        its centre at (0, 0) (= rfft2 of the wrapped kernel image), computed as the 2-D
        DFT of the kh x kw taps: the full spectrum is never held at once."""
        h, w = size
        kh, kw = self.kernel.shape
        ctype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
        k = self.kernel.to(device=x.device, dtype=torch.float64)
        ra = (torch.arange(kh, device=x.device) - self.center[0]) % h
        cb = (torch.arange(kw, device=x.device) - self.center[1]) % w
        v = torch.arange(w // 2 + 1, device=x.device)
        # exact integer phases (v * cb mod w) before the float64 exponent
        ew = torch.exp(-2j * torch.pi * ((v[:, None] * cb[None, :]) % w).double() / w)
        m = k.to(ew.dtype) @ ew.T  # (kh, W//2+1): DFT along W of each kernel row

        def rows(i0: int, i1: int) -> torch.Tensor:
            u = torch.arange(i0, i1, device=x.device)
            eh = torch.exp(-2j * torch.pi * ((u[:, None] * ra[None, :]) % h).double() / h)
            return (eh @ m).to(ctype)

        return rows

    def _circular(self, x: torch.Tensor, filt, out: torch.Tensor | None = None) -> torch.Tensor:
        """``IDFT(filt(K) DFT(x))`` with the memory-lean FFTs of :mod:`.fft`: one spectrum
        and the output beyond the input (``out``: write the result there, e.g. into x)."""
        size = tuple(x.shape[-2:])
        otf = self._otf_rows(x, size)
        spec = fft.filter_(fft.rfft2(x), lambda i0, i1: filt(otf(i0, i1)))
        return fft.irfft2_(spec, size, out=out)


def _fold_reflect(g: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
    """Adjoint of ``F.pad(..., mode="reflect")`` along one dim: padded index ``p - 1 - r``
    (r < before) is a copy of x[r + 1]; padded index ``before + n + s`` is x[n - 2 - s]."""
    n = g.shape[dim] - before - after
    core = g.narrow(dim, before, n).clone()
    if before:
        top = g.narrow(dim, 0, before).flip(dim)  # top[r] belongs to x[r + 1]
        core.narrow(dim, 1, before).add_(top)
    if after:
        bot = g.narrow(dim, before + n, after).flip(dim)  # bot[t] belongs to x[n - 1 - after + t]
        core.narrow(dim, n - 1 - after, after).add_(bot)
    return core


class GaussianBlur(Blur):
    """Isotropic Gaussian blur of standard deviation ``sigma`` px (see gaussian_kernel)."""

    def __init__(
        self,
        sigma: float,
        size: int | None = None,
        boundary: Boundary = "circular",
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(gaussian_kernel(sigma, size), boundary=boundary, dtype=dtype)
        self.sigma = float(sigma)


class UniformBlur(Blur):
    """Box blur: mean over a ``size`` x ``size`` window."""

    def __init__(
        self, size: int, boundary: Boundary = "circular", dtype: torch.dtype | None = None
    ) -> None:
        super().__init__(uniform_kernel(size), boundary=boundary, dtype=dtype)


class MotionBlur(Blur):
    """Blur with a random camera-shake kernel of path length ``length`` px drawn from
    ``generator`` (see motion_kernel)."""

    def __init__(
        self,
        length: int,
        generator: torch.Generator,
        intensity: float = 0.5,
        boundary: Boundary = "circular",
        dtype: torch.dtype | None = None,
    ) -> None:
        k = motion_kernel(length, generator, intensity).cpu()
        super().__init__(k, boundary=boundary, dtype=dtype)
