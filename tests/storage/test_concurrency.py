"""Workers in separate processes write one image's tiles at the same time (chunk-aligned
regions, one tile per chunk): every tile must come back exactly, on local disk and S3."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
from storage_files import tile_value, write_tiles_worker

N_WORKERS = 3


def test_concurrent_region_writes_from_processes(store):
    # 5 x 6 tiles of 64 px, the last row and column cut short (300 x 330)
    store.create_image("restored", "conc", (3, 300, 330), "float32", {"name": "c.png"})
    tiles = store.tiles("restored", "conc")
    assert len(tiles) == 30
    # interleave so neighbouring tiles belong to different processes
    shares = [(store, "restored", "conc", tiles[k::N_WORKERS]) for k in range(N_WORKERS)]
    with mp.get_context("spawn").Pool(N_WORKERS) as pool:
        written = pool.map(write_tiles_worker, shares)
    assert sum(written) == len(tiles)
    store.mark_complete("restored", "conc")
    full = store.read("restored", "conc")
    assert not np.isnan(full).any()  # no tile left unwritten (fill value is NaN)
    for ty, tx, y0, y1, x0, x1 in tiles:
        np.testing.assert_array_equal(full[:, y0:y1, x0:x1],
                                      tile_value(ty, tx, (3, y1 - y0, x1 - x0)),
                                      err_msg=f"tile {ty},{tx}")
