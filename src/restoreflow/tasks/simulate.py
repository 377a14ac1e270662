"""Prefect task: simulate a degradation on one stored image (thin wrapper)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from restoreflow.tasks.common import open_store


@task(name="simulate", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def simulate_task(store_uri: str, image_id: str, degradation: str, seed: int,
                  collection: str) -> dict:
    """Worker side: the driver has created the output image (``prepare_simulate``)."""
    from restoreflow.simulate import simulate_tiles
    from restoreflow.spec import DegradationSpec

    mode = simulate_tiles(open_store(store_uri), image_id, DegradationSpec.parse(degradation),
                          seed=seed, collection=collection)
    return {"image_id": image_id, "status": "written", "mode": mode}
