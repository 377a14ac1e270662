"""Export a collection from a store as PNG, TIFF or FITS files.

``input`` is exported in its native values (bit-exact for PNG 8/16-bit, TIFF and FITS
sources in a matching format). Derived collections (float32, normalised units) are
mapped back to the source's units and dtype with the input image's attrs:
``raw = normalised * norm_scale + norm_offset`` (rounded and clipped for integer
dtypes). PNG holds only uint8/uint16: a source of another dtype becomes a 16-bit PNG of
the normalised values (clipped to [0, 1]).

Rows are flipped when the target's row order differs from the source's (FITS files
store the bottom row first), so an image looks the same in every format.

File names are ``<image_id>_<stem>.<ext>`` with the stem sanitised to [A-Za-z0-9._-]
(every other character, path separators included, becomes ``_``: no part of a name is
dropped), and every path is checked to resolve inside ``out_dir`` whatever the store holds.
"""

from __future__ import annotations

import re
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


def export_array(store: TileStore, collection: str, image_id: str, fmt: str) -> np.ndarray:
    """The (H, W) / (H, W, 3) array that export writes for one image, before encoding."""
    attrs = store.attrs(collection, image_id)
    data = store.read(collection, image_id)  # (C, H, W)
    if collection != INPUT:
        src = attrs
        dtype = src.get("dtype") or "float32"
        offset = float(src.get("norm_offset", 0.0))
        scale = float(src.get("norm_scale", 1.0))
        if fmt == "png" and dtype not in ("uint8", "uint16"):
            data = from_normalised(np.clip(data, 0.0, 1.0), 0.0, 65535.0, "uint16")
        else:
            data = from_normalised(data, offset, scale, dtype)
    elif fmt == "png" and data.dtype not in (np.uint8, np.uint16):
        norm = store.read(collection, image_id, normalised=True)
        data = from_normalised(np.clip(norm, 0.0, 1.0), 0.0, 65535.0, "uint16")
    hwc = data[0] if data.shape[0] == 1 else np.moveaxis(data, 0, -1)
    if data.shape[0] not in (1, 3):
        raise ValueError(f"{collection}/{image_id}: {data.shape[0]} bands cannot be exported")
    if attrs.get("row_order", "top-down") != ROW_ORDER[fmt]:
        hwc = hwc[::-1]
    return np.ascontiguousarray(hwc)


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
        arr = export_array(store, collection, image_id, fmt)
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
        data = writers.encode(arr, fmt, provenance=provenance, source_metadata=source_header)
        written.append(writers.write_atomic(path, data))
    return written
