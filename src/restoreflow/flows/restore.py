"""Flow: restore a degraded collection; and the restore wiring the other flows share."""

from prefect import flow, get_run_logger

from restoreflow.settings import get_settings
from restoreflow.stages.config import RestoreConfig
from restoreflow.tasks import names
from restoreflow.tasks.progress import track_futures
from restoreflow.tasks.runner import model_placement
from restoreflow.tasks.stages import matched_index_task, restore_task


def restore_images(store_uri: str, image_ids: list[str], cfg: RestoreConfig, y_collection: str,
                   out: str, progress: bool = False, label: str = "restore") -> dict[str, dict]:
    """Driver side of restoring many images: create outputs, submit one model task per
    image that is not already restored with these settings, record each as it finishes.
    Returns {image_id: result} for the images restored now (skipped ones are absent)."""
    from restoreflow.compat import legacy_settings_hashes
    from restoreflow.stages.models import prior_hash
    from restoreflow.stages.restore import finish_restore, prepare_restore
    from restoreflow.tasks.common import open_store

    settings = get_settings()
    store = open_store(store_uri)
    ph = prior_hash(cfg.prior)
    shash, legacy = cfg.settings_hash(ph), legacy_settings_hashes(cfg, ph)
    todo = [i for i in image_ids
            if prepare_restore(store, i, cfg, shash, y_collection, out, legacy)]
    device = settings.device  # "auto" is resolved by each worker
    if todo and cfg.adapt.enabled and cfg.adapt.match_degradation:
        with model_placement(settings):  # once, before the images retrieve from it
            matched_index_task.submit(store_uri, cfg.index, cfg.spec.text, cfg.seed,
                                      cfg.adapt.embedder, device).result()
    with model_placement(settings):
        futures = [restore_task.submit(store_uri, i, cfg, y_collection, out, device)
                   for i in todo]
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    bar = create_progress_artifact(0.0, description=f"{label}: images restored") if todo else None
    results = {}
    for f in track_futures(futures, label, progress):
        res = f.result()
        finish_restore(store, res["image_id"], cfg, res, out)
        results[res["image_id"]] = res
        update_progress_artifact(bar, 100.0 * len(results) / len(todo))
    return results


@flow(name="restore", flow_run_name=names.restore_flow_name)
def restore_flow(store: str, cfg: RestoreConfig, y_collection: str = "degraded",
                 out: str = "restored", image_ids: list[str] | None = None,
                 progress: bool = False) -> dict:
    """Restore every image of ``y_collection`` (one model task per image) with the
    settings ``cfg`` (validated: built from CLI flags, a run spec or the Prefect UI)."""
    from restoreflow.tasks.common import open_store

    cfg = cfg.with_chosen_prior()
    ts = open_store(store)
    with ts.lock("restoreflow restore", log=get_run_logger().warning):
        ids = image_ids if image_ids is not None else ts.image_ids(y_collection)
        done = restore_images(store, ids, cfg, y_collection, out, progress)
    return {"restored": sorted(done), "skipped": sorted(set(ids) - set(done))}
