"""TIFF through tifffile (Pillow for compressions tifffile cannot decode without
imagecodecs). The series' shape and dtype are checked from the header, and the strip
offsets against the file's length, before decoding. Large one-page TIFFs are decoded in
bands of rows (:func:`stream_tiff`), a strip or a row of tiles at a time.
"""

from __future__ import annotations

import io

import numpy as np

from restoreflow.storage.bands import (
    BandedImage,
    Source,
    check_band,
    open_source,
    source_size,
)
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


def _tiff_layout(tif, nbytes: int, max_pixels: int, min_side: int) -> tuple:
    """The first series' layout, checked from the header before anything is decoded:
    ``(series, page, shape, axes, dtype, planar, h, w)``."""
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
            if cnt and off + cnt > nbytes:
                raise ImageRejected(
                    f"truncated TIFF: image data ends at byte {off + cnt:,}, the file "
                    f"has {nbytes:,} bytes"
                )
    return s, page, shape, axes, dtype, planar, h, w


def _tiff_smeta(page, shape: tuple, axes: str) -> dict:
    smeta: dict = {"axes": axes, "series_shape": list(shape)}
    for tag in page.tags.values():
        key = _TIFF_TAGS.get(tag.name)
        if key and key not in smeta:  # the first ImageDescription is the user's
            smeta[key] = _tag_value(tag.value)
    return smeta


def apply_colormap(indices: np.ndarray, colormap: np.ndarray) -> np.ndarray:
    """(..., 3) colours of palette ``indices`` from a TIFF ColorMap of shape (3, N)."""
    return np.moveaxis(np.take(colormap, indices, axis=1), 0, -1)


def _is_palette(page) -> bool:
    photometric = getattr(page.photometric, "name", str(page.photometric))
    return photometric == "PALETTE" and page.colormap is not None


def read_tiff(data: bytes, max_pixels: int, min_side: int) -> tuple[np.ndarray, dict]:
    import tifffile

    try:
        tif = tifffile.TiffFile(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001
        raise ImageRejected(f"corrupt TIFF: {type(exc).__name__}: {exc}") from exc
    with tif:
        s, page, shape, axes, dtype, planar, h, w = _tiff_layout(tif, len(data), max_pixels,
                                                                min_side)
        smeta = _tiff_smeta(page, shape, axes)
        try:
            arr = s.asarray()
            meta: dict = {"source_metadata": smeta}
            if _is_palette(page):
                arr = apply_colormap(arr, page.colormap)
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


class _TiffBands(BandedImage):
    """Rows of a one-page TIFF, read strip by strip or tile row by tile row through
    tifffile's segment decoder; uncompressed contiguous data is read row by row."""

    def __init__(self, tif, close, page, shape: tuple, dtype: np.dtype, meta: dict) -> None:
        self._tif, self._close, self._page = tif, close, page
        self.shape, self.dtype, self.meta = shape, dtype, meta
        self._cache: dict[int, tuple] = {}  # segment index -> decode result
        self._shaped = page.shaped  # (separate samples, depth, length, width, contig)
        self._decode_args: dict = {"_fullsize": page.is_tiled}
        if page.compression in (6, 7, 34892, 33007):  # JPEG
            self._decode_args.update(jpegtables=page.jpegtables, jpegheader=page.jpegheader)

    def _indices(self, y0: int, y1: int) -> list[int]:
        """Segment indices that hold rows y0:y1, in file index order."""
        page = self._page
        S = self._shaped[0]
        seg_h = page.chunks[0]
        first, last = y0 // seg_h, (y1 - 1) // seg_h
        ny = -(-page.imagelength // seg_h)
        nx = -(-page.imagewidth // page.tilewidth) if page.is_tiled else 1
        return [(p * ny + r) * nx + c for p in range(S)
                for r in range(first, last + 1) for c in range(nx)]

    def _read(self, y0: int, y1: int) -> np.ndarray:
        page, fh = self._page, self._tif.filehandle
        S, _, _, W, C = self._shaped
        seg_dtype = page.dtype
        out = np.empty((S, y1 - y0, W, C), dtype=seg_dtype)
        if page.is_contiguous:
            row = W * C * seg_dtype.itemsize
            dt = np.dtype(self._tif.byteorder + seg_dtype.char)
            for p in range(S):
                fh.seek(page.dataoffsets[0] + (p * page.imagelength + y0) * row)
                buf = fh.read((y1 - y0) * row)
                out[p] = np.frombuffer(buf, dtype=dt).reshape(y1 - y0, W, C)
            return self._arrange(out)
        wanted = self._indices(y0, y1)
        todo = [i for i in wanted if i not in self._cache]
        decode = page.decode
        offsets = [page.dataoffsets[i] for i in todo]
        counts = [page.databytecounts[i] for i in todo]
        for data, index in fh.read_segments(offsets, counts, indices=todo, sort=False,
                                            flat=True):
            self._cache[index] = decode(data, index, **self._decode_args)
        keep = {}
        for i in wanted:
            seg, (s, _, sy, sx, _), sshape = self._cache[i]
            seg = np.zeros(sshape, seg_dtype) if seg is None else np.asarray(seg)
            seg = seg.reshape(sshape)  # (depth, length, width, contig samples)
            rows = sshape[1]
            a, b = max(y0, sy), min(y1, sy + rows)
            cols = min(sshape[2], W - sx)
            out[s, a - y0:b - y0, sx:sx + cols] = seg[0, a - sy:b - sy, :cols]
            if sy + rows > y1:
                keep[i] = self._cache[i]  # also holds rows of the next band
        self._cache = keep
        return self._arrange(out)

    def _arrange(self, out: np.ndarray) -> np.ndarray:
        """(S, h, W, C) -> the series' layout of these rows, palette applied."""
        S = out.shape[0]
        arr = np.moveaxis(out[:, :, :, 0], 0, -1) if S > 1 else out[0]
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if self.meta.get("converted_from") == "palette":
            arr = apply_colormap(arr, self._page.colormap)
        return arr

    def close(self) -> None:
        self._close()


def stream_tiff(src: Source, max_pixels: int, min_side: int, tile: int, max_band_bytes: int,
                stream_min_bytes: int) -> BandedImage | None:
    """A one-page TIFF decoded in bands of rows, or None where the whole decode is used:
    an image that decodes to at most ``stream_min_bytes``, multi-page series, volumes
    and compressions tifffile cannot decode. The header checks of :func:`read_tiff` come
    first; then one band of ``tile`` rows, and one strip or tile row of the file, must
    each decode to at most ``max_band_bytes``."""
    import tifffile

    f = None if isinstance(src, str) else open_source(src)  # tifffile leaves it open

    def close() -> None:
        tif.close()
        if f is not None:
            f.close()

    try:
        tif = tifffile.TiffFile(src if f is None else f)
    except BaseException:
        if f is not None:
            f.close()
        raise
    try:
        s, page, shape, axes, dtype, planar, h, w = _tiff_layout(
            tif, source_size(src), max_pixels, min_side)
        palette = _is_palette(page)
        grey = len(shape) == 2 or (not planar and shape[-1] == 2)
        c = 3 if (palette or not grey) else 1
        itemsize = page.colormap.dtype.itemsize if palette else dtype.itemsize
        if (h * w * c * itemsize <= stream_min_bytes or len(s.pages) != 1
                or page.imagedepth != 1 or page.shaped[2:4] != (h, w)
                or page.compression not in tifffile.TIFF.DECOMPRESSORS):
            close()  # the whole decode (with its Pillow fallback for codecs) takes it
            return None
        check_band(min(tile, h), w, c, itemsize, max_band_bytes)
        if not page.is_contiguous:
            seg_rows = min(page.chunks[0], h)
            check_band(seg_rows, w, page.samplesperpixel, dtype.itemsize, max_band_bytes,
                       what="one strip or tile row of the file")
        meta: dict = {"source_metadata": _tiff_smeta(page, shape, axes), "format": "tiff"}
        if palette:
            meta["converted_from"] = "palette"
        if planar:
            meta["planar"] = True
        if len(shape) == 3 and shape[-1 if not planar else 0] in (2, 4):
            meta["dropped_alpha"] = True
        out_shape = (h, w, 3) if c == 3 else (h, w)
        out_dtype = page.colormap.dtype if palette else dtype
        out_dtype = out_dtype.newbyteorder("=")
        return _TiffBands(tif, close, page, out_shape, out_dtype, meta)
    except BaseException:
        close()
        raise


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
