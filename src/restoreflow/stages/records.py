"""The records of a pipeline run (driver side): its row in the ``runs`` table, the
``quality`` rows of its images, its summary and its manifest, and their forms in the
Prefect UI. The flow calls these; the row types are in :mod:`restoreflow.storage.layout`.

A run's row says ``running`` from its start until its manifest is written
(``runs/<run_id>/manifest.json``), then ``complete``. A driver killed in between leaves it
``running``; the next run on the store (which holds the store's writer lock, so no other
run is live) marks it ``complete`` when its manifest exists, else ``interrupted``
(:func:`reconcile_runs`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from restoreflow.spec import RunSpec
from restoreflow.stages.config import RestoreConfig
from restoreflow.storage.layout import (
    QUALITY_TABLE,
    RUNS_TABLE,
    QualityRow,
    RunCounts,
    RunRow,
    out_of_sample_coverage,
)
from restoreflow.storage.store import TileStore

#: packages whose versions a manifest records
PACKAGES = ("restoreflow", "torch", "diffusers", "peft", "zarr", "xarray", "numpy", "prefect",
            "dask", "distributed", "s3fs")


def manifest_path(run_id: str) -> str:
    return f"runs/{run_id}/manifest.json"


# ---- the run's row ----------------------------------------------------------------------


def unique_run_id(store: TileStore, base: str) -> str:
    """``base`` (``names.run_id``), or ``base-2``, ``base-3``... when the runs table has it
    (two runs of one spec within a second)."""
    known = {r.get("run_id") for r in store.read_table(RUNS_TABLE)}
    run_id = base
    for k in range(2, 1000):
        if run_id not in known:
            break
        run_id = f"{base}-{k}"
    return run_id


def reconcile_runs(store: TileStore) -> list[dict]:
    """Mark the runs left ``running`` by a killed driver ``complete`` (its manifest was
    written: killed just after it) or ``interrupted`` (its quality rows, if any, stay).
    Returns the rows changed. Call it holding the store's writer lock."""
    changed = []
    for row in store.read_table(RUNS_TABLE):
        if row.get("status") != "running":
            continue
        done = store.exists(manifest_path(row["run_id"]))
        row = {**row, "status": "complete" if done else "interrupted"}
        store.upsert_row(RUNS_TABLE, row, key=("run_id",))
        changed.append(row)
    return changed


def start_row(run_id: str, run: RunSpec, store_uri: str, started: float) -> RunRow:
    return RunRow(run_id=run_id, name=run.name, spec_hash=run.hash, store=store_uri,
                  status="running", started=started)


def failed_row(start: RunRow, exc: BaseException) -> RunRow:
    """The row of a run that stopped on an error: ``failed``, with the error's first line
    (at most 300 characters) and when it stopped."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return start.model_copy(update={"status": "failed", "error": text,
                                    "finished": time.time()})


@contextmanager
def running(store: TileStore, spec: RunSpec, uri: str, make_id, warn) -> Iterator[RunRow]:
    """Record a run as running for the duration of the block (yields its start row): runs
    of this store that never finished (killed) are first recorded as interrupted (each
    reported through ``warn``); the row says "running" until the manifest exists, and
    "failed" when the block raises. ``make_id(name, spec_hash, started)`` gives the run
    id's base (made unique in the store)."""
    started = time.time()
    start = start_row(unique_run_id(store, make_id(spec.name, spec.hash, started)), spec, uri,
                      started)
    for row in reconcile_runs(store):
        warn(f"run {row['run_id']} did not finish (killed?); recorded as {row['status']}")
    record_run(store, start)
    try:
        yield start
    except Exception as exc:
        record_run(store, failed_row(start, exc))
        raise


def record_run(store: TileStore, row: RunRow) -> None:
    """Write (or replace) the run's row in the runs table."""
    store.upsert_row(RUNS_TABLE, row.to_row(), key=("run_id",))


# ---- per image --------------------------------------------------------------------------


def quality_row(image_id: str, attrs: Mapping, run_id: str, settings_hash: str,
                min_psnr: float | None, score: Mapping, truth: Mapping | None = None
                ) -> QualityRow:
    """An image's quality row from its restored image's attrs (name, features,
    neighbours), its score (``calibrate.score``) and, when simulated, its true metrics."""
    return QualityRow(image_id=image_id, name=attrs.get("name"), run_id=run_id,
                      settings_hash=settings_hash, min_psnr=min_psnr, **score, **(truth or {}),
                      features=attrs["features"],
                      neighbours=[n["id"] for n in attrs.get("neighbours", [])])


def record_quality(store: TileStore, rows: Iterable[QualityRow]) -> int:
    """Append the rows to the quality table (one per run and image); returns how many."""
    return store.append_rows(QUALITY_TABLE, [r.to_row() for r in rows],
                             key=("run_id", "image_id"))


# ---- at the end -------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    import numpy as np

    return float(np.mean(values)) if values else None


def run_summary(start: RunRow, cfg: RestoreConfig, settings_hash: str,
                calibration: Mapping | None, image_ids: list[str],
                results: Mapping[str, Mapping], rejected: int, rows: list[QualityRow],
                exported: int, truth: Mapping[str, Mapping],
                timings: Mapping[str, float]) -> RunRow:
    """The run's row when its work is done (still ``running``: its manifest is next).
    ``calibration``: the one the images were scored with (None: not calibrated);
    ``results``: the restore task results of the images restored now (skipped ones are
    absent), whose retrieve/adapt/restore times are summed into ``<stage>_compute``
    (retrieve and adapt only with adaptation on)."""
    bounds = [r.psnr_lower for r in rows if r.psnr_lower is not None]
    certified = bool(calibration) and calibration["settings_hash"] == settings_hash
    stages = ("retrieve", "adapt", "restore") if cfg.adapt.enabled else ("restore",)
    compute = {f"{k}_compute": sum(r["timings"].get(k, 0.0) for r in results.values())
               for k in stages}
    return RunRow(
        run_id=start.run_id, name=start.name, spec_hash=start.spec_hash, store=start.store,
        degradation=cfg.degradation, sampler=cfg.restore.sampler, steps=cfg.restore.steps,
        adapt=cfg.adapt.enabled, settings_hash=settings_hash,
        calibration=settings_hash if certified else None,
        counts=RunCounts(images=len(image_ids), restored=len(results),
                         skipped=len(image_ids) - len(results), rejected=rejected,
                         flagged=sum(r.flagged for r in rows), exported=exported,
                         out_of_calibration=sum(bool(r.out_of_calibration) for r in rows)),
        mean_psnr_lower=_mean(bounds),
        mean_psnr_true=_mean([v["psnr_true"] for v in truth.values()]),
        timings={**timings, **compute}, started=start.started, finished=time.time(),
        status="running",
    )


def with_report(summary: RunRow, report: str, seconds: float) -> RunRow:
    """The summary with the report's path and the time it took to write."""
    return summary.model_copy(update={"report": report,
                                      "timings": {**summary.timings, "report": seconds}})


def write_report(store: TileStore, path: str, summary: RunRow) -> RunRow:
    """Write the HTML report (it reads the run's row, recorded first); the summary with
    the report's path and time."""
    from restoreflow.report.html import build_report

    t = time.perf_counter()
    record_run(store, summary)
    written = str(build_report(store, path, summary.run_id))
    return with_report(summary, written, time.perf_counter() - t)


def versions(packages: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def calibration_summary(calibration: Mapping | None) -> dict | None:
    """What a manifest says of the calibration the run was scored with: its size, its
    out-of-sample coverage (never the in-sample figure) and its warnings."""
    if not calibration:
        return None
    return {"settings_hash": calibration["settings_hash"], "alpha": calibration["alpha"],
            "images": calibration.get("n"), "sources": calibration.get("sources"),
            "coverage_out_of_sample": out_of_sample_coverage(calibration),
            "warnings": calibration.get("warnings", [])}


def run_manifest(summary: RunRow, run: RunSpec, cfg: RestoreConfig, prior_hash: str,
                 settings, results: Mapping[str, Mapping], rejected: list[dict],
                 calibration: Mapping | None = None) -> dict:
    """The manifest of a complete run: its summary, the spec, the settings without
    credentials, the restore config, versions, host and devices, seeds, the rejected
    sources, the adapters used and the calibration (:func:`calibration_summary`).
    ``results``: the restore task results of this run."""
    import platform
    import socket

    return {
        **summary.to_row(), "spec": run.model_dump(mode="json"), "settings": settings.public(),
        "restore_config": cfg.model_dump(mode="json"), "prior_hash": prior_hash,
        "versions": versions(), "host": socket.gethostname(), "platform": platform.platform(),
        "device": settings.device,
        "worker_devices": sorted({r["device"] for r in results.values() if r.get("device")}),
        "seeds": {"run": run.seed}, "rejected": rejected,
        "adapters": sorted({r["adapter"] for r in results.values() if r.get("adapter")}),
        "calibration_summary": calibration_summary(calibration),
        "status": "complete",
    }


def finish_run(store: TileStore, summary: RunRow, manifest: dict) -> RunRow:
    """Write the manifest, then mark the run's row complete (in this order: see the module
    docstring). Returns the complete row."""
    done = summary.model_copy(update={"status": "complete"})
    store.put_bytes(manifest_path(summary.run_id), json.dumps(manifest, indent=1).encode())
    record_run(store, done)
    return done


# ---- the Prefect UI ---------------------------------------------------------------------


def summary_markdown(summary: RunRow) -> str:
    """The run summary as markdown (a Prefect artifact)."""
    c = summary.counts
    md = [f"## restoreflow run `{summary.run_id}`", "",
          f"- degradation `{summary.degradation}`, {summary.sampler} "
          f"{summary.steps} steps, adaptation {'on' if summary.adapt else 'off'}",
          f"- images {c.images}: restored {c.restored}, skipped {c.skipped}, "
          f"rejected {c.rejected}, flagged {c.flagged}",
          f"- calibration: {summary.calibration or 'none (no bounds)'}"]
    if summary.report:
        md.append(f"- report: `{summary.report}`")
    md += ["", "| stage | seconds |", "|---|---|"]
    md += [f"| {k} | {v:.1f} |" for k, v in summary.timings.items()]
    return "\n".join(md)


def quality_table(rows: Iterable[QualityRow]) -> list[dict]:
    """The per-image bounds as a table (a Prefect artifact)."""
    return [{"image": r.name or r.image_id, "image_id": r.image_id, "psnr_lower": r.psnr_lower,
             "ssim_lower": r.ssim_lower, "psnr_true": r.psnr_true, "flagged": r.flagged,
             "out_of_calibration": r.out_of_calibration}
            for r in rows]
