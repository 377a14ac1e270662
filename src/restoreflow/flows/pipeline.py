"""Flows: ``pipeline`` (one run spec end to end) and ``calibrate``.

ingest -> (simulate) -> [index the reference corpus] -> [calibrate] -> per image:
retrieve -> adapt -> restore (one model task) -> score -> intervals -> export -> report,
then the run's manifest and summary. Wiring only: every step is a task over a core
function, or a small core call on the driver (scores; the run's rows, summary and
manifest are built and written by restoreflow.stages.records).
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from prefect import flow, get_run_logger

from restoreflow.flows.restore import restore_images
from restoreflow.flows.simulate import simulate_images
from restoreflow.settings import get_settings
from restoreflow.spec import CalibrationOptions
from restoreflow.stages.config import RestoreConfig
from restoreflow.storage import layout
from restoreflow.tasks import names
from restoreflow.tasks.runner import model_placement
from restoreflow.tasks.stages import (
    export_task,
    index_task,
    ingest_task,
    intervals_task,
    metrics_task,
)


def _ids(report: dict) -> list[str]:
    seen: dict[str, None] = {}
    for r in report["rows"]:
        if r["status"] != "rejected" and r["image_id"]:
            seen.setdefault(r["image_id"], None)
    return list(seen)


def _require_images(ids: list[str], rejected: list[dict], what: str) -> None:
    """Stop before any other work when the sources gave no image."""
    if ids:
        return
    why = (f"all {len(rejected)} file(s) were rejected (e.g. {rejected[0]['source']}: "
           f"{rejected[0]['reason']})" if rejected else "they hold no image files")
    raise ValueError(f"{what}: no images to work on: {why}")


def _truth(uri: str, store, ids: list[str], out: str) -> dict[str, dict]:
    """True PSNR/SSIM of each restored image (CPU tasks over batches of images)."""
    from restoreflow.flows.batches import cpu_batches

    futures = [metrics_task.submit(uri, b, out) for b in cpu_batches(store, ids)]
    return {i: m for f in futures for i, m in f.result().items()}


def run_calibration(uri: str, cfg: RestoreConfig, clean_ids: list[str],
                    calibration: CalibrationOptions, progress: bool) -> dict:
    """Simulate, restore (same settings) and measure the clean calibration images; fit and
    store the calibration under the settings hash. Returns the calibration dict."""
    from restoreflow.stages.calibrate import (
        fit_calibration,
        require_sources,
        save_calibration,
        source_of,
    )
    from restoreflow.stages.models import prior_hash
    from restoreflow.tasks.common import open_store

    store = open_store(uri)
    c = calibration
    sources = [source_of(store.attrs(layout.INPUT, i), c.group_by) for i in clean_ids]
    require_sources(sources, c.alpha, c.group_by)
    shash = cfg.settings_hash(prior_hash(cfg.prior))
    deg_coll = f"calibration-{cfg.spec.hash}.degraded"
    out = f"calibration-{shash}.restored"
    simulate_images(uri, clean_ids, cfg.spec.text, cfg.seed, deg_coll, progress)
    restore_images(uri, clean_ids, cfg, deg_coll, out, progress, label="calibrate")
    truths = _truth(uri, store, clean_ids, out)
    rows = [{"image_id": i, "features": store.attrs(out, i)["features"], "source": src,
             **truths[i]} for i, src in zip(clean_ids, sources, strict=True)]
    cal = fit_calibration(store, rows, cfg, shash, c.alpha, c.method, c.pixel_epsilon,
                          c.pixel_delta, out, c.pixel_scale, c.pixel_floor, c.pixel_bound)
    save_calibration(store, cal)
    return cal.to_dict()


@flow(name="calibrate", flow_run_name=names.calibrate_flow_name)
def calibrate_flow(store: str, cfg: RestoreConfig, calibration: CalibrationOptions,
                   progress: bool = False) -> dict:
    """Calibrate conformal bounds for the restore settings ``cfg`` on the clean images
    ``calibration.clean`` (both validated: built from CLI flags or the Prefect UI)."""
    from restoreflow.tasks.common import open_store

    cfg = cfg.with_chosen_prior()
    with open_store(store).lock("restoreflow calibrate", log=get_run_logger().warning):
        rep = ingest_task(store, calibration.clean)
        _require_images(_ids(rep), [r for r in rep["rows"] if r["status"] == "rejected"],
                        "clean")
        cal = run_calibration(store, cfg, _ids(rep), calibration, progress)
    return {k: cal[k] for k in ("settings_hash", "alpha", "coverage", "n", "sources",
                                "warnings")}


@flow(name="pipeline", flow_run_name=names.pipeline_run_name)
def pipeline_flow(spec: dict, progress: bool = False) -> dict:
    """Run one run spec end to end; returns the run summary (also in the store).

    The run holds the store's writer lock throughout: a second run started on the same
    store waits for it, then skips what this one completed (no double work, no two
    drivers creating the same image or rewriting the same table)."""
    from restoreflow.spec import RunSpec
    from restoreflow.tasks.common import open_store

    run = RunSpec.from_dict(spec)
    store = open_store(run.store or get_settings().store)
    with store.lock(f"restoreflow run {run.name!r}", log=get_run_logger().warning):
        summary = _pipeline(spec, progress)
    _name_flow_run(summary["run_id"])
    return summary


def _name_flow_run(name: str) -> None:
    """Give this flow run the run id recorded in the store, when the one chosen at its
    start (``names.pipeline_run_name``) differs: the clock moved on before the run id was
    taken (e.g. while waiting for the store's lock)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if not flow_run.id or flow_run.name == name:
        return
    with get_client(sync_client=True) as client:
        client.set_flow_run_name(flow_run.id, name)


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    """Record the seconds the block took as ``timings[stage]``."""
    t = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - t


def _pipeline(spec: dict, progress: bool) -> dict:
    """The run, under the store's lock: its row says "running" from here until its
    manifest is written (see restoreflow.stages.records), or "failed" when a stage raises."""
    from restoreflow.spec import RunSpec
    from restoreflow.stages import records
    from restoreflow.tasks.common import open_store

    log = get_run_logger()
    run, settings = RunSpec.from_dict(spec), get_settings()
    uri = run.store or settings.store
    store = open_store(uri)
    cfg = RestoreConfig.from_run(run)
    started = time.time()
    start = records.start_row(
        records.unique_run_id(store, names.run_id(run.name, run.hash, started)), run, uri,
        started)
    for row in records.reconcile_runs(store):
        log.warning("run %s did not finish (killed?); recorded as %s", row["run_id"],
                    row["status"])
    # the row says "running" until the manifest exists; a kill leaves it so, and the
    # next run on this store marks it "interrupted"; an error marks it "failed" now
    records.record_run(store, start)
    try:
        return _stages(store, uri, run, cfg, settings, start, log, progress)
    except Exception as exc:
        records.record_run(store, records.failed_row(start, exc))
        raise


def _stages(store, uri: str, run, cfg: RestoreConfig, settings, start, log,
            progress: bool) -> dict:
    """The run's stages, ingest to report, and its manifest."""
    from restoreflow.stages import calibrate, models, records

    timings: dict[str, float] = {}
    with _timed(timings, "ingest"):
        ids, rejected = _sources(uri, run, log)
    y_coll = layout.DEGRADED if run.simulate else layout.INPUT
    if run.simulate:
        with _timed(timings, "simulate"):
            simulate_images(uri, ids, cfg.degradation, cfg.seed, layout.DEGRADED, progress)
    if run.adapt.enabled:
        with _timed(timings, "index"):
            _index(uri, run, cfg, settings)
    prior_hash = models.prior_hash(cfg.prior)
    shash = cfg.settings_hash(prior_hash)
    calibration = calibrate.load_calibration(store, shash)
    if run.calibration and calibration is None:
        with _timed(timings, "calibrate"):
            calibration = _calibrate(uri, run, cfg, ids, progress)
            for w in calibration.get("warnings", []):
                log.warning("calibration: %s", w)
    with _timed(timings, "restore"):
        done = restore_images(uri, ids, cfg, y_coll, layout.RESTORED, progress)
    with _timed(timings, "score"):
        truth = _truth(uri, store, ids, layout.RESTORED) if run.simulate else {}
        rows = _score(uri, store, run, cfg, ids, start.run_id, shash, calibration, truth, log)
    exported: list[str] = []
    if run.export:
        with _timed(timings, "export"):
            exported = _export(uri, run, ids)
    summary = records.run_summary(start, cfg, shash, calibration, ids, done, len(rejected),
                                  rows, len(exported), truth, timings)
    if run.report:
        summary = _report(store, run, summary)
    manifest = records.run_manifest(summary, run, cfg, prior_hash, settings, done, rejected,
                                    calibration)
    summary = records.finish_run(store, summary, manifest)
    _artifacts(run.name, summary, rows)
    return summary.to_row()


def _sources(uri: str, run, log) -> tuple[list[str], list[dict]]:
    """Ingest the run's sources: (image ids, rejected rows); stop when there is no image."""
    rep = ingest_task(uri, run.sources)
    ids = _ids(rep)
    rejected = [r for r in rep["rows"] if r["status"] == "rejected"]
    for r in rejected:
        log.warning("REJECTED %s: %s", r["source"], r["reason"])
    _require_images(ids, rejected, "spec.sources")
    return ids, rejected


def _index(uri: str, run, cfg: RestoreConfig, settings) -> None:
    """Ingest the reference corpus and index it; refuse fewer images than neighbours."""
    corpus_ids = _ids(ingest_task(uri, run.adapt.corpus)) if run.adapt.corpus else []
    with model_placement(settings):
        info = index_task.submit(uri, corpus_ids, cfg.index, cfg.adapt.embedder,
                                 settings.device).result()
    if info["size"] < cfg.adapt.neighbours:
        raise ValueError(f"adapt.neighbours={cfg.adapt.neighbours} but the reference index "
                         f"holds {info['size']} images; add to adapt.corpus or lower it")


def _calibrate(uri: str, run, cfg: RestoreConfig, ids: list[str], progress: bool) -> dict:
    """Calibrate on the spec's clean images, held out from the run's sources."""
    c = run.calibration
    clean_rep = ingest_task(uri, c.clean)
    clean_ids = _ids(clean_rep)
    _require_images(clean_ids, [r for r in clean_rep["rows"] if r["status"] == "rejected"],
                    "spec.calibration.clean")
    overlap = sorted(set(clean_ids) & set(ids))
    if overlap:
        raise ValueError(f"{len(overlap)} calibration images are also run sources "
                         f"(e.g. {overlap[0]}); calibration images must be held out")
    return run_calibration(uri, cfg, clean_ids, c, progress)


def _score(uri: str, store, run, cfg: RestoreConfig, ids: list[str], run_id: str, shash: str,
           calibration: dict | None, truth: dict[str, dict], log) -> list:
    """Score each restored image, write its calibrated per-pixel intervals (J >= 2) and
    its quality row. Returns the rows."""
    from restoreflow.stages import calibrate, records

    min_psnr = run.calibration.min_psnr if run.calibration else None
    rows, interval_futures = [], []
    for i in ids:
        attrs = store.attrs(layout.RESTORED, i)
        s = calibrate.score(attrs["features"], calibration, shash, min_psnr)
        if s["warning"]:
            log.warning("%s: %s", i, s["warning"])
        pixel = s.pop("pixel")
        if pixel is not None and cfg.restore.posterior_samples >= 2:
            calibrate.prepare_intervals(store, i, pixel)
            interval_futures.append(intervals_task.submit(uri, i, pixel))
        rows.append(records.quality_row(i, attrs, run_id, shash, min_psnr, s, truth.get(i)))
    for f in interval_futures:
        i = f.result()
        for coll in (layout.INTERVAL_LO, layout.INTERVAL_HI):
            store.mark_complete(coll, i)
    records.record_quality(store, rows)
    return rows


def _export(uri: str, run, ids: list[str]) -> list[str]:
    futures = [export_task.submit(uri, coll, run.export.format, run.export.out, ids)
               for coll in run.export.collections]
    return [p for f in futures for p in f.result()]


def _report(store, run, summary):
    """Write the HTML report (it reads the run's row, recorded first); the summary with
    the report's path and time."""
    from restoreflow.report.html import build_report
    from restoreflow.stages import records

    t = time.perf_counter()
    records.record_run(store, summary)
    path = str(build_report(store, run.report, summary.run_id))
    return records.with_report(summary, path, time.perf_counter() - t)


def _artifacts(name: str, summary, rows: list) -> None:
    """Summary (markdown) and per-image quality table in the Prefect UI."""
    import re

    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from restoreflow.stages import records

    key = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "run"
    create_markdown_artifact(markdown=records.summary_markdown(summary), key=f"{key}-summary",
                             description="restoreflow run summary")
    table = records.quality_table(rows)
    if table:
        create_table_artifact(table=table, key=f"{key}-quality",
                              description="per-image conformal bounds")
