"""What every image reader shares: :class:`ImageRejected` (one line saying why a file
cannot become an image), the pixel-count and side checks made from a header before
anything is decoded, and the checks on a decoded array (dtype, layout, finiteness).
"""

from __future__ import annotations

import numpy as np

from restoreflow.storage.layout import SOURCE_DTYPES

FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "fits": "FITS"}
_MAX_TEXT = 4096  # longest metadata string kept


class ImageRejected(Exception):
    """A file that cannot become an image in the store; ``reason`` is one line."""

    def __init__(self, reason: str) -> None:
        reason = " ".join(str(reason).split())
        super().__init__(reason)
        self.reason = reason


def clip_text(value) -> str:
    """A metadata value as a string of at most ``_MAX_TEXT`` characters (then "...")."""
    s = value if isinstance(value, str) else str(value)
    return s if len(s) <= _MAX_TEXT else s[:_MAX_TEXT] + "..."


def check_pixels(fmt: str, h: int, w: int, max_pixels: int, min_side: int,
                 what: str = "header declares") -> None:
    """Reject an h x w image over ``max_pixels`` or with a side under ``min_side``."""
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


def finish_array(arr: np.ndarray, fmt: str, meta: dict, max_pixels: int,
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
    check_pixels(fmt, h, w, max_pixels, min_side, what="image is")
    check_finite(arr)
    meta["format"] = fmt
    return arr, meta


def check_finite(arr: np.ndarray, where: str = "") -> None:
    """ImageRejected when float pixels (of ``where``, e.g. ``in rows 0-255``) are NaN or
    Inf: blank pixels are not supported."""
    if arr.dtype.kind != "f":
        return
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        raise ImageRejected(f"{bad} non-finite pixels{where} ({n_nan} NaN, {bad - n_nan} "
                            "Inf); blank pixels are not supported")
