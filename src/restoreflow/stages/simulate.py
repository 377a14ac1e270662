"""Simulate a known degradation y = noise(A x) on stored images (benchmarks, calibration).

The operator is built for the whole image from a generator seeded by (spec, seed, image
id) -- exactly what the restore stage rebuilds -- so random kernels and masks are the
same on every run. Noise is drawn per output tile from a generator seeded by (spec, seed,
image id, tile), so the result does not depend on how the work is split.

Memory: operators whose output has the input's size (blurs, inpainting, denoising,
colorisation) run tile by tile: each tile is read with a halo of the kernel radius
(wrapped for circular blurs, mirrored for reflect blurs) and only that tile is in memory.
Super-resolution changes the grid, so it runs on the whole image in one piece.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from restoreflow.degradation import DegradationSpec, make_generator, seed_for
from restoreflow.storage.layout import INPUT
from restoreflow.storage.store import TileStore


@dataclass(frozen=True)
class SimulateResult:
    image_id: str
    status: str  # "written" | "present"
    mode: str  # "tiled" | "whole"


def _runs(idx: np.ndarray) -> list[tuple[int, int, int]]:
    """Split an index array into contiguous ascending runs (pos, start, stop)."""
    runs, start = [], 0
    for i in range(1, len(idx) + 1):
        if i == len(idx) or idx[i] != idx[i - 1] + 1:
            runs.append((start, int(idx[start]), int(idx[i - 1]) + 1))
            start = i
    return runs


def _boundary_index(lo: int, hi: int, n: int, mode: str) -> np.ndarray:
    i = np.arange(lo, hi)
    if mode == "circular":
        return i % n
    # torch "reflect" (scipy "mirror"): -1 -> 1, n -> n - 2
    period = 2 * (n - 1) if n > 1 else 1
    i = np.abs(i) % period
    return np.where(i >= n, period - i, i)


def read_with_halo(store: TileStore, collection: str, image_id: str, y0: int, y1: int,
                   x0: int, x1: int, halo: int, mode: str) -> np.ndarray:
    """Normalised pixels of [y0-halo, y1+halo) x [x0-halo, x1+halo), padded at the image
    border by ``mode`` (circular or reflect), read in at most 3x3 contiguous blocks."""
    _, h, w = store.shape(collection, image_id)
    iy = _boundary_index(y0 - halo, y1 + halo, h, mode)
    ix = _boundary_index(x0 - halo, x1 + halo, w, mode)
    out = None
    for py, ya, yb in _runs(iy):
        for px, xa, xb in _runs(ix):
            block = store.read_region(collection, image_id, ya, yb, xa, xb, normalised=True)
            if out is None:
                out = np.empty((block.shape[0], len(iy), len(ix)), dtype=np.float32)
            out[:, py : py + yb - ya, px : px + xb - xa] = block
    return out


def _noise_generator(spec: DegradationSpec, seed: int, image_id: str, ty: int, tx: int):
    return torch.Generator().manual_seed(seed_for(spec.hash, seed, f"{image_id}/{ty}/{tx}"))


def _collection_attrs(spec: DegradationSpec, seed: int, source: str) -> dict:
    return {"degradation": spec.text, "spec_hash": spec.hash, "seed": seed,
            "sigma_y": spec.sigma_y, "source_collection": source}


def prepare_simulate(store: TileStore, image_id: str, spec: DegradationSpec, seed: int = 0,
                     collection: str = "degraded", source: str = INPUT) -> bool:
    """Driver: create the degraded image (metadata only). False if already complete.

    An image already complete with the same spec hash and seed is left alone; one from
    another spec or seed raises ValueError (use another collection); an unfinished one
    (status "writing") is recreated.
    """
    if store.has(collection, image_id):
        have = store.attrs(collection, image_id).get("collection_attrs", {})
        if have.get("spec_hash") == spec.hash and have.get("seed") == seed:
            return False
        raise ValueError(
            f"{collection}/{image_id} already holds {have.get('degradation')} (seed "
            f"{have.get('seed')}); write {spec.text} (seed {seed}) to another --collection"
        )
    c, h, w = store.shape(source, image_id)
    op = spec.build((c, h, w), generator=make_generator(spec, seed, image_id)).operator
    yc, yh, yw = op.y_shape((1, c, h, w))[1:]
    store.create_image(collection, image_id, (yc, yh, yw), np.float32,
                       attrs={"collection_attrs": _collection_attrs(spec, seed, source)},
                       overwrite=True)
    return True


def simulate_tiles(store: TileStore, image_id: str, spec: DegradationSpec, seed: int = 0,
                   collection: str = "degraded", source: str = INPUT) -> str:
    """Worker: compute y = noise(A x) and write its tiles (chunk-aligned regions only).
    Returns the mode used: "tiled" or "whole"."""
    c, h, w = store.shape(source, image_id)
    deg = spec.build((c, h, w), generator=make_generator(spec, seed, image_id))
    op = deg.operator
    yh, yw = op.y_shape((1, c, h, w))[2:]
    tiled = op.halo is not None and (yh, yw) == (h, w)
    mode = getattr(op, "boundary", "reflect")
    if tiled:
        for ty, tx, y0, y1, x0, x1 in store.tiles(collection, image_id):
            x = read_with_halo(store, source, image_id, y0, y1, x0, x1, op.halo, mode)
            tile_op = op.window(y0, x0, x.shape[1], x.shape[2]) if op.halo == 0 else op
            with torch.no_grad():
                ax = tile_op.A(torch.from_numpy(x)[None])[0]
            ax = ax[:, op.halo : op.halo + y1 - y0, op.halo : op.halo + x1 - x0]
            y = ax if deg.noise is None else deg.noise.sample(
                ax, _noise_generator(spec, seed, image_id, ty, tx))
            store.write_region(collection, image_id, y.numpy().astype(np.float32), y0, x0)
    else:
        x = torch.from_numpy(store.read(source, image_id, normalised=True))[None]
        with torch.no_grad():
            ax = op.A(x)[0]
        for ty, tx, y0, y1, x0, x1 in store.tiles(collection, image_id):
            a = ax[:, y0:y1, x0:x1]
            y = a if deg.noise is None else deg.noise.sample(
                a, _noise_generator(spec, seed, image_id, ty, tx))
            store.write_region(collection, image_id, y.numpy().astype(np.float32), y0, x0)
    return "tiled" if tiled else "whole"


def simulate_image(store: TileStore, image_id: str, spec: DegradationSpec, seed: int = 0,
                   collection: str = "degraded", source: str = INPUT) -> SimulateResult:
    """prepare -> tiles -> mark complete, in one process (CLI without a cluster, tests)."""
    if not prepare_simulate(store, image_id, spec, seed, collection, source):
        return SimulateResult(image_id, "present", "none")
    mode = simulate_tiles(store, image_id, spec, seed, collection, source)
    store.mark_complete(collection, image_id)
    return SimulateResult(image_id, "written", mode)


def simulate_reference(store: TileStore, image_id: str, spec: DegradationSpec, seed: int = 0,
                       source: str = INPUT) -> torch.Tensor:
    """The same y as :func:`simulate_image`, computed on the whole image in memory
    (for tests and small images)."""
    x = torch.from_numpy(store.read(source, image_id, normalised=True))[None]
    c, h, w = x.shape[1:]
    deg = spec.build((c, h, w), generator=make_generator(spec, seed, image_id))
    with torch.no_grad():
        ax = deg.operator.A(x)[0]
    _, yh, yw = ax.shape
    T = store.tile_size
    out = ax.clone()
    if deg.noise is not None:
        for ty, y0 in enumerate(range(0, yh, T)):
            for tx, x0 in enumerate(range(0, yw, T)):
                a = ax[:, y0 : y0 + T, x0 : x0 + T]
                out[:, y0 : y0 + T, x0 : x0 + T] = deg.noise.sample(
                    a, _noise_generator(spec, seed, image_id, ty, tx))
    return out
