"""Sample photos that ship inside scikit-image's wheel (usable offline).

These are used by ``make demo`` and by the tests. The photo corpus used to train the
default prior (Debian wallpaper packages) lives in :mod:`restoreflow.models.corpus`.
"""

from __future__ import annotations

from pathlib import Path

# Natural photos bundled in the scikit-image wheel (the others in skimage.data are
# fetched from the network and fail offline).
PHOTOS: tuple[str, ...] = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "camera.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "brick.png",
    "motorcycle_left.png",
)
# Astronomy images in the same wheel (out of the photo domain).
ASTRONOMY: tuple[str, ...] = ("hubble_deep_field.jpg", "moon.png")

# Held out from prior training: demo, calibration and benchmark images.
HELD_OUT: tuple[str, ...] = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


def data_dir() -> Path:
    """Directory of scikit-image's bundled data files."""
    import skimage.data

    return Path(skimage.data.__file__).parent


def sample_path(name: str) -> Path:
    """Path of one bundled sample image, e.g. ``sample_path("astronaut.png")``."""
    path = data_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{name}: not a bundled scikit-image sample ({data_dir()})")
    return path


def sample_paths(names: tuple[str, ...] | list[str] = HELD_OUT) -> list[Path]:
    """Paths of several bundled samples (default: the held-out demo photos)."""
    return [sample_path(n) for n in names]
