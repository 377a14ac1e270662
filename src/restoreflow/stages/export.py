"""Export stage: complete images of a collection to PNG / TIFF / FITS files with their
provenance (a worker task; each file is written under a temporary name and renamed)."""

from __future__ import annotations

from restoreflow.storage.export import export
from restoreflow.storage.store import TileStore


def export_images(store: TileStore, collection: str, fmt: str, out_dir: str,
                  image_ids: list[str]) -> list[str]:
    """Write ``image_ids`` of ``collection`` to ``out_dir`` in format ``fmt``; returns the
    paths written, in image-id order."""
    return [str(p) for p in export(store, collection, fmt, out_dir, image_ids)]
