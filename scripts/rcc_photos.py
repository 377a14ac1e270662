"""Extract the photographs bundled in gcompris-qt-data's Qt resource files (.rcc).

GCompris ships photos of monuments, animals, landscapes and musicians (CC-BY-SA /
GPL, see the package's copyright file) inside .rcc bundles. The WebP and JPEG images in
them are stored uncompressed, so they are found by their signatures (a WebP's RIFF header
carries its length; a JPEG decodes from its start marker). Only RGB photos from the
bundles below whose shorter side is at least 400 px are kept, once each (duplicates by
pixel hash dropped), written as PNG under DEST named ``<bundle>_<k>.png``.

Usage: python scripts/rcc_photos.py RCC_DIR DEST
"""

from __future__ import annotations

import hashlib
import io
import struct
import sys
from pathlib import Path

from PIL import Image

BUNDLES = ("explore_monuments", "erase", "explore_world_animals", "explore_farm_animals",
           "explore_world_music")
MIN_SIDE = 400


def _candidates(blob: bytes):
    """Byte strings that start an image: each WebP (exact length) and each JPEG start."""
    i = blob.find(b"RIFF")
    while i >= 0:
        if blob[i + 8 : i + 12] == b"WEBP":
            (size,) = struct.unpack("<I", blob[i + 4 : i + 8])
            yield blob[i : i + 8 + size]
        i = blob.find(b"RIFF", i + 4)
    j = blob.find(b"\xff\xd8\xff")
    while j >= 0:
        yield blob[j:]
        j = blob.find(b"\xff\xd8\xff", j + 3)


def extract(rcc_dir: Path, dest: Path) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    n = 0
    for bundle in BUNDLES:
        k = 0
        for data in _candidates((rcc_dir / f"{bundle}.rcc").read_bytes()):
            try:
                im = Image.open(io.BytesIO(data))
                im.load()
            except Exception:  # noqa: BLE001 - not an image start (a marker inside one)
                continue
            if im.mode != "RGB" or min(im.size) < MIN_SIDE:
                continue
            h = hashlib.sha256(im.tobytes()).hexdigest()
            if h in seen:
                continue
            seen.add(h)
            im.save(dest / f"{bundle}_{k:03d}.png")
            k += 1
            n += 1
    return n


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(f"{extract(Path(sys.argv[1]), Path(sys.argv[2]))} photos in {sys.argv[2]}")
