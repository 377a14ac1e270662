"""Ingest stage: the sources of a job into the store's ``input`` collection (a worker
task; its report, rows of ingested and rejected files, goes back to the driver, which
reads it with :class:`restoreflow.stages.run.IngestReport`)."""

from __future__ import annotations

from restoreflow.storage.ingest import ingest
from restoreflow.storage.store import TileStore


def ingest_sources(store: TileStore, sources: list[str]) -> dict:
    """Ingest every image ``sources`` name (files, folders, globs, s3:// prefixes); a bad
    file is a rejected row, never an error of the batch. Returns the report as a dict."""
    return ingest(sources, store, progress=False).as_dict()
