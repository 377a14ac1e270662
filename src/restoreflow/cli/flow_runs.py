"""A verb that runs a flow: the log file that takes Prefect's logs, the Dask task runner,
the one line that reports a failed flow (with what it completed before it failed), and
the run summary."""

from __future__ import annotations

import os

import typer

from restoreflow.cli.runtime import error_line, fail, private_server_ready, profile_settings

_LOG_FILE: str | None = None


def log_to_file(verb: str) -> None:
    """Prefect's logs of this verb: warnings on the terminal, tracebacks in a log file
    (see restoreflow.clilog); call before anything imports Prefect."""
    global _LOG_FILE
    from restoreflow.cli.runtime import seed_prefect_db
    from restoreflow.clilog import configure
    from restoreflow.watchdog import watch_this_process

    _LOG_FILE = configure(verb, profile_settings())
    watch_this_process()  # the Prefect server and Dask processes end with this verb
    typer.echo(f"{verb}: starting Prefect and the workers...", err=True)  # a few seconds
    seed_prefect_db()  # the verb runs flows: its Prefect server starts sooner


_WORK_COLLECTIONS = ("input", "degraded", "restored")


def image_names(uri: str) -> dict[str, set[str]] | None:
    """The image names (directory listings, no metadata read) in the store's work
    collections and calibration collections, or None when they cannot be listed."""
    from restoreflow.storage.store import TileStore

    try:
        ts = TileStore(uri)
        if not ts.exists_store:
            return {}
        out = {}
        for coll in ts.collections():
            if coll in _WORK_COLLECTIONS or coll.startswith("calibration-"):
                out[coll] = ts.listed_ids(coll)
        return out
    except Exception:  # noqa: BLE001 - only the wording of the failure hint depends on it
        return None


def _completed_since(uri: str, before: dict[str, set[str]] | None) -> dict[str, int] | None:
    """{collection: images completed since ``before``} (new images whose status is
    complete), or None when unknown."""
    from restoreflow.storage.store import TileStore

    after = image_names(uri)
    if before is None or after is None:
        return None
    try:
        ts = TileStore(uri)
        done = {c: sum(ts.status(c, i) == "complete" for i in names - before.get(c, set()))
                for c, names in after.items()}
    except Exception:  # noqa: BLE001 - only the wording of the failure hint depends on it
        return None
    return {c: n for c, n in done.items() if n}


def flow_failed(what: str, exc: BaseException, uri: str,
                 before: dict[str, set[str]] | None, again: str) -> None:
    """One line for a flow that failed mid-run: the error; what it completed (kept,
    and skipped by ``again``) or that it completed nothing; and the log file that holds
    the traceback."""
    from restoreflow.clilog import log_failure

    if _LOG_FILE is not None:
        log_failure(what, exc)
    done = _completed_since(uri, before)
    if done is None:
        hint = f"Completed images are kept: {again} to resume."
    elif done:
        counts = ", ".join(f"{n} {c}" for c, n in sorted(done.items()))
        hint = f"Completed images are kept ({counts}): {again} to resume."
    else:
        hint = "No image was completed: fix the cause and run again."
    where = (f" Log: {_LOG_FILE}" if _LOG_FILE is not None and os.path.isfile(_LOG_FILE)
             else "")
    fail(f"{what} failed: {error_line(exc)}. {hint}{where}", code=1)


def on_dask(flow_obj):
    """The flow with the configured Dask task runner (embedded LocalCluster or address)."""
    from restoreflow.settings import get_settings
    from restoreflow.tasks.runner import dask_task_runner
    from restoreflow.watchdog import watch_this_process

    watch_this_process()  # the cluster's processes end with this verb
    private_server_ready()
    return flow_obj.with_options(task_runner=dask_task_runner(get_settings()))


def print_summary(summary: dict) -> None:
    """The run summary as a rich table (images, bounds, flags, time per stage)."""
    from rich.console import Console
    from rich.table import Table

    c = summary["counts"]
    t = Table(title=f"run {summary['run_id']}")
    t.add_column("what")
    t.add_column("value", justify="right")
    for k in ("images", "restored", "skipped", "rejected", "flagged", "out_of_calibration",
              "exported"):
        t.add_row(k.replace("_", " "), str(c.get(k, 0)))
    for k, label in (("mean_psnr_true", "mean PSNR (true, dB)"),
                     ("mean_psnr_lower", "mean PSNR lower bound (dB)")):
        if summary.get(k) is not None:
            t.add_row(label, f"{summary[k]:.2f}")
    t.add_row("calibration", summary["calibration"] or "none (no bounds)")
    for k, v in summary["timings"].items():
        t.add_row(f"time {k} (s)", f"{v:.1f}")
    Console(width=120).print(t)
    if summary.get("report"):
        typer.echo(f"report: {summary['report']}")
