"""Flows: ``pipeline`` (one run spec end to end) and ``calibrate``. Wiring only: ingest ->
(simulate) -> [index] -> [calibrate] -> restore (model tasks) -> score -> intervals ->
export -> report -> manifest; the rules are in restoreflow.stages.run and .records."""

from prefect import flow, get_run_logger

from restoreflow.flows.restore import restore_images
from restoreflow.flows.simulate import simulate_images
from restoreflow.settings import get_settings
from restoreflow.spec import CalibrationOptions, RunSpec
from restoreflow.stages import run as run_stage
from restoreflow.stages.config import RestoreConfig
from restoreflow.storage import layout
from restoreflow.tasks import names, ui
from restoreflow.tasks.runner import model_placement
from restoreflow.tasks.stages import (
    export_task,
    index_task,
    ingest_task,
    intervals_task,
    metrics_task,
)


def _truth(uri: str, store, ids: list[str], out: str) -> dict[str, dict]:
    """True PSNR/SSIM of each restored image (CPU tasks over batches of images)."""
    from restoreflow.stages.run import cpu_batches
    from restoreflow.tasks.runner import n_workers

    futures = [metrics_task.submit(uri, b, out) for b in cpu_batches(store, ids, n_workers())]
    return {i: m for f in futures for i, m in f.result().items()}


def run_calibration(uri: str, cfg: RestoreConfig, clean_ids: list[str],
                    calibration: CalibrationOptions, progress: bool) -> dict:
    """Simulate, restore (same settings) and measure the clean calibration images; fit and
    store the calibration under the settings hash. Returns the calibration dict."""
    from restoreflow.stages.models import prior_hash
    from restoreflow.tasks.common import open_store

    store = open_store(uri)
    plan = run_stage.calibration_plan(store, cfg, cfg.settings_hash(prior_hash(cfg.prior)),
                                clean_ids, calibration)
    simulate_images(uri, clean_ids, cfg.spec.text, cfg.seed, plan.degraded, progress)
    restore_images(uri, clean_ids, cfg, plan.degraded, plan.restored, progress,
                   label="calibrate")
    truths = _truth(uri, store, clean_ids, plan.restored)
    return run_stage.fit_and_save_calibration(store, cfg, plan, clean_ids, truths, calibration)


@flow(name="calibrate", flow_run_name=names.calibrate_flow_name)
def calibrate_flow(store: str, cfg: RestoreConfig, calibration: CalibrationOptions,
                   progress: bool = False) -> dict:
    """Calibrate conformal bounds for the restore settings ``cfg`` on the clean images
    ``calibration.clean`` (both validated: built from CLI flags or the Prefect UI)."""
    from restoreflow.tasks.common import open_store

    cfg = cfg.with_chosen_prior()
    with open_store(store).lock("restoreflow calibrate", log=get_run_logger().warning):
        rep = run_stage.IngestReport.from_rows(ingest_task(store, calibration.clean))
        cal = run_calibration(store, cfg, rep.require_images("clean").ids, calibration,
                              progress)
    return {k: cal[k] for k in ("settings_hash", "alpha", "coverage", "n", "sources",
                                "warnings")}


@flow(name="pipeline", flow_run_name=names.pipeline_run_name)
def pipeline_flow(spec: RunSpec, progress: bool = False) -> dict:
    """Run one run spec end to end; returns the run summary (also in the store). The spec
    is validated once, where it is made (a YAML file, a manifest, the Prefect UI's JSON).

    The run holds the store's writer lock throughout: a second run started on the same
    store waits for it, then skips what this one completed (no double work, no two
    drivers creating the same image or rewriting the same table)."""
    from restoreflow.tasks.common import open_store

    store = open_store(spec.store or get_settings().store)
    with store.lock(f"restoreflow run {spec.name!r}", log=get_run_logger().warning):
        summary = _pipeline(spec, progress)
    ui.name_flow_run(summary["run_id"])
    return summary


def _pipeline(spec: RunSpec, progress: bool) -> dict:
    """The run, under the store's lock, recorded as running until its manifest is written
    (:func:`restoreflow.stages.records.running`)."""
    from restoreflow.stages import records
    from restoreflow.tasks.common import open_store

    log, settings = get_run_logger(), get_settings()
    uri = spec.store or settings.store
    store = open_store(uri)
    cfg = RestoreConfig.from_run(spec)
    with records.running(store, spec, uri, names.run_id, log.warning) as start:
        return _stages(store, uri, spec, cfg, settings, start, log, progress)


def _stages(store, uri: str, spec: RunSpec, cfg: RestoreConfig, settings, start, log,
            progress: bool) -> dict:
    """The run's stages, ingest to report, and its manifest."""
    from restoreflow.compat import legacy_settings_hashes
    from restoreflow.stages import calibrate, models, records

    timings: dict[str, float] = {}
    with run_stage.timed(timings, "ingest"):
        ids, rejected = _sources(uri, spec, log)
    y_coll = layout.DEGRADED if spec.simulate else layout.INPUT
    if spec.simulate:
        with run_stage.timed(timings, "simulate"):
            simulate_images(uri, ids, cfg.degradation, cfg.seed, layout.DEGRADED, progress)
    if spec.adapt.enabled:
        with run_stage.timed(timings, "index"):
            _index(uri, spec, cfg, settings)
    prior_hash = models.prior_hash(cfg.prior)
    shash = cfg.settings_hash(prior_hash)
    calibration = calibrate.load_calibration(store, shash,
                                             legacy_settings_hashes(cfg, prior_hash))
    if spec.calibration and calibration is None:
        with run_stage.timed(timings, "calibrate"):
            calibration = _calibrate(uri, spec, cfg, ids, progress)
            for w in calibration.get("warnings", []):
                log.warning("calibration: %s", w)
    with run_stage.timed(timings, "restore"):
        done = restore_images(uri, ids, cfg, y_coll, layout.RESTORED, progress)
    with run_stage.timed(timings, "score"):
        truth = _truth(uri, store, ids, layout.RESTORED) if spec.simulate else {}
        rows = _score(uri, store, spec, cfg, ids, start.run_id, shash, calibration, truth, log)
    exported: list[str] = []
    if spec.export:
        with run_stage.timed(timings, "export"):
            exported = _export(uri, spec, ids)
    summary = records.run_summary(start, cfg, shash, calibration, ids, done, len(rejected),
                                  rows, len(exported), truth, timings)
    if spec.report:
        summary = records.write_report(store, spec.report, summary)
    manifest = records.run_manifest(summary, spec, cfg, prior_hash, settings, done, rejected,
                                    calibration)
    summary = records.finish_run(store, summary, manifest)
    ui.publish_run(spec.name, summary, rows)
    return summary.to_row()


def _sources(uri: str, spec: RunSpec, log) -> tuple[list[str], list[dict]]:
    """Ingest the run's sources: (image ids, rejected rows); stop when there is no image."""
    rep = run_stage.IngestReport.from_rows(ingest_task(uri, spec.sources))
    for r in rep.rejected:
        log.warning("REJECTED %s: %s", r["source"], r["reason"])
    rep.require_images("spec.sources")
    return rep.ids, rep.rejected


def _index(uri: str, spec: RunSpec, cfg: RestoreConfig, settings) -> None:
    """Ingest the reference corpus and index it."""
    corpus = spec.adapt.corpus
    corpus_ids = run_stage.IngestReport.from_rows(ingest_task(uri, corpus)).ids if corpus else []
    with model_placement(settings):
        info = index_task.submit(uri, corpus_ids, cfg.index, cfg.adapt.embedder,
                                 settings.device).result()
    run_stage.check_index_size(info["size"], cfg.adapt.neighbours)


def _calibrate(uri: str, spec: RunSpec, cfg: RestoreConfig, ids: list[str],
               progress: bool) -> dict:
    """Calibrate on the spec's clean images, held out from the run's sources."""
    c = spec.calibration
    clean = run_stage.IngestReport.from_rows(ingest_task(uri, c.clean))
    clean.require_images("spec.calibration.clean")
    run_stage.check_held_out(clean.ids, ids)
    return run_calibration(uri, cfg, clean.ids, c, progress)


def _score(uri: str, store, spec: RunSpec, cfg: RestoreConfig, ids: list[str], run_id: str,
           shash: str, calibration: dict | None, truth: dict[str, dict], log) -> list:
    """Score each restored image, write its calibrated per-pixel intervals (worker tasks)
    and its quality row. Returns the rows."""
    from restoreflow.stages import records

    min_psnr = spec.calibration.min_psnr if spec.calibration else None
    scores = run_stage.score_images(store, cfg, ids, run_id, shash, calibration, truth, min_psnr)
    for i, w in scores.warnings:
        log.warning("%s: %s", i, w)
    futures = [intervals_task.submit(uri, i, pixel) for i, pixel in scores.intervals.items()]
    run_stage.finish_intervals(store, [f.result() for f in futures])
    records.record_quality(store, scores.rows)
    return scores.rows


def _export(uri: str, spec: RunSpec, ids: list[str]) -> list[str]:
    futures = [export_task.submit(uri, coll, spec.export.format, spec.export.out, ids)
               for coll in spec.export.collections]
    return [p for f in futures for p in f.result()]
