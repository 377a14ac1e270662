"""Hostile input: a corpus of broken, lying and dangerous files (and file names, and S3
keys) ingested with `restoreflow ingest`. Each bad one is reported by name with a
specific reason, the batch completes, the good ones are ingested, nothing is written
outside the store, exit code 0 (1 with --strict). Then a collection whose stored names
are hostile is exported: every file lands inside --out."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from hardening_helpers import RESTOREFLOW, cli_env, snapshot_tree, write_pngs

# file name -> a fragment of the reason it must be rejected with
EXPECTED: dict[str, str] = {}


def _png(arr, **info) -> bytes:
    from PIL import Image, PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    for k, v in info.items():
        meta.add_text(k, v)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", pnginfo=meta)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(
        ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_header(w: int, h: int, depth=8, colour=2, extra=b"") -> bytes:
    """A PNG whose IHDR (valid CRC) declares w x h, followed by a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra
            + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b""))


def _png_inflate_bomb(depth: int, colour: int, inflated: int = 256 << 20) -> bytes:
    """A 64 x 64 PNG (valid chunks and CRCs) whose IDAT inflates to ``inflated`` zero
    bytes, thousands of times what the header declares: one full-flushed deflate segment
    of 1 MiB of zeros repeated, with the Adler-32 of n zeros, (n mod 65521) << 16 | 1."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    seg = co.compress(bytes(1 << 20)) + co.flush(zlib.Z_FULL_FLUSH)
    stream = (b"\x78\xda" + seg * (inflated >> 20) + zlib.compressobj(9, zlib.DEFLATED, -15)
              .flush() + struct.pack(">I", (inflated % 65521) << 16 | 1))
    ihdr = struct.pack(">IIBBBBB", 64, 64, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", stream)
            + _chunk(b"IEND", b""))


def _png16_sbit(values) -> bytes:
    """16-bit grey PNG whose sBIT chunk claims 4 significant bits, values up to 65535."""
    raw = b"".join(b"\0" + struct.pack(f">{len(r)}H", *r) for r in values)
    ihdr = struct.pack(">IIBBBBB", values.shape[1], values.shape[0], 16, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"sBIT", b"\x04")
            + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


def _tiff(arr, **kw) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


def _fits(arr, **cards) -> bytes:
    from astropy.io import fits

    hdu = fits.PrimaryHDU(arr)
    for k, v in cards.items():
        hdu.header[k] = v
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


def _fits_complex() -> bytes:
    """64-bit complex pixels in FITS: image HDUs cannot hold complex values (no BITPIX
    for them), so they come as a binary-table column of complex64 rows."""
    from astropy.io import fits

    col = fits.Column(name="pix", format="64C", array=np.ones((16, 64), np.complex64))
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([col])]).writeto(buf)
    return buf.getvalue()


def _tiff_ascii_offsets() -> bytes:
    """A TIFF whose StripOffsets tag is typed ASCII (found by fuzzing: it crashed)."""
    data = bytearray(_tiff(np.zeros((12, 10), np.uint8)))
    n = struct.unpack("<H", data[8:10])[0]
    for k in range(n):
        e = 10 + 12 * k
        if struct.unpack("<H", data[e:e + 2])[0] == 273:  # StripOffsets
            data[e + 2:e + 4] = struct.pack("<H", 2)
    return bytes(data)


def _build_corpus(d: Path) -> None:
    rng = np.random.default_rng(7)
    rgb = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    png = _png(rgb)
    jpg = io.BytesIO()
    from PIL import Image

    Image.fromarray(rgb).save(jpg, "JPEG")
    jpg = jpg.getvalue()
    tif = _tiff(rgb)
    fit = _fits(rng.random((40, 48)).astype(np.float32))

    def bad(name: str, data: bytes, reason: str) -> None:
        (d / name).write_bytes(data)
        EXPECTED[name] = reason

    bad("truncated.png", png[: len(png) // 2], "PNG")
    bad("truncated.jpg", jpg[: len(jpg) // 2], "JPEG")
    bad("truncated.tif", tif[: len(tif) - 200], "truncated TIFF")
    bad("truncated.fits", fit[:2880 + 100], "truncated FITS")
    bad("zero.png", b"", "empty file (0 bytes)")
    bad("notes.png", b"just some text, not an image\n", "not a PNG file: bad signature "
                                                         "(looks like text")
    bad("svg.tif", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "looks like SVG/XML")
    bad("one_pixel.png", _png(rgb[:1, :1]), "too small: 1x1 pixels")
    bad("zero_width.png", _png_header(0, 64), "IHDR declares a 0x64 image")
    bad("zero_height.fits", _fits(np.zeros((0, 16), np.float32)), "no HDU with 2-D image data")
    bad("five_d.tif", _tiff(np.zeros((2, 2, 2, 16, 16), np.uint8)), "unsupported dimensions")
    bad("complex.tif", _tiff(np.ones((16, 16), np.complex64)), "complex")
    bad("complex.fits", _fits_complex(), "no HDU with 2-D image data")
    nan = rng.random((16, 16)).astype(np.float32)
    nan[3, 4], nan[5, 6] = np.nan, np.inf
    bad("nan_inf.fits", _fits(nan), "2 non-finite pixels (1 NaN, 1 Inf)")
    bad("bomb.png", _png_header(50000, 50000), "too many pixels: header declares 50000x50000")
    bad("bomb.tif", _tiff_bomb(), "too many pixels")
    # small header, huge data: 256 MiB of image data in a 0.3 MB file
    inflates = "image data inflates to more than the {:,} bytes its 64x64 header declares"
    bad("inflate_bomb16.png", _png_inflate_bomb(16, 2), inflates.format(64 * (1 + 64 * 6)))
    bad("inflate_bomb16_rgba.png", _png_inflate_bomb(16, 6), inflates.format(64 * (1 + 64 * 8)))
    bad("inflate_bomb8.png", _png_inflate_bomb(8, 2), inflates.format(64 * (1 + 64 * 3)))
    bad("inflate_bomb8_grey.png", _png_inflate_bomb(8, 0), inflates.format(64 * (1 + 64)))
    bad("int64.fits", _fits(np.zeros((16, 16), np.int64)), "int64")
    bad("ascii_offsets.tif", _tiff_ascii_offsets(), "corrupt TIFF")
    bad("image.gif", png, "unsupported file extension '.gif'")
    # broken links, loops and things that are not files
    os.symlink(d / "nowhere.png", d / "dangling.png")
    EXPECTED["dangling.png"] = "broken symbolic link"
    os.symlink(d / "self.png", d / "self.png")
    EXPECTED["self.png"] = "Too many levels of symbolic links"
    os.mkfifo(d / "fifo.png")
    EXPECTED["fifo.png"] = "not a regular file"
    os.symlink(d, d / "loop")  # a directory symlink loop: not followed
    os.mkdir(d / "dir.png")  # a directory with an image extension: nothing inside
    # a non-UTF-8 file name (bytes path), bad content
    os.close(os.open(os.fsencode(d) + b"/latin1-\xe9t\xe9.png", os.O_CREAT | os.O_WRONLY))
    EXPECTED["latin1-\\xe9t\\xe9.png"] = "empty file (0 bytes)"
    # a name with a newline: its rejection must still be one line
    (d / "two\nlines.png").write_bytes(b"GIF89a....")
    EXPECTED["two\\nlines.png"] = "looks like GIF"


def _tiff_bomb() -> bytes:
    """A little-endian TIFF IFD declaring a 60000 x 60000 8-bit image (no data)."""
    entries = [(256, 4, 1, 60000), (257, 4, 1, 60000), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, 60000),
               (279, 4, 1, 60000 * 60000 % 2**32)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8) + ifd


# values that lie (ingested: the data, not the header, decides)
def _liars(d: Path) -> dict[str, str]:
    rng = np.random.default_rng(3)
    data = (rng.random((16, 20)) * 5).astype(np.float32)  # up to 5 ...
    (d / "datamax.fits").write_bytes(_fits(data, DATAMIN=0.0, DATAMAX=1.0))  # ... says 0..1
    (d / "sbit.png").write_bytes(_png16_sbit(np.full((16, 16), 65535, np.uint16)))
    (d / "huge_text.png").write_bytes(_png((rng.random((16, 16)) * 255).astype(np.uint8),
                                           Comment="x" * 900_000))
    (d / "jpeg_named.png").write_bytes(_png_to_jpeg(d / "sbit.png"))
    return {"datamax.fits": "float32", "sbit.png": "uint16", "huge_text.png": "uint8",
            "jpeg_named.png": "uint8"}


def _png_to_jpeg(_) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 99, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _upload_traversal_keys(s3_server, s3_settings, prefix: str) -> list[str]:
    """Objects whose keys hold '..' (distinct content each); returns the keys listed under
    the prefix afterwards (the client/server may have normalised some of them away)."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_settings.storage_options(), skip_instance_cache=True)
    keys = (f"{prefix}/../evil.png", f"{prefix}/sub/../../evil2.png", f"{prefix}/..%2Fevil3.png",
            f"{prefix}/sub/..evil4.png", f"{prefix}/fine.png")
    for k, key in enumerate(keys):
        img = ((np.arange(16 * 16 * 3) * (k + 3)) % 251).reshape(16, 16, 3).astype(np.uint8)
        try:
            fs.pipe_file(f"{s3_server.bucket}/{key}", _png(img))
        except Exception:  # noqa: BLE001 - a server may refuse such keys: nothing to ingest
            pass
    fs.invalidate_cache()
    base = f"{s3_server.bucket}/{prefix}/"
    return sorted(k[len(base):] for k in fs.find(base))


@pytest.mark.s3
def test_hostile_corpus_is_rejected_by_name(tmp_path, s3_server, s3_settings):
    root = tmp_path / "sandbox"
    corpus = root / "hostile"
    corpus.mkdir(parents=True)
    _build_corpus(corpus)
    liars = _liars(corpus)
    good = write_pngs(corpus / "good", 2, seed=9)
    prefix = f"traversal-{os.getpid()}"
    keys = _upload_traversal_keys(s3_server, s3_settings, prefix)
    store = root / "store"
    work = root / "work"
    work.mkdir()
    env = cli_env(None, RESTOREFLOW_TILE_SIZE="16", PYTHONIOENCODING="utf-8",
                  RESTOREFLOW_S3_ENDPOINT_URL=s3_server.endpoint_url,
                  AWS_ACCESS_KEY_ID=s3_server.access_key,
                  AWS_SECRET_ACCESS_KEY=s3_server.secret_key)
    extra = [str(corpus / "image.gif"), str(corpus / "fifo.png"), str(corpus / "self.png"),
             str(corpus / "dangling.png"), f"s3://{s3_server.bucket}/{prefix}/"]
    before = snapshot_tree(root)
    r = subprocess.run([RESTOREFLOW, "ingest", "--no-progress", str(corpus), *extra, "--store",
                        str(store)], env=env, cwd=work, capture_output=True, timeout=300)
    out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
    assert r.returncode == 0, out[-3000:] + err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    rejected = {}
    for line in out.splitlines():
        if line.startswith("REJECTED "):
            path, reason = line[len("REJECTED "):].split(": ", 1)
            rejected[path.rsplit("/", 1)[-1]] = reason
    missing = {n: why for n, why in EXPECTED.items() if n not in rejected}
    assert not missing, f"not reported: {missing}\n{out[-4000:]}"
    wrong = {n: (EXPECTED[n], rejected[n]) for n in EXPECTED if EXPECTED[n] not in rejected[n]}
    assert not wrong, wrong
    unexpected = set(rejected) - set(EXPECTED)
    assert not unexpected, {n: rejected[n] for n in unexpected}

    from restoreflow.storage.store import TileStore

    ts = TileStore(store)
    attrs = ts.image_attrs("input")
    names = sorted(a["name"] for a in attrs.values())
    assert all(a["status"] == "complete" for a in attrs.values())
    for p in good:
        assert p.name in names
    for name, dtype in liars.items():
        a = next(a for a in attrs.values() if a["name"] == name)
        assert a["dtype"] == dtype
        x = ts.read("input", a["image_id"], normalised=True)
        assert 0.0 <= x.min() and x.max() <= 1.0  # normalised by the data, not the header
    assert next(a for a in attrs.values() if a["name"] == "datamax.fits")["value_range"][1] > 4
    assert "extension_mismatch" in next(a for a in attrs.values()
                                        if a["name"] == "jpeg_named.png")
    huge = next(a for a in attrs.values() if a["name"] == "huge_text.png")
    assert len(json.dumps(huge)) < 20_000  # the 900 kB text is not copied into attrs
    # every object listed under the prefix was read as an object, whatever its key holds;
    # a key never becomes a local path (checked below: nothing written outside the store)
    s3_sources = sorted(a["source"].split(f"/{prefix}/", 1)[1] for a in attrs.values()
                        if a["source"].startswith("s3://"))
    assert s3_sources == keys and "fine.png" in keys, (keys, s3_sources)
    table = ts.read_table("rejected")
    assert {row["reason"] for row in table} == set(rejected.values())
    assert all("\n" not in row["source"] and "\n" not in row["reason"] for row in table)

    after = snapshot_tree(root)
    new = sorted(p for p in set(after) - set(before) if not p.startswith("store"))
    changed = sorted(p for p in before if p in after and before[p] != after[p]
                     and not p.startswith("store"))
    assert not new and not changed, (new, changed)
    assert not (tmp_path / "evil.png").exists() and not (root / "evil.png").exists()
    n_bad = len(EXPECTED)
    print(f"\nhostile inputs: {n_bad} bad files rejected by name, {len(liars)} lying-but-valid "
          f"and {len(good)} good files ingested, S3 keys {keys} read as keys; "
          f"nothing written outside the store")

    r = subprocess.run([RESTOREFLOW, "ingest", "--no-progress", "--strict", str(corpus),
                        "--store", str(store)], env=env, cwd=work, capture_output=True,
                       timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    assert b"Traceback" not in r.stderr


HOSTILE_NAMES = ["../../evil", "/etc/passwd", "..", ".", "", "a\x00b.png", "line\nbreak.png",
                 "..\\..\\win.png", "C:\\evil.png", "~root/x", "x" * 5000, "\u202eevil.png",
                 "con", "-rf", "$(touch pwned).png", "a/../../../b.png", None]


def test_export_of_hostile_stored_names_stays_inside_out(tmp_path):
    from restoreflow.settings import Settings
    from restoreflow.storage.ingest import ingest_array
    from restoreflow.storage.store import TileStore

    store = TileStore(tmp_path / "store", Settings(), tile_size=16)
    rng = np.random.default_rng(1)
    for k, name in enumerate(HOSTILE_NAMES):
        iid = ingest_array(store, (rng.random((16, 16, 3)) * 255).astype(np.uint8), f"n{k}")
        store.update_attrs("input", iid, name=name, source=name)
        store.create_image("degraded", iid, (3, 16, 16), np.float32, overwrite=True)
        store.write_image("degraded", iid, rng.random((3, 16, 16)).astype(np.float32))
        store.mark_complete("degraded", iid, name=name)
    out = tmp_path / "sandbox" / "out"
    out.parent.mkdir()
    before = snapshot_tree(tmp_path / "sandbox")
    env = cli_env(None, PYTHONIOENCODING="utf-8")
    for coll, fmt in (("input", "png"), ("degraded", "tiff"), ("degraded", "fits")):
        r = subprocess.run([RESTOREFLOW, "export", "--store", str(tmp_path / "store"),
                            "--collection", coll, "--format", fmt, "--out", str(out)],
                           env=env, capture_output=True, timeout=120, cwd=tmp_path)
        assert r.returncode == 0, r.stderr.decode()[-3000:]
    after = snapshot_tree(tmp_path / "sandbox")
    new = sorted(set(after) - set(before))
    assert new and all(p.startswith("out") for p in new), new
    files = sorted(os.listdir(out))
    assert len(files) == 3 * len(HOSTILE_NAMES)
    for f in files:
        p = out / f
        assert p.is_file() and not p.is_symlink() and p.resolve().parent == out.resolve()
        assert all(c.isalnum() or c in "._-" for c in f) and len(f) < 160, f
    assert not (tmp_path / "evil").exists() and not Path("/etc/passwd.png").exists()
    print(f"\nexport: {len(files)} files from {len(HOSTILE_NAMES)} hostile names, all inside "
          "--out")
