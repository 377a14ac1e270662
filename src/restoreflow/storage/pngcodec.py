"""Minimal PNG codec for 16-bit colour PNGs, which Pillow reduces to 8 bits.

Pillow handles 8-bit PNGs and 16-bit greyscale ("I;16") losslessly, but opens 16-bit
RGB / RGBA / grey+alpha PNGs as 8-bit images. This module decodes those bit-exactly
(all five scanline filters, Adam7 interlacing) and encodes 16-bit RGB.

Scanline filters (PNG spec 9.2), per byte, with a = left, b = up, c = up-left
(the byte ``bpp`` positions earlier / in the previous row, 0 outside the image):
None x = f; Sub x = f + a; Up x = f + b; Average x = f + floor((a + b) / 2);
Paeth x = f + paeth(a, b, c); all mod 256. Sub/Up/None rows are undone row by row
with vector operations; images that use Average or Paeth are undone along
anti-diagonals (a wavefront: every pixel on a diagonal depends only on the two
previous diagonals), so the work is H + W vector steps instead of H * W scalar ones.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# colour type -> samples per pixel
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))


class PNGError(ValueError):
    """A malformed PNG stream."""


def parse_ihdr(data: bytes) -> dict:
    """Width, height, bit depth, colour type and interlace from the IHDR (CRC checked)."""
    if len(data) < 33:
        raise PNGError(f"truncated: {len(data)} bytes, the PNG header needs 33")
    if data[:8] != SIGNATURE:
        raise PNGError("bad PNG signature")
    length, ctype = struct.unpack(">I4s", data[8:16])
    if ctype != b"IHDR" or length != 13:
        raise PNGError("first chunk is not a 13-byte IHDR")
    body = data[16:29]
    (crc,) = struct.unpack(">I", data[29:33])
    if zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF != crc:
        raise PNGError("IHDR CRC mismatch")
    w, h, depth, colour, comp, filt, interlace = struct.unpack(">IIBBBBB", body)
    if w == 0 or h == 0:
        raise PNGError(f"IHDR declares a {w}x{h} image")
    if colour not in _CHANNELS or comp != 0 or filt != 0 or interlace not in (0, 1):
        raise PNGError(f"invalid IHDR (colour type {colour}, interlace {interlace})")
    return {"width": w, "height": h, "bit_depth": depth, "colour_type": colour,
            "interlace": interlace}


def _chunks(data: bytes):
    pos = 8
    n = len(data)
    while True:
        if pos + 8 > n:
            raise PNGError("truncated: stream ends before IEND")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length + 4
        if end > n:
            raise PNGError(f"truncated: chunk {ctype!r} runs past the end of the file")
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != crc:
            raise PNGError(f"CRC mismatch in chunk {ctype!r}")
        yield ctype, body
        if ctype == b"IEND":
            return
        pos = end


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    pa = np.abs(b - c)
    pb = np.abs(a - c)
    pc = np.abs(a + b - 2 * c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def unfilter(raw: np.ndarray, height: int, width: int, bpp: int) -> np.ndarray:
    """Undo PNG scanline filtering: raw (H, 1 + W*bpp) uint8 -> (H, W, bpp) uint8."""
    ftype = raw[:, 0]
    if ftype.max(initial=0) > 4:
        raise PNGError(f"unknown scanline filter type {int(ftype.max())}")
    f = raw[:, 1:].reshape(height, width, bpp).astype(np.int32)
    if not np.isin(ftype, (3, 4)).any():
        out = np.empty((height, width, bpp), np.int32)
        prev = np.zeros((width, bpp), np.int32)
        for r in range(height):
            t = ftype[r]
            row = f[r]
            if t == 1:
                row = np.cumsum(row, axis=0)
            elif t == 2:
                row = row + prev
            row &= 0xFF
            out[r] = row
            prev = row
        return out.astype(np.uint8)
    # Wavefront over anti-diagonals d = r + c, in a skewed array S[r + 1, d + 2] = x[r, c]
    # whose zero padding supplies a, b, c = 0 outside the image.
    ndiag = height + width - 1
    rows = np.arange(height)
    F = np.zeros((height, ndiag, bpp), np.int32)
    cols = np.arange(width)
    F[rows[:, None], rows[:, None] + cols[None, :]] = f
    S = np.zeros((height + 1, ndiag + 2, bpp), np.int32)
    t = ftype.astype(np.int32)[:, None]
    for d in range(ndiag):
        lo = max(0, d - width + 1)
        hi = min(height - 1, d) + 1
        a = S[lo + 1:hi + 1, d + 1]      # x[r, c-1]
        b = S[lo:hi, d + 1]              # x[r-1, c]
        c = S[lo:hi, d]                  # x[r-1, c-1]
        tt = t[lo:hi]
        pred = np.select(
            [tt == 1, tt == 2, tt == 3, tt == 4],
            [a, b, (a + b) >> 1, _paeth(a, b, c)],
            default=0,
        )
        S[lo + 1:hi + 1, d + 2] = (F[lo:hi, d] + pred) & 0xFF
    out = S[rows[:, None] + 1, rows[:, None] + cols[None, :] + 2]
    return out.astype(np.uint8)


def decode(data: bytes) -> np.ndarray:
    """Decode a PNG with bit depth 16 into uint16, (H, W) or (H, W, channels)."""
    info = parse_ihdr(data)
    w, h, depth, colour = info["width"], info["height"], info["bit_depth"], info["colour_type"]
    if depth != 16:
        raise PNGError(f"this decoder handles 16-bit PNGs, not {depth}-bit")
    channels = _CHANNELS[colour]
    bpp = 2 * channels
    idat = [body for ctype, body in _chunks(data) if ctype == b"IDAT"]
    if not idat:
        raise PNGError("no IDAT chunk")
    try:
        stream = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise PNGError(f"corrupt compressed data: {exc}") from exc
    if info["interlace"] == 0:
        passes = [(0, 0, 1, 1)]
    else:
        passes = list(_ADAM7)
    out = np.zeros((h, w, bpp), np.uint8)
    pos = 0
    for x0, y0, dx, dy in passes:
        pw = (w - x0 + dx - 1) // dx if w > x0 else 0
        ph = (h - y0 + dy - 1) // dy if h > y0 else 0
        if pw == 0 or ph == 0:
            continue
        n = ph * (1 + pw * bpp)
        if pos + n > len(stream):
            raise PNGError(
                f"truncated image data: {len(stream)} bytes decompressed, "
                f"{pos + n} needed"
            )
        raw = np.frombuffer(stream, np.uint8, count=n, offset=pos).reshape(ph, 1 + pw * bpp)
        pos += n
        out[y0::dy, x0::dx] = unfilter(raw, ph, pw, bpp)
    arr = out.reshape(h, w * channels * 2).view(">u2").astype(np.uint16).reshape(h, w, channels)
    return arr[:, :, 0] if channels == 1 else arr


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + ctype + body
            + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF))


def encode(array: np.ndarray, text: dict[str, str] | None = None, level: int = 6,
           filters: np.ndarray | None = None) -> bytes:
    """Encode uint8/uint16 (H, W) or (H, W, 3) as PNG (grey or RGB, 8 or 16 bits).

    Rows use the Up filter unless ``filters`` (one type 0-4 per row; used by tests to
    exercise every filter) says otherwise.
    """
    a = np.asarray(array)
    if a.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG holds uint8 or uint16, not {a.dtype}")
    if a.ndim == 2:
        colour, channels = 0, 1
    elif a.ndim == 3 and a.shape[2] == 3:
        colour, channels = 2, 3
    else:
        raise ValueError(f"PNG encoder takes (H, W) or (H, W, 3), not {a.shape}")
    h, w = a.shape[:2]
    depth = 8 * a.dtype.itemsize
    bpp = channels * a.dtype.itemsize
    x = np.ascontiguousarray(a.astype(a.dtype.newbyteorder(">"))).view(np.uint8)
    x = x.reshape(h, w, bpp).astype(np.int32)
    ft = np.full(h, 2, np.uint8) if filters is None else np.asarray(filters, np.uint8)
    rows = np.empty((h, 1 + w * bpp), np.uint8)
    rows[:, 0] = ft
    for t in np.unique(ft):
        sel = np.flatnonzero(ft == t)
        xs = x[sel]
        if t == 0:
            p = 0
        else:
            up = np.zeros_like(xs)
            has_up = sel > 0
            up[has_up] = x[sel[has_up] - 1]
            left = np.zeros_like(xs)
            left[:, 1:] = xs[:, :-1]
            if t == 1:
                p = left
            elif t == 2:
                p = up
            elif t == 3:
                p = (left + up) >> 1
            else:
                ul = np.zeros_like(xs)
                ul[:, 1:] = up[:, :-1]
                p = _paeth(left, up, ul)
        rows[sel, 1:] = ((xs - p) & 0xFF).reshape(len(sel), w * bpp)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    out = [SIGNATURE, _chunk(b"IHDR", ihdr)]
    for k, v in (text or {}).items():
        out.append(_chunk(b"tEXt", k.encode("latin-1")[:79] + b"\0"
                          + v.encode("latin-1", errors="replace")))
    out.append(_chunk(b"IDAT", zlib.compress(rows.tobytes(), level)))
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)
