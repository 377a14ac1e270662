"""Flows ``pipeline`` (a run spec end to end: ingest, simulate, index, calibrate, restore,
score, export, report, manifest) and ``calibrate``; wiring only (rules: stages.run)."""

from prefect import flow, get_run_logger

from restoreflow.flows.restore import restore_images, score_restored, score_verb_restorations
from restoreflow.flows.simulate import simulate_images
from restoreflow.settings import get_settings
from restoreflow.spec import CalibrationOptions, RunSpec
from restoreflow.stages import run as run_stage
from restoreflow.stages.config import RestoreConfig
from restoreflow.storage import layout
from restoreflow.tasks import names, ui
from restoreflow.tasks.common import open_store
from restoreflow.tasks.runner import model_placement, n_workers
from restoreflow.tasks.stages import export_task, index_task, ingest_task, metrics_task


def _truth(uri: str, store, ids: list[str], out: str) -> dict[str, dict]:
    """True PSNR/SSIM of each restored image (CPU tasks over batches of images)."""
    futures = [metrics_task.submit(uri, b, out)
               for b in run_stage.cpu_batches(store, ids, n_workers())]
    return {i: m for f in futures for i, m in f.result().items()}


def run_calibration(uri: str, cfg: RestoreConfig, clean_ids: list[str],
                    calibration: CalibrationOptions, progress: bool) -> dict:
    """Simulate, restore and measure the clean images; fit and store the calibration."""
    from restoreflow.stages.restore import settings_key

    store = open_store(uri)
    plan = run_stage.calibration_plan(store, cfg, settings_key(cfg).current, clean_ids,
                                      calibration)
    simulate_images(uri, clean_ids, cfg.spec.text, cfg.seed, plan.degraded, progress)
    restore_images(uri, clean_ids, cfg, plan.degraded, plan.restored, progress,
                   label="calibrate")
    truths = _truth(uri, store, clean_ids, plan.restored)
    return run_stage.fit_and_save_calibration(store, cfg, plan, clean_ids, truths, calibration)


@flow(name="calibrate", flow_run_name=names.calibrate_flow_name)
def calibrate_flow(store: str, cfg: RestoreConfig, calibration: CalibrationOptions,
                   progress: bool = False) -> dict:
    """Calibrate bounds for the settings ``cfg`` on ``calibration.clean`` (both validated),
    then score the store's restorations made with the same settings."""
    cfg, ts = cfg.with_chosen_prior(), open_store(store)
    with ts.lock("restoreflow calibrate", log=get_run_logger().warning):
        rep = run_stage.IngestReport.from_rows(ingest_task(store, calibration.clean))
        cal = run_calibration(store, cfg, rep.require_images("clean").ids, calibration,
                              progress)
        scoring = score_verb_restorations(store, ts, cfg, ts.image_ids(layout.RESTORED),
                                          "calibrate")
    return run_stage.calibration_summary(cal) | {"scored": scoring["scored"]}


@flow(name="pipeline", flow_run_name=names.pipeline_run_name)
def pipeline_flow(spec: RunSpec, progress: bool = False) -> dict:
    """Run one run spec end to end; returns the run summary (also in the store). The spec
    is validated once, where it is made (a YAML file, a manifest, the Prefect UI's JSON).

    The run holds the store's writer lock throughout: a second run started on the same
    store waits for it, then skips what this one completed (no double work, no two
    drivers creating the same image or rewriting the same table)."""
    from restoreflow.stages import records

    log, settings = get_run_logger(), get_settings()
    uri = spec.store or settings.store
    store, cfg = open_store(uri), RestoreConfig.from_run(spec)
    with store.lock(f"restoreflow run {spec.name!r}", log=log.warning), \
            records.running(store, spec, uri, names.run_id, log.warning) as start:
        summary = _stages(store, uri, spec, cfg, settings, start, log, progress)
    ui.name_flow_run(summary["run_id"])
    return summary


def _stages(store, uri: str, spec: RunSpec, cfg: RestoreConfig, settings, start, log,
            progress: bool) -> dict:
    """The run's stages, ingest to report, and its manifest."""
    from restoreflow.stages import calibrate, records
    from restoreflow.stages.restore import settings_key

    timings: dict[str, float] = {}
    with run_stage.timed(timings, "ingest"):
        sources = run_stage.IngestReport.from_rows(ingest_task(uri, spec.sources), log.warning)
    ids, rejected = sources.require_images("spec.sources").ids, sources.rejected
    if spec.simulate:
        with run_stage.timed(timings, "simulate"):
            simulate_images(uri, ids, cfg.degradation, cfg.seed, layout.DEGRADED, progress)
    if spec.adapt.enabled:
        with run_stage.timed(timings, "index"):
            _index(uri, spec, cfg, settings)
    key = settings_key(cfg)
    shash, calibration = key.current, calibrate.load_calibration(store, key.current, key.legacy)
    if spec.calibration:
        with run_stage.timed(timings, "calibrate"):
            calibration = _calibrate(uri, spec, cfg, ids, progress, calibration)
    with run_stage.timed(timings, "restore"):
        done = restore_images(uri, ids, cfg, run_stage.observed(spec), layout.RESTORED,
                              progress)
    with run_stage.timed(timings, "score"):
        truth = _truth(uri, store, ids, layout.RESTORED) if spec.simulate else {}
        rows = score_restored(uri, store, cfg, ids, start.run_id, shash, calibration, truth,
                              spec.calibration)
    exported: list[str] = []
    if spec.export:
        with run_stage.timed(timings, "export"):
            futures = [export_task.submit(uri, c, spec.export.format, spec.export.out, ids)
                       for c in spec.export.collections]
            exported = [p for f in futures for p in f.result()]
    summary = records.run_summary(start, cfg, shash, calibration, ids, done, len(rejected),
                                  rows, len(exported), truth, timings)
    if spec.report:
        summary = records.write_report(store, spec.report, summary)
    manifest = records.run_manifest(summary, spec, cfg, key.prior, settings, done, rejected,
                                    calibration)
    summary = records.finish_run(store, summary, manifest)
    ui.publish_run(spec.name, summary, rows)
    return summary.to_row()


def _index(uri: str, spec: RunSpec, cfg: RestoreConfig, settings) -> None:
    """Ingest the reference corpus and index it."""
    corpus = spec.adapt.corpus
    corpus_ids = run_stage.IngestReport.from_rows(ingest_task(uri, corpus)).ids if corpus else []
    with model_placement(settings):
        info = index_task.submit(uri, corpus_ids, cfg.index, cfg.adapt.embedder,
                                 settings.device).result()
    run_stage.check_index_size(info["size"], cfg.adapt.neighbours)


def _calibrate(uri: str, spec: RunSpec, cfg: RestoreConfig, ids: list[str], progress: bool,
               stored: dict | None) -> dict:
    """The stored calibration if made as the spec says, else a new one (held-out images)."""
    c = spec.calibration
    clean = run_stage.IngestReport.from_rows(ingest_task(uri, c.clean)).require_images(
        "spec.calibration.clean")
    run_stage.check_held_out(clean.ids, ids)
    if run_stage.calibration_applies(stored, c, clean.ids):
        return stored
    cal = run_calibration(uri, cfg, clean.ids, c, progress)
    for w in cal.get("warnings", []):
        get_run_logger().warning("calibration: %s", w)
    return cal
