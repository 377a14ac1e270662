"""FITS through astropy: the first HDU with 2-D image data (NAXISn checked before its data
is read, and its length against the file's); header cards are kept as a JSON-able dict.
Row 0 is the first row stored, the bottom of the image as astronomers display it.
Large images are read in bands of rows (:func:`stream_fits`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from restoreflow.storage.bands import BandedImage, check_band, open_source, source_size
from restoreflow.storage.decode import ImageRejected, check_pixels, clip_text, finish_array
from restoreflow.storage.layout import SOURCE_DTYPES

_FITS_DTYPES = {8: "uint8", 16: "int16", 32: "int32", 64: "int64", -32: "float32",
                -64: "float64"}


def _card_value(v):
    if v is None or isinstance(v, (bool, int, str)):
        return clip_text(v) if isinstance(v, str) else v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    return str(v)  # complex, Undefined


def fits_header_dict(header) -> dict:
    """Header cards as a JSON-able dict; COMMENT and HISTORY kept as lists of lines."""
    out: dict = {}
    for card in header.cards:
        key = card.keyword
        if key in ("COMMENT", "HISTORY"):
            out.setdefault(key, []).append(clip_text(card.value))
        elif key and key not in out:
            try:
                out[key] = _card_value(card.value)
            except Exception:  # noqa: BLE001 - one unparsable card must not lose the image
                out[key] = clip_text(card.image.strip())
    return out


def _fits_layout(hdul, nbytes: int, max_pixels: int, min_side: int) -> tuple:
    """The first HDU with 2-D image data, checked from its header before its data is read:
    ``(index, hdu, shape, core, h, w)`` (``shape`` the numpy shape, ``core`` without
    degenerate axes)."""
    from astropy.io import fits

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
    check_pixels("fits", h, w, max_pixels, min_side)
    bitpix = int(header.get("BITPIX", 0))
    scaled = "BSCALE" in header or "BZERO" in header
    if not isinstance(hdu, fits.CompImageHDU):
        if bitpix not in _FITS_DTYPES:
            raise ImageRejected(f"unsupported FITS BITPIX {bitpix}")
        if bitpix == 64 and not scaled:
            raise ImageRejected("unsupported dtype int64 (FITS BITPIX 64)")
        info = hdul.fileinfo(index)
        need = info["datLoc"] + abs(bitpix) // 8 * math.prod(dims)
        if need > nbytes:
            raise ImageRejected(
                f"truncated FITS: HDU {index} data needs {need:,} bytes, "
                f"the file has {nbytes:,}"
            )
    return index, hdu, shape, core, h, w


def _open_fits(src):
    """``(hdul, file)``: the HDU list and the file object to close after it (or None)."""
    from astropy.io import fits

    f = None if isinstance(src, str) else open_source(src)
    try:
        return fits.open(src if f is None else f, memmap=False, lazy_load_hdus=True), f
    except Exception as exc:  # noqa: BLE001
        if f is not None:
            f.close()
        raise ImageRejected(f"corrupt FITS: {type(exc).__name__}: {exc}") from exc


def read_fits(data: bytes, max_pixels: int, min_side: int) -> tuple[np.ndarray, dict]:
    from astropy.utils.exceptions import AstropyWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        hdul, _ = _open_fits(data)
        with hdul:
            index, hdu, shape, core, h, w = _fits_layout(hdul, len(data), max_pixels,
                                                         min_side)
            smeta = fits_header_dict(hdu.header)
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
    return finish_array(arr, "fits", meta, max_pixels, min_side)


class _FitsBands(BandedImage):
    """Rows of a FITS image HDU read through astropy's ``section`` (only the rows asked
    for are read, or for a tile-compressed HDU only the tiles that hold them)."""

    def __init__(self, hdul, file, hdu, shape: list, core: list, out_shape: tuple,
                 dtype: np.dtype, meta: dict) -> None:
        self._hdul, self._file, self._hdu = hdul, file, hdu
        self._lead = tuple(0 if d == 1 else slice(None) for d in shape[:-2])
        self._core = core
        self.shape, self.dtype, self.meta = out_shape, dtype, meta

    def _read(self, y0: int, y1: int) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = np.asarray(self._hdu.section[(*self._lead, slice(y0, y1), slice(None))])
        rows = rows.reshape(*self._core[:-2], y1 - y0, self._core[-1])
        return np.moveaxis(rows, 0, -1) if rows.ndim == 3 else rows

    def close(self) -> None:
        self._hdul.close()
        if self._file is not None:
            self._file.close()


def stream_fits(src, max_pixels: int, min_side: int, tile: int, max_band_bytes: int,
                stream_min_bytes: int) -> BandedImage | None:
    """A FITS image decoded in bands of rows, or None where the whole decode is used (an
    image that decodes to at most ``stream_min_bytes``). The header checks of
    :func:`read_fits` come first; then one band of ``tile`` rows, and for a
    tile-compressed HDU one row of its tiles, must decode to at most ``max_band_bytes``.
    Rows keep the file's order (bottom-up)."""
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        hdul, file = _open_fits(src)
        try:
            index, hdu, shape, core, h, w = _fits_layout(hdul, source_size(src), max_pixels,
                                                         min_side)
            c = 3 if len(core) == 3 else 1
            probe = np.asarray(hdu.section[(*(0 for _ in shape[:-2]), slice(0, 1),
                                            slice(0, 1))])
            dtype = probe.dtype.newbyteorder("=")
            if dtype.name not in SOURCE_DTYPES:
                raise ImageRejected(
                    f"unsupported dtype {dtype.name} (supported: {', '.join(SOURCE_DTYPES)})"
                )
            if h * w * c * dtype.itemsize <= stream_min_bytes:
                hdul.close()
                if file is not None:
                    file.close()
                return None
            check_band(min(tile, h), w, c, dtype.itemsize, max_band_bytes)
            if isinstance(hdu, fits.CompImageHDU):
                tile_rows = int(hdu.tile_shape[-2])
                check_band(min(tile_rows, h), w, 1, dtype.itemsize, max_band_bytes,
                           what="one row of the file's compressed tiles")
            meta = {"source_metadata": fits_header_dict(hdu.header), "fits_hdu": index,
                    "row_order": "bottom-up", "format": "fits"}
            out_shape = (h, w, 3) if c == 3 else (h, w)
            return _FitsBands(hdul, file, hdu, shape, core, out_shape, dtype, meta)
        except BaseException:
            hdul.close()
            if file is not None:
                file.close()
            raise
