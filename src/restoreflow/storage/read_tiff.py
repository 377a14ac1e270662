"""TIFF through tifffile (Pillow for compressions tifffile cannot decode without
imagecodecs). The series' shape and dtype are checked from the header, and the strip
offsets against the file's length, before decoding.
"""

from __future__ import annotations

import io

import numpy as np

from restoreflow.storage.decode import ImageRejected, check_pixels, clip_text, finish_array
from restoreflow.storage.layout import SOURCE_DTYPES

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


def _tag_value(v):
    if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, int) for x in v) and v[1]:
        return [int(v[0]), int(v[1])]
    if hasattr(v, "name") and hasattr(v, "value"):  # enum
        return v.name
    if isinstance(v, bytes):
        return clip_text(v.decode("latin-1"))
    if isinstance(v, str):
        return clip_text(v)
    if isinstance(v, tuple):
        return [_tag_value(x) for x in v]
    return v


def read_tiff(data: bytes, max_pixels: int, min_side: int) -> tuple[np.ndarray, dict]:
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
        check_pixels("tiff", h, w, max_pixels, min_side)
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
    return finish_array(arr, "tiff", meta, max_pixels, min_side)


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
