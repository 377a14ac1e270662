"""Restoring a collection again with other settings replaces the earlier restorations, and
says so: a warning naming how many and how to keep them."""

from __future__ import annotations

import numpy as np
from PIL import Image


def test_restoring_with_other_settings_warns_that_it_replaces(prefect_api, tmp_path,
                                                              monkeypatch, capfd, caplog):
    """(The run logger's warnings reach the console or, once Prefect's logging has been
    set up to propagate, the logging tree: read both.)"""

    def logged() -> str:
        text = capfd.readouterr().err + caplog.text
        caplog.clear()
        return text

    from restoreflow.degradation import DegradationSpec
    from restoreflow.flows.restore import restore_flow
    from restoreflow.stages.config import RestoreConfig
    from restoreflow.stages.restore import restored_otherwise, settings_key
    from restoreflow.stages.simulate import simulate_image
    from restoreflow.storage.ingest import ingest
    from restoreflow.storage.store import TileStore

    deg = "gaussian_blur(sigma=1)+gaussian_noise(sigma=0.05)"
    (tmp_path / "src").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(
            tmp_path / "src" / name)
    store = TileStore(tmp_path / "store", tile_size=16)
    ids = [r.image_id for r in ingest([str(tmp_path / "src")], store, progress=False).rows]
    for i in ids:
        simulate_image(store, i, DegradationSpec.parse(deg))
    monkeypatch.setenv("RESTOREFLOW_TILE_SIZE", "16")
    first = RestoreConfig(degradation=deg, restore={"steps": 2})
    second = RestoreConfig(degradation=deg, restore={"steps": 3})
    uri = str(tmp_path / "store")
    restore_flow(uri, first)
    assert "replaced" not in logged()
    assert restored_otherwise(store, ids, settings_key(first)) == []
    assert sorted(restored_otherwise(store, ids, settings_key(second))) == sorted(ids)
    restore_flow(uri, second)
    err = logged()
    assert "2 image(s) of 'restored' were restored with other settings and are replaced" in err
    assert "restore --out NAME" in err
    assert restored_otherwise(store, ids, settings_key(second)) == []
    restore_flow(uri, second)  # nothing to do, nothing replaced
    assert "replaced" not in logged()
