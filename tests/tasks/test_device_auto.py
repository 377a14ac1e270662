"""device=auto is resolved by the worker that runs a model task, not by the driver."""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image


def test_auto_device_is_resolved_on_the_worker(prefect_api, tmp_path, monkeypatch):
    import torch

    from restoreflow.degradation import DegradationSpec
    from restoreflow.flows.restore import restore_flow
    from restoreflow.settings import get_settings, resolve_device
    from restoreflow.stages import restore as restore_stage
    from restoreflow.stages.config import RestoreConfig
    from restoreflow.stages.simulate import simulate_image
    from restoreflow.storage.ingest import ingest
    from restoreflow.storage.store import TileStore

    deg = "gaussian_blur(sigma=1)"
    (tmp_path / "src").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "src" / "a.png")
    store = TileStore(tmp_path / "store", tile_size=16)
    (iid,) = [r.image_id for r in ingest([str(tmp_path / "src")], store, progress=False).rows]
    simulate_image(store, iid, DegradationSpec.parse(deg))

    # the driver (this thread) is a CPU-only machine; task threads are "GPU workers"
    driver = threading.get_ident()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: threading.get_ident() != driver)
    seen = []

    def fake_restore(store, image_id, cfg, y_collection, out, device, progress=None):
        seen.append(device)
        return {"image_id": image_id, "features": {}, "timings": {}, "device": device}

    monkeypatch.setattr(restore_stage, "restore_stored", fake_restore)
    monkeypatch.setenv("RESTOREFLOW_DEVICE", "auto")
    get_settings.cache_clear()
    try:
        assert resolve_device("auto") == "cpu"  # what the driver would have sent
        restore_flow(str(tmp_path / "store"),
                     RestoreConfig(degradation=deg, restore={"steps": 2}))
    finally:
        get_settings.cache_clear()
    assert seen == ["cuda"]
    assert resolve_device("cuda:1") == "cuda:1"
