"""The verbs on a store's images that use no diffusion model: simulate (degraded copies),
ingest, export, ls, and serve-s3 (a local S3 server to hold stores)."""

from __future__ import annotations

import shlex

import typer

from restoreflow.cli.flow_runs import flow_failed, image_names, log_to_file
from restoreflow.cli.options import STORE_HELP, ExportFormat
from restoreflow.cli.runtime import error_line, fail, private_server_ready, run_preflight
from restoreflow.cli.store_checks import need_images, no_collection, open_cli_store
from restoreflow.cli.typer_app import app
from restoreflow.stages.roles import input_roles


@app.command("simulate")
def simulate_cmd(
    degradation: str = typer.Option(
        ..., "--degradation", "-d", help="e.g. 'gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)'"
    ),
    store: str = typer.Option(None, "--store", help=STORE_HELP),
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
    run_preflight(check_degradation_files, "--degradation", spec.text)
    ts = open_cli_store(store)
    need_images(ts, "input", complete=True, given=store)
    uri = ts.uri
    log_to_file("simulate")
    before = image_names(uri)
    from restoreflow.flows.simulate import simulate_flow

    private_server_ready()
    try:
        rows = simulate_flow(store=uri, degradation=spec.text, seed=seed,
                             collection=collection, progress=True)
    except Exception as exc:  # noqa: BLE001 - the traceback goes to the log file
        flow_failed("simulate", exc, uri, before, "run the same command again")
    written = sum(r["status"] == "written" for r in rows)
    typer.echo(f"{collection}: {written} written, {len(rows) - written} already present "
               f"({spec.text}, seed {seed}, hash {spec.hash})")


@app.command()
def ingest(
    sources: list[str] = typer.Argument(
        ..., metavar="SRC...", help="Files, directories, globs or s3://bucket/prefix."
    ),
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
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
    run_preflight(check_sources, "SRC", sources, settings)
    run_preflight(check_store, "--store" if store else "RESTOREFLOW_STORE",
               store or settings.store, settings)
    ts = open_cli_store(store, tile_size)
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
        fail(error_line(exc))
    for row in report.rejected:
        typer.echo(f"REJECTED {row.source}: {row.reason}")
    Console(width=160).print(report.summary_table())
    if failed:
        raise typer.Exit(1)


@app.command()
def export(
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
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
    from restoreflow.storage.sources import strip_credentials

    ts = open_cli_store(store)
    need_images(ts, given=store)
    if collection not in ts.collections():
        no_collection(ts, collection)
    complete = ts.image_ids(collection)
    if not image_id and not complete:
        fail(f"{strip_credentials(ts.uri)}: collection {collection!r} has no complete image "
              "to export (its images are still being written, or their run failed)")
    missing = sorted(set(image_id or ()) - set(complete))
    if missing:  # before anything is written
        where = strip_credentials(ts.uri)
        fail(f"--id {missing[0]}: no complete image {missing[0]!r} in collection "
             f"{collection!r} of {where} (its ids: 'restoreflow ls {collection} --store "
             f"{shlex.quote(where)}')")
    try:
        paths = run_export(ts, collection, fmt, out, image_ids=image_id or None)
    except (KeyError, ValueError, OSError) as exc:
        fail(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))
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


@app.command("ls")
def ls_store(
    collection: str | None = typer.Argument(
        None, help="List this collection's images (default: one row per collection)."),
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
    images: bool = typer.Option(False, "--images", help="List the images of every collection."),
) -> None:
    """Summarise the store: one row per collection (images, complete, writing, megapixels,
    stored bytes). With --images or a COLLECTION: its images (id, name, size, dtype,
    status; for input also the role: source, calibration or corpus image)."""
    from rich.console import Console
    from rich.table import Table

    from restoreflow.storage.ingest import size_text

    ts = open_cli_store(store)
    need_images(ts, given=store)
    cols = ts.collections()
    if collection is not None and collection not in cols:
        no_collection(ts, collection)
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
        roles = input_roles(ts, cols) if c == "input" else None
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
    from restoreflow.watchdog import watch_this_process

    watch_this_process()  # SeaweedFS ends with this verb, however it ends

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
