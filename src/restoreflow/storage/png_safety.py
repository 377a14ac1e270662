"""PNG bomb checks, before any decoder sees the file: the IHDR is parsed and validated
(CRC, sizes, depth for the colour type), and the image data (the run of IDAT chunks) is
inflated in bounded steps, stopping at the first byte past the size the IHDR declares,
so a small file that inflates to gigabytes costs no more than its declared image.
"""

from __future__ import annotations

import io
import struct
import zlib

from restoreflow.storage.decode import ImageRejected

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# Adam7 passes: (x0, y0, dx, dy)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))
_INFLATE_STEP = 1 << 20  # bytes inflated per step when checking PNG image data


def png_ihdr(data: bytes) -> dict:
    """Width, height, bit depth, colour type and interlace from the IHDR (CRC checked)."""
    if len(data) < 33:
        raise ImageRejected(f"corrupt PNG: truncated: {len(data)} bytes, the PNG header "
                            "needs 33")
    length, ctype = struct.unpack(">I4s", data[8:16])
    if ctype != b"IHDR" or length != 13:
        raise ImageRejected("corrupt PNG: first chunk is not a 13-byte IHDR")
    body = data[16:29]
    (crc,) = struct.unpack(">I", data[29:33])
    if zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF != crc:
        raise ImageRejected("corrupt PNG: IHDR CRC mismatch")
    w, h, depth, colour, comp, filt, interlace = struct.unpack(">IIBBBBB", body)
    if w == 0 or h == 0:
        raise ImageRejected(f"corrupt PNG: IHDR declares a {w}x{h} image")
    if (depth not in _PNG_DEPTHS.get(colour, ()) or comp != 0 or filt != 0
            or interlace not in (0, 1)):
        raise ImageRejected(f"corrupt PNG: invalid IHDR (colour type {colour}, bit depth "
                            f"{depth}, interlace {interlace})")
    return {"width": w, "height": h, "bit_depth": depth, "colour_type": colour,
            "interlace": interlace}


def _png_data_size(ihdr: dict) -> int:
    """Bytes of filtered scanlines the IHDR declares: per (Adam7 pass) row, one filter
    byte plus ceil(width * samples * bit depth / 8)."""
    w, h = ihdr["width"], ihdr["height"]
    bits = _PNG_CHANNELS[ihdr["colour_type"]] * ihdr["bit_depth"]
    passes = _ADAM7 if ihdr["interlace"] else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        pw = (w - x0 + dx - 1) // dx if w > x0 else 0
        ph = (h - y0 + dy - 1) // dy if h > y0 else 0
        if pw and ph:
            total += ph * (1 + (pw * bits + 7) // 8)
    return total


def check_png_data(data, ihdr: dict) -> None:
    """Reject a PNG whose image data inflates to more than its IHDR declares (a
    decompression bomb: decoders would inflate all of it, or keep it in memory) before
    any decoder sees it. ``data`` is the file's bytes or a seekable binary file object.
    Reads and inflates in steps of at most ``_INFLATE_STEP`` bytes and stops at the first
    byte past the declared size, so memory and time are bounded by the declared size
    whatever the stream holds. Chunk CRCs and short data are left to the decoder."""
    f = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    expected = _png_data_size(ihdr)
    inflater = zlib.decompressobj()
    total = 0
    f.seek(8)
    seen_idat = False
    while not inflater.eof:
        head = f.read(8)
        if len(head) < 8:
            break
        length, ctype = struct.unpack(">I4s", head)
        if ctype != b"IDAT":
            if seen_idat or ctype == b"IEND":
                break  # the image data is one run of consecutive IDAT chunks
            f.seek(length + 4, io.SEEK_CUR)
            continue
        seen_idat = True
        left = length
        while left > 0 and not inflater.eof:
            buf = f.read(min(left, _INFLATE_STEP))
            if not buf:
                break  # truncated file: left to the decoder
            left -= len(buf)
            while True:
                try:
                    out = inflater.decompress(buf, _INFLATE_STEP)
                except zlib.error as exc:
                    raise ImageRejected(f"corrupt PNG: compressed image data: {exc}") from exc
                total += len(out)
                if total > expected:
                    raise ImageRejected(
                        f"corrupt PNG: image data inflates to more than the {expected:,} "
                        f"bytes its {ihdr['width']}x{ihdr['height']} header declares "
                        "(decompression bomb?)"
                    )
                buf = inflater.unconsumed_tail
                # a full step may leave output pending with all input consumed: go on
                if not buf and len(out) < _INFLATE_STEP:
                    break
        f.seek(left + 4, io.SEEK_CUR)  # the unread rest of the chunk and its CRC
