"""Flows: ``pipeline`` (one run spec end to end) and ``calibrate``.

ingest -> (simulate) -> [index the reference corpus] -> [calibrate] -> per image:
retrieve -> adapt -> restore (one model task) -> score -> intervals -> export -> report,
then the run's manifest and summary. Wiring only: every step is a task over a core
function, or a small core call on the driver (scores, table rows).
"""

from __future__ import annotations

import time

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
    from restoreflow.stages.calibrate import fit_calibration, save_calibration
    from restoreflow.stages.models import prior_hash
    from restoreflow.tasks.common import open_store

    store = open_store(uri)
    shash = cfg.settings_hash(prior_hash(cfg.prior))
    deg_coll = f"calibration-{cfg.spec.hash}.degraded"
    out = f"calibration-{shash}.restored"
    simulate_images(uri, clean_ids, cfg.spec.text, cfg.seed, deg_coll, progress)
    restore_images(uri, clean_ids, cfg, deg_coll, out, progress, label="calibrate")
    truths = _truth(uri, store, clean_ids, out)
    rows = [{"image_id": i, "features": store.attrs(out, i)["features"], **truths[i]}
            for i in clean_ids]
    c = calibration
    cal = fit_calibration(store, rows, cfg, shash, c.alpha, c.method, c.pixel_epsilon,
                          c.pixel_delta, out)
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
    return {k: cal[k] for k in ("settings_hash", "alpha", "coverage", "n")}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("restoreflow", "torch", "diffusers", "peft", "zarr", "xarray", "numpy",
                "prefect", "dask", "distributed", "s3fs"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


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


def _pipeline(spec: dict, progress: bool) -> dict:
    import json
    import platform
    import socket

    import numpy as np

    from restoreflow.spec import RunSpec
    from restoreflow.stages import calibrate, config, models
    from restoreflow.tasks.common import open_store

    log = get_run_logger()
    run = RunSpec.from_dict(spec)
    settings = get_settings()
    uri = run.store or settings.store
    store = open_store(uri)
    cfg = config.RestoreConfig.from_run(run)
    started = time.time()
    run_id = names.run_id(run.name, run.hash, started)
    known = {r.get("run_id") for r in store.read_table(layout.RUNS_TABLE)}
    for k in range(2, 1000):  # two runs of one spec within a second: keep ids unique
        if run_id not in known:
            break
        run_id = f"{names.run_id(run.name, run.hash, started)}-{k}"
    timings: dict[str, float] = {}
    _reconcile_runs(store, log)
    # the row says "running" until the manifest exists; a kill leaves it so, and the
    # next run on this store marks it "interrupted"
    store.upsert_row(layout.RUNS_TABLE,
                     {"run_id": run_id, "name": run.name, "spec_hash": run.hash, "store": uri,
                      "status": "running", "started": started}, key=("run_id",))

    t = time.perf_counter()
    rep = ingest_task(uri, run.sources)
    ids = _ids(rep)
    rejected = [r for r in rep["rows"] if r["status"] == "rejected"]
    for r in rejected:
        log.warning("REJECTED %s: %s", r["source"], r["reason"])
    _require_images(ids, rejected, "spec.sources")
    timings["ingest"] = time.perf_counter() - t

    y_coll = layout.DEGRADED if run.simulate else layout.INPUT
    if run.simulate:
        t = time.perf_counter()
        simulate_images(uri, ids, cfg.degradation, cfg.seed, layout.DEGRADED, progress)
        timings["simulate"] = time.perf_counter() - t

    if run.adapt.enabled:
        t = time.perf_counter()
        corpus_ids = _ids(ingest_task(uri, run.adapt.corpus)) if run.adapt.corpus else []
        with model_placement(settings):
            info = index_task.submit(uri, corpus_ids, cfg.index, cfg.adapt.embedder,
                                     settings.device).result()
        if info["size"] < cfg.adapt.neighbours:
            raise ValueError(f"adapt.neighbours={cfg.adapt.neighbours} but the reference index "
                             f"holds {info['size']} images; add to adapt.corpus or lower it")
        timings["index"] = time.perf_counter() - t

    shash = cfg.settings_hash(models.prior_hash(cfg.prior))
    calibration = calibrate.load_calibration(store, shash)
    if run.calibration and calibration is None:
        t = time.perf_counter()
        c = run.calibration
        clean_rep = ingest_task(uri, c.clean)
        clean_ids = _ids(clean_rep)
        _require_images(clean_ids, [r for r in clean_rep["rows"] if r["status"] == "rejected"],
                        "spec.calibration.clean")
        overlap = sorted(set(clean_ids) & set(ids))
        if overlap:
            raise ValueError(f"{len(overlap)} calibration images are also run sources "
                             f"(e.g. {overlap[0]}); calibration images must be held out")
        calibration = run_calibration(uri, cfg, clean_ids, c, progress)
        timings["calibrate"] = time.perf_counter() - t

    t = time.perf_counter()
    done = restore_images(uri, ids, cfg, y_coll, layout.RESTORED, progress)
    timings["restore"] = time.perf_counter() - t
    stage = {k: sum(r["timings"].get(k, 0.0) for r in done.values())
             for k in ("retrieve", "adapt", "restore")}

    t = time.perf_counter()
    min_psnr = run.calibration.min_psnr if run.calibration else None
    truth = {}
    if run.simulate:
        truth = _truth(uri, store, ids, layout.RESTORED)
    rows, interval_futures = [], []
    for i in ids:
        attrs = store.attrs(layout.RESTORED, i)
        s = calibrate.score(attrs["features"], calibration, shash, min_psnr)
        if s["warning"]:
            log.warning("%s: %s", i, s["warning"])
        if s.get("lambda") is not None and cfg.restore.posterior_samples >= 2:
            calibrate.prepare_intervals(store, i, s["lambda"])
            interval_futures.append(intervals_task.submit(uri, i, s["lambda"]))
        rows.append({"image_id": i, "name": attrs.get("name"), "run_id": run_id,
                     "settings_hash": shash, "min_psnr": min_psnr, **s, **truth.get(i, {}),
                     "features": attrs["features"],
                     "neighbours": [n["id"] for n in attrs.get("neighbours", [])]})
    for f in interval_futures:
        i = f.result()
        for coll in (layout.INTERVAL_LO, layout.INTERVAL_HI):
            store.mark_complete(coll, i)
    store.append_rows(layout.QUALITY_TABLE, rows, key=("run_id", "image_id"))
    timings["score"] = time.perf_counter() - t

    exported: list[str] = []
    if run.export:
        t = time.perf_counter()
        futures = [export_task.submit(uri, coll, run.export.format, run.export.out, ids)
                   for coll in run.export.collections]
        exported = [p for f in futures for p in f.result()]
        timings["export"] = time.perf_counter() - t

    bounds = [r["psnr_lower"] for r in rows if r["psnr_lower"] is not None]
    summary = {
        "run_id": run_id, "name": run.name, "spec_hash": run.hash, "store": uri,
        "degradation": cfg.degradation, "sampler": cfg.restore.sampler,
        "steps": cfg.restore.steps, "adapt": cfg.adapt.enabled, "settings_hash": shash,
        "calibration": shash if calibration and calibration["settings_hash"] == shash else None,
        "counts": {"images": len(ids), "restored": len(done), "skipped": len(ids) - len(done),
                   "rejected": len(rejected), "flagged": sum(r["flagged"] for r in rows),
                   "exported": len(exported)},
        "mean_psnr_lower": float(np.mean(bounds)) if bounds else None,
        "mean_psnr_true": float(np.mean([v["psnr_true"] for v in truth.values()]))
        if truth else None,
        "timings": {**timings, **{f"{k}_compute": v for k, v in stage.items()}},
        "started": started, "finished": time.time(), "status": "running",
    }
    if run.report:
        from restoreflow.report.html import build_report

        t = time.perf_counter()
        store.upsert_row(layout.RUNS_TABLE, summary, key=("run_id",))  # the report reads it
        summary["report"] = str(build_report(store, run.report, run_id))
        summary["timings"]["report"] = time.perf_counter() - t
    manifest = {
        **summary, "spec": run.model_dump(mode="json"), "settings": settings.public(),
        "restore_config": cfg.to_dict(), "prior_hash": models.prior_hash(cfg.prior),
        "versions": _versions(), "host": socket.gethostname(), "platform": platform.platform(),
        "device": settings.device,
        "worker_devices": sorted({r["device"] for r in done.values() if r.get("device")}),
        "seeds": {"run": run.seed}, "rejected": rejected,
        "adapters": sorted({r["adapter"] for r in done.values() if r.get("adapter")}),
    }
    manifest["status"] = summary["status"] = "complete"
    store.put_bytes(f"runs/{run_id}/manifest.json", json.dumps(manifest, indent=1).encode())
    store.upsert_row(layout.RUNS_TABLE, summary, key=("run_id",))
    _artifacts(run.name, summary, rows)
    return summary


def _reconcile_runs(store, log) -> None:
    """Runs left "running" by a killed driver (this run holds the store's writer lock, so
    no other run is live): "complete" when its manifest was written (killed just after
    it), else "interrupted" (its quality rows, if any, stay, under that status)."""
    for row in store.read_table(layout.RUNS_TABLE):
        if row.get("status") != "running":
            continue
        done = store.exists(f"runs/{row['run_id']}/manifest.json")
        row["status"] = "complete" if done else "interrupted"
        store.upsert_row(layout.RUNS_TABLE, row, key=("run_id",))
        log.warning("run %s did not finish (killed?); recorded as %s", row["run_id"],
                    row["status"])


def _artifacts(name: str, summary: dict, rows: list[dict]) -> None:
    """Summary (markdown) and per-image quality table in the Prefect UI."""
    import re

    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    key = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "run"
    c = summary["counts"]
    md = [f"## restoreflow run `{summary['run_id']}`", "",
          f"- degradation `{summary['degradation']}`, {summary['sampler']} "
          f"{summary['steps']} steps, adaptation {'on' if summary['adapt'] else 'off'}",
          f"- images {c['images']}: restored {c['restored']}, skipped {c['skipped']}, "
          f"rejected {c['rejected']}, flagged {c['flagged']}",
          f"- calibration: {summary['calibration'] or 'none (no bounds)'}"]
    if summary.get("report"):
        md.append(f"- report: `{summary['report']}`")
    md += ["", "| stage | seconds |", "|---|---|"]
    md += [f"| {k} | {v:.1f} |" for k, v in summary["timings"].items()]
    create_markdown_artifact(markdown="\n".join(md), key=f"{key}-summary",
                             description="restoreflow run summary")
    table = [{"image": r.get("name") or r["image_id"], "image_id": r["image_id"],
              "psnr_lower": r["psnr_lower"], "ssim_lower": r["ssim_lower"],
              "psnr_true": r.get("psnr_true"), "flagged": r["flagged"]} for r in rows]
    if table:
        create_table_artifact(table=table, key=f"{key}-quality",
                              description="per-image conformal bounds")
