"""ingest -> store -> export is bit-exact, on a local store and on S3."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from storage_files import fits_bytes, jpeg_bytes, rng_image, smooth_image, tiff_bytes

from restoreflow.storage.export import export
from restoreflow.storage.ingest import ingest
from restoreflow.storage.readers import read_image
from restoreflow.storage.writers import encode

# name -> (file bytes, the array a correct decoder gives, export format)
H, W = 300, 517  # not multiples of the tile size (64)
CASES = {
    "png8-grey": (lambda a: encode(a, "png"), rng_image((H, W), "uint8", 1), "png"),
    "png8-rgb": (lambda a: encode(a, "png"), rng_image((H, W, 3), "uint8", 2), "png"),
    "png16-grey": (lambda a: encode(a, "png"), rng_image((H, W), "uint16", 3), "png"),
    "png16-rgb": (lambda a: encode(a, "png"), rng_image((H, W, 3), "uint16", 4), "png"),
    "tiff-uint8": (tiff_bytes, rng_image((H, W, 3), "uint8", 5), "tiff"),
    "tiff-uint16": (tiff_bytes, rng_image((H, W), "uint16", 6), "tiff"),
    "tiff-float32": (tiff_bytes, rng_image((H, W), "float32", 7), "tiff"),
    "fits-float32": (fits_bytes, rng_image((H, W), "float32", 8), "fits"),
    "fits-float64": (fits_bytes, rng_image((H, W), "float64", 9), "fits"),
    "fits-int16": (fits_bytes, rng_image((H, W), "int16", 10), "fits"),
}
EXT = {"png": ".png", "tiff": ".tif", "fits": ".fits"}


def _decode_independently(path, fmt):
    """Read an exported file with the format's reference library, not our reader."""
    if fmt == "tiff":
        import tifffile

        return tifffile.imread(path)
    if fmt == "fits":
        from astropy.io import fits

        with fits.open(path, memmap=False) as h:
            return np.array(h[0].data)
    data = path.read_bytes()
    if data[24:26] == bytes([16, 2]):  # 16-bit RGB: Pillow would drop to 8 bits
        return _decode_png16_rgb_up(data)
    with Image.open(path) as im:
        return np.asarray(im)


def _decode_png16_rgb_up(data):
    """Test-side decoder for a non-interlaced 16-bit RGB PNG whose rows all use the Up
    filter (what the exporter writes): zlib, then a cumulative sum down the rows."""
    import struct
    import zlib

    w, h = struct.unpack(">II", data[16:24])
    pos, idat = 8, b""
    while pos < len(data):
        n, t = struct.unpack(">I4s", data[pos:pos + 8])
        if t == b"IDAT":
            idat += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * 6)
    assert (rows[:, 0] == 2).all()
    raw = np.cumsum(rows[:, 1:].astype(np.int64), axis=0) % 256
    return raw.astype(np.uint8).reshape(h, w * 3, 2).view(">u2").reshape(h, w, 3)


@pytest.mark.parametrize("kind", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_roundtrip_all_formats(make_store, tmp_path, kind):
    # S3 round trips cost one request per chunk: 128-px tiles there keep the test quick
    store = make_store(kind, tile_size=64 if kind == "local" else 128)
    src = tmp_path / "src"
    src.mkdir()
    for name, (make, array, fmt) in CASES.items():
        (src / f"{name}{EXT[fmt]}").write_bytes(make(array))
    jpeg = jpeg_bytes(smooth_image((H, W, 3)))
    (src / "photo.jpg").write_bytes(jpeg)
    report = ingest([str(src)], store, progress=False)
    assert report.counts == {"ingested": len(CASES) + 1, "present": 0, "rejected": 0}
    by_name = {r.name: r for r in report.rows}
    for name, (_, array, fmt) in CASES.items():
        iid = by_name[f"{name}{EXT[fmt]}"].image_id
        stored = store.read("input", iid)
        expect = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
        assert stored.dtype == array.dtype, name
        np.testing.assert_array_equal(stored, expect, err_msg=name)
        a = store.attrs("input", iid)
        assert a["status"] == "complete" and a["shape"] == list(array.shape)
        assert a["dtype"] == array.dtype.name and a["format"] == fmt
    for fmt in ("png", "tiff", "fits"):
        out = tmp_path / f"out-{fmt}"
        paths = export(store, "input", fmt, out)
        assert len(paths) == len(CASES) + 1
        for name, (_, array, src_fmt) in CASES.items():
            iid = by_name[f"{name}{EXT[src_fmt]}"].image_id
            (path,) = [p for p in paths if p.name.startswith(iid)]
            assert path.name == f"{iid}_{name}{EXT[fmt]}"
            if fmt != src_fmt:
                continue
            # same format as the source: bit-exact, checked with the reference library
            got = _decode_independently(path, fmt)
            if fmt == "fits" and array.ndim == 3:
                got = np.moveaxis(got, 0, -1)
            assert got.dtype.newbyteorder("=") == array.dtype, name
            np.testing.assert_array_equal(got, array, err_msg=f"{name} -> {fmt}")
    # JPEG: the stored values are the decoder's values, exported losslessly as PNG
    jid = by_name["photo.jpg"].image_id
    decoded = np.asarray(Image.open(io.BytesIO(jpeg)))
    np.testing.assert_array_equal(np.moveaxis(store.read("input", jid), 0, -1), decoded)
    png = tmp_path / "out-png" / f"{jid}_photo.png"
    np.testing.assert_array_equal(np.asarray(Image.open(png)), decoded)


def test_cross_format_export_keeps_values_and_orientation(make_store, tmp_path):
    store = make_store("local")
    grey = rng_image((40, 70), "uint16", 11)
    (tmp_path / "g.png").write_bytes(encode(grey, "png"))
    sky = rng_image((40, 70), "float32", 12)
    (tmp_path / "sky.fits").write_bytes(fits_bytes(sky, {"OBJECT": "NGC 1"}))
    ingest([str(tmp_path / "g.png"), str(tmp_path / "sky.fits")], store, progress=False)
    (png_as_fits,) = export(store, "input", "fits", tmp_path / "f",
                            image_ids=[i for i in store.image_ids("input")
                                       if store.attrs("input", i)["name"] == "g.png"])
    arr, _ = read_image(png_as_fits.read_bytes(), png_as_fits.name)
    # FITS stores the bottom row first: a top-down PNG is flipped on the way in
    np.testing.assert_array_equal(arr, grey[::-1])
    sky_id = [i for i in store.image_ids("input") if store.attrs("input", i)["name"] ==
              "sky.fits"][0]
    (fits_back,) = export(store, "input", "fits", tmp_path / "f2", image_ids=[sky_id])
    from astropy.io import fits

    with fits.open(fits_back) as h:
        assert h[0].header["OBJECT"] == "NGC 1"  # source header cards survive
        assert h[0].header["HIERARCH RF IMAGE_ID"] == sky_id
        np.testing.assert_array_equal(h[0].data, sky)
    (sky_png,) = export(store, "input", "png", tmp_path / "p", image_ids=[sky_id])
    png = np.asarray(Image.open(sky_png))
    assert png.dtype == np.uint16  # a float source becomes 16-bit normalised values
    lo, hi = sky.min(), sky.max()
    expect = np.rint((sky.astype(np.float64) - lo) / (hi - lo) * 65535)[::-1]
    assert np.abs(png.astype(np.int64) - expect).max() <= 1


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_derived_collection_exports_in_source_units(make_store, tmp_path, dtype):
    store = make_store("local")
    raw = rng_image((50, 66, 3), dtype, 13)
    (tmp_path / "a.tif").write_bytes(tiff_bytes(raw, photometric="rgb"))
    (row,) = ingest([str(tmp_path / "a.tif")], store, progress=False).rows
    iid = row.image_id
    norm = store.read("input", iid, normalised=True)
    assert norm.dtype == np.float32 and 0 <= norm.min() and norm.max() <= 1
    store.create_image("restored", iid, norm.shape, "float32", {"collection_attrs": {"k": 1}})
    for _, _, y0, y1, x0, x1 in store.tiles("restored", iid):
        store.write_region("restored", iid, norm[:, y0:y1, x0:x1], y0, x0)
    store.mark_complete("restored", iid)
    (path,) = export(store, "restored", "tiff", tmp_path / "out")
    import tifffile

    back = tifffile.imread(path)
    assert back.dtype == raw.dtype
    if raw.dtype.kind in "ui":
        np.testing.assert_array_equal(back, raw)  # rounding undoes float32 error
    else:
        np.testing.assert_allclose(back, raw, rtol=1e-5, atol=1e-3)
