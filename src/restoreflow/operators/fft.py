"""Memory-lean 2-D real FFTs for image-sized arrays.

``torch.fft.rfft2`` / ``irfft2`` transform all rows and columns at once; the inverse also
copies its (complex, image-sized) input first, so applying a filter to an 8192 x 8192 image
costs about three image-sized buffers beyond the input. These do the same transforms as
two passes of 1-D FFTs over bands of rows / columns (the 2-D DFT is separable):

    rfft2(x):  rfft along W, band of rows by band of rows, into the output;
               then fft along H, band of columns by band of columns, in place;
    irfft2_(X): ifft along H in place (band by band; X is consumed), then irfft along W
               band by band into the output.

Only the output (and one band) is allocated. Results equal torch's to rounding.
"""

from __future__ import annotations

import torch

BAND_BYTES = 4 * 2**20  # size of one band of rows or columns


def _band(n_other: int, itemsize: int) -> int:
    return max(1, BAND_BYTES // max(1, n_other * itemsize))


def rfft2(x: torch.Tensor) -> torch.Tensor:
    """``torch.fft.rfft2(x)`` over the last two dims with one band of scratch memory."""
    h, w = x.shape[-2:]
    wf = w // 2 + 1
    ctype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
    out = torch.empty((*x.shape[:-2], h, wf), dtype=ctype, device=x.device)
    lead = max(1, x[..., 0, 0].numel())
    rows = _band(lead * w, out.element_size())
    for i in range(0, h, rows):
        out[..., i : i + rows, :] = torch.fft.rfft(x[..., i : i + rows, :], dim=-1)
    cols = _band(lead * h, out.element_size())
    for j in range(0, wf, cols):
        out[..., :, j : j + cols] = torch.fft.fft(out[..., :, j : j + cols], dim=-2)
    return out


def irfft2_(
    spec: torch.Tensor, size: tuple[int, int], out: torch.Tensor | None = None
) -> torch.Tensor:
    """``torch.fft.irfft2(spec, s=size)``; ``spec`` is overwritten (used as scratch).
    ``out``: an existing real tensor of the result's shape to write into."""
    h, w = size
    if spec.shape[-2] != h or spec.shape[-1] != w // 2 + 1:
        raise ValueError(f"spectrum {tuple(spec.shape[-2:])} does not match image {h}x{w}")
    rtype = torch.float64 if spec.dtype == torch.complex128 else torch.float32
    lead = max(1, spec[..., 0, 0].numel())
    cols = _band(lead * h, spec.element_size())
    for j in range(0, spec.shape[-1], cols):
        spec[..., :, j : j + cols] = torch.fft.ifft(spec[..., :, j : j + cols], dim=-2)
    if out is None:
        out = torch.empty((*spec.shape[:-2], h, w), dtype=rtype, device=spec.device)
    elif out.shape != (*spec.shape[:-2], h, w) or out.dtype != rtype:
        raise ValueError(f"out {tuple(out.shape)} {out.dtype} does not fit the result")
    rows = _band(lead * spec.shape[-1], spec.element_size())
    for i in range(0, h, rows):
        out[..., i : i + rows, :] = torch.fft.irfft(spec[..., i : i + rows, :], n=w, dim=-1)
    return out


def filter_(spec: torch.Tensor, fn) -> torch.Tensor:
    """``spec *= fn(rows)`` band by band: ``fn(i0, i1)`` returns the filter of rows
    [i0, i1) (broadcastable to the band), so the whole filter never exists at once."""
    lead = max(1, spec[..., 0, 0].numel())
    rows = _band(lead * spec.shape[-1], spec.element_size())
    for i in range(0, spec.shape[-2], rows):
        i1 = min(i + rows, spec.shape[-2])
        spec[..., i:i1, :].mul_(fn(i, i1))
    return spec
