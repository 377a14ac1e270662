"""FITS through astropy: the first HDU with 2-D image data (NAXISn checked before its data
is read, and its length against the file's); header cards are kept as a JSON-able dict.
Row 0 is the first row stored, the bottom of the image as astronomers display it.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np

from restoreflow.storage.decode import ImageRejected, check_pixels, clip_text, finish_array

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


def read_fits(data: bytes, max_pixels: int, min_side: int) -> tuple[np.ndarray, dict]:
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
    return finish_array(arr, "fits", meta, max_pixels, min_side)
