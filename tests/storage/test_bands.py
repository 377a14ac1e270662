"""Images decoded in bands of rows: the same pixels, dtype, layout and metadata as the
whole decode, for every layout the band readers take; ingest through bands stores the
same image and attrs; bad bands reject the file and leave no image behind."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from storage_files import fits_bytes, jpeg_bytes, png_bytes, rng_image, tiff_bytes

from restoreflow.storage.decode import ImageRejected
from restoreflow.storage.ingest import content_id, ingest
from restoreflow.storage.readers import open_banded, read_image

BAND = 16  # rows per band in these tests: every image spans several bands


def _png16(a):
    import imagecodecs

    return imagecodecs.png_encode(a, level=6)


def _comp_fits(a, tile_rows=3, compression="RICE_1"):
    from astropy.io import fits

    hdu = fits.CompImageHDU(a, compression_type=compression,
                            tile_shape=(tile_rows, a.shape[-1]))
    hdu.header["OBSERVER"] = "test"
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    return buf.getvalue()


def _jpeg(a, **kw):
    """A JPEG with EXIF (orientation), an ICC profile and a comment in its markers."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg_bytes(a, quality=85, exif=exif, icc_profile=b"icc" * 40, comment=b"a comment",
                      dpi=(300, 300), **kw)


def _palette_tiff(shape):
    idx = rng_image(shape, "uint8", 3)
    cmap = rng_image((3, 256), "uint16", 4)
    return tiff_bytes(idx, photometric="palette", colormap=cmap, rowsperstrip=7)


H, W = 61, 45  # not multiples of the band or of the strips and tiles
CASES = {
    "png-grey8": ("png", lambda: png_bytes(rng_image((H, W), "uint8"))),
    "png-grey16": ("png", lambda: png_bytes(rng_image((H, W), "uint16"))),
    "png-rgb8": ("png", lambda: png_bytes(rng_image((H, W, 3), "uint8"))),
    "png-rgba8": ("png", lambda: png_bytes(rng_image((H, W, 4), "uint8"))),
    "png-la8": ("png", lambda: png_bytes(rng_image((H, W), "uint8"), mode="LA")),
    "png-rgb16": ("png", lambda: _png16(rng_image((H, W, 3), "uint16"))),
    "png-rgba16": ("png", lambda: _png16(rng_image((H, W, 4), "uint16"))),
    "jpeg-rgb-420": ("jpg", lambda: jpeg_bytes(rng_image((H, W, 3), "uint8"))),
    "jpeg-rgb-444-markers": ("jpg", lambda: _jpeg(rng_image((H, W, 3), "uint8"),
                                                  subsampling=0)),
    "jpeg-rgb-progressive": ("jpg", lambda: _jpeg(rng_image((H, W, 3), "uint8"),
                                                  progressive=True)),
    "jpeg-grey": ("jpg", lambda: jpeg_bytes(rng_image((H, W), "uint8"))),
    "jpeg-grey-progressive": ("jpg", lambda: _jpeg(rng_image((H, W), "uint8"),
                                                   progressive=True)),
    "tiff-grey8-strips": ("tif", lambda: tiff_bytes(rng_image((H, W), "uint8"),
                                                    rowsperstrip=5, compression="zlib")),
    "tiff-rgb16-strips": ("tif", lambda: tiff_bytes(rng_image((H, W, 3), "uint16"),
                                                    rowsperstrip=40, compression="zlib")),
    "tiff-rgb8-tiles": ("tif", lambda: tiff_bytes(rng_image((H, W, 3), "uint8"),
                                                  tile=(16, 32), compression="zlib")),
    "tiff-float32-tiles": ("tif", lambda: tiff_bytes(rng_image((H, W), "float32"),
                                                     tile=(32, 16), predictor=True,
                                                     compression="zlib")),
    "tiff-planar-uint16": ("tif", lambda: tiff_bytes(rng_image((3, H, W), "uint16"),
                                                     planarconfig="separate",
                                                     photometric="rgb", rowsperstrip=6)),
    "tiff-planar-tiles": ("tif", lambda: tiff_bytes(rng_image((3, H, W), "uint8"),
                                                    planarconfig="separate",
                                                    photometric="rgb", tile=(16, 16),
                                                    compression="zlib")),
    "tiff-contiguous-bigendian": ("tif", lambda: tiff_bytes(rng_image((H, W), "int16"),
                                                            byteorder=">")),
    "tiff-contiguous-planar": ("tif", lambda: tiff_bytes(rng_image((3, H, W), "int32"),
                                                         planarconfig="separate",
                                                         photometric="rgb")),
    "tiff-rgba8": ("tif", lambda: tiff_bytes(rng_image((H, W, 4), "uint8"),
                                             photometric="rgb", extrasamples=["unassalpha"],
                                             rowsperstrip=9, compression="lzw")),
    "tiff-palette": ("tif", lambda: _palette_tiff((H, W))),
    "tiff-jpeg": ("tif", lambda: tiff_bytes(rng_image((H, W, 3), "uint8"),
                                            compression="jpeg", rowsperstrip=16)),
    "fits-uint8": ("fits", lambda: fits_bytes(rng_image((H, W), "uint8"))),
    "fits-int16": ("fits", lambda: fits_bytes(rng_image((H, W), "int16"))),
    "fits-uint16-bzero": ("fits", lambda: fits_bytes(rng_image((H, W), "uint16"))),
    "fits-int32": ("fits", lambda: fits_bytes(rng_image((H, W), "int32"))),
    "fits-float32": ("fits", lambda: fits_bytes(rng_image((H, W), "float32"))),
    "fits-float64": ("fits", lambda: fits_bytes(rng_image((H, W), "float64"))),
    "fits-bscale": ("fits", lambda: fits_bytes(rng_image((H, W), "int16"),
                                               {"BSCALE": 0.5, "BZERO": 10.0})),
    "fits-rgb-cube": ("fits", lambda: fits_bytes(rng_image((3, H, W), "int16"))),
    "fits-degenerate-axis": ("fits", lambda: fits_bytes(rng_image((1, H, W), "float32"))),
    "fits-compressed-rice": ("fits", lambda: _comp_fits(rng_image((H, W), "int16"))),
    "fits-compressed-gzip-float": ("fits", lambda: _comp_fits(
        rng_image((H, W), "float32"), tile_rows=5, compression="GZIP_1")),
}


def _bands(img, rows=BAND) -> np.ndarray:
    try:
        parts = []
        for y0, band in img.bands(rows):
            assert y0 == sum(len(p) for p in parts)
            assert band.shape[0] == min(rows, img.shape[0] - y0)
            parts.append(band)
        return np.concatenate(parts)
    finally:
        img.close()


@pytest.mark.parametrize("as_path", [False, True], ids=["bytes", "path"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bands_equal_the_whole_decode(case, as_path, tmp_path):
    ext, make = CASES[case]
    data = make()
    name = f"img.{ext}"
    whole, meta = read_image(data, name)
    src = data
    if as_path:
        (tmp_path / name).write_bytes(data)
        src = str(tmp_path / name)
    img = open_banded(src, name, tile=BAND, stream_min_bytes=0)
    assert img is not None and img.streamed
    assert img.shape == whole.shape and img.dtype == whole.dtype
    assert img.meta == meta
    got = _bands(img)
    assert got.dtype == whole.dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, whole)


def test_fits_rows_keep_the_file_order():
    a = np.arange(H * W, dtype=np.int32).reshape(H, W)
    img = open_banded(fits_bytes(a), "x.fits", tile=BAND, stream_min_bytes=0)
    assert img.meta["row_order"] == "bottom-up"
    np.testing.assert_array_equal(_bands(img), a)  # row 0 is the first row stored


def test_small_images_and_other_layouts_are_decoded_whole():
    small = png_bytes(rng_image((H, W), "uint8"))
    assert open_banded(small, "a.png", tile=BAND) is None  # under stream_min_bytes
    import pyvips
    from PIL import Image

    rgb = rng_image((H, W, 3), "uint8")
    interlaced = pyvips.Image.new_from_array(rgb).pngsave_buffer(interlace=True)
    assert open_banded(interlaced, "i.png", stream_min_bytes=0) is None
    np.testing.assert_array_equal(read_image(interlaced, "i.png")[0], rgb)
    pal = Image.fromarray(rng_image((H, W), "uint8")).convert("P")
    assert open_banded(_pil_png(pal), "p.png", stream_min_bytes=0) is None
    cmyk = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(cmyk, "JPEG")
    assert open_banded(cmyk.getvalue(), "c.jpg", stream_min_bytes=0) is None
    assert read_image(cmyk.getvalue(), "c.jpg")[1]["converted_from"] == "CMYK"
    pages = tiff_bytes(rng_image((3, H, W), "uint8"), photometric="minisblack")  # 3 pages
    assert open_banded(pages, "p.tif", stream_min_bytes=0) is None
    for data, name in ((b"", "e.png"), (b"GIF89a....", "g.tif"), (small, "a.gif")):
        with pytest.raises(ImageRejected) as exc:  # the reason read_image gives
            open_banded(data, name, stream_min_bytes=0)
        with pytest.raises(ImageRejected, match=re.escape(exc.value.reason)):
            read_image(data, name)


def _pil_png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_header_checks_come_first():
    from storage_files import huge_png_header

    with pytest.raises(ImageRejected, match="too many pixels"):
        open_banded(huge_png_header(50000, 50000), "bomb.png", stream_min_bytes=0)
    with pytest.raises(ImageRejected, match="too many pixels"):
        open_banded(tiff_bytes(rng_image((H, W), "uint8")), "x.tif", max_pixels=100,
                    stream_min_bytes=0)


def test_band_byte_limit():
    data = _png16(rng_image((H, W, 3), "uint16"))
    limit = BAND * W * 3 * 2
    assert open_banded(data, "x.png", tile=BAND, max_band_bytes=limit,
                       stream_min_bytes=0) is not None
    with pytest.raises(ImageRejected, match=r"RESTOREFLOW_MAX_BAND_BYTES") as exc:
        open_banded(data, "x.png", tile=BAND, max_band_bytes=limit - 1, stream_min_bytes=0)
    assert "\n" not in exc.value.reason and f"{limit:,} bytes" in exc.value.reason
    # a TIFF strip taller than the band counts as one band
    tall = tiff_bytes(rng_image((H, W), "uint8"), rowsperstrip=40, compression="zlib")
    with pytest.raises(ImageRejected, match="one strip or tile row of the file"):
        open_banded(tall, "x.tif", tile=BAND, max_band_bytes=BAND * W, stream_min_bytes=0)


def test_truncated_png_is_rejected_in_bands():
    data = _png16(rng_image((H, W, 3), "uint16"))
    img = open_banded(data[: len(data) // 2], "t.png", tile=BAND, stream_min_bytes=0)
    with pytest.raises(ImageRejected, match="PNG"):
        _bands(img)


def test_truncated_jpeg_is_rejected_in_bands():
    data = jpeg_bytes(rng_image((H, W, 3), "uint8"))
    with pytest.raises(ImageRejected, match="JPEG"):
        read_image(data[: len(data) // 2], "t.jpg")
    img = open_banded(data[: len(data) // 2], "t.jpg", tile=BAND, stream_min_bytes=0)
    with pytest.raises(ImageRejected, match="JPEG"):
        _bands(img)


def _ingest_both(tmp_path, base, files, tile=BAND):
    """Ingest ``files`` into a store decoding whole and one decoding in bands."""
    from restoreflow.storage.store import TileStore

    src = tmp_path / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    out = []
    for label, stream_min in (("whole", 2**40), ("bands", 0)):
        settings = base.model_copy(update={"tile_size": tile,
                                           "stream_min_bytes": stream_min})
        store = TileStore(tmp_path / label, settings)
        report = ingest([str(src)], store, settings, progress=False)
        out.append((store, report))
    return out


def test_ingest_in_bands_stores_the_same_images_and_attrs(tmp_path, local_settings):
    files = {
        "grey16.png": png_bytes(rng_image((H, W), "uint16")),
        "rgb16.png": _png16(rng_image((H, W, 3), "uint16", 1)),
        "tiles.tif": tiff_bytes(rng_image((H, W, 3), "uint8", 2), tile=(16, 16),
                                compression="zlib"),
        "float.fits": fits_bytes(rng_image((H, W), "float32", 3)),
        "unit.fits": fits_bytes(np.linspace(0, 1, H * W, dtype=np.float64).reshape(H, W)),
        "int32.tif": tiff_bytes(rng_image((H, W), "int32", 4), rowsperstrip=3),
        "photo.jpg": _jpeg(rng_image((H, W, 3), "uint8", 5), progressive=True),
    }
    (whole, rw), (banded, rb) = _ingest_both(tmp_path, local_settings, files)
    assert rw.counts == rb.counts == {"ingested": len(files), "present": 0, "rejected": 0}
    ids = sorted(content_id(d) for d in files.values())
    assert whole.image_ids("input") == banded.image_ids("input") == ids
    for iid in ids:
        a, b = whole.attrs("input", iid), banded.attrs("input", iid)
        a.pop("ingested_at"), b.pop("ingested_at")
        assert a == b
        np.testing.assert_array_equal(whole.read("input", iid), banded.read("input", iid))


def test_a_band_that_fails_leaves_no_image(tmp_path, local_settings):
    bad = rng_image((H, W), "float32")
    bad[H - 3, 5] = np.nan  # in the last band
    (whole, rw), (banded, rb) = _ingest_both(tmp_path, local_settings,
                                             {"nan.fits": fits_bytes(bad)})
    assert rw.counts["rejected"] == rb.counts["rejected"] == 1
    assert "non-finite pixels" in rb.rejected[0].reason
    assert "rows 48-60" in rb.rejected[0].reason
    assert banded.status("input", rb.rejected[0].image_id) is None
    assert banded.image_ids("input", complete_only=False) == []


def test_band_limit_rejects_by_file(tmp_path, local_settings):
    from restoreflow.storage.store import TileStore

    (tmp_path / "wide.png").write_bytes(_png16(rng_image((H, W, 3), "uint16")))
    settings = local_settings.model_copy(update={"tile_size": BAND, "max_band_bytes": 1000})
    store = TileStore(tmp_path / "s", settings)
    report = ingest([str(tmp_path / "wide.png")], store, settings, progress=False)
    row = report.rejected[0]
    assert row.source.endswith("wide.png")
    assert "RESTOREFLOW_MAX_BAND_BYTES" in row.reason
    assert store.image_ids("input", complete_only=False) == []


@pytest.mark.parametrize("fmt", ["png", "tiff", "fits"])
def test_export_in_bands_writes_the_same_pixels(tmp_path, local_settings, fmt):
    from astropy.io import fits
    from PIL import Image

    from restoreflow.storage.export import export
    from restoreflow.storage.store import TileStore

    files = {
        "rgb8.png": png_bytes(rng_image((H, W, 3), "uint8")),
        "rgb16.png": _png16(rng_image((H, W, 3), "uint16", 1)),
        "grey16.tif": tiff_bytes(rng_image((H, W), "uint16", 2)),
        "float.fits": fits_bytes(rng_image((H, W), "float32", 3)),  # bottom-up rows
        "cube.fits": fits_bytes(rng_image((3, H, W), "int16", 4)),
    }
    src = tmp_path / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    settings = local_settings.model_copy(update={"tile_size": BAND})
    store = TileStore(tmp_path / "store", settings)
    ingest([str(src)], store, settings, progress=False)
    ids = store.image_ids("input")
    # a derived collection (float32, normalised units) exports in the source's units
    for iid in ids:
        c, h, w = store.shape("input", iid)
        store.create_image("restored", iid, (c, h, w), "float32")
        store.write_image("restored", iid, store.read("input", iid, normalised=True) * 0.9)
        store.mark_complete("restored", iid)
    for collection in ("input", "restored"):
        outs = {}
        for label, stream_min in (("whole", 2**40), ("bands", 0)):
            s = settings.model_copy(update={"stream_min_bytes": stream_min})
            paths = export(TileStore(tmp_path / "store", s), collection, fmt,
                           tmp_path / f"{collection}-{label}")
            outs[label] = paths
        for pw, pb in zip(outs["whole"], outs["bands"], strict=True):
            a, ma = read_image(pw.read_bytes(), pw.name)
            b, mb = read_image(pb.read_bytes(), pb.name)
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
            if fmt == "png":
                assert Image.open(pw).info["restoreflow"] == Image.open(pb).info["restoreflow"]
            elif fmt == "tiff":
                assert ma["source_metadata"]["description"] == mb["source_metadata"][
                    "description"]
            else:
                ha, hb = fits.getheader(pw), fits.getheader(pb)
                assert list(ha.items()) == list(hb.items())


def test_band_png_from_any_file_name(tmp_path):
    """libvips gets a descriptor: brackets (its option syntax) and bytes that are not
    UTF-8 in a file name are just part of the name."""
    a = rng_image((H, W, 3), "uint16")
    for name in ("img[0].png", b"caf\xe9.png".decode("utf-8", "surrogateescape")):
        path = tmp_path / name
        path.write_bytes(_png16(a))
        img = open_banded(str(path), name, tile=BAND, stream_min_bytes=0)
        np.testing.assert_array_equal(_bands(img), a)


_PEAK_CHILD = r"""
import json, sys
import astropy.io.fits, dask.array, imagecodecs, numpy, PIL.Image, tifffile, xarray, zarr
from restoreflow.settings import Settings
from restoreflow.storage.ingest import ingest
from restoreflow.storage.store import TileStore

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

settings = Settings(tile_size=256, store=sys.argv[2])
before = hwm()
report = ingest([sys.argv[1]], TileStore(sys.argv[2], settings), settings, progress=False)
print(json.dumps({"counts": report.counts, "grew_mib": hwm() - before}))
"""


def _zeros_file(path, fmt, side):
    """A side x side all-zero 16-bit image (8-bit for JPEG) written without holding it in
    memory."""
    if fmt == "jpg":
        import pyvips

        pyvips.Image.black(side, side, bands=3).copy(interpretation="srgb").jpegsave(str(path))
    elif fmt == "png":
        import pyvips

        im = pyvips.Image.black(side, side, bands=3).cast("ushort")
        im.copy(interpretation="rgb16").pngsave(str(path))
    elif fmt == "tif":
        import tifffile

        tile = np.zeros((512, 512, 3), np.uint16)
        tifffile.imwrite(path, data=(tile for _ in range((-(-side // 512)) ** 2)),
                         shape=(side, side, 3), dtype=np.uint16, tile=(512, 512),
                         compression="zlib", photometric="rgb")
    else:
        from astropy.io import fits

        hdr = fits.Header([("SIMPLE", True), ("BITPIX", 16), ("NAXIS", 2),
                           ("NAXIS1", side), ("NAXIS2", side)])
        with fits.StreamingHDU(str(path), hdr) as out:
            for _ in range(0, side, 500):
                out.write(np.zeros((500, side), ">i2"))


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"),
                    reason="reads VmHWM from /proc")
@pytest.mark.parametrize(("fmt", "decoded_mib"),
                         [("png", 206), ("tif", 206), ("fits", 69), ("jpg", 103)])
def test_ingest_memory_does_not_grow_with_the_image(tmp_path, fmt, decoded_mib):
    """A 6000 x 6000 16-bit image (RGB for PNG and TIFF; 8-bit RGB JPEG) ingests in a fresh
    process whose peak RSS grows by well under its decoded size (decoded whole it grew by
    225-275 MiB)."""
    import json
    import os
    import subprocess
    import sys

    path = tmp_path / f"zeros.{fmt}"
    _zeros_file(path, fmt, 6000)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-c", _PEAK_CHILD, str(path), str(tmp_path / "s")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["counts"]["ingested"] == 1
    assert out["grew_mib"] < min(120, decoded_mib * 0.8), out


S3_CASES = ["png-rgb16", "png-grey8", "jpeg-rgb-progressive", "tiff-rgb8-tiles",
            "tiff-contiguous-bigendian", "fits-int16", "fits-compressed-rice"]


@pytest.mark.s3
def test_bands_from_s3_objects_equal_the_whole_decode(tmp_path, s3_server, s3_settings,
                                                      local_settings):
    """A large S3 object is hashed and decoded through ranged reads (RemoteFile), with
    the same id, pixels and attrs as the whole decode of its bytes."""
    from restoreflow.storage.bands import RemoteFile
    from restoreflow.storage.sources import s3_filesystem
    from restoreflow.storage.store import TileStore

    fs = s3_filesystem(s3_settings)
    prefix = f"{s3_server.bucket}/bands-{tmp_path.name}"
    files = {}
    for case in S3_CASES:
        ext, make = CASES[case]
        files[f"{case}.{ext}"] = make()
        fs.pipe_file(f"{prefix}/{case}.{ext}", files[f"{case}.{ext}"])
    for name, data in files.items():
        whole, meta = read_image(data, name)
        remote = RemoteFile(fs, f"{prefix}/{name}", len(data))
        img = open_banded(remote, name, tile=BAND, stream_min_bytes=0)
        assert img.meta == meta
        np.testing.assert_array_equal(_bands(img), whole)
    stores = []
    for label, stream_min in (("whole", 2**40), ("bands", 0)):
        settings = s3_settings.model_copy(update={"tile_size": BAND,
                                                  "stream_min_bytes": stream_min})
        store = TileStore(tmp_path / label, settings)
        report = ingest([f"s3://{prefix}"], store, settings, progress=False)
        assert report.counts["ingested"] == len(files)
        stores.append(store)
    ids = sorted(content_id(d) for d in files.values())
    assert stores[0].image_ids("input") == stores[1].image_ids("input") == ids
    for iid in ids:
        a, b = (s.attrs("input", iid) for s in stores)
        a.pop("ingested_at"), b.pop("ingested_at")
        assert a == b
        np.testing.assert_array_equal(*(s.read("input", iid) for s in stores))
