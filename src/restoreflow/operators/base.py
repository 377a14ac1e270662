"""Base class of the linear degradation operators.

Every operator is a linear map ``A: R^{B x C x H x W} -> R^{B x C' x H' x W'}`` applied to
each batch item independently. Subclasses implement ``A`` and ``A_adjoint`` (the exact
adjoint, ``<A x, y> = <x, A^T y>``) and, where one exists, a closed form of the
regularised pseudo-inverse

    A^+_eta y = A^T (A A^T + eta I)^{-1} y,

which is the Moore-Penrose pseudo-inverse ``A^+`` at ``eta = 0``. The base class supplies
a conjugate-gradient (CGLS) fallback for it.

Parameters (kernels, masks) are registered buffers, so ``op.to(device, dtype)`` moves
them; operators also cast their buffers to the dtype and device of the input at call
time, so a float32 operator accepts float64 images (and vice versa).
"""

from __future__ import annotations

import torch


class ShapeError(ValueError):
    """An image does not fit an operator (too small for the kernel, not divisible, ...)."""


def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-item inner product ``<a_i, b_i>`` of two batches, shape (B, 1, 1, 1)."""
    return (a * b).flatten(1).sum(1).view(-1, *([1] * (a.dim() - 1)))


class LinearOperator(torch.nn.Module):
    """A linear forward model ``y = A x`` with adjoint and (regularised) pseudo-inverse.

    ``A``, ``A_adjoint``, ``A_dagger`` and ``dagger_adjoint`` return new tensors, never
    their input or a view of it (samplers update their results in place).

    Attributes:
        halo: radius in input pixels of the support of ``A`` (a pixel of ``A x`` depends
            only on the input pixels within ``halo`` of it): 0 for pixel-wise operators,
            the kernel radius for blurs, ``None`` when ``A`` is global. A large image can
            be degraded tile by tile by reading each tile with this halo.
        channelwise: True when ``A`` acts on every channel alike and independently
            (``A(x)[:, c] = A(x[:, c:c+1])``): samplers then run the guidance one
            channel at a time (a third of the scratch memory on RGB images).
        closed_form_dagger: True when ``A_dagger`` is exact (no iterative solve).
        task: the restoration task this operator poses ("deblur", "sr", "inpaint",
            "denoise" or "other"): samplers' default options are chosen per task.
        cg_tol, cg_max_iter: relative tolerance and iteration cap of the CGLS fallback
            used by ``A_dagger`` when there is no closed form.
    """

    halo: int | None = 0
    channelwise: bool = False
    task: str = "other"
    closed_form_dagger: bool = False
    cg_tol: float = 1e-6
    cg_max_iter: int = 300

    def A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def y_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of ``A x`` for an input of shape ``(B, C, H, W)``; raises ShapeError."""
        return tuple(check_shape(x_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    def window(self, top: int, left: int, height: int, width: int) -> LinearOperator:
        """The operator for the tile ``[top, top+height) x [left, left+width)`` of the
        image. Shift-invariant operators return themselves (pass the tile with its
        ``halo``); operators with per-pixel parameters (masks) return a cropped copy."""
        return self

    def AAt(self, y: torch.Tensor) -> torch.Tensor:
        """``A A^T y``."""
        return self.A(self.A_adjoint(y))

    def dagger_adjoint(
        self, y: torch.Tensor, eta: float, a: float, b: float, overwrite: bool = False
    ) -> torch.Tensor:
        """``a A^+_eta y + b A^T y`` (DDPG's preconditioned guidance). Operators where both
        are one filter (circular blur) override it with one pass; with ``overwrite`` they
        may write the result into y's buffer (it is a new tensor otherwise)."""
        out = None
        if a != 0.0:
            out = self.A_dagger(y, eta=eta).mul_(a)
        if b != 0.0:
            ls = self.A_adjoint(y).mul_(b)
            out = ls if out is None else out.add_(ls)
        return out if out is not None else torch.zeros_like(self.A_adjoint(y))

    def A_dagger(self, y: torch.Tensor, eta: float = 0.0) -> torch.Tensor:
        """``A^T (A A^T + eta I)^{-1} y`` by CGLS (generic fallback, no closed form).

        Uses the identity ``A^T (A A^T + eta I)^{-1} = (A^T A + eta I)^{-1} A^T`` and runs
        CGLS on the damped least-squares problem ``min_x ||A x - y||^2 + eta ||x||^2``
        from ``x = 0``. The iterates stay in the range of ``A^T``, so at ``eta = 0`` the
        limit is the minimum-norm least-squares solution ``A^+ y``; the residual
        ``||A x_k - y||`` decreases monotonically. Each batch item is solved
        independently and stops when ``||A x - y|| <= cg_tol ||y||`` or
        ``||A^T (y - A x) - eta x|| <= cg_tol ||A^T y||``, or after ``cg_max_iter``
        iterations. Convergence is slow when A is ill-conditioned and ``eta = 0``
        (e.g. wide Gaussian blurs): prefer ``eta > 0`` there.
        """
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        eta = float(eta)
        r = y.clone()
        s = self.A_adjoint(r)
        x = torch.zeros_like(s)
        p = s.clone()
        gamma = batch_dot(s, s)
        tiny = torch.finfo(gamma.dtype).tiny
        y2 = batch_dot(y, y)
        tol2 = self.cg_tol**2
        g_stop = tol2 * gamma
        r_stop = tol2 * y2
        rr = y2
        active = (gamma > g_stop) & (y2 > 0)
        iters = 0
        one = gamma.new_ones(())
        for _ in range(self.cg_max_iter):
            if not bool(active.any()):
                break
            iters += 1
            q = self.A(p)
            delta = batch_dot(q, q) + eta * batch_dot(p, p)
            alpha = torch.where(active, gamma / torch.where(active, delta, one), 0 * one)
            x = x + alpha * p
            r = r - alpha * q
            s = self.A_adjoint(r) - eta * x
            gamma_new = batch_dot(s, s)
            beta = torch.where(active, gamma_new / torch.where(active, gamma, one), 0 * one)
            p = s + beta * p
            gamma = torch.where(active, gamma_new, gamma)
            rr = torch.where(active, batch_dot(r, r), rr)
            active = active & (gamma_new > g_stop) & (rr > r_stop)
        # Diagnostics of the last solve: iterations and worst relative residual.
        self.last_cg_iterations = iters
        self.last_cg_residual = float((rr / y2.clamp_min(tiny)).max().sqrt())
        return x


def x_shape_of(operator, y: torch.Tensor) -> tuple[int, ...]:
    """Shape of ``A^T y`` (for a channel-wise operator computed on one channel)."""
    if getattr(operator, "channelwise", False):
        b, c, h, w = operator.A_adjoint(y[:1, :1]).shape
        return (y.shape[0], y.shape[1], h, w)
    return tuple(operator.A_adjoint(y).shape)


def channel_groups(operator, channels: int) -> list[slice]:
    """Channel slices the guidance runs on one after the other: one per channel for a
    channel-wise operator (its scratch memory is then a third on RGB), else all."""
    if getattr(operator, "channelwise", False):
        return [slice(c, c + 1) for c in range(channels)]
    return [slice(None)]


def check_shape(x_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    if len(x_shape) != 4:
        raise ShapeError(f"expected an image batch of shape (B, C, H, W), got {tuple(x_shape)}")
    return tuple(int(s) for s in x_shape)  # type: ignore[return-value]


def check_input(x: torch.Tensor) -> None:
    """Raise ShapeError unless ``x`` is a floating (B, C, H, W) tensor."""
    check_shape(tuple(x.shape))
    if not x.is_floating_point():
        raise TypeError(f"operators need a floating-point image, got {x.dtype}")


def like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Cast a buffer to the dtype and device of ``x`` (no copy when they already match)."""
    return t.to(device=x.device, dtype=x.dtype)


def eps_rcond(dtype: torch.dtype) -> float:
    """Default relative cut-off on singular values: ``sqrt(machine eps)`` of ``dtype``."""
    return float(torch.finfo(dtype).eps) ** 0.5
