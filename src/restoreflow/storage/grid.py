"""An image's tile grid: the chunks (C, T, T) its pixels are stored in, and the rule that
lets workers write one image at once without a lock: a region write covers whole chunks
only (its origin on the grid, its sides multiples of T or reaching the image's edge).
"""

from __future__ import annotations

import numpy as np


def tile_grid(height: int, width: int, tile: int) -> list[tuple[int, int, int, int, int, int]]:
    """Tiles ``(ty, tx, y0, y1, x0, x1)`` covering an ``height x width`` image, row-major.

    Edge tiles are cut at the image border (``y1 <= height``), matching zarr's chunk grid.
    """
    return [
        (ty, tx, y0, min(y0 + tile, height), x0, min(x0 + tile, width))
        for ty, y0 in enumerate(range(0, height, tile))
        for tx, x0 in enumerate(range(0, width, tile))
    ]


def write_aligned(arr, data: np.ndarray, y0: int, x0: int, what: str, tile: int) -> None:
    """Write ``data`` (C, h, w) into the zarr array ``arr`` at (y0, x0); ValueError (naming
    ``what``) unless the region is chunk-aligned on the grid of tile edge ``tile``."""
    data = np.asarray(data)
    c, h, w = arr.shape
    T = tile
    if data.ndim != 3 or data.shape[0] != c:
        raise ValueError(f"{what}: region must be ({c}, h, w), got {data.shape}")
    rh, rw = data.shape[1:]
    y0, x0 = int(y0), int(x0)
    if y0 < 0 or x0 < 0 or y0 % T or x0 % T:
        raise ValueError(f"{what}: region origin ({y0}, {x0}) is not a multiple of T={T}")
    y1, x1 = y0 + rh, x0 + rw
    if rh < 1 or rw < 1 or y1 > h or x1 > w:
        raise ValueError(f"{what}: region [{y0}:{y1}, {x0}:{x1}] outside image {h}x{w}")
    if (rh % T and y1 != h) or (rw % T and x1 != w):
        raise ValueError(
            f"{what}: region {rh}x{rw} at ({y0}, {x0}) is not chunk-aligned "
            f"(sides must be multiples of T={T} or reach the edge of {h}x{w})"
        )
    if not np.can_cast(data.dtype, arr.dtype, casting="same_kind"):
        raise ValueError(f"{what}: cannot store {data.dtype} data in a {arr.dtype} array")
    arr[:, y0:y1, x0:x1] = data.astype(arr.dtype, copy=False)
