"""Prefect task: simulate a degradation on one stored image (thin wrapper)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from restoreflow.tasks.common import open_store


@task(name="simulate", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def simulate_task(store_uri: str, image_id: str, degradation: str, seed: int,
                  collection: str) -> dict:
    from restoreflow.simulate import simulate_image
    from restoreflow.spec import DegradationSpec

    res = simulate_image(open_store(store_uri), image_id, DegradationSpec.parse(degradation),
                         seed=seed, collection=collection)
    return {"image_id": res.image_id, "status": res.status, "mode": res.mode}
