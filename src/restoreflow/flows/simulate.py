"""Flow: simulate a degradation on every (or the given) input image of a store."""

from __future__ import annotations

from prefect import flow, get_run_logger

from restoreflow.flows.progress import track_futures
from restoreflow.tasks.simulate import simulate_task


def simulate_images(store_uri: str, image_ids: list[str], degradation: str, seed: int,
                    collection: str, progress: bool = False) -> list[dict]:
    """Driver: create outputs, one CPU task per image still to do, mark each complete."""
    from restoreflow.simulate import prepare_simulate
    from restoreflow.spec import DegradationSpec
    from restoreflow.tasks.common import open_store

    store = open_store(store_uri)
    spec = DegradationSpec.parse(degradation)
    todo = [i for i in image_ids if prepare_simulate(store, i, spec, seed, collection)]
    futures = [simulate_task.submit(store_uri, i, spec.text, seed, collection) for i in todo]
    rows = []
    for f in track_futures(futures, "simulate", progress):
        res = f.result()
        store.mark_complete(collection, res["image_id"])
        rows.append(res)
    rows += [{"image_id": i, "status": "present", "mode": "none"}
             for i in image_ids if i not in set(todo)]
    return rows


@flow(name="simulate")
def simulate_flow(store: str, degradation: str, seed: int = 0, collection: str = "degraded",
                  image_ids: list[str] | None = None, progress: bool = False) -> list[dict]:
    """One CPU task per image; returns per-image status rows."""
    from restoreflow.spec import DegradationSpec
    from restoreflow.tasks.common import open_store

    spec = DegradationSpec.parse(degradation)  # fail before any work
    ts = open_store(store)
    with ts.lock("restoreflow simulate", log=get_run_logger().warning):
        ids = image_ids if image_ids is not None else ts.image_ids("input")
        return simulate_images(store, ids, spec.text, seed, collection, progress)
