"""Flows: restore a degraded collection, score restored images; and the restore wiring the
other flows share."""

from prefect import flow, get_run_logger

from restoreflow.settings import get_settings
from restoreflow.stages import records
from restoreflow.stages.config import RestoreConfig
from restoreflow.stages.restore import (
    finish_restore,
    prepare_restore,
    restored_otherwise,
    settings_key,
    tile_count,
)
from restoreflow.stages.run import finish_intervals, score_images, verb_scoring
from restoreflow.storage.layout import RESTORED
from restoreflow.tasks import names
from restoreflow.tasks.common import open_store
from restoreflow.tasks.progress import track_futures
from restoreflow.tasks.runner import model_placement
from restoreflow.tasks.stages import intervals_task, matched_index_task, restore_task


def restore_images(store_uri: str, image_ids: list[str], cfg: RestoreConfig, y_collection: str,
                   out: str, progress: bool = False, label: str = "restore") -> dict[str, dict]:
    """Driver side of restoring many images: create outputs, submit one model task per
    image that is not already restored with these settings, record each as it finishes.
    Returns {image_id: result} for the images restored now (skipped ones are absent).
    Restorations made with other settings are replaced, with a warning naming how many."""
    settings, store, key = get_settings(), open_store(store_uri), settings_key(cfg)
    replaced = restored_otherwise(store, image_ids, key, out)
    if replaced:
        get_run_logger().warning(
            "%s: %d image(s) of '%s' were restored with other settings and are replaced "
            "(%s%s); to keep them, restore into another collection (restore --out NAME) or "
            "export them first", label, len(replaced), out,
            names.image_label(store_uri, replaced[0]), ", ..." if len(replaced) > 1 else "")
    todo = [i for i in image_ids if prepare_restore(store, i, cfg, key, y_collection, out)]
    device = settings.device  # "auto" is resolved by each worker
    if todo and cfg.adapt.enabled and cfg.adapt.match_degradation:
        with model_placement(settings):  # once, before the images retrieve from it
            matched_index_task.submit(store_uri, cfg.index, cfg.spec.text, cfg.seed,
                                      cfg.adapt.embedder, device).result()
    with model_placement(settings):
        futures = [restore_task.submit(store_uri, i, cfg, y_collection, out, device)
                   for i in todo]
    # the bar counts tiles of the prior's tile grid (an image's cost grows with them)
    tiles = [tile_count(store.shape(out, i), cfg.restore.tile) for i in todo]
    if sum(tiles) > len(todo):
        label = f"{label} (tiles)"
    results = {}
    for f in track_futures(futures, label, progress, tiles, f"{label}: images restored", todo):
        res = f.result()
        finish_restore(store, res["image_id"], cfg, res, out)
        results[res["image_id"]] = res
    return results


def score_restored(uri: str, store, cfg: RestoreConfig, ids: list[str], run_id: str,
                   shash: str, calibration: dict | None, truth: dict[str, dict],
                   options=None) -> list:
    """Score each restored image, write its calibrated per-pixel intervals (worker tasks)
    and its quality row. Returns the rows."""
    scores = score_images(store, cfg, ids, run_id, shash, calibration, truth, options)
    for i, w in scores.warnings:
        get_run_logger().warning("%s: %s", names.image_label(uri, i), w)
    futures = [intervals_task.submit(uri, i, pixel) for i, pixel in scores.intervals.items()]
    finish_intervals(store, [f.result() for f in futures])
    records.record_quality(store, scores.rows)
    return scores.rows


def score_verb_restorations(uri: str, store, cfg: RestoreConfig, ids: list[str], verb: str,
                            out: str = RESTORED) -> dict:
    """The restore and calibrate verbs: score the images of ``ids`` restored with ``cfg``
    against the stored calibration of the same settings (see ``stages.run.verb_scoring``)."""
    p = verb_scoring(store, cfg, ids, out)
    rows = score_restored(uri, store, cfg, p.ids, names.run_id(verb, p.shash), p.shash,
                          p.calibration, {}) if p.calibration else []
    return {"scored": len(rows), "calibration": p.calibration and p.shash, "note": p.note}


@flow(name="restore", flow_run_name=names.restore_flow_name)
def restore_flow(store: str, cfg: RestoreConfig, y_collection: str = "degraded",
                 out: str = "restored", image_ids: list[str] | None = None,
                 progress: bool = False) -> dict:
    """Restore every image of ``y_collection`` (one model task per image) with the
    settings ``cfg`` (validated: built from CLI flags, a run spec or the Prefect UI)."""
    cfg = cfg.with_chosen_prior()
    ts = open_store(store)
    with ts.lock("restoreflow restore", log=get_run_logger().warning):
        ids = image_ids if image_ids is not None else ts.image_ids(y_collection)
        done = restore_images(store, ids, cfg, y_collection, out, progress)
        scoring = score_verb_restorations(store, ts, cfg, ids, "restore", out)
    return {"restored": sorted(done), "skipped": sorted(set(ids) - set(done)), **scoring}


@flow(name="score", flow_run_name=names.score_flow_name)
def score_flow(store: str, cfg: RestoreConfig, out: str = "restored") -> dict:
    """Score the images of ``out`` restored with ``cfg`` against the stored calibration of
    the same settings; restores nothing."""
    cfg = cfg.with_chosen_prior()
    ts = open_store(store)
    with ts.lock("restoreflow score", log=get_run_logger().warning):
        return score_verb_restorations(store, ts, cfg, ts.image_ids(out), "score", out)
