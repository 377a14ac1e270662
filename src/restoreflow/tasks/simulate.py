"""Prefect task: simulate a degradation on a batch of stored images (thin wrapper)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from restoreflow.tasks import names
from restoreflow.tasks.common import open_store


@task(name="simulate", task_run_name=names.simulate_task_name, cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=[1, 5])
def simulate_task(store_uri: str, image_ids: list[str], degradation: str, seed: int,
                  collection: str) -> list[dict]:
    """Worker side: the driver has created the output images (``prepare_simulate``)."""
    from restoreflow.simulate import simulate_tiles
    from restoreflow.spec import DegradationSpec

    store, spec = open_store(store_uri), DegradationSpec.parse(degradation)
    return [{"image_id": i, "status": "written",
             "mode": simulate_tiles(store, i, spec, seed=seed, collection=collection)}
            for i in image_ids]
