"""PNG and JPEG through Pillow's format plugins (16-bit colour PNG through libpng, which
keeps the 16 bits Pillow would drop). The pixel count is checked from the header, and a
PNG's image data by :mod:`restoreflow.storage.png_safety`, before decoding.

Large non-interlaced 8/16-bit grey, grey+alpha, RGB and RGBA PNGs (:func:`stream_png`)
and large grey and colour (YCbCr) JPEGs, baseline or progressive (:func:`stream_jpeg`),
are decoded in bands by libvips' sequential loaders, which keep only a few rows decoded at
a time; their pixels are the same as those of the whole decode (libpng, libjpeg-turbo).
"""

from __future__ import annotations

import io
import os

import numpy as np

from restoreflow.storage.bands import BandedImage, RemoteFile, Source, check_band, open_source
from restoreflow.storage.decode import (
    FORMAT_NAMES,
    ImageRejected,
    check_pixels,
    clip_text,
    finish_array,
)
from restoreflow.storage.png_safety import check_png_data, png_ihdr


def _pil_open(data: bytes, fmt: str):
    """Open with the format's Pillow plugin directly: parses the header only and skips
    Pillow's global decompression-bomb limit (our own limit is checked instead)."""
    from PIL import JpegImagePlugin, PngImagePlugin

    cls = PngImagePlugin.PngImageFile if fmt == "png" else JpegImagePlugin.JpegImageFile
    return cls(io.BytesIO(data))


def _pil_info(im, load_exif: bool = True) -> dict:
    meta: dict = {"mode": im.mode}
    for k, v in im.info.items():
        if k in ("dpi", "gamma", "srgb", "aspect", "jfif_version", "jfif_unit",
                 "jfif_density", "progressive", "interlace", "transparency"):
            meta[k] = v if not isinstance(v, bytes) else clip_text(v.hex())
        elif k in ("icc_profile", "exif", "xmp"):
            meta[k] = f"<{len(v)} bytes>"
        elif isinstance(v, str):
            meta[k] = clip_text(v)
    if hasattr(im, "getexif") and (load_exif or "exif" in im.info):
        orientation = im.getexif().get(0x0112)
        if orientation:
            meta["exif_orientation"] = int(orientation)
    return meta


def read_pil(data: bytes, fmt: str, max_pixels: int, min_side: int) -> tuple[np.ndarray, dict]:
    name = FORMAT_NAMES[fmt]
    if fmt == "png":
        ihdr = png_ihdr(data)
        check_pixels(fmt, ihdr["height"], ihdr["width"], max_pixels, min_side)
        check_png_data(data, ihdr)
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
            return finish_array(arr, fmt, meta, max_pixels, min_side)
    try:
        im = _pil_open(data, fmt)
    except Exception as exc:  # noqa: BLE001 - every decoder failure becomes a rejection
        raise ImageRejected(
            f"corrupt or truncated {name}: {type(exc).__name__}: {exc}"
        ) from exc
    w, h = im.size
    check_pixels(fmt, h, w, max_pixels, min_side)
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
    return finish_array(arr, fmt, meta, max_pixels, min_side)


_PNG_BANDS = {0: 1, 2: 3, 4: 1, 6: 3}  # colour type -> channels stored (alpha dropped)


class _VipsBands(BandedImage):
    """Rows of a PNG or JPEG (``meta["format"]``) decoded by libvips' sequential loader
    (top to bottom only)."""

    def __init__(self, src: Source, shape: tuple, dtype: np.dtype, meta: dict) -> None:
        import pyvips

        pyvips.cache_set_max(0)  # the operation cache would keep decoded regions alive
        opts = {"access": "sequential", "fail_on": "error"}  # truncation included
        load = getattr(pyvips.Image, f"{meta['format']}load_source")
        self._fd = self._file = self._source = None
        if isinstance(src, str):
            # through a descriptor: libvips would parse "name[options]" in a file name,
            # and pyvips cannot pass names that are not UTF-8
            self._fd = os.open(src, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            self._source = pyvips.Source.new_from_descriptor(self._fd)
            self._im = load(self._source, **opts)
        elif isinstance(src, RemoteFile):
            self._file = f = src.open()
            # kept on self: libvips calls back into it for as long as the image lives
            self._source = pyvips.SourceCustom()
            self._source.on_read(lambda size: f.read(size))
            self._source.on_seek(lambda offset, whence: f.seek(offset, whence))
            self._im = load(self._source, **opts)
        else:
            self._im = getattr(pyvips.Image, f"{meta['format']}load_buffer")(src, **opts)
        self.shape, self.dtype, self.meta = shape, dtype, meta
        if (self._im.height, self._im.width) != shape[:2]:
            raise ImageRejected(f"corrupt {FORMAT_NAMES[meta['format']]}: decoder reads "
                                f"{self._im.width}x"
                                f"{self._im.height}, the header declares {shape[1]}x{shape[0]}")

    def _read(self, y0: int, y1: int) -> np.ndarray:
        im = self._im
        buf = im.crop(0, y0, im.width, y1 - y0).write_to_memory()
        return np.frombuffer(buf, dtype=self.dtype).reshape(y1 - y0, im.width, im.bands)

    def close(self) -> None:
        self._im = self._source = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._file is not None:
            self._file.close()
            self._file = None


def stream_png(src: Source, head: bytes, max_pixels: int, min_side: int, tile: int,
               max_band_bytes: int, stream_min_bytes: int) -> BandedImage | None:
    """A PNG decoded in bands of rows, or None where the whole decode is used: an image
    that decodes to at most ``stream_min_bytes``, and interlaced, palette and 1/2/4-bit
    PNGs. The same checks as :func:`read_pil` come first (pixel count, image data no
    larger than declared); then one band of ``tile`` rows must decode to at most
    ``max_band_bytes``. Metadata chunks after the image data are not read."""
    ihdr = png_ihdr(head)
    h, w = ihdr["height"], ihdr["width"]
    check_pixels("png", h, w, max_pixels, min_side)
    colour, depth = ihdr["colour_type"], ihdr["bit_depth"]
    if ihdr["interlace"] or colour not in _PNG_BANDS or depth not in (8, 16):
        return None
    c, itemsize = _PNG_BANDS[colour], depth // 8
    if h * w * c * itemsize <= stream_min_bytes:
        return None
    check_band(min(tile, h), w, c, itemsize, max_band_bytes)
    with open_source(src) as f:
        check_png_data(f, ihdr)
        if depth == 16 and colour != 0:
            meta: dict = {"source_metadata": {"mode": f"16-bit colour type {colour}"}}
        else:
            from PIL import PngImagePlugin

            f.seek(0)
            with PngImagePlugin.PngImageFile(f) as im:  # the header chunks only
                meta = {"source_metadata": _pil_info(im, load_exif=False)}
    if colour in (4, 6):
        meta["dropped_alpha"] = True
    meta["format"] = "png"
    shape = (h, w, 3) if c == 3 else (h, w)
    return _VipsBands(src, shape, np.dtype(f"uint{depth}"), meta)


def stream_jpeg(src: Source, max_pixels: int, min_side: int, tile: int,
                max_band_bytes: int, stream_min_bytes: int) -> BandedImage | None:
    """A grey or colour JPEG decoded in bands of rows, or None where the whole decode is
    used: an image that decodes to at most ``stream_min_bytes``, CMYK / YCCK JPEGs (Pillow
    converts those) and markers Pillow cannot parse (the whole decode rejects the file with
    its reason). The pixel count is checked from the header first; one band of ``tile``
    rows must decode to at most ``max_band_bytes``."""
    from PIL import JpegImagePlugin

    try:
        with open_source(src) as f, JpegImagePlugin.JpegImageFile(f) as im:  # the markers
            (w, h), mode = im.size, im.mode
            meta: dict = {"source_metadata": _pil_info(im)}
    except Exception:  # noqa: BLE001 - the whole decode rejects it, with its reason
        return None
    check_pixels("jpeg", h, w, max_pixels, min_side)
    if mode not in ("L", "RGB"):
        return None
    c = 3 if mode == "RGB" else 1
    if h * w * c <= stream_min_bytes:
        return None
    check_band(min(tile, h), w, c, 1, max_band_bytes)
    meta["format"] = "jpeg"
    return _VipsBands(src, (h, w, 3) if c == 3 else (h, w), np.dtype("uint8"), meta)
