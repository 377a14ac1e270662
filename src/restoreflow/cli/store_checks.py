"""Opening the store a verb names, and the checks that stop a verb with one line before it
creates anything: no store (or no images) there, no such collection."""

from __future__ import annotations

import os
import shlex

import typer

from restoreflow.cli.runtime import fail


def open_cli_store(store: str | None, tile_size: int | None = None):
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


def need_images(ts, collection: str | None = None, complete: bool = False,
                given: str | None = "") -> None:
    """One line and exit 2 when the store does not exist or holds no images (in
    ``collection``, else in any collection; ``complete``: complete ones), naming the
    next step; ``given`` is the verb's --store (None: not given, the store is the
    default). Only the verbs that ingest (ingest, run, calibrate, index build) create a
    store, so a mistyped store fails here and nothing is created."""
    from restoreflow.storage.sources import strip_credentials

    if ts.exists_store:
        for c in [collection] if collection else ts.collections():
            if ts.image_ids(c) if complete else ts.listed_ids(c):
                return
    where = strip_credentials(ts.uri)
    if given is None:
        source = ("RESTOREFLOW_STORE" if os.environ.get("RESTOREFLOW_STORE") else
                  "the default store")
        fail(f"no --store given, and {source} {where} holds no images: pass --store PATH, "
             f"or run 'restoreflow ingest SRC... --store {shlex.quote(where)}' first")
    fail(f"{where}: no store here (or no images in it): run "
          f"'restoreflow ingest SRC... --store {shlex.quote(where)}' first")


def no_collection(ts, collection: str) -> None:
    """One line and exit 2: the store has no such collection (naming those it has)."""
    fail(f"{ts.uri} has no collection {collection!r} "
          f"(it has: {', '.join(ts.collections()) or 'none'})")
