"""The ``restoreflow`` command line (typer). Every verb calls a flow or a core function.

Heavy libraries are imported inside the commands so that ``restoreflow --help`` is fast.
"""

from __future__ import annotations

import os
import shlex
from typing import Literal, get_args

import typer

from restoreflow import __version__

app = typer.Typer(
    name="restoreflow",
    help="Restore image collections with adapted diffusion priors and conformal guarantees.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"restoreflow {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """restoreflow: ingest, degrade, adapt, restore, score and export images."""
    _prefect_env()  # every verb, before anything imports Prefect


# --- commands are added below, one block per verb ---------------------------------


# the sampler registry's names as a typer choice, without importing torch for --help
# (tests/flows/test_cli_store.py keeps them equal to restoreflow.samplers.SAMPLERS)
SamplerName = Literal["ddpg", "ddnm", "dps", "diffpir"]
_SAMPLER_NAMES = get_args(SamplerName)
ExportFormat = Literal["png", "tiff", "fits"]
# the one wording of every --store option (restoreflow.settings.Settings.store)
_STORE_HELP = "Store URI (default: $RESTOREFLOW_STORE, else ./restoreflow-store)."
_OPTION_HELP = ("A sampler option, repeatable (e.g. --option gamma=8); a wrong name is "
                "refused with the sampler's options.")


@app.command("simulate")
def simulate_cmd(
    degradation: str = typer.Option(
        ..., "--degradation", "-d", help="e.g. 'gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)'"
    ),
    store: str = typer.Option(None, "--store", help=_STORE_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of kernels, masks and noise"),
    collection: str = typer.Option("degraded", "--collection", help="Output collection"),
) -> None:
    """Write a degraded copy of every input image (deterministic; reruns write nothing)."""
    from restoreflow.preflight import check_degradation_files
    from restoreflow.spec import DegradationSpec, SpecError

    try:
        spec = DegradationSpec.parse(degradation)
    except SpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="--degradation") from None
    _preflight(check_degradation_files, "--degradation", spec.text)
    ts = _open_store(store)
    _need_images(ts, "input", complete=True)
    uri = ts.uri
    _log_to_file("simulate")
    before = _image_names(uri)
    from restoreflow.flows.simulate import simulate_flow

    try:
        rows = simulate_flow(store=uri, degradation=spec.text, seed=seed,
                             collection=collection, progress=True)
    except Exception as exc:  # noqa: BLE001 - the traceback goes to the log file
        _flow_failed("simulate", exc, uri, before, "run the same command again")
    written = sum(r["status"] == "written" for r in rows)
    typer.echo(f"{collection}: {written} written, {len(rows) - written} already present "
               f"({spec.text}, seed {seed}, hash {spec.hash})")


# --- storage: ingest / export / ls / serve-s3 ----------------------------------------


def _open_store(store: str | None, tile_size: int | None = None):
    from restoreflow.settings import get_settings
    from restoreflow.storage.sources import strip_credentials
    from restoreflow.storage.store import TileStore

    settings = get_settings()
    try:
        return TileStore(store or settings.store, settings, tile_size=tile_size)
    except (ValueError, OSError) as exc:
        typer.echo(f"error: cannot open store {strip_credentials(store or settings.store)}: "
                   f"{type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from exc


def _listed_images(ts, collection: str) -> set[str]:
    """The image names of a collection from a directory listing (no metadata read)."""
    try:
        listed = ts.fs.ls(ts._full(collection), detail=False)
    except FileNotFoundError:
        return set()
    return {os.path.basename(str(p).rstrip("/")) for p in listed} - {"zarr.json"}


def _need_images(ts, collection: str | None = None, complete: bool = False) -> None:
    """One line and exit 2 when the store does not exist or holds no images (in
    ``collection``, else in any collection; ``complete``: complete ones), naming the
    next step. Only the verbs that ingest (ingest, run, calibrate, index build) create
    a store, so a mistyped store fails here and nothing is created."""
    from restoreflow.storage.sources import strip_credentials

    if ts.exists_store:
        for c in [collection] if collection else ts.collections():
            if ts.image_ids(c) if complete else _listed_images(ts, c):
                return
    where = strip_credentials(ts.uri)
    _fail(f"{where}: no store here (or no images in it): run "
          f"'restoreflow ingest SRC... --store {shlex.quote(where)}' first")


def _no_collection(ts, collection: str) -> None:
    """One line and exit 2: the store has no such collection (naming those it has)."""
    _fail(f"{ts.uri} has no collection {collection!r} "
          f"(it has: {', '.join(ts.collections()) or 'none'})")


@app.command()
def ingest(
    sources: list[str] = typer.Argument(
        ..., metavar="SRC...", help="Files, directories, globs or s3://bucket/prefix."
    ),
    store: str | None = typer.Option(None, "--store", help=_STORE_HELP),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 if any file was rejected."),
    tile_size: int | None = typer.Option(
        None, "--tile-size", min=16, help="Tile edge T for a NEW store."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
) -> None:
    """Ingest images into the store's `input` collection (incremental, content-addressed)."""
    from rich.console import Console

    from restoreflow.preflight import check_sources, check_store
    from restoreflow.settings import get_settings
    from restoreflow.storage.backend import is_backend_error
    from restoreflow.storage.ingest import IngestRejected
    from restoreflow.storage.ingest import ingest as run_ingest
    from restoreflow.storage.lock import StoreLocked

    settings = get_settings()
    _preflight(check_sources, "SRC", sources, settings)
    _preflight(check_store, "--store" if store else "RESTOREFLOW_STORE",
               store or settings.store, settings)
    ts = _open_store(store, tile_size)
    try:
        with ts.lock("restoreflow ingest", log=lambda m: typer.echo(m, err=True)):
            report = run_ingest(sources, ts, ts.settings, progress=progress, strict=strict)
        failed = False
    except IngestRejected as exc:
        report, failed = exc.report, True
    except Exception as exc:
        if not isinstance(exc, (ValueError, OSError, StoreLocked)) and not is_backend_error(exc):
            raise
        # the store failed (not a bad file): one line; what was ingested is kept
        _fail(_error_line(exc))
    for row in report.rejected:
        typer.echo(f"REJECTED {row.source}: {row.reason}")
    Console(width=160).print(report.summary_table())
    if failed:
        raise typer.Exit(1)


@app.command()
def export(
    store: str | None = typer.Option(None, "--store", help=_STORE_HELP),
    collection: str = typer.Option("input", "--collection", help="Collection to export."),
    fmt: ExportFormat = typer.Option(..., "--format", case_sensitive=False,
                                     help="File format."),
    out: str = typer.Option(..., "--out", help="Output directory."),
    image_id: list[str] | None = typer.Option(
        None, "--id", help="Export only these image ids (repeatable)."
    ),
) -> None:
    """Export a collection as PNG / TIFF / FITS files named <image_id>_<name>.<ext>."""
    from restoreflow.storage.export import export as run_export

    ts = _open_store(store)
    _need_images(ts)
    if collection not in ts.collections():
        _no_collection(ts, collection)
    try:
        paths = run_export(ts, collection, fmt, out, image_ids=image_id or None)
    except (KeyError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for p in paths:
        typer.echo(str(p))
    typer.echo(f"{len(paths)} file(s) written to {out}", err=True)


def _bytes_text(n: int | None) -> str:
    """A size in bytes as people read it: 512 B, 3.4 KiB, 12.0 MiB, 1.2 GiB."""
    if n is None:
        return "?"
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024:
            return f"{size:.1f} {unit}"
    return f"{size / 1024:.1f} TiB"


def _stored_bytes(ts, collection: str) -> int | None:
    """The collection's size on disk / on S3 (all its objects), None when unknown."""
    try:
        return int(ts.fs.du(ts._full(collection), total=True))
    except Exception:  # noqa: BLE001 - a listing that fails shows "?" rather than stopping ls
        return None


def _pixels(attrs: dict) -> int:
    shape = attrs.get("shape") or []
    return int(shape[0]) * int(shape[1]) if len(shape) >= 2 else 0


def _input_roles(ts, collections: list[str]) -> dict[str, str]:
    """{image id: role} for the input images that are not (only) sources: "calibration"
    (in a calibration-* collection: calibrate and a spec's calibration.clean), "corpus"
    (in a reference index: index build and a spec's adapt.corpus), both joined by ", ",
    with "source" too when the image was also degraded or restored as a source. The
    store records roles this way only; an image in none of them is a source."""
    import json

    calibration: set[str] = set()
    derived: set[str] = set()
    for c in collections:
        if c != "input":
            (calibration if c.startswith("calibration-") else derived).update(
                _listed_images(ts, c))
    corpus: set[str] = set()
    for path in ts.list_files("index"):
        if path.endswith("/index.json"):
            try:
                corpus.update(json.loads(ts.get_bytes(path)).get("ids", []))
            except (OSError, ValueError):
                continue
    roles = {}
    for iid in calibration | corpus:
        found = [r for r, ids in (("source", derived), ("calibration", calibration),
                                  ("corpus", corpus)) if iid in ids]
        roles[iid] = ", ".join(found)
    return roles


@app.command("ls")
def ls_store(
    collection: str | None = typer.Argument(
        None, help="List this collection's images (default: one row per collection)."),
    store: str | None = typer.Option(None, "--store", help=_STORE_HELP),
    images: bool = typer.Option(False, "--images", help="List the images of every collection."),
) -> None:
    """Summarise the store: one row per collection (images, complete, writing, megapixels,
    stored bytes). With --images or a COLLECTION: its images (id, name, size, dtype,
    status; for input also the role: source, calibration or corpus image)."""
    from rich.console import Console
    from rich.table import Table

    from restoreflow.storage.ingest import size_text

    ts = _open_store(store)
    _need_images(ts)
    cols = ts.collections()
    if collection is not None and collection not in cols:
        _no_collection(ts, collection)
    console = Console(width=160)
    console.print(f"store {ts.uri}  tile size {ts.tile_size}  collections: {len(cols)}")
    if collection is None and not images:
        t = Table()
        for col in ("collection", "images", "complete", "writing", "megapixels", "stored"):
            t.add_column(col, justify="left" if col == "collection" else "right")
        for c in cols:
            attrs = ts.image_attrs(c).values()
            done = sum(a.get("status") == "complete" for a in attrs)
            t.add_row(c, str(len(attrs)), str(done), str(len(attrs) - done),
                      f"{sum(_pixels(a) for a in attrs) / 1e6:.2f}",
                      _bytes_text(_stored_bytes(ts, c)))
        console.print(t)
        console.print("images of one collection: restoreflow ls COLLECTION; of all: --images")
        return
    for c in [collection] if collection is not None else cols:
        attrs = ts.image_attrs(c)
        done = sum(1 for a in attrs.values() if a.get("status") == "complete")
        roles = _input_roles(ts, cols) if c == "input" else None
        t = Table(title=f"{c}: {len(attrs)} image(s), {done} complete")
        for col in ("image id", "name", "size", "dtype", "status") + (
                ("role",) if roles is not None else ()):
            t.add_column(col, overflow="fold")
        for iid, a in attrs.items():
            row = [iid, str(a.get("name", "")), size_text(a.get("shape")),
                   str(a.get("dtype", "")), str(a.get("status", ""))]
            if roles is not None:
                row.append(roles.get(iid, "source"))
            t.add_row(*row)
        console.print(t)


@app.command("serve-s3")
def serve_s3(
    data_dir: str = typer.Option("restoreflow-s3", "--dir", help="Data directory."),
    port: int = typer.Option(0, "--port", help="S3 port (0: a free one; must be < 55535)."),
    bucket: str = typer.Option("restoreflow", "--bucket", help="Bucket to create."),
) -> None:
    """Run a local S3 server (SeaweedFS) on 127.0.0.1 until Ctrl-C (or SIGTERM)."""
    import os
    import signal
    import time

    def _stop(signum, frame):
        raise KeyboardInterrupt

    # explicit: a shell that starts us in the background has SIGINT ignored, and SIGTERM
    # (systemd, kill) must stop the server too rather than orphan it
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)

    from restoreflow.storage.s3server import free_ports, random_credentials, seaweedfs_server

    key = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    generated = not (key and secret)
    if generated:
        key, secret = random_credentials()
    ports = None
    if port:
        if not 1024 <= port < 55535:
            typer.echo("error: --port must be in 1024..55534 (gRPC uses port + 10000)", err=True)
            raise typer.Exit(2)
        ports = {"s3": port, **free_ports(("master", "volume", "filer", "admin", "webdav"),
                                         taken={port, port + 10000})}
    try:
        with seaweedfs_server(data_dir, key, secret, ports=ports, bucket=bucket) as srv:
            typer.echo(f"S3 endpoint: {srv.endpoint_url}  bucket: {srv.bucket}  "
                       f"data: {srv.data_dir}  log: {srv.log_path}")
            typer.echo("Use it with:")
            typer.echo(f"  export RESTOREFLOW_S3_ENDPOINT_URL={srv.endpoint_url}")
            typer.echo(f"  export RESTOREFLOW_STORE=s3://{srv.bucket}/restoreflow-store")
            if generated:
                typer.echo("  # credentials generated for this server (set them before "
                           "serve-s3 to choose your own):")
                typer.echo(f"  export AWS_ACCESS_KEY_ID={key}")
                typer.echo(f"  export AWS_SECRET_ACCESS_KEY={secret}")
            else:
                typer.echo("  # with the same AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY as here")
            typer.echo("Press Ctrl-C to stop.")
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        typer.echo("stopped")
    except (RuntimeError, TimeoutError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command("train-prior")
def train_prior_cmd(
    out: str = typer.Option(..., "--out", help="Output directory (checkpoints, log, prior/)"),
    steps: int = typer.Option(16000, min=1, help="Optimiser steps"),
    batch_size: int = typer.Option(16, min=1, help="Crops per step"),
    device: str = typer.Option(None, help="torch device (default: settings.device)"),
    max_minutes: float = typer.Option(None, help="Stop after this many minutes"),
    images: list[str] = typer.Option(None, "--image", help="Training images (default: corpus)"),
    init_from: str = typer.Option(
        None, "--init-from", help="Start from this prior's weights (same architecture)"),
    threads: int = typer.Option(None, min=1, help="torch CPU threads (default: all cores)"),
) -> None:
    """Train (or resume) the default diffusion prior; writes OUT/prior in diffusers format."""
    from restoreflow.flows.train_prior import train_prior_flow
    from restoreflow.settings import get_settings

    path = train_prior_flow(out_dir=out, steps=steps, batch_size=batch_size,
                            device=device or get_settings().resolved_device(),
                            max_minutes=max_minutes, images=images or None,
                            init_from=init_from, num_threads=threads)
    typer.echo(f"prior written to {path}")


# --- pipeline: restore / calibrate / run / rerun / report / index / serve / demo -------


# where a user's own Prefect setup is named; with none of these, each process gets a
# private ephemeral database (two verbs at once would lock a shared ~/.prefect/prefect.db)
_PREFECT_USER_SETTINGS = ("PREFECT_API_URL", "PREFECT_HOME",
                          "PREFECT_API_DATABASE_CONNECTION_URL",
                          "PREFECT_SERVER_DATABASE_CONNECTION_URL")


def _profile_settings() -> dict:
    """The settings of the active Prefect profile in the user's profiles.toml ({} if
    none); read as TOML, without importing Prefect."""
    import os
    import tomllib
    from pathlib import Path

    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    name = os.environ.get("PREFECT_PROFILE") or data.get("active") or "ephemeral"
    settings = (data.get("profiles") or {}).get(name) or {}
    return settings if isinstance(settings, dict) else {}


def _private_prefect_db() -> None:
    """A temporary SQLite database for this process's ephemeral Prefect server, removed
    at exit, unless the user chose a server, a home or a database (env or profile)."""
    import atexit
    import os
    import shutil
    import tempfile

    profile = _profile_settings()
    if any(os.environ.get(k) or profile.get(k) for k in _PREFECT_USER_SETTINGS):
        return
    tmp = tempfile.mkdtemp(prefix=f"restoreflow-prefect-{os.getpid()}-")
    # registered before Prefect's own atexit hooks, so it runs after its server stopped
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = (
        f"sqlite+aiosqlite:///{os.path.join(tmp, 'prefect.db')}")


def _prefect_env() -> None:
    """Quiet, offline Prefect settings for every verb (the user's env wins): no
    analytics (offline they log telemetry errors), WARNING logs, and a private
    ephemeral database per process (see ``_private_prefect_db``)."""
    import os

    level = os.environ.get("RESTOREFLOW_LOG_LEVEL", "WARNING").upper()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", level)
    # the private ephemeral server gets 20 s to start by default: a loaded machine (two
    # verbs at once beside a busy CPU) took longer and the verb failed
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # the embedded Dask cluster logs every worker start/stop at INFO; workers inherit this
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", level.lower())
    _private_prefect_db()
    import logging

    logging.getLogger("distributed").setLevel(level)


_LOG_FILE: str | None = None


def _log_to_file(verb: str) -> None:
    """Prefect's logs of this verb: warnings on the terminal, tracebacks in a log file
    (see restoreflow.clilog); call before anything imports Prefect."""
    global _LOG_FILE
    from restoreflow.clilog import configure

    _LOG_FILE = configure(verb, _profile_settings())


def _preflight(check, *args) -> None:
    """Run a restoreflow.preflight check; a failure is one line naming the field."""
    from restoreflow.preflight import PreflightError

    try:
        check(*args)
    except PreflightError as exc:
        _fail(str(exc))


_WORK_COLLECTIONS = ("input", "degraded", "restored")


def _image_names(uri: str) -> dict[str, set[str]] | None:
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
                out[coll] = _listed_images(ts, coll)
        return out
    except Exception:  # noqa: BLE001 - only the wording of the failure hint depends on it
        return None


def _completed_since(uri: str, before: dict[str, set[str]] | None) -> dict[str, int] | None:
    """{collection: images completed since ``before``} (new images whose status is
    complete), or None when unknown."""
    from restoreflow.storage.store import TileStore

    after = _image_names(uri)
    if before is None or after is None:
        return None
    try:
        ts = TileStore(uri)
        done = {c: sum(ts.status(c, i) == "complete" for i in names - before.get(c, set()))
                for c, names in after.items()}
    except Exception:  # noqa: BLE001 - only the wording of the failure hint depends on it
        return None
    return {c: n for c, n in done.items() if n}


def _flow_failed(what: str, exc: BaseException, uri: str,
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
    _fail(f"{what} failed: {_error_line(exc)}. {hint}{where}", code=1)


def _on_dask(flow_obj):
    """The flow with the configured Dask task runner (embedded LocalCluster or address)."""
    from restoreflow.settings import get_settings
    from restoreflow.tasks.runner import dask_task_runner

    return flow_obj.with_options(task_runner=dask_task_runner(get_settings()))


def _fail(msg: str, code: int = 2):
    """Print the one-line error and exit. asyncio's "exception was never retrieved"
    reports of the same failure (e.g. zarr's other writes when the disk is full) would
    only repeat it as tracebacks at exit, so they are silenced."""
    import logging

    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def print_summary(summary: dict) -> None:
    """The run summary as a rich table (images, bounds, flags, time per stage)."""
    from rich.console import Console
    from rich.table import Table

    c = summary["counts"]
    t = Table(title=f"run {summary['run_id']}")
    t.add_column("what")
    t.add_column("value", justify="right")
    for k in ("images", "restored", "skipped", "rejected", "flagged", "exported"):
        t.add_row(k, str(c.get(k, 0)))
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


def _error_line(exc: BaseException) -> str:
    """``Type: message`` on one line (the flow's log above holds the traceback)."""
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg[:500]}" if msg else type(exc).__name__


# fields of RestoreConfig and CalibrationOptions -> the flag that sets them
_CONFIG_FLAGS = {"degradation": "--degradation", "seed": "--seed", "prior": "--prior",
                 "restore.sampler": "--sampler", "restore.steps": "--steps",
                 "restore.options": "--option", "restore.posterior_samples": "--samples",
                 "adapt.enabled": "--adapt", "adapt.neighbours": "--neighbours",
                 "adapt.steps": "--adapt-steps", "clean": "--clean", "alpha": "--alpha"}


def _sampler_options(items: list[str] | None) -> dict:
    """``--option KEY=VALUE`` (repeatable) as a dict: ``8`` an int, ``0.5`` or ``1e-5`` a
    float, ``true``/``false`` a bool, anything else the text (as a run spec's YAML)."""
    out: dict = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key:
            _fail(f"--option: expected KEY=VALUE, got {item!r}")
        if key in out:
            _fail(f"--option: {key!r} given twice")
        out[key] = _option_value(text)
    return out


def _option_value(text: str):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _validated(model, **fields):
    """``model(**fields)`` (the restore settings, the calibration options): a bad value is
    one line naming its flag, before anything is opened or written."""
    from pydantic import ValidationError

    try:
        return model(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
        msg = " ".join(err["msg"].removeprefix("Value error, ").split())
        _fail(f"{_CONFIG_FLAGS.get(where, where or 'settings')}: {msg}")


def _run_spec(spec, verb: str) -> dict:
    """Check the spec (one line and nothing created on a failure), then run it."""
    from restoreflow.preflight import check_run
    from restoreflow.settings import get_settings

    _preflight(check_run, spec, get_settings(), "spec")
    _log_to_file(verb)
    uri = spec.store or get_settings().store
    before = _image_names(uri)
    from restoreflow.flows.pipeline import pipeline_flow

    try:
        summary = _on_dask(pipeline_flow)(spec=spec.model_dump(mode="json"), progress=True)
    except Exception as exc:  # noqa: BLE001 - the traceback goes to the log file
        _flow_failed(f"run {spec.name!r}", exc, uri, before, "run the same spec again")
    print_summary(summary)
    return summary


@app.command("run")
def run_cmd(spec_path: str = typer.Argument(..., metavar="SPEC.yaml")) -> None:
    """Run a pipeline spec end to end (ingest, simulate, adapt, restore, score, export)."""
    from restoreflow.spec import RunSpec, SpecError

    try:
        spec = RunSpec.from_yaml(spec_path)
    except SpecError as exc:
        _fail(str(exc))
    _run_spec(spec, "run")


@app.command("rerun")
def rerun_cmd(
    manifest: str = typer.Argument(..., help="A run manifest (runs/<id>/manifest.json)"),
    store: str = typer.Option(None, "--store", help="Run into this store instead"),
) -> None:
    """Run the spec recorded in a manifest again (bit-identical outputs on the same device)."""
    import json

    from restoreflow.spec import RunSpec, SpecError

    try:
        data = json.loads(open(manifest, encoding="utf-8").read())
        spec = RunSpec.from_dict({**data["spec"], **({"store": store} if store else {})})
        # manifests record absolute paths; those of older ones (and --store) are taken
        # against the current directory, and recorded absolute in the new manifest
        spec = spec.resolved(os.getcwd(), where=manifest, degradation_files=False)
    except (OSError, ValueError, KeyError, TypeError, SpecError) as exc:
        _fail(f"{manifest}: not a run manifest ({_error_line(exc)})")
    _run_spec(spec, "rerun")


@app.command("restore")
def restore_cmd(
    degradation: str = typer.Option(..., "--degradation", "-d", help="The degradation of y"),
    store: str = typer.Option(None, "--store", help=_STORE_HELP),
    sampler: SamplerName = typer.Option("ddpg", "--sampler", help="Guided sampler."),
    steps: int = typer.Option(100, "--steps", min=1, max=1000),
    seed: int = typer.Option(0, "--seed"),
    collection: str = typer.Option("degraded", "--collection", help="Collection holding y"),
    out: str = typer.Option("restored", "--out", help="Output collection"),
    samples_: int = typer.Option(1, "--samples", min=1, max=64, help="Posterior samples J"),
    adapt: bool = typer.Option(False, "--adapt/--no-adapt", help="ADIR adaptation"),
    neighbours: int = typer.Option(8, "--neighbours", min=1),
    adapt_steps: int = typer.Option(None, "--adapt-steps", min=1),
    prior: str = typer.Option(None, "--prior", help="diffusers model dir or hub id"),
    option: list[str] = typer.Option(None, "--option", metavar="KEY=VALUE",
                                     help=_OPTION_HELP),
) -> None:
    """Restore a degraded collection (one model task per image; reruns skip done images)."""
    from restoreflow.preflight import check_degradation_files, check_prior, check_store
    from restoreflow.settings import get_settings
    from restoreflow.spec import DegradationSpec, SpecError
    from restoreflow.stages.config import RestoreConfig

    try:
        spec = DegradationSpec.parse(degradation)
    except SpecError as exc:
        _fail(str(exc))
    cfg = _validated(
        RestoreConfig, degradation=spec.text, seed=seed, prior=prior,
        restore={"sampler": sampler, "steps": steps, "posterior_samples": samples_,
                 "options": _sampler_options(option)},
        adapt={"enabled": adapt, "neighbours": neighbours, "steps": adapt_steps})
    settings = get_settings()
    _preflight(check_degradation_files, "--degradation", spec.text)
    _preflight(check_prior, "--prior" if prior else "RESTOREFLOW_PRIOR" if settings.prior
               else "the shipped prior", prior or settings.prior)
    _preflight(check_store, "--store" if store else "RESTOREFLOW_STORE",
               store or settings.store, settings)
    ts = _open_store(store)
    _need_images(ts)
    if collection not in ts.collections():
        _no_collection(ts, collection)
    _log_to_file("restore")
    before = _image_names(ts.uri)
    from restoreflow.flows.restore import restore_flow

    try:
        res = _on_dask(restore_flow)(store=ts.uri, cfg=cfg, y_collection=collection, out=out,
                                     progress=True)
    except Exception as exc:  # noqa: BLE001 - the traceback goes to the log file
        _flow_failed("restore", exc, ts.uri, before, "run the same command again")
    typer.echo(f"{out}: {len(res['restored'])} restored, {len(res['skipped'])} already done")


@app.command("calibrate")
def calibrate_cmd(
    clean: list[str] = typer.Option(..., "--clean", help="Clean calibration images (sources)"),
    degradation: str = typer.Option(..., "--degradation", "-d"),
    store: str = typer.Option(None, "--store", help=_STORE_HELP),
    sampler: SamplerName = typer.Option("ddpg", "--sampler", help="Guided sampler."),
    steps: int = typer.Option(100, "--steps", min=1, max=1000),
    samples_: int = typer.Option(4, "--samples", min=1, max=64),
    alpha: float = typer.Option(0.1, "--alpha", min=0.001, max=0.999),
    prior: str = typer.Option(None, "--prior"),
    option: list[str] = typer.Option(None, "--option", metavar="KEY=VALUE",
                                     help=_OPTION_HELP),
) -> None:
    """Calibrate conformal PSNR/SSIM bounds for these restore settings."""
    from restoreflow.preflight import (
        check_degradation_files,
        check_prior,
        check_sources,
        check_store,
    )
    from restoreflow.settings import get_settings
    from restoreflow.spec import CalibrationOptions, DegradationSpec, SpecError
    from restoreflow.stages.config import RestoreConfig

    try:
        spec = DegradationSpec.parse(degradation)
    except SpecError as exc:
        _fail(str(exc))
    cfg = _validated(
        RestoreConfig, degradation=spec.text, prior=prior,
        restore={"sampler": sampler, "steps": steps, "posterior_samples": samples_,
                 "options": _sampler_options(option)})
    calibration = _validated(CalibrationOptions, clean=clean, alpha=alpha)
    settings = get_settings()
    _preflight(check_degradation_files, "--degradation", spec.text)
    _preflight(check_sources, "--clean", clean, settings, False)
    _preflight(check_prior, "--prior" if prior else "RESTOREFLOW_PRIOR" if settings.prior
               else "the shipped prior", prior or settings.prior)
    _preflight(check_store, "--store" if store else "RESTOREFLOW_STORE",
               store or settings.store, settings)
    ts = _open_store(store)
    _log_to_file("calibrate")
    before = _image_names(ts.uri)
    from restoreflow.flows.pipeline import calibrate_flow

    try:
        res = _on_dask(calibrate_flow)(store=ts.uri, cfg=cfg, calibration=calibration,
                                       progress=True)
    except Exception as exc:  # noqa: BLE001 - the traceback goes to the log file
        _flow_failed("calibrate", exc, ts.uri, before, "run the same command again")
    typer.echo(f"calibration {res['settings_hash']}: n={res['n']}, alpha={res['alpha']}, "
               f"coverage on calibration images {res['coverage']}")


@app.command("report")
def report_cmd(
    store: str = typer.Option(None, "--store", help=_STORE_HELP),
    run: str = typer.Option(None, "--run", help="Run id (default: the latest)"),
    out: str = typer.Option("report.html", "--out", help="Output HTML file"),
) -> None:
    """Write a static, self-contained HTML report of a run."""
    from restoreflow.report.html import build_report

    ts = _open_store(store)
    _need_images(ts)
    path = build_report(ts, out, run)
    typer.echo(f"report: {path}")


index_app = typer.Typer(help="The reference index used to retrieve neighbours.",
                        no_args_is_help=True)
app.add_typer(index_app, name="index")


@index_app.command("build")
def index_build(
    corpus: list[str] = typer.Option(..., "--corpus", help="Reference images (sources)"),
    store: str = typer.Option(None, "--store", help=_STORE_HELP),
    embedder: str = typer.Option("efficientnet-lite0", "--embedder",
                                 help="efficientnet-lite0 or clip:<dir-or-hub-id>"),
    name: str = typer.Option("default", "--name"),
) -> None:
    """Ingest a reference corpus and embed it (incremental)."""
    from restoreflow.retrieval.stored import build_index
    from restoreflow.settings import get_settings
    from restoreflow.storage.ingest import ingest as run_ingest

    ts = _open_store(store)
    with ts.lock("restoreflow index build", log=lambda m: typer.echo(m, err=True)):
        rep = run_ingest(corpus, ts, ts.settings, progress=True)
        for row in rep.rejected:
            typer.echo(f"REJECTED {row.source}: {row.reason}")
        ids = list(dict.fromkeys(r.image_id for r in rep.rows if r.image_id))
        info = build_index(ts, ids, name, embedder, get_settings().resolved_device())
    typer.echo(f"index {name}: {info['added']} added, {info['size']} images "
               f"({info['embedder']}, weights {info['weights_hash'][:12]})")


@index_app.command("search")
def index_search(
    image: str = typer.Argument(..., help="An image file"),
    k: int = typer.Option(5, "-k", min=1),
    store: str = typer.Option(None, "--store", help=_STORE_HELP),
    name: str = typer.Option("default", "--name"),
) -> None:
    """Print the k reference images nearest to IMAGE, with scores."""
    import torch

    from restoreflow.models.embedders import get_embedder
    from restoreflow.retrieval.stored import load_index
    from restoreflow.storage.decode import ImageRejected
    from restoreflow.storage.readers import read_image
    from restoreflow.storage.values import normalisation, to_normalised

    ts = _open_store(store)
    index = load_index(ts, name)
    if index is None:
        _fail(f"{ts.uri} has no index {name!r}; run `restoreflow index build`")
    try:
        arr, _ = read_image(open(image, "rb").read(), image)
    except (OSError, ImageRejected) as exc:
        _fail(f"{image}: {exc}")
    x = torch.from_numpy(to_normalised(arr, *normalisation(arr)))
    x = x[None] if x.dim() == 2 else x.permute(2, 0, 1)
    emb = get_embedder(index.embedder_name)
    scores, ids = index.search(emb.embed(x[None].clamp(0, 1)).numpy(), k)
    for s, i in zip(scores[0], ids[0], strict=True):
        typer.echo(f"{s:.4f}  {i}  {ts.attrs('input', i).get('name', '')}")


@app.command("demo")
def demo_cmd(
    workdir: str = typer.Option("restoreflow-demo", "--dir", help="Working directory"),
) -> None:
    """The main job on embedded defaults: bundled photos, blur+noise, adapt, restore,
    calibrated bounds, report (local store, in-process Prefect, local Dask cluster)."""
    from restoreflow.demo import prepare_demo
    from restoreflow.spec import RunSpec

    spec = RunSpec.from_dict(prepare_demo(workdir))
    typer.echo(f"demo: {len(spec.sources)} source folder(s), store {spec.store}, "
               f"{spec.degradation}")
    _run_spec(spec, "demo")


@app.command("serve")
def serve_cmd(
    spec_path: str = typer.Argument(..., metavar="SPEC.yaml"),
    cron: str = typer.Option("0 2 * * *", "--cron", help="When to run (cron, UTC)"),
    name: str = typer.Option(None, "--name", help="Deployment name (default: the spec's)"),
) -> None:
    """Serve the pipeline on a schedule from this host (Prefect deployment + runner).

    Needs a Prefect server (PREFECT_API_URL), e.g. `prefect server start --host 127.0.0.1`.
    """
    from restoreflow.spec import RunSpec, SpecError

    try:
        spec = RunSpec.from_yaml(spec_path)
    except SpecError as exc:
        _fail(str(exc))
    try:
        from prefect.client.schemas.schedules import CronSchedule

        CronSchedule(cron=cron)
    except ValueError as exc:
        _fail(f"--cron {cron!r}: {exc}")
    from restoreflow.flows.pipeline import pipeline_flow

    typer.echo(f"serving {name or spec.name} on cron {cron!r} (Ctrl-C stops)")
    _on_dask(pipeline_flow).serve(name=name or spec.name, cron=cron,
                                  parameters={"spec": spec.model_dump(mode="json")})


if __name__ == "__main__":
    app()
