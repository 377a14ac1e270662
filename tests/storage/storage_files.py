"""Builders of image files (good and bad) for the storage tests, and a worker function
for the multi-process test (importable by spawned processes)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np


def rng_image(shape, dtype, seed=0):
    """Random pixels covering the dtype's range (floats: a signed, non-unit range)."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind in "ui":
        info = np.iinfo(dt)
        lo, hi = max(info.min, -40000), min(info.max, 70000)
        return rng.integers(lo, hi, size=shape, endpoint=True).astype(dt)
    return (rng.standard_normal(shape) * 100 + 3).astype(dt)


def smooth_image(shape, seed=0):
    """A smooth uint8 image (JPEG keeps it recognisable)."""
    rng = np.random.default_rng(seed)
    h, w = shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(x / 17.0 + seed) * np.cos(y / 23.0)
    if len(shape) == 3:
        base = np.stack([base, base[::-1], base[:, ::-1]], -1)
    return np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)


def png_bytes(array, mode=None):
    from PIL import Image

    buf = io.BytesIO()
    a = np.asarray(array)
    if mode is not None:
        Image.fromarray(a).convert(mode).save(buf, format="PNG")
    else:
        Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def pil_bytes(image, fmt="PNG", **kw):
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def jpeg_bytes(array, quality=90, **save):
    """A JPEG of ``array``; ``save``: more of Pillow's JPEG options (exif, progressive...)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(array)).save(buf, format="JPEG", quality=quality, **save)
    return buf.getvalue()


def tiff_bytes(array, **kw):
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.asarray(array), **kw)
    return buf.getvalue()


def fits_bytes(array, header=None):
    from astropy.io import fits

    hdu = fits.PrimaryHDU(None if array is None else np.asarray(array))
    for k, v in (header or {}).items():
        hdu.header[k] = v
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + ctype + body
            + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF))


def huge_png_header(width=50000, height=50000) -> bytes:
    """A PNG whose IHDR (valid CRC) declares width x height RGB; tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def huge_fits_header(n=50000) -> bytes:
    """A FITS header declaring an n x n float32 image, with no data at all."""
    cards = ["SIMPLE  =                    T", "BITPIX  =                  -32",
             "NAXIS   =                    2", f"NAXIS1  = {n:20d}", f"NAXIS2  = {n:20d}",
             "END"]
    header = "".join(c.ljust(80) for c in cards)
    return header.ljust(2880).encode("ascii")


def tile_value(ty: int, tx: int, shape) -> np.ndarray:
    """Deterministic content of tile (ty, tx), different for every tile."""
    rng = np.random.default_rng(1000 + 97 * ty + tx)
    return rng.random(shape, dtype=np.float32)


def write_tiles_worker(args) -> int:
    """Spawned worker: reconnect to the store and write the given tiles."""
    store, collection, image_id, tiles = args
    for ty, tx, y0, y1, x0, x1 in tiles:
        c = store.shape(collection, image_id)[0]
        store.write_region(collection, image_id, tile_value(ty, tx, (c, y1 - y0, x1 - x0)),
                           y0, x0)
    return len(tiles)
