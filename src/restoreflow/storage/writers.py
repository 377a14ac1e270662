"""Encode arrays as PNG, TIFF or FITS bytes (and write files atomically).

- PNG: uint8 or uint16, (H, W) grey or (H, W, 3) RGB. 8-bit and 16-bit grey go through
  Pillow; 16-bit RGB through libpng (imagecodecs), as Pillow cannot.
- TIFF: any supported dtype via tifffile (zlib-compressed, lossless).
- FITS: via astropy; uint16 is stored as BITPIX 16 with BZERO 32768 (the FITS
  convention), which reads back as uint16. RGB is written as a 3 x H x W cube.

All three round-trip bit-exactly through :func:`restoreflow.storage.readers.read_image`.
:func:`write_bands` writes the same formats from row bands, for images too large to hold
whole (PNG by a scanline writer with the Up filter over zlib, TIFF by tifffile from an
iterator of 256 x 256 tiles, FITS by astropy's StreamingHDU).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

FORMATS = ("png", "tiff", "fits")
EXTENSIONS = {"png": ".png", "tiff": ".tif", "fits": ".fits"}
# FITS header keywords that describe the data layout: never copied from a source header
_FITS_STRUCTURAL = {
    "SIMPLE", "BITPIX", "EXTEND", "BZERO", "BSCALE", "BLANK", "PCOUNT", "GCOUNT",
    "XTENSION", "CHECKSUM", "DATASUM", "END", "COMMENT", "HISTORY", "ZIMAGE", "ZBITPIX",
    "ZCMPTYPE", "ZQUANTIZ", "ZDITHER0", "ZSIMPLE", "ZTENSION", "ZEXTEND", "ZBLOCKED",
    "ZPCOUNT", "ZGCOUNT", "ZHECKSUM", "ZDATASUM", "ZTILE1", "ZTILE2", "ZTILE3",
}


def _check_layout(array: np.ndarray) -> np.ndarray:
    a = np.asarray(array)
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"expected (H, W) or (H, W, 3), got {a.shape}")
    return a


def encode_png(array: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """PNG bytes of a uint8 or uint16 (H, W) / (H, W, 3) array."""
    a = _check_layout(array)
    if a.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG holds uint8 or uint16, not {a.dtype}")
    if a.dtype == np.uint16 and a.ndim == 3:
        return _encode_png16_rgb(a, text)
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    im = Image.fromarray(np.ascontiguousarray(a))  # uint16 (H, W) -> mode "I;16"
    buf = io.BytesIO()
    im.save(buf, format="PNG", pnginfo=info, compress_level=6)
    return buf.getvalue()


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + ctype + body
            + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF))


def _encode_png16_rgb(a: np.ndarray, text: dict[str, str] | None) -> bytes:
    """16-bit RGB PNG by libpng (Up filter, zlib level 6), with ``text`` as tEXt chunks
    (Latin-1, keys cut to 79 bytes) inserted after the IHDR."""
    import imagecodecs

    png = imagecodecs.png_encode(np.ascontiguousarray(a), level=6,
                                 filter=imagecodecs.PNG.FILTER.UP)
    chunks = [_png_chunk(b"tEXt", k.encode("latin-1", errors="replace")[:79] + b"\0"
                         + v.encode("latin-1", errors="replace"))
              for k, v in (text or {}).items()]
    head = 8 + 25  # signature, IHDR chunk
    return png[:head] + b"".join(chunks) + png[head:]


def encode_tiff(array: np.ndarray, description: str | None = None,
                resolution: tuple | None = None) -> bytes:
    """TIFF bytes (zlib-compressed) of an (H, W) / (H, W, 3) array of any supported dtype."""
    import tifffile

    a = _check_layout(array)
    buf = io.BytesIO()
    kwargs: dict = {}
    if resolution is not None:
        kwargs["resolution"] = resolution
    tifffile.imwrite(
        buf,
        a,
        photometric="rgb" if a.ndim == 3 else "minisblack",
        compression="zlib",
        description=description,
        metadata=None,
        software="restoreflow",
        **kwargs,
    )
    return buf.getvalue()


def encode_fits(array: np.ndarray, cards: dict | None = None,
                source_header: dict | None = None) -> bytes:
    """FITS bytes. (H, W, 3) is written as a (3, H, W) cube (NAXIS3 = 3).

    ``source_header`` (a dict as made by ``read_fits.fits_header_dict``) is copied except
    structural keywords, so WCS and observation cards survive; ``cards`` are added last
    (provenance). Cards that FITS cannot hold are skipped and counted in a HISTORY card.
    """
    from astropy.io import fits

    a = _check_layout(array)
    if a.dtype.name not in ("uint8", "uint16", "int16", "int32", "float32", "float64"):
        raise ValueError(f"FITS export does not support {a.dtype}")
    data = np.moveaxis(a, -1, 0) if a.ndim == 3 else a
    hdu = fits.PrimaryHDU(data=np.ascontiguousarray(data))
    _fits_cards(hdu, cards, source_header)
    buf = io.BytesIO()
    hdu.writeto(buf, output_verify="silentfix")
    return buf.getvalue()


def _fits_cards(hdu, cards: dict | None, source_header: dict | None) -> None:
    """Copy ``source_header`` (less structural keywords) and then ``cards`` into
    ``hdu.header``; cards FITS cannot hold are counted in a HISTORY card."""
    skipped = 0
    for src in (source_header or {}), (cards or {}):
        for key, value in src.items():
            if key in _FITS_STRUCTURAL or key.startswith("NAXIS"):
                continue
            if isinstance(value, (list, dict)):
                continue
            try:
                hdu.header[key] = value
            except (ValueError, KeyError, TypeError):
                skipped += 1
    for line in (source_header or {}).get("HISTORY", []) or []:
        hdu.header.add_history(str(line))
    for line in (source_header or {}).get("COMMENT", []) or []:
        hdu.header.add_comment(str(line))
    if skipped:
        hdu.header.add_history(f"restoreflow: {skipped} source header cards not copied")


def _provenance_cards(provenance: dict | None) -> dict:
    cards = {}
    for k, v in (provenance or {}).items():
        if isinstance(v, (str, int, float, bool)):
            cards[f"HIERARCH RF {k.upper()}"[:60]] = v
    return cards


def encode(array: np.ndarray, fmt: str, provenance: dict | None = None,
           source_metadata: dict | None = None) -> bytes:
    """Encode ``array`` in ``fmt`` ("png", "tiff", "fits") with a provenance record."""
    prov = json.dumps(provenance or {}, sort_keys=True)
    if fmt == "png":
        return encode_png(array, text={"restoreflow": prov})
    if fmt == "tiff":
        return encode_tiff(array, description=prov)
    if fmt == "fits":
        return encode_fits(array, cards=_provenance_cards(provenance),
                           source_header=source_metadata)
    raise ValueError(f"unknown format {fmt!r} (one of {FORMATS})")


def _png_bands(f, shape: tuple, dtype: np.dtype, bands: Iterable[np.ndarray],
               text: dict[str, str]) -> None:
    """A non-interlaced PNG of (h, W[, 3]) row bands: every scanline with the Up filter
    (its bytes minus those of the row above, mod 256), one zlib stream (level 6) over
    IDAT chunks, ``text`` as tEXt chunks before them."""
    h, w = shape[:2]
    colour = 0 if len(shape) == 2 else 2
    f.write(b"\x89PNG\r\n\x1a\n")
    f.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, dtype.itemsize * 8, colour,
                                            0, 0, 0)))
    for k, v in text.items():
        f.write(_png_chunk(b"tEXt", k.encode("latin-1", errors="replace")[:79] + b"\0"
                           + v.encode("latin-1", errors="replace")))
    z = zlib.compressobj(6)
    above = None
    for band in bands:
        raw = np.ascontiguousarray(band, dtype=dtype.newbyteorder(">"))
        raw = raw.reshape(len(raw), -1).view(np.uint8)  # big-endian samples, row by row
        lines = np.empty((len(raw), raw.shape[1] + 1), np.uint8)
        lines[:, 0] = 2  # filter type Up
        lines[1:, 1:] = raw[1:] - raw[:-1]
        lines[0, 1:] = raw[0] if above is None else raw[0] - above
        above = raw[-1].copy()
        out = z.compress(lines.tobytes())
        if out:
            f.write(_png_chunk(b"IDAT", out))
    f.write(_png_chunk(b"IDAT", z.flush()))
    f.write(_png_chunk(b"IEND", b""))


def _fits_bands(path: str, shape: tuple, dtype: np.dtype, bands: Callable,
                cards: dict, source_header: dict | None) -> None:
    """A FITS primary HDU streamed from row bands; (H, W, 3) as a (3, H, W) cube, one
    plane after another (``bands()`` is called once per plane)."""
    from astropy.io import fits

    planes = 3 if len(shape) == 3 else 1
    probe = np.zeros((planes, 1, 1) if planes == 3 else (1, 1), dtype)
    hdu = fits.PrimaryHDU(data=probe)
    _fits_cards(hdu, cards, source_header)
    hdu.verify("silentfix")
    header = hdu.header.copy()
    header["NAXIS1"], header["NAXIS2"] = shape[1], shape[0]
    if planes == 3:
        header["NAXIS3"] = 3
    with fits.StreamingHDU(path, header) as out:
        for p in range(planes):
            for band in bands():
                plane = band[..., p] if planes == 3 else band
                if dtype == np.uint16:  # stored as int16 with BZERO 32768
                    plane = (plane.astype(np.int32) - 32768).astype(np.int16)
                out.write(np.ascontiguousarray(plane))


_TIFF_TILE = 256  # tile edge of TIFFs written from bands (tifffile takes tiles from iterators)


def _rebanded(bands: Iterable[np.ndarray], rows: int) -> Iterator[np.ndarray]:
    """The same rows in bands of exactly ``rows`` rows (the last one shorter)."""
    held: list[np.ndarray] = []
    n = 0
    for band in bands:
        held.append(band)
        n += len(band)
        while n >= rows:
            joined = np.concatenate(held) if len(held) > 1 else held[0]
            yield joined[:rows]
            held, n = [joined[rows:]], n - rows
    if n:
        yield np.concatenate(held) if len(held) > 1 else held[0]


def write_bands(path: str | os.PathLike, fmt: str, shape: tuple, dtype, bands: Callable,
                provenance: dict | None = None, source_metadata: dict | None = None) -> Path:
    """Write an image given as row bands (``bands()`` returns an iterator over (h, W[, 3])
    arrays, top to bottom) in ``fmt`` without holding it whole: the same pixels and
    provenance as :func:`encode`. Written to a temp file beside ``path``, then renamed."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (one of {FORMATS})")
    dtype = np.dtype(dtype)
    prov = json.dumps(provenance or {}, sort_keys=True)
    path = Path(path)
    with replacing(path) as (fd, tmp):
        os.close(fd)
        if fmt == "png":
            if dtype not in (np.uint8, np.uint16):
                raise ValueError(f"PNG holds uint8 or uint16, not {dtype}")
            with open(tmp, "wb") as f:
                _png_bands(f, shape, dtype, bands(), {"restoreflow": prov})
        elif fmt == "tiff":
            import tifffile

            tiles = (band[:, x:x + _TIFF_TILE] for band in _rebanded(bands(), _TIFF_TILE)
                     for x in range(0, shape[1], _TIFF_TILE))
            tifffile.imwrite(tmp, data=tiles, shape=shape, dtype=dtype,
                             tile=(_TIFF_TILE, _TIFF_TILE),
                             photometric="rgb" if len(shape) == 3 else "minisblack",
                             compression="zlib", description=prov, metadata=None,
                             software="restoreflow")
        else:
            _fits_bands(tmp, shape, dtype, bands, _provenance_cards(provenance),
                        source_metadata)
    return path


def open_temp_beside(path: str | os.PathLike) -> tuple[int, str]:
    """A new, exclusively created temp file in the directory of ``path``: (fd, temp path).

    Created with mode 0o666 filtered by the umask (and any default ACL), as ``open(path,
    "wb")`` would, so the renamed file is as readable as a normal write (``mkstemp``
    makes 0o600 files, which only their owner can read).
    """
    path = os.fspath(path)
    head, name = os.path.split(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = os.path.join(head, f".{name[:40]}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{head}: no free temporary file name beside {name}")


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temp file beside ``path``, then rename (no half-written files).

    The file gets the permissions of a normal write (0o666 & ~umask)."""
    path = Path(path)
    with replacing(path) as (fd, _), os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


@contextlib.contextmanager
def replacing(path: Path):
    """``(fd, temp path)`` of a new temp file beside ``path`` (:func:`open_temp_beside`),
    renamed to ``path`` when the block ends, removed if it fails."""
    fd, tmp = open_temp_beside(path)
    try:
        yield fd, tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
