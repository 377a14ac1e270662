"""Thumbnails for the HTML report: store images -> small PNGs as base64 data URIs.

A thumbnail has its longest side at most :data:`THUMB_MAX` pixels. Large images are
block-averaged while they are read (lazily, tile by tile, so a 10k x 10k image never sits
in memory whole) and then box-filtered to the exact size; small images are enlarged by an
integer factor with nearest neighbour, so their pixels stay visible as pixels. One grey
channel stays a grey (mode "L") PNG; three channels make an RGB PNG. Values are the
normalised units of the store, clipped to [0, 1]. Images stored bottom-up (FITS) are
flipped so that they look as they do in every export.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

import numpy as np

THUMB_MAX = 256
UNCERTAINTY_CMAP = "magma"
MISSING_RGB = (128, 128, 128)  # unwritten (NaN) pixels in the uncertainty map


@dataclass(frozen=True)
class Thumb:
    """One thumbnail: the PNG data URI and its pixel size."""

    uri: str
    width: int
    height: int


def display_size(height: int, width: int, max_side: int = THUMB_MAX) -> tuple[int, int]:
    """``(h, w)`` of the thumbnail of an ``height x width`` image.

    Larger images shrink to a longest side of ``max_side`` (aspect kept, at least 1 px);
    smaller ones grow by the largest integer factor that keeps the longest side
    <= ``max_side`` (so a 64 x 48 image shows as 256 x 192 with square pixels).
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    longest = max(height, width)
    if longest > max_side:
        s = max_side / longest
        return max(1, round(height * s)), max(1, round(width * s))
    k = max(1, max_side // longest)
    return height * k, width * k


def to_uint8(chw: np.ndarray) -> np.ndarray:
    """(C, H, W) normalised floats -> (H, W) uint8 for one channel or C != 3 (the channel
    mean), (H, W, 3) for three; NaN shows as 0, values are clipped to [0, 1]."""
    a = np.asarray(chw, dtype=np.float32)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"expected (C, H, W), got shape {a.shape}")
    a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0)
    if a.shape[0] == 3:
        img = np.moveaxis(a, 0, -1)
    elif a.shape[0] == 1:
        img = a[0]
    else:
        img = a.mean(axis=0)
    return np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a uint8 (H, W) or (H, W, 3) image: box filter when shrinking (no aliasing),
    nearest neighbour when enlarging (pixels stay sharp squares, values unchanged)."""
    from PIL import Image

    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    shrinking = height * width < h * w
    method = Image.Resampling.BOX if shrinking else Image.Resampling.NEAREST
    return np.asarray(Image.fromarray(img).resize((width, height), method))


def png_bytes(img: np.ndarray) -> bytes:
    """PNG of a uint8 (H, W) grey ("L") or (H, W, 3) RGB image."""
    from PIL import Image

    img = np.ascontiguousarray(img)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"expected uint8 (H, W) or (H, W, 3), got {img.dtype} {img.shape}")
    buf = io.BytesIO()
    Image.fromarray(img, "L" if img.ndim == 2 else "RGB").save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def image_thumb(img: np.ndarray, height: int, width: int) -> Thumb:
    """A uint8 image resized to ``height x width`` as an inline PNG."""
    out = resize(img, height, width)
    return Thumb(data_uri(png_bytes(out)), out.shape[1], out.shape[0])


# -- reading store images at display resolution -----------------------------------------

def _factor(height: int, width: int, max_side: int = THUMB_MAX) -> int:
    """Integer block size for averaging while reading (1: read the image as it is)."""
    return max(1, math.floor(max(height, width) / max_side))


def _bottom_up(store, collection: str, image_id: str) -> bool:
    try:
        return store.attrs(collection, image_id).get("row_order") == "bottom-up"
    except KeyError:
        return False


def read_reduced(store, collection: str, image_id: str, factor: int) -> np.ndarray:
    """The image in normalised float32 (C, h, w), block-averaged by ``factor`` (trimmed at
    the edges), in display row order (bottom-up images flipped)."""
    if factor <= 1:
        a = store.read(collection, image_id, normalised=True)
    else:
        ds = store.open_dataset(collection, image_id)
        px = ds["pixels"].astype("float64")
        a = px.coarsen(y=factor, x=factor, boundary="trim").mean().values
        if collection == "input":
            attrs = store.attrs(collection, image_id)
            a = (a - float(attrs["norm_offset"])) / float(attrs["norm_scale"])
        a = a.astype(np.float32)
    if _bottom_up(store, collection, image_id):
        a = a[:, ::-1, :]
    return np.ascontiguousarray(a)


def store_thumb(store, collection: str, image_id: str, size: tuple[int, int]) -> Thumb:
    """Thumbnail of a store image at display size ``size = (h, w)``.

    Images of another size than the reference (super-resolution inputs are smaller) are
    scaled to the same display size: nearest neighbour up, box filter down.
    """
    _, h, w = store.shape(collection, image_id)
    a = read_reduced(store, collection, image_id, _factor(h, w, max(size)))
    return image_thumb(to_uint8(a), *size)


def colour_map(values: np.ndarray, vmin: float, vmax: float,
               cmap: str = UNCERTAINTY_CMAP) -> np.ndarray:
    """(H, W) values -> uint8 RGB through a matplotlib colormap on [vmin, vmax]; NaN grey."""
    from matplotlib import colormaps

    v = np.asarray(values, dtype=np.float64)
    span = vmax - vmin
    t = (v - vmin) / span if span > 0 else np.zeros_like(v)
    rgb = colormaps[cmap](np.clip(np.nan_to_num(t, nan=0.0), 0.0, 1.0))[..., :3]
    out = np.rint(rgb * 255.0).astype(np.uint8)
    out[~np.isfinite(v)] = MISSING_RGB
    return out


def colour_stops(cmap: str = UNCERTAINTY_CMAP, n: int = 9) -> list[str]:
    """``n`` evenly spaced colours of a colormap as CSS hex strings (for a legend bar)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cm = colormaps[cmap]
    return [to_hex(cm(i / (n - 1))) for i in range(n)]


@dataclass(frozen=True)
class UncertaintyThumb:
    thumb: Thumb
    vmin: float  # range of the interval width (normalised units), NaN-free pixels
    vmax: float
    mean: float


def uncertainty_thumb(store, image_id: str, size: tuple[int, int],
                      lower: str = "interval_lower", upper: str = "interval_upper",
                      cmap: str = UNCERTAINTY_CMAP) -> UncertaintyThumb:
    """Width of the per-pixel interval, ``mean_c (upper - lower)``, as a colour map.

    The colours span [min, max] of the width over the image, computed at full resolution
    (lazily, tile by tile, for large images); the thumbnail shows block means.
    """
    _, h, w = store.shape(upper, image_id)
    f = _factor(h, w, max(size))
    if f <= 1:
        width = (store.read(upper, image_id) - store.read(lower, image_id)).mean(axis=0)
        vmin, vmax, mean = _nan_stats(width)
        shown = width
    else:
        up = store.open_dataset(upper, image_id)["pixels"].astype("float64")
        lo = store.open_dataset(lower, image_id)["pixels"].astype("float64")
        full = (up - lo).mean("band")
        stats = [full.min(skipna=True), full.max(skipna=True), full.mean(skipna=True)]
        vmin, vmax, mean = (float(s.values) for s in stats)
        shown = full.coarsen(y=f, x=f, boundary="trim").mean().values
    if _bottom_up(store, upper, image_id):
        shown = shown[::-1, :]
    rgb = colour_map(shown, vmin, vmax, cmap)
    return UncertaintyThumb(image_thumb(rgb, *size), vmin, vmax, mean)


def _nan_stats(a: np.ndarray) -> tuple[float, float, float]:
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return math.nan, math.nan, math.nan
    return float(finite.min()), float(finite.max()), float(finite.mean())
