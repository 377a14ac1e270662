"""Flow: simulate a degradation on every (or the given) input image of a store."""

from prefect import flow, get_run_logger

from restoreflow.tasks import names
from restoreflow.tasks.progress import track_futures
from restoreflow.tasks.stages import simulate_task


def simulate_images(store_uri: str, image_ids: list[str], degradation: str, seed: int,
                    collection: str, progress: bool = False) -> list[dict]:
    """Driver: create outputs, CPU tasks over batches of the images still to do (one
    image per task unless images are small), mark each image complete."""
    from restoreflow.degradation import DegradationSpec
    from restoreflow.stages.run import cpu_batches
    from restoreflow.stages.simulate import prepare_simulate
    from restoreflow.tasks.common import open_store
    from restoreflow.tasks.runner import n_workers

    store, spec = open_store(store_uri), DegradationSpec.parse(degradation)
    todo = [i for i in image_ids if prepare_simulate(store, i, spec, seed, collection)]
    batches = cpu_batches(store, todo, n_workers())
    futures = [simulate_task.submit(store_uri, b, spec.text, seed, collection) for b in batches]
    rows = []
    for f in track_futures(futures, "simulate", progress, [len(b) for b in batches]):
        for res in f.result():
            store.mark_complete(collection, res["image_id"])
            rows.append(res)
    rows += [{"image_id": i, "status": "present", "mode": "none"}
             for i in image_ids if i not in set(todo)]
    return rows


@flow(name="simulate", flow_run_name=names.simulate_flow_name)
def simulate_flow(store: str, degradation: str, seed: int = 0, collection: str = "degraded",
                  image_ids: list[str] | None = None, progress: bool = False) -> list[dict]:
    """Degrade the store's source images (or ``image_ids``; never the calibration or corpus
    images other verbs ingested): CPU tasks over batches; returns per-image status rows."""
    from restoreflow.degradation import DegradationSpec
    from restoreflow.stages.roles import source_ids
    from restoreflow.tasks.common import open_store

    spec = DegradationSpec.parse(degradation)  # fail before any work
    ts = open_store(store)
    with ts.lock("restoreflow simulate", log=get_run_logger().warning):
        ids = image_ids if image_ids is not None else source_ids(ts)
        return simulate_images(store, ids, spec.text, seed, collection, progress)
