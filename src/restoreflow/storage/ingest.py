"""Ingest image files into a store's ``input`` collection, incrementally.

The image id is the content hash of the file's bytes (first 20 hex digits of SHA-256),
so ingesting is idempotent: an image already complete in the store is skipped without
being decoded ("present"); one left with status "writing" by a crashed run is written
again from scratch. A bad file never stops the batch: it is rejected with a reason,
listed in the report and appended to the store's ``rejected`` table. Status "complete"
is set in the last metadata write, after every tile, so nothing half-written is ever
marked complete.

Images are written one band of tile rows at a time. A PNG, TIFF or FITS image that
decodes to more than ``settings.stream_min_bytes`` is also decoded one band at a time
(:func:`restoreflow.storage.readers.open_banded`), so its memory is a few bands, not the
image; smaller ones are decoded whole, one item ahead of the writes. The value range
(and from it the normalisation) is the running min and max over the bands.
"""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np

from restoreflow.settings import Settings
from restoreflow.storage.bands import (
    BandedImage,
    RemoteFile,
    Source,
    WholeImage,
    check_band,
    read_all,
    source_sha256,
)
from restoreflow.storage.decode import ImageRejected
from restoreflow.storage.layout import INPUT, REJECTED_TABLE, SOURCE_DTYPES, STATUS_COMPLETE
from restoreflow.storage.readers import open_banded, read_image
from restoreflow.storage.sources import (
    SourceItem,
    expand_sources,
    printable,
    read_source,
    s3_filesystem,
    strip_credentials,
)
from restoreflow.storage.store import TileStore
from restoreflow.storage.tables import jsonable
from restoreflow.storage.values import normalisation_of

INGESTED, PRESENT, REJECTED = "ingested", "present", "rejected"


def content_id(data: bytes) -> str:
    """Image id of a source file: the first 20 hex digits of SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()[:20]


def array_id(array: np.ndarray) -> str:
    """Image id of an in-memory array: hash of dtype, shape and values."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:20]


def size_text(shape) -> str:
    """``[H, W]`` / ``[H, W, 3]`` as "WxH grey" / "WxH rgb" (how people read image sizes)."""
    if not shape or len(shape) < 2:
        return ""
    return f"{shape[1]}x{shape[0]} " + ("rgb" if len(shape) == 3 else "grey")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class IngestRow:
    source: str
    name: str
    status: str  # "ingested" | "present" | "rejected"
    image_id: str | None = None
    reason: str | None = None
    shape: list[int] | None = None
    dtype: str | None = None
    nbytes: int = 0  # bytes of the source file


@dataclass
class IngestReport:
    store: str
    rows: list[IngestRow] = field(default_factory=list)
    seconds: float = 0.0

    def _with(self, status: str) -> list[IngestRow]:
        return [r for r in self.rows if r.status == status]

    @property
    def ingested(self) -> list[IngestRow]:
        return self._with(INGESTED)

    @property
    def present(self) -> list[IngestRow]:
        return self._with(PRESENT)

    @property
    def rejected(self) -> list[IngestRow]:
        return self._with(REJECTED)

    @property
    def counts(self) -> dict[str, int]:
        return {s: len(self._with(s)) for s in (INGESTED, PRESENT, REJECTED)}

    @property
    def bytes_ingested(self) -> int:
        return sum(r.nbytes for r in self.ingested)

    def as_dict(self) -> dict:
        return {"store": self.store, "seconds": self.seconds, "counts": self.counts,
                "rows": [asdict(r) for r in self.rows]}

    def summary_table(self):
        """A rich Table: one row per file, then the totals in the caption."""
        from rich.table import Table

        c = self.counts
        t = Table(title=f"ingest into {self.store}",
                  caption=f"{c[INGESTED]} ingested, {c[PRESENT]} already present, "
                          f"{c[REJECTED]} rejected in {self.seconds:.1f} s")
        for col in ("file", "status", "image id", "size", "dtype", "reason"):
            t.add_column(col, overflow="fold")
        style = {INGESTED: "green", PRESENT: "cyan", REJECTED: "red"}
        for r in self.rows:
            t.add_row(r.source, f"[{style[r.status]}]{r.status}[/]", r.image_id or "",
                      size_text(r.shape), r.dtype or "",
                      r.reason or "")
        return t


class IngestRejected(Exception):
    """Raised by ``ingest(strict=True)`` after the whole batch when files were rejected."""

    def __init__(self, report: IngestReport) -> None:
        n = len(report.rejected)
        super().__init__(f"{n} file{'s' if n != 1 else ''} rejected")
        self.report = report


def _validate_array(array: np.ndarray) -> np.ndarray:
    a = np.asarray(array)
    if a.dtype.name not in SOURCE_DTYPES:
        raise ValueError(f"unsupported dtype {a.dtype} (one of {SOURCE_DTYPES})")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"expected (H, W) grey or (H, W, 3) RGB, got {a.shape}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError("array has NaN or Inf values")
    return a


def _input_attrs(shape, dtype, image_id: str, *, source: str, name: str, fmt: str,
                 meta: dict | None = None) -> dict:
    """An input image's attrs except its value range (:func:`_range_attrs`)."""
    meta = dict(meta or {})
    attrs = {
        "image_id": image_id,
        "source": printable(strip_credentials(source)),
        "name": printable(name),
        "format": fmt,
        "shape": list(shape),
        "dtype": np.dtype(dtype).name,
        "source_metadata": meta.pop("source_metadata", {}),
        "row_order": meta.pop("row_order", "top-down"),
    }
    meta.pop("format", None)
    attrs.update(meta)  # dropped_alpha, converted_from, planar, fits_hdu, ...
    return jsonable(attrs)


def _range_attrs(dtype, lo, hi) -> dict:
    """``value_range``, ``norm_offset`` and ``norm_scale`` of pixels spanning [lo, hi]."""
    offset, scale = normalisation_of(dtype, lo, hi)
    return {"value_range": [lo.item(), hi.item()], "norm_offset": float(offset),
            "norm_scale": float(scale)}


def _store_input(store: TileStore, a: np.ndarray, image_id: str, attrs: dict,
                 overwrite: bool) -> None:
    chw = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
    store.create_image(INPUT, image_id, chw.shape, a.dtype, attrs, overwrite=overwrite)
    store.write_image(INPUT, image_id, chw)
    store.mark_complete(INPUT, image_id, ingested_at=_now())


def _store_bands(store: TileStore, image: BandedImage, image_id: str, attrs: dict,
                 overwrite: bool) -> None:
    """Create the image, write it one band of tile rows at a time while keeping its
    running min and max, then record the value range with status "complete" in one
    metadata write. An ImageRejected from a band deletes the half-written image."""
    shape = image.shape
    chw = (1, *shape[:2]) if len(shape) == 2 else (3, *shape[:2])
    store.create_image(INPUT, image_id, chw, image.dtype, attrs, overwrite=overwrite)
    lo = hi = None
    try:
        for y0, band in image.bands(store.tile_size):
            blo, bhi = band.min(), band.max()
            lo = blo if lo is None else min(lo, blo)
            hi = bhi if hi is None else max(hi, bhi)
            region = band[None] if band.ndim == 2 else np.moveaxis(band, -1, 0)
            store.write_region(INPUT, image_id, region, y0, 0)
    except ImageRejected:
        store.delete_image(INPUT, image_id)
        raise
    store.mark_complete(INPUT, image_id, ingested_at=_now(),
                        **_range_attrs(image.dtype, lo, hi))


def ingest_array(store: TileStore, array: np.ndarray, name: str, *, image_id: str | None = None,
                 source: str | None = None, fmt: str = "array", metadata: dict | None = None,
                 overwrite: bool = False) -> str:
    """Store an in-memory (H, W) / (H, W, 3) array in ``input``; returns its image id.

    The id defaults to a hash of the array. An image already complete under that id is
    left alone unless ``overwrite``. Raises ValueError for unsupported arrays.
    """
    a = _validate_array(array)
    image_id = image_id or array_id(a)
    st = store.status(INPUT, image_id)
    if st == STATUS_COMPLETE and not overwrite:
        return image_id
    attrs = _input_attrs(a.shape, a.dtype, image_id, source=source or f"array:{name}",
                         name=name, fmt=fmt, meta=metadata)
    attrs.update(_range_attrs(a.dtype, a.min(), a.max()))
    _store_input(store, a, image_id, attrs, overwrite=st is not None)
    return image_id


@dataclass
class _Prepared:
    """What the prefetch thread learned about one item (no store writes happen there)."""

    item: SourceItem
    reason: str | None = None
    nbytes: int = 0
    image_id: str | None = None
    status: str | None = None
    image: BandedImage | None = None


def _open(item: SourceItem, settings: Settings, fs_cache: dict) -> tuple[Source, int, str]:
    """The item as a source, its size and its image id: the bytes of a small file; a
    large local file by its path and a large S3 object as a :class:`RemoteFile`, both
    hashed in steps and later decoded from the file, not held in memory."""
    if item.kind == "file" and not item.error:
        size = os.path.getsize(item.uri)
        if size > settings.stream_min_bytes:
            return item.uri, size, source_sha256(item.uri)[:20]
    if item.kind == "s3" and not item.error:
        fs = fs_cache.get("s3") or s3_filesystem(settings)
        path = item.uri[len("s3://"):]
        size = item.size if item.size is not None else fs.size(path)
        if size > settings.stream_min_bytes:
            remote = RemoteFile(fs, path, size)
            return remote, size, source_sha256(remote)[:20]
    data = read_source(item, settings, fs_cache.get("s3"))
    return data, len(data), content_id(data)


def _prepare(item: SourceItem, store: TileStore, settings: Settings, fs_cache: dict,
             seen: dict) -> _Prepared:
    """Read, hash and (unless already complete) open one item: a small image is decoded
    here, a large one only opened to be decoded in bands by :func:`_commit`. Runs one
    item ahead of the writes, in a thread, so decoding overlaps the previous image's
    tile writes."""
    if item.error:
        return _Prepared(item, reason=item.error)
    try:
        src, nbytes, image_id = _open(item, settings, fs_cache)
    except OSError as exc:
        return _Prepared(item, reason=f"cannot read: {exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - e.g. botocore errors: reported per file
        return _Prepared(item, reason=f"cannot read: {type(exc).__name__}: {exc}")
    p = _Prepared(item, nbytes=nbytes, image_id=image_id)
    if p.image_id in seen:
        return p
    p.status = store.status(INPUT, p.image_id)
    if p.status == STATUS_COMPLETE:
        return p  # present: not decoded
    tile = store.tile_size
    try:
        p.image = open_banded(src, item.name, settings.max_pixels, settings.min_side, tile,
                              settings.max_band_bytes, settings.stream_min_bytes)
        if p.image is None:
            data = src if isinstance(src, bytes) else read_all(src)  # JPEG, interlaced, ...
            arr, meta = read_image(data, item.name, settings.max_pixels, settings.min_side)
            c = 1 if arr.ndim == 2 else arr.shape[2]
            check_band(min(tile, arr.shape[0]), arr.shape[1], c, arr.itemsize,
                       settings.max_band_bytes)
            p.image = WholeImage(arr, meta)
    except OSError as exc:
        p.reason = f"cannot read: {exc.strerror or exc}"
    except ImageRejected as exc:
        p.reason = exc.reason
    return p


def _commit(p: _Prepared, store: TileStore, seen: dict) -> IngestRow:
    """Decide and write (driver thread): present, rejected or ingested."""
    item = p.item
    row = IngestRow(source=printable(item.uri), name=printable(item.name), status=REJECTED,
                    image_id=p.image_id, nbytes=p.nbytes)
    if p.image_id is not None and p.image_id in seen:
        row.status, row.reason = PRESENT, f"same content as {seen[p.image_id]}"
        return row
    if p.reason is not None:
        row.reason = p.reason
        return row
    if p.status == STATUS_COMPLETE:
        a = store.attrs(INPUT, p.image_id)
        row.status, row.shape, row.dtype = PRESENT, a.get("shape"), a.get("dtype")
        seen[p.image_id] = printable(item.uri)
        return row
    image = p.image
    try:
        attrs = _input_attrs(image.shape, image.dtype, p.image_id, source=item.uri,
                             name=item.name, fmt=image.meta["format"], meta=image.meta)
        _store_bands(store, image, p.image_id, attrs, overwrite=p.status is not None)
    except ImageRejected as exc:
        row.reason = exc.reason
        return row
    finally:
        image.close()
        p.image = None
    seen[p.image_id] = printable(item.uri)
    row.status, row.shape, row.dtype = INGESTED, list(image.shape), image.dtype.name
    if p.status is not None:
        row.reason = f"rewrote an incomplete image (status {p.status})"
    return row


def ingest(sources: list[str], store: TileStore, settings: Settings | None = None,
           progress: bool = True, strict: bool = False) -> IngestReport:
    """Ingest every image named by ``sources`` into ``store``'s ``input`` collection.

    Sources are files, directories (recursive), globs and ``s3://`` prefixes (see
    :func:`restoreflow.storage.sources.expand_sources`). Returns an
    :class:`IngestReport`. With ``strict`` the whole batch is still processed and
    reported, then :class:`IngestRejected` is raised if any file was rejected.
    Store errors (the store itself failing) propagate; rejections collected until then
    are still recorded.
    """
    settings = settings or store.settings
    t0 = time.perf_counter()
    report = IngestReport(store=strip_credentials(store.uri))
    items = expand_sources(list(sources), settings)
    seen: dict[str, str] = {}
    fs_cache: dict = {}
    bar = None
    if progress and len(items) > 3:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        # speed over the whole ingest (rich's default, the last 30 s, gives no ETA while
        # one large image takes longer than that)
        bar = Progress(TextColumn("ingest"), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), TextColumn("{task.description}"),
                       console=Console(stderr=True), transient=True,
                       speed_estimate_period=7 * 24 * 3600)
    try:
        if bar is not None:
            bar.start()
            task = bar.add_task("", total=len(items))
        if any(it.kind == "s3" and not it.error for it in items):
            fs_cache["s3"] = s3_filesystem(settings)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-read") as pool:
            ahead = None
            for i, item in enumerate(items):
                current = ahead.result() if ahead is not None else _prepare(
                    item, store, settings, fs_cache, seen)
                ahead = (pool.submit(_prepare, items[i + 1], store, settings, fs_cache, seen)
                         if i + 1 < len(items) else None)
                if bar is not None:
                    bar.update(task, description=item.name[:40])
                report.rows.append(_commit(current, store, seen))
                if bar is not None:
                    bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
        rejected = [{"source": r.source, "reason": r.reason, "time": _now()}
                    for r in report.rows if r.status == REJECTED]
        if rejected:
            store.append_rows(REJECTED_TABLE, rejected, key=("source", "reason"))
        report.seconds = time.perf_counter() - t0
    if strict and report.rejected:
        raise IngestRejected(report)
    return report
