"""Export a collection from a store as PNG, TIFF or FITS files.

``input`` is exported in its native values (bit-exact for PNG 8/16-bit, TIFF and FITS
sources in a matching format). Derived collections (float32, normalised units) are
mapped back to the source's units and dtype with the input image's attrs:
``raw = normalised * norm_scale + norm_offset`` (rounded and clipped for integer
dtypes). PNG holds only uint8/uint16: a source of another dtype becomes a 16-bit PNG of
the normalised values (clipped to [0, 1]).

Rows are flipped when the target's row order differs from the source's (FITS files
store the bottom row first), so an image looks the same in every format.

An image whose exported array is larger than ``settings.stream_min_bytes`` is read from
the store and encoded one band of tile rows at a time (:func:`export_bands`,
:func:`restoreflow.storage.writers.write_bands`), so export needs memory for a band,
not for the image; the file holds the same pixels as the whole encode.

File names are ``<image_id>_<stem>.<ext>`` with the stem sanitised to [A-Za-z0-9._-]
(every other character, path separators included, becomes ``_``: no part of a name is
dropped), and every path is checked to resolve inside ``out_dir`` whatever the store holds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from restoreflow.storage import writers
from restoreflow.storage.layout import INPUT
from restoreflow.storage.sources import strip_credentials
from restoreflow.storage.store import TileStore
from restoreflow.storage.values import from_normalised

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_STEM = 80
ROW_ORDER = {"png": "top-down", "tiff": "top-down", "fits": "bottom-up"}


def safe_stem(name: str | None, limit: int = MAX_STEM) -> str:
    """File-name-safe stem of a stored name, [A-Za-z0-9._-] only.

    The extension (from the last dot after the last ``/`` or ``\\``) is removed; every run
    of other characters (``/ \\ : * ? " < > |``, spaces, control and non-ASCII
    characters) becomes one ``_``, so ``new\\nline.png`` gives ``new_nline`` and
    ``a/b.png`` gives ``a_b``; leading and trailing ``._-`` are stripped.
    """
    text = str(name or "")
    sep = max(text.rfind("/"), text.rfind("\\"))
    base = text[sep + 1:]
    if "." in base.lstrip("."):
        text = text[:sep + 1] + base.rsplit(".", 1)[0]
    stem = _UNSAFE.sub("_", text).strip("._-")
    return stem[:limit] or "image"


def export_filename(image_id: str, name: str | None, fmt: str) -> str:
    return f"{safe_stem(image_id, 40)}_{safe_stem(name)}{writers.EXTENSIONS[fmt]}"


def _inside(path: Path, root: Path) -> Path:
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise ValueError(f"refusing to write {path}: outside the output directory {root}")
    return resolved


def export_bands(store: TileStore, collection: str, image_id: str, fmt: str,
                 rows: int | None = None) -> tuple[tuple[int, ...], np.dtype, Callable]:
    """What export writes for one image, one band of rows at a time.

    Returns ``(shape, dtype, bands)``: the (H, W) / (H, W, 3) shape and dtype of the
    array export encodes, and ``bands()``, a function returning an iterator over its rows
    in bands of at most ``rows`` rows (default: the store's tile size), top to bottom in
    the target's row order. Each call of ``bands()`` reads the store again.
    """
    attrs = store.attrs(collection, image_id)
    c, h, w = store.shape(collection, image_id)
    if c not in (1, 3):
        raise ValueError(f"{collection}/{image_id}: {c} bands cannot be exported")
    stored = np.dtype(attrs.get("dtype") or "float32")  # the source's (input: as stored)
    to_uint16 = fmt == "png" and stored not in (np.uint8, np.uint16)
    dtype = np.dtype("uint16") if to_uint16 else stored
    flip = attrs.get("row_order", "top-down") != ROW_ORDER[fmt]
    offset = float(attrs.get("norm_offset", 0.0))
    scale = float(attrs.get("norm_scale", 1.0))
    rows = int(rows or store.tile_size)
    starts = list(range(0, h, rows))

    def convert(y0: int, y1: int) -> np.ndarray:
        if collection != INPUT:
            data = store.read_region(collection, image_id, y0, y1, 0, w)
            if to_uint16:
                data = from_normalised(np.clip(data, 0.0, 1.0), 0.0, 65535.0, "uint16")
            else:
                data = from_normalised(data, offset, scale, dtype.name)
        elif to_uint16:
            norm = store.read_region(collection, image_id, y0, y1, 0, w, normalised=True)
            data = from_normalised(np.clip(norm, 0.0, 1.0), 0.0, 65535.0, "uint16")
        else:
            data = store.read_region(collection, image_id, y0, y1, 0, w)
        hwc = data[0] if c == 1 else np.moveaxis(data, 0, -1)
        return np.ascontiguousarray(hwc[::-1] if flip else hwc)

    def bands() -> Iterator[np.ndarray]:
        for y0 in (reversed(starts) if flip else starts):
            yield convert(y0, min(h, y0 + rows))

    shape = (h, w) if c == 1 else (h, w, 3)
    return shape, dtype, bands


def export(store: TileStore, collection: str, fmt: str, out_dir: str | Path,
           image_ids: list[str] | None = None) -> list[Path]:
    """Write every complete image of ``collection`` (or ``image_ids``) to ``out_dir``.

    Each file is written to a temporary name and renamed, so a file that exists is
    complete. Returns the written paths, in image-id order.
    """
    if fmt not in writers.FORMATS:
        raise ValueError(f"unknown format {fmt!r} (one of {', '.join(writers.FORMATS)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    if image_ids is None:
        ids = store.image_ids(collection)
    else:
        ids = list(image_ids)
        for i in ids:
            if not store.has(collection, i):
                raise KeyError(f"{store.uri}: no complete image {collection}/{i}")
    written: list[Path] = []
    for image_id in ids:
        attrs = store.attrs(collection, image_id)
        path = _inside(out / export_filename(image_id, attrs.get("name"), fmt), root)
        provenance = {
            "image_id": image_id,
            "collection": collection,
            "source": attrs.get("source"),
            "name": attrs.get("name"),
            "store": strip_credentials(store.uri),
        }
        if attrs.get("collection_attrs"):
            provenance["collection_attrs"] = attrs["collection_attrs"]
        source_header = attrs.get("source_metadata") if attrs.get("format") == "fits" else None
        shape, dtype, bands = export_bands(store, collection, image_id, fmt)
        if math.prod(shape) * dtype.itemsize > store.settings.stream_min_bytes:
            written.append(writers.write_bands(path, fmt, shape, dtype, bands,
                                               provenance=provenance,
                                               source_metadata=source_header))
            continue
        arr = np.concatenate(list(bands()))  # small: the whole array, encoded at once
        data = writers.encode(arr, fmt, provenance=provenance, source_metadata=source_header)
        written.append(writers.write_atomic(path, data))
    return written
