"""Images read one band of rows at a time, so that ingesting an image needs memory for a
band (a few tile rows), not for the whole image.

A source is the file's bytes (small files), the path of a local file, or a
:class:`RemoteFile` (a large S3 object, read in ranges). :class:`BandedImage` is what a
reader returns: the image's shape and dtype (known from the header), its metadata, and
:meth:`BandedImage.bands`, which yields consecutive row bands ``(y0, rows)`` of shape
(h, W) or (h, W, 3) in the native dtype, top to bottom in the file's row order.
:class:`WholeImage` serves an already decoded array the same way.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator

import numpy as np

from restoreflow.storage.decode import FORMAT_NAMES, ImageRejected, check_finite

_READ_STEP = 1 << 20
_REMOTE_BLOCK = 8 << 20  # bytes fetched per request from an object store


class RemoteFile:
    """An object on an fsspec filesystem (S3), opened for reading in ranges."""

    def __init__(self, fs, path: str, size: int) -> None:
        self.fs, self.path, self.size = fs, path, int(size)

    def open(self):
        return self.fs.open(self.path, "rb", block_size=_REMOTE_BLOCK, cache_type="readahead")


Source = bytes | str | RemoteFile  # the file's bytes, a local path, or an S3 object


def source_size(src: Source) -> int:
    if isinstance(src, RemoteFile):
        return src.size
    return len(src) if isinstance(src, (bytes, bytearray, memoryview)) else os.path.getsize(src)


def open_source(src: Source):
    """A seekable binary file object over the source (close it after use)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return io.BytesIO(src)
    if isinstance(src, RemoteFile):
        return src.open()
    return open(src, "rb")


def source_head(src: Source, n: int) -> bytes:
    """The first ``n`` bytes (fewer for a shorter file)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src[:n])
    with open_source(src) as f:
        return f.read(n)


def read_all(src: Source) -> bytes:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src)
    with open_source(src) as f:
        return f.read()


def source_sha256(src: str | RemoteFile) -> str:
    """SHA-256 hex digest of a local file or an object, read in steps."""
    h = hashlib.sha256()
    step = _REMOTE_BLOCK if isinstance(src, RemoteFile) else _READ_STEP
    with open_source(src) as f:
        while chunk := f.read(step):
            h.update(chunk)
    return h.hexdigest()


def check_band(rows: int, width: int, channels: int, itemsize: int, limit: int,
               what: str = "one tile row") -> None:
    """Reject an image whose band of ``rows`` rows decodes to more than ``limit`` bytes."""
    n = rows * width * channels * itemsize
    if n > limit:
        raise ImageRejected(
            f"too wide to decode in bands: {what} ({rows} rows of {width} pixels x "
            f"{channels} x {itemsize} bytes) decodes to {n:,} bytes, limit {limit:,} "
            "(RESTOREFLOW_MAX_BAND_BYTES)"
        )


class BandedImage:
    """An image whose rows are decoded band by band (see the module docstring).

    Subclasses set ``shape``, ``dtype`` (native byte order), ``meta`` (with ``format``)
    and implement :meth:`_read` (source rows ``y0:y1``, any byte order, with any alpha
    or extra samples still there) and :meth:`close`. ``channels_in`` is the channel count that
    :meth:`_read` returns (2 or 4 when an alpha channel is dropped).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    meta: dict
    streamed = True

    @property
    def fmt(self) -> str:
        return self.meta["format"]

    def _read(self, y0: int, y1: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _finish(self, raw: np.ndarray, y0: int, y1: int) -> np.ndarray:
        """A raw band in the stored layout and dtype; same rules as ``finish_array``."""
        raw = np.asarray(raw)
        if raw.ndim == 3:  # drop alpha (and any extra samples)
            raw = raw[:, :, :3] if len(self.shape) == 3 else raw[:, :, 0]
        band = np.ascontiguousarray(raw, dtype=self.dtype)
        expected = (y1 - y0, *self.shape[1:])
        if band.shape != expected:
            raise ImageRejected(
                f"corrupt {FORMAT_NAMES[self.fmt]}: rows {y0}-{y1} decode to shape "
                f"{band.shape}, expected {expected}"
            )
        check_finite(band, f" in rows {y0}-{y1 - 1}")
        return band

    def bands(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(y0, band)`` for y0 = 0, rows, 2 rows, ...; decoder failures become
        :class:`ImageRejected`."""
        h = self.shape[0]
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            try:
                raw = self._read(y0, y1)
            except ImageRejected:
                raise
            except Exception as exc:  # noqa: BLE001 - hostile bytes break decoders anywhere
                raise ImageRejected(
                    f"corrupt {FORMAT_NAMES[self.fmt]} in rows {y0}-{y1 - 1}: "
                    f"{type(exc).__name__}: {str(exc)[:300]}"
                ) from exc
            yield y0, self._finish(raw, y0, y1)


class WholeImage(BandedImage):
    """An image decoded whole (by ``read_image``), served in bands."""

    streamed = False

    def __init__(self, array: np.ndarray, meta: dict) -> None:
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = array.dtype
        self.meta = meta

    def bands(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        for y0 in range(0, self.shape[0], rows):
            yield y0, self.array[y0:y0 + rows]

    def close(self) -> None:
        self.array = None
