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
"""

from __future__ import annotations

import io
import math
import struct
import warnings
import zlib
from pathlib import PurePosixPath

import numpy as np

from restoreflow.storage.layout import SOURCE_DTYPES

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
FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "fits": "FITS"}
_TIFF_TAGS = {
    "XResolution": "x_resolution",
    "YResolution": "y_resolution",
    "ResolutionUnit": "resolution_unit",
    "PhotometricInterpretation": "photometric",
    "ImageDescription": "description",
    "Software": "software",
    "DateTime": "datetime",
    "SampleFormat": "sample_format",
    "BitsPerSample": "bits_per_sample",
    "Compression": "compression",
}
_MAX_TEXT = 4096  # longest metadata string kept
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# Adam7 passes: (x0, y0, dx, dy)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))
_INFLATE_STEP = 1 << 20  # bytes inflated per step when checking PNG image data


class ImageRejected(Exception):
    """A file that cannot become an image in the store; ``reason`` is one line."""

    def __init__(self, reason: str) -> None:
        reason = " ".join(str(reason).split())
        super().__init__(reason)
        self.reason = reason


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


def _text(value) -> str:
    s = value if isinstance(value, str) else str(value)
    return s if len(s) <= _MAX_TEXT else s[:_MAX_TEXT] + "..."


def _check_pixels(fmt: str, h: int, w: int, max_pixels: int, min_side: int,
                  what: str = "header declares") -> None:
    if h * w > max_pixels:
        raise ImageRejected(
            f"too many pixels: {what} {w}x{h} = {h * w:,} pixels, limit {max_pixels:,} "
            "(RESTOREFLOW_MAX_PIXELS)"
        )
    if min(h, w) < min_side:
        raise ImageRejected(
            f"too small: {w}x{h} pixels, the shorter side must be at least {min_side} "
            "(RESTOREFLOW_MIN_SIDE)"
        )


def _finish(arr: np.ndarray, fmt: str, meta: dict, max_pixels: int,
            min_side: int) -> tuple[np.ndarray, dict]:
    """Common checks on the decoded array: layout, dtype, finiteness, size."""
    if arr.dtype.kind == "c":
        raise ImageRejected(f"unsupported dtype {arr.dtype} (complex values)")
    if arr.dtype == np.bool_:
        raise ImageRejected("unsupported dtype bool (1-bit image)")
    dt = arr.dtype.newbyteorder("=") if arr.dtype.byteorder not in ("=", "|") else arr.dtype
    if dt.name not in SOURCE_DTYPES:
        raise ImageRejected(
            f"unsupported dtype {arr.dtype.name} (supported: {', '.join(SOURCE_DTYPES)})"
        )
    arr = np.ascontiguousarray(arr, dtype=dt)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = np.ascontiguousarray(arr[:, :, :3])
        meta["dropped_alpha"] = True
    if arr.ndim == 3 and arr.shape[2] == 2:
        arr = np.ascontiguousarray(arr[:, :, 0])
        meta["dropped_alpha"] = True
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ImageRejected(
            f"unsupported dimensions {tuple(arr.shape)} (need 2-D grey or HxWx3 RGB)"
        )
    h, w = arr.shape[:2]
    _check_pixels(fmt, h, w, max_pixels, min_side, what="image is")
    if arr.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            n_nan = int(np.count_nonzero(np.isnan(arr)))
            raise ImageRejected(
                f"{bad} non-finite pixels ({n_nan} NaN, {bad - n_nan} Inf); "
                "blank pixels are not supported"
            )
    meta["format"] = fmt
    return arr, meta


# --- PNG / JPEG (Pillow) --------------------------------------------------------------


def _pil_open(data: bytes, fmt: str):
    """Open with the format's Pillow plugin directly: parses the header only and skips
    Pillow's global decompression-bomb limit (our own limit is checked instead)."""
    from PIL import JpegImagePlugin, PngImagePlugin

    cls = PngImagePlugin.PngImageFile if fmt == "png" else JpegImagePlugin.JpegImageFile
    return cls(io.BytesIO(data))


def _pil_info(im) -> dict:
    meta: dict = {"mode": im.mode}
    for k, v in im.info.items():
        if k in ("dpi", "gamma", "srgb", "aspect", "jfif_version", "jfif_unit",
                 "jfif_density", "progressive", "interlace", "transparency"):
            meta[k] = v if not isinstance(v, bytes) else _text(v.hex())
        elif k in ("icc_profile", "exif", "xmp"):
            meta[k] = f"<{len(v)} bytes>"
        elif isinstance(v, str):
            meta[k] = _text(v)
    if hasattr(im, "getexif"):
        orientation = im.getexif().get(0x0112)
        if orientation:
            meta["exif_orientation"] = int(orientation)
    return meta


def _png_ihdr(data: bytes) -> dict:
    """Width, height, bit depth, colour type and interlace from the IHDR (CRC checked)."""
    if len(data) < 33:
        raise ImageRejected(f"corrupt PNG: truncated: {len(data)} bytes, the PNG header "
                            "needs 33")
    length, ctype = struct.unpack(">I4s", data[8:16])
    if ctype != b"IHDR" or length != 13:
        raise ImageRejected("corrupt PNG: first chunk is not a 13-byte IHDR")
    body = data[16:29]
    (crc,) = struct.unpack(">I", data[29:33])
    if zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF != crc:
        raise ImageRejected("corrupt PNG: IHDR CRC mismatch")
    w, h, depth, colour, comp, filt, interlace = struct.unpack(">IIBBBBB", body)
    if w == 0 or h == 0:
        raise ImageRejected(f"corrupt PNG: IHDR declares a {w}x{h} image")
    if (depth not in _PNG_DEPTHS.get(colour, ()) or comp != 0 or filt != 0
            or interlace not in (0, 1)):
        raise ImageRejected(f"corrupt PNG: invalid IHDR (colour type {colour}, bit depth "
                            f"{depth}, interlace {interlace})")
    return {"width": w, "height": h, "bit_depth": depth, "colour_type": colour,
            "interlace": interlace}


def _png_data_size(ihdr: dict) -> int:
    """Bytes of filtered scanlines the IHDR declares: per (Adam7 pass) row, one filter
    byte plus ceil(width * samples * bit depth / 8)."""
    w, h = ihdr["width"], ihdr["height"]
    bits = _PNG_CHANNELS[ihdr["colour_type"]] * ihdr["bit_depth"]
    passes = _ADAM7 if ihdr["interlace"] else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        pw = (w - x0 + dx - 1) // dx if w > x0 else 0
        ph = (h - y0 + dy - 1) // dy if h > y0 else 0
        if pw and ph:
            total += ph * (1 + (pw * bits + 7) // 8)
    return total


def _check_png_data(data: bytes, ihdr: dict) -> None:
    """Reject a PNG whose image data inflates to more than its IHDR declares (a
    decompression bomb: decoders would inflate all of it, or keep it in memory) before
    any decoder sees it. Inflates in steps of at most ``_INFLATE_STEP`` bytes and stops
    at the first byte past the declared size, so memory and time are bounded by the
    declared size whatever the stream holds. Chunk CRCs and short data are left to the
    decoder."""
    expected = _png_data_size(ihdr)
    inflater = zlib.decompressobj()
    total = 0
    view = memoryview(data)
    pos, n = 8, len(data)
    seen_idat = False
    while pos + 8 <= n and not inflater.eof:
        length, ctype = struct.unpack(">I4s", view[pos:pos + 8])
        if ctype != b"IDAT":
            if seen_idat or ctype == b"IEND":
                break  # the image data is one run of consecutive IDAT chunks
            pos += 12 + length
            continue
        seen_idat = True
        buf = view[pos + 8:pos + 8 + length]
        pos += 12 + length
        while True:
            try:
                out = inflater.decompress(buf, _INFLATE_STEP)
            except zlib.error as exc:
                raise ImageRejected(f"corrupt PNG: compressed image data: {exc}") from exc
            total += len(out)
            if total > expected:
                raise ImageRejected(
                    f"corrupt PNG: image data inflates to more than the {expected:,} bytes "
                    f"its {ihdr['width']}x{ihdr['height']} header declares "
                    "(decompression bomb?)"
                )
            buf = inflater.unconsumed_tail
            # a full step may leave output pending with all input consumed: go on
            if not buf and len(out) < _INFLATE_STEP:
                break


def _read_pil(data: bytes, fmt: str, max_pixels: int, min_side: int) -> tuple[np.ndarray, dict]:
    name = FORMAT_NAMES[fmt]
    if fmt == "png":
        ihdr = _png_ihdr(data)
        _check_pixels(fmt, ihdr["height"], ihdr["width"], max_pixels, min_side)
        _check_png_data(data, ihdr)
        if ihdr["bit_depth"] == 16 and ihdr["colour_type"] in (2, 4, 6):
            # Pillow would reduce these to 8 bits: libpng (imagecodecs) keeps 16.
            import imagecodecs

            try:
                arr = imagecodecs.png_decode(data)
            except Exception as exc:  # noqa: BLE001 - every decoder failure is a rejection
                raise ImageRejected(
                    f"corrupt or truncated PNG: {type(exc).__name__}: {exc}"
                ) from exc
            meta = {"source_metadata": {"mode": f"16-bit colour type {ihdr['colour_type']}"}}
            return _finish(arr, fmt, meta, max_pixels, min_side)
    try:
        im = _pil_open(data, fmt)
    except Exception as exc:  # noqa: BLE001 - every decoder failure becomes a rejection
        raise ImageRejected(
            f"corrupt or truncated {name}: {type(exc).__name__}: {exc}"
        ) from exc
    w, h = im.size
    _check_pixels(fmt, h, w, max_pixels, min_side)
    meta: dict = {}
    try:
        im.load()
        meta["source_metadata"] = _pil_info(im)
        mode = im.mode
        if mode == "1":
            im = im.convert("L")
            meta["converted_from"] = "1-bit"
        elif mode in ("P", "PA"):
            has_alpha = mode == "PA" or "transparency" in im.info
            im = im.convert("RGBA" if has_alpha else "RGB")
            meta["converted_from"] = "palette"
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
            meta["converted_from"] = mode
        elif mode == "La":
            im = im.convert("LA")
        elif mode == "RGBa":
            im = im.convert("RGBA")
        arr = np.asarray(im)
        if mode == "I" and fmt == "png":
            arr = arr.astype(np.uint16)  # 16-bit grey opened as 32-bit by some Pillows
    except ImageRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - every decoder failure becomes a rejection
        raise ImageRejected(f"corrupt or truncated {name}: {type(exc).__name__}: {exc}") from exc
    finally:
        im.close()
    return _finish(arr, fmt, meta, max_pixels, min_side)


# --- TIFF (tifffile) -----------------------------------------------------------------


def _tag_value(v):
    if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, int) for x in v) and v[1]:
        return [int(v[0]), int(v[1])]
    if hasattr(v, "name") and hasattr(v, "value"):  # enum
        return v.name
    if isinstance(v, bytes):
        return _text(v.decode("latin-1"))
    if isinstance(v, str):
        return _text(v)
    if isinstance(v, tuple):
        return [_tag_value(x) for x in v]
    return v


def _read_tiff(data: bytes, max_pixels: int, min_side: int) -> tuple[np.ndarray, dict]:
    import tifffile

    try:
        tif = tifffile.TiffFile(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001
        raise ImageRejected(f"corrupt TIFF: {type(exc).__name__}: {exc}") from exc
    with tif:
        try:
            series = tif.series
        except Exception as exc:  # noqa: BLE001
            raise ImageRejected(f"corrupt TIFF: {type(exc).__name__}: {exc}") from exc
        if not series:
            raise ImageRejected("corrupt TIFF: no image data found")
        s = series[0]
        shape, axes, dtype = tuple(s.shape), s.axes, np.dtype(s.dtype)
        # Interpret the series' dimensions from the header, before decoding anything.
        planar = False
        if len(shape) == 2:
            h, w = shape
        elif len(shape) == 3 and shape[-1] in (2, 3, 4) and axes[-1] in "SC":
            h, w = shape[:2]
        elif len(shape) == 3 and shape[0] in (3, 4):
            h, w = shape[1:]
            planar = True
        else:
            raise ImageRejected(
                f"unsupported dimensions {shape} (axes {axes}): need a 2-D grey, HxWx3 RGB "
                "or planar 3xHxW image"
            )
        _check_pixels("tiff", h, w, max_pixels, min_side)
        if dtype.kind == "c":
            raise ImageRejected(f"unsupported dtype {dtype} (complex values)")
        if dtype == np.bool_:
            raise ImageRejected("unsupported dtype bool (1-bit image)")
        if dtype.newbyteorder("=").name not in SOURCE_DTYPES:
            raise ImageRejected(
                f"unsupported dtype {dtype.name} (supported: {', '.join(SOURCE_DTYPES)})"
            )
        page = s.pages[0] if s.pages else tif.pages[0]
        # A truncated file: tifffile reads short segments as an error only sometimes.
        for p in s.pages:
            if p is None:
                continue
            for off, cnt in zip(p.dataoffsets, p.databytecounts, strict=False):
                if not isinstance(off, (int, np.integer)) or not isinstance(
                        cnt, (int, np.integer)):  # e.g. an ASCII-typed StripOffsets tag
                    raise ImageRejected(
                        f"corrupt TIFF: image data offsets are {type(off).__name__}, "
                        "not integers"
                    )
                if cnt and off + cnt > len(data):
                    raise ImageRejected(
                        f"truncated TIFF: image data ends at byte {off + cnt:,}, the file "
                        f"has {len(data):,} bytes"
                    )
        smeta: dict = {"axes": axes, "series_shape": list(shape)}
        for tag in page.tags.values():
            key = _TIFF_TAGS.get(tag.name)
            if key and key not in smeta:  # the first ImageDescription is the user's
                smeta[key] = _tag_value(tag.value)
        try:
            arr = s.asarray()
            photometric = getattr(page.photometric, "name", str(page.photometric))
            meta: dict = {"source_metadata": smeta}
            if photometric == "PALETTE" and page.colormap is not None:
                arr = tifffile.apply_colormap(arr, page.colormap)
                meta["converted_from"] = "palette"
        except ImageRejected:
            raise
        except Exception as exc:  # noqa: BLE001
            msg = str(exc)
            if "imagecodecs" not in msg:
                raise ImageRejected(f"corrupt TIFF: {type(exc).__name__}: {msg}") from exc
            # LZW / JPEG / ... without imagecodecs: Pillow decodes the common layouts
            arr = _tiff_via_pillow(data, page, shape, dtype)
            meta = {"source_metadata": smeta, "decoder": "pillow"}
    if planar and arr.ndim == 3 and arr.shape[0] in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
        meta["planar"] = True
    return _finish(arr, "tiff", meta, max_pixels, min_side)


def _tiff_via_pillow(data: bytes, page, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """Decode a single-page TIFF with Pillow when tifffile lacks the codec; only layouts
    Pillow holds losslessly (8-bit grey/RGB/RGBA, 16/32-bit grey) are accepted."""
    compression = getattr(page.compression, "name", page.compression)
    spp, bps = int(page.samplesperpixel), int(page.bitspersample)
    planar = getattr(page.planarconfig, "name", "") == "SEPARATE"
    layout_ok = (bps == 8 and spp in (1, 3, 4)) or (bps in (16, 32) and spp == 1)
    if not layout_ok or planar or len(shape) not in (2, 3):
        raise ImageRejected(
            f"TIFF compression {compression} with {spp} x {bps}-bit samples is not "
            "supported (needs the imagecodecs package)"
        )
    from PIL import TiffImagePlugin

    try:
        im = TiffImagePlugin.TiffImageFile(io.BytesIO(data))  # pixel count checked already
        im.load()
        arr = np.asarray(im)
    except Exception as exc:  # noqa: BLE001
        raise ImageRejected(
            f"corrupt or truncated TIFF ({compression}): {type(exc).__name__}: {exc}"
        ) from exc
    if arr.shape != tuple(shape) or arr.dtype.newbyteorder("=") != dtype.newbyteorder("="):
        raise ImageRejected(
            f"TIFF compression {compression} is not supported for {dtype} {shape} "
            "(needs the imagecodecs package)"
        )
    return arr


# --- FITS (astropy) ------------------------------------------------------------------

_FITS_DTYPES = {8: "uint8", 16: "int16", 32: "int32", 64: "int64", -32: "float32",
                -64: "float64"}


def _card_value(v):
    if v is None or isinstance(v, (bool, int, str)):
        return _text(v) if isinstance(v, str) else v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    return str(v)  # complex, Undefined


def fits_header_dict(header) -> dict:
    """Header cards as a JSON-able dict; COMMENT and HISTORY kept as lists of lines."""
    out: dict = {}
    for card in header.cards:
        key = card.keyword
        if key in ("COMMENT", "HISTORY"):
            out.setdefault(key, []).append(_text(card.value))
        elif key and key not in out:
            try:
                out[key] = _card_value(card.value)
            except Exception:  # noqa: BLE001 - one unparsable card must not lose the image
                out[key] = _text(card.image.strip())
    return out


def _read_fits(data: bytes, max_pixels: int, min_side: int) -> tuple[np.ndarray, dict]:
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        try:
            hdul = fits.open(io.BytesIO(data), memmap=False, lazy_load_hdus=True)
        except Exception as exc:  # noqa: BLE001
            raise ImageRejected(f"corrupt FITS: {type(exc).__name__}: {exc}") from exc
        with hdul:
            chosen = None
            try:
                for i, hdu in enumerate(hdul):
                    if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
                        continue
                    naxis = int(hdu.header.get("NAXIS", 0))
                    dims = [int(hdu.header.get(f"NAXIS{k}", 0)) for k in range(1, naxis + 1)]
                    if naxis >= 2 and all(d > 0 for d in dims):
                        chosen = (i, hdu, dims)
                        break
            except ImageRejected:
                raise
            except Exception as exc:  # noqa: BLE001
                raise ImageRejected(f"corrupt FITS: {type(exc).__name__}: {exc}") from exc
            if chosen is None:
                raise ImageRejected("FITS file has no HDU with 2-D image data")
            index, hdu, dims = chosen
            header = hdu.header
            # numpy shape is the NAXIS list reversed; drop degenerate (size-1) axes
            shape = [d for d in reversed(dims)]
            core = [d for d in shape[:-2] if d != 1] + shape[-2:]
            if len(core) == 2:
                h, w = core
            elif len(core) == 3 and core[0] == 3:
                h, w = core[1:]
            else:
                raise ImageRejected(
                    f"unsupported dimensions {tuple(shape)} in HDU {index}: need 2-D or 3xHxW"
                )
            _check_pixels("fits", h, w, max_pixels, min_side)
            bitpix = int(header.get("BITPIX", 0))
            scaled = "BSCALE" in header or "BZERO" in header
            if not isinstance(hdu, fits.CompImageHDU):
                if bitpix not in _FITS_DTYPES:
                    raise ImageRejected(f"unsupported FITS BITPIX {bitpix}")
                if bitpix == 64 and not scaled:
                    raise ImageRejected("unsupported dtype int64 (FITS BITPIX 64)")
                info = hdul.fileinfo(index)
                need = info["datLoc"] + abs(bitpix) // 8 * math.prod(dims)
                if need > len(data):
                    raise ImageRejected(
                        f"truncated FITS: HDU {index} data needs {need:,} bytes, "
                        f"the file has {len(data):,}"
                    )
            smeta = fits_header_dict(header)
            try:
                arr = np.array(hdu.data)  # copies out of the file buffer
            except Exception as exc:  # noqa: BLE001
                raise ImageRejected(
                    f"corrupt FITS data in HDU {index}: {type(exc).__name__}: {exc}"
                ) from exc
    arr = arr.reshape(core)
    meta: dict = {"source_metadata": smeta, "fits_hdu": index, "row_order": "bottom-up"}
    if arr.ndim == 3:
        arr = np.moveaxis(arr, 0, -1)
    return _finish(arr, "fits", meta, max_pixels, min_side)


# --- entry point ---------------------------------------------------------------------


def read_image(data: bytes, name: str, max_pixels: int = 400_000_000,
               min_side: int = 8) -> tuple[np.ndarray, dict]:
    """Decode an image file's bytes.

    Returns ``(array, metadata)``: ``array`` is (H, W) grey or (H, W, 3) RGB in the
    file's dtype (native byte order); ``metadata`` has ``format``, ``source_metadata``
    (header cards / tags), and when applicable ``dropped_alpha``, ``converted_from``,
    ``planar``, ``fits_hdu``, ``row_order`` and ``extension_mismatch``.
    Raises :class:`ImageRejected` with a one-line reason.
    """
    if len(data) == 0:
        raise ImageRejected("empty file (0 bytes)")
    by_ext = image_format(name)
    if by_ext is None:
        suffix = PurePosixPath(name.replace("\\", "/")).suffix or "(none)"
        raise ImageRejected(
            f"unsupported file extension {suffix!r} (supported: "
            f"{' '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    fmt = sniff(data)
    extra: dict = {}
    if fmt is None:
        raise ImageRejected(
            f"not a {FORMAT_NAMES[by_ext]} file: bad signature ({_describe(data)}, "
            f"{len(data):,} bytes)"
        )
    if fmt != by_ext:
        extra["extension_mismatch"] = f"named {by_ext}, content is {fmt}"
    try:
        if fmt in ("png", "jpeg"):
            arr, meta = _read_pil(data, fmt, max_pixels, min_side)
        elif fmt == "tiff":
            arr, meta = _read_tiff(data, max_pixels, min_side)
        else:
            arr, meta = _read_fits(data, max_pixels, min_side)
    except ImageRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - hostile bytes can break a decoder anywhere
        raise ImageRejected(
            f"corrupt {FORMAT_NAMES[fmt]}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    meta.update(extra)
    meta.setdefault("row_order", "top-down")
    meta.setdefault("source_metadata", {})
    return arr, meta
