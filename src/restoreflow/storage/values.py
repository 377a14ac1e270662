"""Pixel values in normalised units: ``normalised = (raw - norm_offset) / norm_scale``.

``input`` images keep their source values; every derived collection holds float32 in
these units, with the input image's ``norm_offset`` / ``norm_scale`` attrs.
"""

from __future__ import annotations

import numpy as np


def normalisation(array: np.ndarray) -> tuple[float, float]:
    """``(norm_offset, norm_scale)`` with ``normalised = (raw - offset) / scale`` in [0, 1].

    uint8: 0/255; uint16: 0/65535; other dtypes: 0/1 when the data already lie in [0, 1],
    else data min / (max - min); a constant image gets scale 1.
    """
    dt = np.dtype(array.dtype)
    if dt in (np.uint8, np.uint16):
        return normalisation_of(dt, 0, 0)
    return normalisation_of(dt, np.min(array), np.max(array))


def normalisation_of(dtype, lo, hi) -> tuple[float, float]:
    """:func:`normalisation` of an array of ``dtype`` whose values span [lo, hi]."""
    dt = np.dtype(dtype)
    if dt == np.uint8:
        return 0.0, 255.0
    if dt == np.uint16:
        return 0.0, 65535.0
    lo, hi = float(lo), float(hi)
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    if hi == lo:
        return lo, 1.0
    return lo, hi - lo


def to_normalised(raw: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """float32 ``(raw - offset) / scale`` (computed in float64)."""
    return ((np.asarray(raw, dtype=np.float64) - offset) / scale).astype(np.float32)


def from_normalised(norm: np.ndarray, offset: float, scale: float, dtype: str) -> np.ndarray:
    """Invert :func:`to_normalised` into ``dtype`` (round and clip for integer dtypes)."""
    raw = np.asarray(norm, dtype=np.float64) * scale + offset
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        raw = np.nan_to_num(raw, nan=0.0)
        return np.clip(np.rint(raw), info.min, info.max).astype(dt)
    return raw.astype(dt)
