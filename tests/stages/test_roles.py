"""Which input images are sources: `simulate` (and a flow without image ids) degrades only
those, never the images `calibrate` or `index build` ingested (issue 30, item 4)."""

from __future__ import annotations

import json

import numpy as np

from restoreflow.settings import Settings
from restoreflow.stages.roles import input_roles, source_ids
from restoreflow.storage.ingest import ingest_array
from restoreflow.storage.store import TileStore


def test_calibration_and_corpus_images_are_not_sources(tmp_path):
    store = TileStore(str(tmp_path / "st"), Settings(), tile_size=16)
    rng = np.random.default_rng(0)
    ids = [ingest_array(store, (rng.random((16, 16, 3)) * 255).astype(np.uint8), f"{n}.png")
           for n in ("src", "cal", "corpus", "both")]
    src, cal, corpus, both = ids
    for i in (cal, both):  # calibrate degrades its clean images into calibration-<hash>
        store.create_image("calibration-abc-degraded", i, (3, 16, 16), np.float32)
    store.create_image("degraded", both, (3, 16, 16), np.float32)  # also degraded as a source
    store.put_bytes("index/default/index.json", json.dumps({"ids": [corpus]}).encode())
    roles = input_roles(store, store.collections())
    assert roles == {cal: "calibration", corpus: "corpus", both: "source, calibration"}
    assert sorted(source_ids(store)) == sorted([src, both])
