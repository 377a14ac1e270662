"""PNG decompression bombs: a small file with valid chunks whose IHDR declares a small
image but whose IDAT inflates to far more. Every PNG path (libpng through imagecodecs for
16-bit colour, Pillow for the rest) rejects it by name with a one-line reason, and
reading it costs bounded memory."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib

import pytest
from storage_files import png_chunk

from restoreflow.storage.decode import ImageRejected
from restoreflow.storage.readers import read_image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MB = 1 << 20


def deflate_zeros(n: int) -> bytes:
    """A zlib stream of ``n`` zero bytes, built without compressing them: one 1 MiB
    segment ended by a full flush (no references across segments) repeated, then the
    Adler-32 of n zeros, which is (n mod 65521) << 16 | 1."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    seg = co.compress(bytes(MB)) + co.flush(zlib.Z_FULL_FLUSH)
    k, rest = divmod(n, MB)
    last = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = last.compress(bytes(rest)) + last.flush()
    return b"\x78\xda" + seg * k + tail + struct.pack(">I", (n % 65521) << 16 | 1)


def png_bomb(inflated: int, depth: int = 16, colour: int = 2, w: int = 64, h: int = 64,
             interlace: int = 0) -> bytes:
    """A PNG (correct CRCs, IEND) declaring w x h whose IDAT inflates to ``inflated``
    zero bytes (rows with filter None, all pixels 0, then more of the same)."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, interlace)
    plte = png_chunk(b"PLTE", bytes(range(48))) if colour == 3 else b""
    return (SIGNATURE + png_chunk(b"IHDR", ihdr) + plte
            + png_chunk(b"IDAT", deflate_zeros(inflated)) + png_chunk(b"IEND", b""))


# name -> (bit depth, colour type, interlace, decoded shape)
KINDS = {
    "png16-rgb": (16, 2, 0, (64, 64, 3)),
    "png16-rgba": (16, 6, 0, (64, 64, 3)),
    "png16-grey-alpha": (16, 4, 0, (64, 64)),
    "png16-rgb-interlaced": (16, 2, 1, (64, 64, 3)),
    "png16-grey": (16, 0, 0, (64, 64)),
    "png8-rgb": (8, 2, 0, (64, 64, 3)),
    "png8-grey": (8, 0, 0, (64, 64)),
    "png8-palette": (8, 3, 0, (64, 64, 3)),
    "png1-grey-interlaced": (1, 0, 1, (64, 64)),
}


def _declared(depth, colour, interlace):
    """Bytes of filtered scanlines of a 64 x 64 image: each (Adam7 pass) row is a filter
    byte and ceil(width * samples * depth / 8) bytes."""
    bits = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour] * depth
    # Adam7 pass sizes of a 64 x 64 image: (width, height) of passes 1..7
    passes = [(8, 8), (8, 8), (16, 8), (16, 16), (32, 16), (32, 32), (64, 32)]
    return sum(h * (1 + (w * bits + 7) // 8)
               for w, h in (passes if interlace else [(64, 64)]))


@pytest.mark.parametrize("kind", KINDS)
def test_png_bomb_is_rejected(kind):
    depth, colour, interlace, _ = KINDS[kind]
    data = png_bomb(64 * MB, depth, colour, interlace=interlace)
    assert len(data) < 100_000
    expected = _declared(depth, colour, interlace)
    with pytest.raises(ImageRejected, match="inflates to more than") as e:
        read_image(data, "bomb.png")
    assert f"the {expected:,} bytes its 64x64 header declares" in e.value.reason


@pytest.mark.parametrize("kind", KINDS)
def test_png_data_of_the_declared_size_decodes(kind):
    """The bomb check rejects nothing valid: exactly the declared size decodes (zeros),
    one byte less is truncated and one byte more is too much, both rejected."""
    depth, colour, interlace, shape = KINDS[kind]
    expected = _declared(depth, colour, interlace)
    out, meta = read_image(png_bomb(expected, depth, colour, interlace=interlace), "ok.png")
    assert out.shape == shape and meta["format"] == "png"
    if colour != 3:
        assert not out.any()
    with pytest.raises(ImageRejected, match="PNG"):
        read_image(png_bomb(expected - 1, depth, colour, interlace=interlace), "short.png")
    with pytest.raises(ImageRejected, match="inflates to more than"):
        read_image(png_bomb(expected + 1, depth, colour, interlace=interlace), "long.png")


# The child reports its own peak RSS: VmHWM, the high-water mark of its address space
# since exec. (ru_maxrss is not used: on Linux a child's ru_maxrss starts from the RSS
# of the parent at fork, so a big pytest process would inflate it.)
_CHILD = r"""
import json, sys

def peak_mb():
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmHWM:")) / 1024

mode, path = sys.argv[1], sys.argv[2]
out = {}
if mode == "ingest":
    from restoreflow.settings import Settings
    from restoreflow.storage.ingest import ingest
    from restoreflow.storage.store import TileStore
    store = TileStore(sys.argv[3], Settings(), tile_size=16)
    out["before_MB"] = peak_mb()
    report = ingest([path], store, progress=False)
    out["rows"] = [[r.source, r.status, r.reason] for r in report.rows]
elif mode == "pillow":
    from PIL import PngImagePlugin
    im = PngImagePlugin.PngImageFile(path)
    out["before_MB"] = peak_mb()
    try:
        im.load()
        out["size"] = list(im.size)
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
out["peak_MB"] = peak_mb()
print(json.dumps(out))
"""


def _child(mode: str, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", _CHILD, mode, *args], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


PEAK_LIMIT_MB = 300  # a 2 MB file inflating to 2 GiB; the unbounded decoder peaked at 4 GB


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/status"),
                                reason="peak RSS is read from /proc/self/status (Linux)")


@needs_proc
@pytest.mark.parametrize("kind", ["png16-rgb", "png8-rgb"])
def test_png_bomb_ingest_memory_is_bounded(kind, tmp_path):
    depth, colour, interlace, _ = KINDS[kind]
    path = tmp_path / f"bomb {kind}.png"
    path.write_bytes(png_bomb(2048 * MB, depth, colour, interlace=interlace))
    assert path.stat().st_size < 2.5e6
    res = _child("ingest", str(path), str(tmp_path / "store"))
    ((source, status, reason),) = res["rows"]
    assert status == "rejected" and source.endswith(path.name)
    assert "inflates to more than" in reason and "\n" not in reason
    print(f"\n{kind}: {path.stat().st_size / 1e6:.2f} MB file inflating to 2 GiB: "
          f"rejected, peak RSS {res['peak_MB']:.0f} MB ({res['before_MB']:.0f} MB before "
          "ingest)")
    assert res["peak_MB"] < PEAK_LIMIT_MB


@needs_proc
def test_pillow_alone_is_bounded_on_a_png_bomb(tmp_path):
    """Pillow (the 8-bit path) without our check: it stops at the declared size."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(2048 * MB, 8, 2))
    res = _child("pillow", str(path))
    assert res.get("size") == [64, 64], res
    print(f"\nPillow alone on a 2 GiB-inflating PNG: peak RSS {res['peak_MB']:.0f} MB")
    assert res["peak_MB"] < PEAK_LIMIT_MB



@pytest.mark.parametrize("as_path", [False, True], ids=["bytes", "path"])
def test_png_bomb_is_rejected_before_band_decoding(as_path, tmp_path):
    """The band reader runs the same check on the file, read in steps, before libvips."""
    from restoreflow.storage.readers import open_banded

    data = png_bomb(64 * MB, 16, 2)
    src = data
    if as_path:
        (tmp_path / "bomb.png").write_bytes(data)
        src = str(tmp_path / "bomb.png")
    with pytest.raises(ImageRejected, match="decompression bomb"):
        open_banded(src, "bomb.png", stream_min_bytes=0)
    exact = png_bomb(_declared(16, 2, 0), 16, 2)
    img = open_banded(exact, "ok.png", tile=16, stream_min_bytes=0)
    assert img is not None and img.shape == (64, 64, 3)
    assert all(not band.any() for _, band in img.bands(16))
