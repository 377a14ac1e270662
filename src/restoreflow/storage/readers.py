"""Decode image files (PNG, JPEG, TIFF, FITS) from bytes into numpy arrays.

:func:`read_image` returns an (H, W) or (H, W, 3) array in the file's native dtype
(uint8, uint16, int16, int32, float32 or float64) and a metadata dict, or raises
:class:`ImageRejected` with a one-line, specific reason. The pixel count is checked
from the header (PNG IHDR / JPEG SOF via the Pillow plugin without decoding, the TIFF
series shape, FITS NAXISn) BEFORE any pixel data is decoded, so a small file that
declares a huge image (a decompression bomb) costs nothing. PNG image data that inflates
to more than its header declares is rejected after inflating at most the declared size
(plus one step), before a decoder sees it.

Row order is the file's: FITS row 0 is the first row stored (the bottom of the image
as astronomers display it); the metadata says ``row_order: "bottom-up"`` for FITS.

:func:`open_banded` opens a large PNG, TIFF or FITS image to be decoded one band of rows
at a time instead (same checks, same pixels).

This module picks the format (extension and magic bytes) and dispatches; each format's
reader has its own module (``read_pil``, ``read_tiff``, ``read_fits``), the PNG bomb
checks are :mod:`restoreflow.storage.png_safety` and the checks every reader shares
:mod:`restoreflow.storage.decode`.
"""

from __future__ import annotations

import contextlib
from pathlib import PurePosixPath

import numpy as np

from restoreflow.storage.bands import BandedImage, Source, source_head, source_size
from restoreflow.storage.decode import FORMAT_NAMES, ImageRejected
from restoreflow.storage.png_safety import PNG_SIGNATURE
from restoreflow.storage.read_fits import read_fits, stream_fits
from restoreflow.storage.read_pil import read_pil, stream_jpeg, stream_png
from restoreflow.storage.read_tiff import read_tiff, stream_tiff

# extension -> format
IMAGE_EXTENSIONS: dict[str, str] = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
}


def image_format(name: str) -> str | None:
    """Format for a file name by its extension (case-insensitive), or None."""
    return IMAGE_EXTENSIONS.get(PurePosixPath(name.replace("\\", "/")).suffix.lower())


def sniff(data: bytes) -> str | None:
    """Format from the magic bytes, or None."""
    if data[:8] == PNG_SIGNATURE:
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return "tiff"
    if data[:9] == b"SIMPLE  =":
        return "fits"
    return None


def _describe(data: bytes) -> str:
    head = data[:64]
    if head[:5] in (b"<?xml", b"<svg ") or head[:4] == b"<svg":
        return "looks like SVG/XML"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "looks like GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "looks like WebP"
    if head[:2] == b"BM":
        return "looks like BMP"
    if head[:4] == b"%PDF":
        return "looks like PDF"
    if head[:2] == b"PK":
        return "looks like a ZIP archive"
    try:
        head.decode("utf-8")
        if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
            return "looks like text"
    except UnicodeDecodeError:
        pass
    return "unrecognised content"


def _format(head: bytes, size: int, name: str) -> tuple[str, dict]:
    """The format by extension and magic bytes, and the ``extension_mismatch`` note."""
    if size == 0:
        raise ImageRejected("empty file (0 bytes)")
    by_ext = image_format(name)
    if by_ext is None:
        suffix = PurePosixPath(name.replace("\\", "/")).suffix or "(none)"
        raise ImageRejected(
            f"unsupported file extension {suffix!r} (supported: "
            f"{' '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    fmt = sniff(head)
    extra: dict = {}
    if fmt is None:
        raise ImageRejected(
            f"not a {FORMAT_NAMES[by_ext]} file: bad signature ({_describe(head)}, "
            f"{size:,} bytes)"
        )
    if fmt != by_ext:
        extra["extension_mismatch"] = f"named {by_ext}, content is {fmt}"
    return fmt, extra


def open_banded(src: Source, name: str, max_pixels: int = 400_000_000, min_side: int = 8,
                tile: int = 256, max_band_bytes: int = 256 * 2**20,
                stream_min_bytes: int = 16 * 2**20) -> BandedImage | None:
    """Open a PNG, JPEG, TIFF or FITS image (its bytes, a local path or a
    :class:`~restoreflow.storage.bands.RemoteFile`) to be decoded in bands of rows (see
    :mod:`restoreflow.storage.bands`), or None where :func:`read_image`
    decodes it whole: images that decode to at most ``stream_min_bytes``, other formats
    and layouts the band readers do not take (interlaced, palette and 1/2/4-bit PNG,
    CMYK JPEG, multi-page TIFF). Header checks and the PNG data check run first and raise
    :class:`ImageRejected` with the reasons :func:`read_image` gives; one band of ``tile``
    rows must decode to at most ``max_band_bytes``. Bands hold the same pixels, in the
    same dtype and layout, as the whole decode."""
    size = source_size(src)
    head = source_head(src, 64)
    fmt, extra = _format(head, size, name)
    args = (max_pixels, min_side, tile, max_band_bytes, stream_min_bytes)
    with _rejected_as(fmt):
        if fmt == "png":
            img = stream_png(src, head, *args)
        elif fmt == "jpeg":
            img = stream_jpeg(src, *args)
        elif fmt == "tiff":
            img = stream_tiff(src, *args)
        elif fmt == "fits":
            img = stream_fits(src, *args)
        else:
            img = None
    if img is not None:
        _complete_meta(img.meta, extra)
    return img


@contextlib.contextmanager
def _rejected_as(fmt: str):
    """Any decoder failure inside as :class:`ImageRejected` naming the format."""
    try:
        yield
    except ImageRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - hostile bytes can break a decoder anywhere
        raise ImageRejected(
            f"corrupt {FORMAT_NAMES[fmt]}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc


def _complete_meta(meta: dict, extra: dict) -> None:
    meta.update(extra)
    meta.setdefault("row_order", "top-down")
    meta.setdefault("source_metadata", {})


def read_image(data: bytes, name: str, max_pixels: int = 400_000_000,
               min_side: int = 8) -> tuple[np.ndarray, dict]:
    """Decode an image file's bytes.

    Returns ``(array, metadata)``: ``array`` is (H, W) grey or (H, W, 3) RGB in the
    file's dtype (native byte order); ``metadata`` has ``format``, ``source_metadata``
    (header cards / tags), and when applicable ``dropped_alpha``, ``converted_from``,
    ``planar``, ``fits_hdu``, ``row_order`` and ``extension_mismatch``.
    Raises :class:`ImageRejected` with a one-line reason.
    """
    fmt, extra = _format(data[:64], len(data), name)
    with _rejected_as(fmt):
        if fmt in ("png", "jpeg"):
            arr, meta = read_pil(data, fmt, max_pixels, min_side)
        elif fmt == "tiff":
            arr, meta = read_tiff(data, max_pixels, min_side)
        else:
            arr, meta = read_fits(data, max_pixels, min_side)
    _complete_meta(meta, extra)
    return arr, meta
