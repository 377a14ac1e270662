"""PNG and JPEG through Pillow's format plugins (16-bit colour PNG through libpng, which
keeps the 16 bits Pillow would drop). The pixel count is checked from the header, and a
PNG's image data by :mod:`restoreflow.storage.png_safety`, before decoding.
"""

from __future__ import annotations

import io

import numpy as np

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


def _pil_info(im) -> dict:
    meta: dict = {"mode": im.mode}
    for k, v in im.info.items():
        if k in ("dpi", "gamma", "srgb", "aspect", "jfif_version", "jfif_unit",
                 "jfif_density", "progressive", "interlace", "transparency"):
            meta[k] = v if not isinstance(v, bytes) else clip_text(v.hex())
        elif k in ("icc_profile", "exif", "xmp"):
            meta[k] = f"<{len(v)} bytes>"
        elif isinstance(v, str):
            meta[k] = clip_text(v)
    if hasattr(im, "getexif"):
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
