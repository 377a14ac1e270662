"""Light CPU tasks get batches of small images; a large image goes alone."""

from __future__ import annotations

import numpy as np

from restoreflow.stages.run import cpu_batches
from restoreflow.storage.store import TileStore


def test_cpu_batches_group_small_images_and_keep_large_ones_alone(tmp_path):
    store = TileStore(str(tmp_path / "store"))
    ids = [f"s{i:02d}" for i in range(20)] + ["big", "s99"]
    for i in ids:
        side = 4096 if i == "big" else 64
        store.create_image("input", i, (3, side, side), np.uint8)
    batches = cpu_batches(store, ids, 4)  # 4 workers -> <= 3 a batch
    assert [i for b in batches for i in b] == ids  # every image once, in order
    assert ["big"] in batches
    assert max(len(b) for b in batches) == 3
    assert len(batches) >= 8  # at least two batches per worker
    assert cpu_batches(store, ids, 4, max_images=1) == [[i] for i in ids]
