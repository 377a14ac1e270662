"""Seam-free tiled evaluation of a diffusion prior on images of any size.

The UNet runs on overlapping T x T tiles in batches; the per-tile outputs are blended
into one full-image output with smooth separable window weights

    out(p) = sum_k w_k(p) f(tile_k)(p) / sum_k w_k(p),

where w_k ramps as sin^2 over the overlap on tile sides that lie inside the image and is
1 on sides at the image border. The eps / x0 conversion (and hence every sampler's
guidance step) then acts on the whole image. Memory is bounded by the tile batch, apart
from the image-sized tensors themselves.

``TiledPrior`` has the same interface as :class:`~restoreflow.models.prior.DiffusionPrior`,
so samplers never know whether they are tiled.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from restoreflow.models.prior import DiffusionPrior


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering [0, length) with >= ``overlap``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    # spread the tiles evenly so every overlap is at least ``overlap``
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _ramp(tile: int, overlap: int, left: bool, right: bool, device, dtype) -> torch.Tensor:
    w = torch.ones(tile, device=device, dtype=dtype)
    if overlap > 0:
        r = torch.sin(0.5 * math.pi * (torch.arange(overlap, device=device, dtype=dtype) + 0.5)
                      / overlap) ** 2
        if left:
            w[:overlap] = r
        if right:
            w[-overlap:] = r.flip(0)
    return w


class TiledPrior:
    """A DiffusionPrior evaluated tile by tile (tile, overlap and batch are settings)."""

    def __init__(self, prior: DiffusionPrior, tile: int = 256, overlap: int = 64, batch: int = 4):
        m = prior.size_multiple
        if tile % m:
            raise ValueError(f"tile size {tile} must be a multiple of {m} for this UNet")
        if not 0 <= overlap < tile:
            raise ValueError(f"overlap {overlap} must be in [0, tile={tile})")
        if batch < 1:
            raise ValueError("tile batch must be >= 1")
        self.prior, self.tile, self.overlap, self.batch = prior, tile, overlap, batch

    def __getattr__(self, name):  # schedule, hash, device... come from the wrapped prior
        return getattr(self.prior, name)

    def _padded(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        m = self.prior.size_multiple
        h, w = x.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return x, h, w

    def model_output(self, x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        x, h0, w0 = self._padded(x_t)
        b, c, h, w = x.shape
        th, tw = min(self.tile, h), min(self.tile, w)
        if th == h and tw == w:
            return self.prior.model_output(x, t)[..., :h0, :w0]
        ys, xs = tile_starts(h, th, self.overlap), tile_starts(w, tw, self.overlap)
        tt = torch.as_tensor(t).reshape(-1)
        jobs = [(i, y, xx) for i in range(b) for y in ys for xx in xs]
        out = None
        # The weights are products wy(row) wx(col) over the grid ys x xs, so their sum is
        # the product of two 1-D sums: no image-sized weight buffer.
        wsum_y = torch.zeros(h, device=x.device, dtype=x.dtype)
        wsum_x = torch.zeros(w, device=x.device, dtype=x.dtype)
        for y in ys:
            wsum_y[y : y + th] += _ramp(th, self.overlap, y > 0, y + th < h, x.device, x.dtype)
        for xx in xs:
            wsum_x[xx : xx + tw] += _ramp(tw, self.overlap, xx > 0, xx + tw < w, x.device, x.dtype)
        for k in range(0, len(jobs), self.batch):
            chunk = jobs[k : k + self.batch]
            tiles = torch.stack([x[i, :, y : y + th, xx : xx + tw] for i, y, xx in chunk])
            steps = tt[[i for i, _, _ in chunk]] if tt.numel() > 1 else tt.expand(len(chunk))
            res = self.prior.model_output(tiles, steps.to(x.device))
            if out is None:
                out = torch.zeros(b, res.shape[1], h, w, device=x.device, dtype=res.dtype)
            for (i, y, xx), r in zip(chunk, res, strict=True):
                wy = _ramp(th, self.overlap, y > 0, y + th < h, x.device, x.dtype)
                wx = _ramp(tw, self.overlap, xx > 0, xx + tw < w, x.device, x.dtype)
                out[i, :, y : y + th, xx : xx + tw] += (wy[:, None] * wx[None, :]) * r
            del tiles, res
        for r0 in range(0, h, th):  # normalise band by band (one band-sized temporary)
            r1 = min(r0 + th, h)
            out[..., r0:r1, :].div_(wsum_y[r0:r1, None] * wsum_x[None, :])
        return out[..., :h0, :w0]

    def eps_x0(self, x_t: torch.Tensor, t: int | torch.Tensor):
        return self.prior.eps_x0(x_t, t, out=self.model_output(x_t, t))

    def eps(self, x_t, t):
        return self.eps_x0(x_t, t)[0]

    def x0(self, x_t, t):
        return self.prior.x0(x_t, t, out=self.model_output(x_t, t))
