"""Image readers: every format decodes to the right values; every bad input is rejected
with a specific one-line reason; size limits are checked from the header."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from storage_files import (
    fits_bytes,
    huge_fits_header,
    huge_png_header,
    jpeg_bytes,
    pil_bytes,
    png_bytes,
    rng_image,
    smooth_image,
    tiff_bytes,
)

from restoreflow.storage.decode import ImageRejected
from restoreflow.storage.readers import read_image
from restoreflow.storage.writers import encode


def read(data, name, **kw):
    return read_image(data, name, kw.get("max_pixels", 10**8), kw.get("min_side", 8))


@pytest.mark.parametrize(
    "array",
    [rng_image((30, 41), "uint8"), rng_image((30, 41, 3), "uint8"),
     rng_image((30, 41), "uint16"), rng_image((30, 41, 3), "uint16")],
    ids=["png8-grey", "png8-rgb", "png16-grey", "png16-rgb"],
)
def test_png_exact(array):
    for data in (encode(array, "png"), png_bytes(array) if array.ndim == 2 else None):
        if data is None:
            continue
        out, meta = read(data, "x.PNG")
        assert out.dtype == array.dtype and meta["format"] == "png"
        np.testing.assert_array_equal(out, array)


_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))


def _filter_rows(x: np.ndarray, filters: np.ndarray, bpp: int) -> np.ndarray:
    """PNG scanline filtering (spec 9.2) of x (rows, bytes) uint8, one type per row; with
    a = left, b = up, c = up-left (0 outside): None 0, Sub a, Up b, Average (a + b) // 2,
    Paeth. Returns the rows with their filter byte in front."""
    x = x.astype(np.int32)
    h, n = x.shape
    up = np.vstack([np.zeros((1, n), np.int32), x[:-1]])
    left = np.hstack([np.zeros((h, bpp), np.int32), x[:, :-bpp]])
    ul = np.hstack([np.zeros((h, bpp), np.int32), up[:, :-bpp]])
    pa, pb, pc = np.abs(up - ul), np.abs(left - ul), np.abs(left + up - 2 * ul)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, ul))
    f = np.asarray(filters)[:, None]
    pred = np.select([f == 1, f == 2, f == 3, f == 4],
                     [left, up, (left + up) >> 1, paeth], default=0)
    return np.hstack([f.astype(np.uint8), ((x - pred) & 0xFF).astype(np.uint8)])


def _png16(a: np.ndarray, filters=None, interlace: bool = False) -> bytes:
    """Test-side 16-bit PNG encoder: (H, W) grey or (H, W, 2/3/4) grey+alpha / RGB /
    RGBA, given filter types per row (cycled over the rows of each Adam7 pass)."""
    import struct
    import zlib

    from storage_files import png_chunk

    a = a[:, :, None] if a.ndim == 2 else a
    h, w, c = a.shape
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    filters = np.arange(h) % 5 if filters is None else np.asarray(filters)
    stream = b""
    for x0, y0, dx, dy in _ADAM7 if interlace else ((0, 0, 1, 1),):
        sub = a[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        raw = np.ascontiguousarray(sub.astype(">u2")).view(np.uint8).reshape(sub.shape[0], -1)
        stream += _filter_rows(raw, np.resize(filters, sub.shape[0]), 2 * c).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, int(interlace))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(stream)) + png_chunk(b"IEND", b""))


def test_png16_colour_decoder_matches_every_filter_and_alpha():
    a = rng_image((23, 37, 3), "uint16", seed=4)
    alpha = rng_image((23, 37, 1), "uint16", seed=5)
    for filters in (np.arange(23) % 5, np.full(23, 4), np.full(23, 3), np.full(23, 1)):
        out, meta = read(_png16(a, filters), "rgb16.png")
        assert out.dtype == np.uint16 and "dropped_alpha" not in meta
        np.testing.assert_array_equal(out, a)
        # RGBA and grey+alpha 16-bit: alpha is dropped, values stay exact
        out, meta = read(_png16(np.concatenate([a, alpha], axis=2), filters), "rgba16.png")
        assert meta["dropped_alpha"] is True
        np.testing.assert_array_equal(out, a)
        out, meta = read(_png16(np.concatenate([a[:, :, :1], alpha], axis=2), filters),
                         "la16.png")
        assert meta["dropped_alpha"] is True
        np.testing.assert_array_equal(out, a[:, :, 0])


def test_png16_interlaced():
    a = rng_image((13, 11, 3), "uint16", seed=6)
    for filters in (np.full(13, 1), np.arange(13) % 5):
        out, _ = read(_png16(a, filters, interlace=True), "adam7.png", min_side=1)
        np.testing.assert_array_equal(out, a)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), channels=st.sampled_from([1, 3, 4]),
       interlace=st.booleans(), seed=st.integers(0, 99))
def test_png16_codec_property(h, w, channels, interlace, seed):
    a = rng_image((h, w, channels), "uint16", seed=seed)
    filters = np.random.default_rng(seed).integers(0, 5, h)
    out, _ = read(_png16(a, filters, interlace), "p.png", min_side=1)
    np.testing.assert_array_equal(out, a[:, :, 0] if channels == 1 else a[:, :, :3])


def test_png16_rgb_writer_keeps_text_chunks():
    from restoreflow.storage.writers import encode_png

    a = rng_image((9, 12, 3), "uint16", seed=8)
    data = encode_png(a, text={"restoreflow": '{"image_id": "x"}', "caf\u00e9": "\u00e9t\u00e9"})
    im = Image.open(io.BytesIO(data))
    im.load()  # Pillow checks every chunk CRC
    assert im.info["restoreflow"] == '{"image_id": "x"}' and im.info["caf\u00e9"] == "\u00e9t\u00e9"
    out, _ = read(data, "w.png")
    np.testing.assert_array_equal(out, a)


def test_png_modes_are_converted():
    rgb = smooth_image((20, 24, 3))
    rgba = Image.fromarray(np.dstack([rgb, np.full((20, 24), 128, np.uint8)]))
    out, meta = read(pil_bytes(rgba), "a.png")
    assert meta["dropped_alpha"] is True
    np.testing.assert_array_equal(out, rgb)
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    out, meta = read(pil_bytes(pal), "p.png")
    assert meta["converted_from"] == "palette" and out.shape == (20, 24, 3)
    np.testing.assert_array_equal(out, np.asarray(pal.convert("RGB")))
    la = Image.fromarray(rgb[..., 0]).convert("LA")
    out, meta = read(pil_bytes(la), "la.png")
    assert meta["dropped_alpha"] is True and out.shape == (20, 24)
    bw = Image.fromarray(rgb[..., 0] > 128)
    out, meta = read(pil_bytes(bw), "bw.png")
    assert meta["converted_from"] == "1-bit" and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 255}


def test_jpeg_values_equal_pillow_decode():
    data = jpeg_bytes(smooth_image((40, 50, 3)))
    out, meta = read(data, "photo.JPEG")
    np.testing.assert_array_equal(out, np.asarray(Image.open(io.BytesIO(data))))
    assert meta["format"] == "jpeg"


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "float32", "float64"])
def test_tiff_dtypes(dtype):
    a = rng_image((21, 34), dtype)
    out, meta = read(tiff_bytes(a), "a.tif")
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, a)


def test_tiff_layouts():
    rgb = rng_image((20, 30, 3), "uint16")
    out, _ = read(tiff_bytes(rgb, photometric="rgb"), "rgb.tiff")
    np.testing.assert_array_equal(out, rgb)
    planar = np.moveaxis(rgb, -1, 0)
    out, meta = read(tiff_bytes(planar, photometric="rgb", planarconfig="separate"), "p.tif")
    assert meta.get("planar") is True
    np.testing.assert_array_equal(out, rgb)
    rgba = np.dstack([rgb, rgb[..., :1]])
    out, meta = read(tiff_bytes(rgba, photometric="rgb", extrasamples=["unassalpha"]), "a.tif")
    assert meta["dropped_alpha"] is True
    np.testing.assert_array_equal(out, rgb)
    out, meta = read(tiff_bytes(rgb, photometric="rgb", resolution=(300, 300),
                                description="scan 7"), "r.tif")
    sm = meta["source_metadata"]
    assert sm["x_resolution"] == [300, 1] and sm["photometric"] == "RGB"
    assert sm["description"] == "scan 7"


@pytest.mark.parametrize("dtype", ["float32", "float64", "int16", "int32", "uint8", "uint16"])
def test_fits_dtypes(dtype):
    a = rng_image((19, 27), dtype)
    out, meta = read(fits_bytes(a, {"OBJECT": "M31", "EXPTIME": 30.0}), "m31.fits")
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, a)
    assert meta["source_metadata"]["OBJECT"] == "M31"
    assert meta["row_order"] == "bottom-up"


def test_fits_cube_and_first_image_hdu():
    from astropy.io import fits

    cube = rng_image((3, 16, 18), "float32")
    out, _ = read(fits_bytes(cube), "rgb.fit")
    np.testing.assert_array_equal(out, np.moveaxis(cube, 0, -1))
    img = rng_image((16, 18), "int16")
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, name="SCI")])
    hdul[0].header["HISTORY"] = "step 1"
    buf = io.BytesIO()
    hdul.writeto(buf)
    out, meta = read(buf.getvalue(), "ext.fts")
    assert meta["fits_hdu"] == 1
    np.testing.assert_array_equal(out, img)


def _truncate(data, frac=0.6):
    return data[: int(len(data) * frac)]


BIG = smooth_image((64, 64, 3))
BAD_INPUTS = {
    "zero-byte": (b"", "x.png", "empty file"),
    "text-as-png": (b"hello, this is not an image\n" * 4, "notes.png",
                    "not a PNG file: bad signature (looks like text"),
    "unknown-ext": (png_bytes(BIG), "image.bmp", "unsupported file extension '.bmp'"),
    "no-ext": (png_bytes(BIG), "README", "unsupported file extension '(none)'"),
    "truncated-png": (_truncate(png_bytes(BIG)), "t.png", "truncated"),
    "corrupt-png-crc": (png_bytes(BIG)[:40] + b"\x00\x00" + png_bytes(BIG)[42:], "c.png",
                        "corrupt"),
    "truncated-jpeg": (_truncate(jpeg_bytes(BIG), 0.5), "t.jpg", "truncated JPEG"),
    "corrupt-jpeg": (b"\xff\xd8\xff" + bytes(200), "c.jpeg", "corrupt or truncated JPEG"),
    "truncated-tiff": (_truncate(tiff_bytes(rng_image((64, 64), "float32"))), "t.tif",
                       "truncated TIFF"),
    "corrupt-tiff": (b"II*\x00" + b"\xff" * 60, "c.tiff", "corrupt TIFF"),
    "truncated-fits": (_truncate(fits_bytes(rng_image((64, 64), "float32")), 0.5), "t.fits",
                       "truncated FITS"),
    "corrupt-fits": (b"SIMPLE  = garbage".ljust(400), "c.fits", "corrupt FITS"),
    "complex-tiff": (tiff_bytes(np.ones((16, 16), np.complex64)), "z.tif",
                     "unsupported dtype complex64"),
    "int64-fits": (fits_bytes(np.ones((16, 16), np.int64)), "i.fits",
                   "unsupported dtype int64"),
    "4d-tiff": (tiff_bytes(np.zeros((2, 3, 16, 16), np.uint8), photometric="minisblack"),
                "4d.tif",
                "unsupported dimensions (2, 3, 16, 16)"),
    "nan-fits": (fits_bytes(np.where(np.eye(16) > 0, np.nan, 1.0).astype(np.float32)),
                 "nan.fits", "16 non-finite pixels (16 NaN, 0 Inf)"),
    "inf-fits": (fits_bytes(np.where(np.eye(16) > 0, np.inf, 1.0)), "inf.fits",
                 "non-finite pixels (0 NaN, 16 Inf)"),
    "tiny-1x1": (png_bytes(np.zeros((1, 1), np.uint8)), "dot.png", "too small: 1x1"),
    "bool-tiff": (tiff_bytes(np.eye(16, dtype=bool)), "b.tif", "unsupported dtype bool"),
    "empty-fits": (fits_bytes(None), "e.fits", "no HDU with 2-D image data"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_are_rejected_specifically(case):
    data, name, expected = BAD_INPUTS[case]
    with pytest.raises(ImageRejected) as info:
        read(data, name)
    reason = info.value.reason
    assert expected in reason, reason
    assert "\n" not in reason


def test_huge_png_header_rejected_before_decoding():
    data = huge_png_header(50000, 50000)
    t = time.perf_counter()
    with pytest.raises(ImageRejected, match=r"too many pixels: header declares 50000x50000"):
        read_image(data, "bomb.png", max_pixels=400_000_000)
    assert time.perf_counter() - t < 0.5
    # Pillow's own bomb limit does not get in the way of a raised limit
    ok = png_bytes(smooth_image((40, 40)))
    assert read_image(ok, "ok.png", max_pixels=10**12)[0].shape == (40, 40)


def test_huge_fits_header_rejected_before_reading_data():
    with pytest.raises(ImageRejected, match="too many pixels: header declares 50000x50000"):
        read_image(huge_fits_header(50000), "big.fits", max_pixels=400_000_000)


def test_limits_from_arguments():
    data = png_bytes(smooth_image((40, 50)))
    with pytest.raises(ImageRejected, match="limit 1,000"):
        read_image(data, "a.png", max_pixels=1000, min_side=8)
    with pytest.raises(ImageRejected, match="at least 64"):
        read_image(data, "a.png", max_pixels=10**6, min_side=64)


def test_extension_mismatch_is_read_by_content():
    a = smooth_image((20, 20, 3))
    out, meta = read(png_bytes(a), "really-a-png.jpg")
    np.testing.assert_array_equal(out, a)
    assert meta["format"] == "png" and "content is png" in meta["extension_mismatch"]


@pytest.mark.parametrize("mode", ["L", "RGB", "I;16", "F"])
def test_lzw_tiff_is_exact_without_imagecodecs(mode):
    rng = np.random.default_rng(3)
    a = {"L": rng_image((40, 60), "uint8"), "RGB": rng_image((40, 60, 3), "uint8"),
         "I;16": rng_image((40, 60), "uint16"),
         "F": rng.random((40, 60), dtype=np.float32)}[mode]
    data = pil_bytes(Image.fromarray(a), "TIFF", compression="tiff_lzw")
    out, meta = read(data, "scan.tif")
    assert out.dtype == a.dtype
    np.testing.assert_array_equal(out, a)
    assert meta["source_metadata"]["compression"] == "LZW"


@pytest.mark.parametrize("fmt", ["png", "tiff", "fits"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("rgb", [False, True], ids=["grey", "rgb"])
def test_writers_roundtrip_through_reader(fmt, dtype, rgb):
    if fmt == "png" and dtype not in ("uint8", "uint16"):
        with pytest.raises(ValueError, match="PNG holds"):
            encode(rng_image((9, 9), dtype), fmt)
        return
    a = rng_image((17, 23, 3) if rgb else (17, 23), dtype, seed=21)
    data = encode(a, fmt, provenance={"image_id": "abc", "collection": "input"})
    out, meta = read(data, f"x.{fmt}")
    assert out.dtype == a.dtype and meta["format"] == fmt
    np.testing.assert_array_equal(out, a)
