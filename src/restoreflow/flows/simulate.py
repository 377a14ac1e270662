"""Flow: simulate a degradation on every (or the given) input image of a store."""

from __future__ import annotations

from prefect import flow

from restoreflow.flows.progress import track_futures
from restoreflow.tasks.simulate import simulate_task


@flow(name="simulate")
def simulate_flow(store: str, degradation: str, seed: int = 0, collection: str = "degraded",
                  image_ids: list[str] | None = None, progress: bool = False) -> list[dict]:
    """One CPU task per image; returns per-image status rows."""
    from restoreflow.spec import DegradationSpec
    from restoreflow.tasks.common import open_store

    spec = DegradationSpec.parse(degradation)  # fail before any work
    ids = image_ids if image_ids is not None else open_store(store).image_ids("input")
    futures = [simulate_task.submit(store, i, spec.text, seed, collection) for i in ids]
    return [f.result() for f in track_futures(futures, "simulate", progress)]
