"""The photo corpus used to train the default prior, and its held-out split.

Photos come from Debian wallpaper packages and opencv-doc's sample photos (fetched
with ``scripts/fetch-corpus.sh``, no install needed) plus scikit-image's bundled photos.
Paths are relative to the corpus directory (setting ``corpus_dir``). Licenses are listed
in the model card.
"""

from __future__ import annotations

import os
from pathlib import Path

from restoreflow import samples

_PLASMA = "plasma-workspace-wallpapers/usr/share/wallpapers/{}/contents/images/{}"
_MATE = "mate-backgrounds/usr/share/backgrounds/mate/nature/{}.jpg"
_LOM16 = "lomiri-wallpapers-16.04/usr/share/backgrounds/{}.jpg"
_LOM20 = "lomiri-wallpapers-20.04/usr/share/backgrounds/{}.jpg"

WALLPAPER_PHOTOS: tuple[str, ...] = (
    *(_PLASMA.format(n, "1920x1080.jpg") for n in (
        "BytheWater", "ColdRipple", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
        "Kite", "OneStandsOut", "Path", "summer_1am")),
    _PLASMA.format("Volna", "5120x2880.jpg"),
    *(_MATE.format(n) for n in (
        "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird",
        "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower")),
    *(_LOM16.format(n) for n in (
        "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
        "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi",
        "analogpattern_by_Peter_Nerlich", "free_by_Peter_Nerlich",
        "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich",
        "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
        "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi")),
    *(_LOM20.format(n) for n in ("Infinite-Sea_by_Aury88", "Kleiber_by_Lukas_Baubkus")),
)

# Held out from training (benchmarks, calibration): chosen once, never trained on.
HELD_OUT_WALLPAPERS: tuple[str, ...] = (
    _PLASMA.format("FallenLeaf", "1920x1080.jpg"),
    _MATE.format("Garden"),
    _LOM16.format("aitzgorri_by_Aitzol_Berasategi"),
    _LOM16.format("seeding_by_Clements_Engelhardt"),
    _MATE.format("Storm"),
    _LOM16.format("Wine_by_Jakkub_Mede"),
)

# Test and sample photographs shipped with OpenCV's documentation (opencv-doc, examples/;
# paintings, renders, screenshots and synthetic images left out).
_CV = "opencv-doc/usr/share/doc/opencv-doc/examples/{}"
OPENCV_PHOTOS: tuple[str, ...] = (
    *(_CV.format(f"data/{n}") for n in (
        "aero1.jpg", "aero3.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "basketball1.png",
        "board.jpg", "box_in_scene.png", "building.jpg", "butterfly.jpg", "chicky_512.png",
        "ela_original.jpg", "fruits.jpg", "graf1.png", "leuvenA.jpg", "orange.jpg",
        "rubberwhale1.png", "squirrel_cls.jpg")),
    _CV.format("reg/home.png"),
    _CV.format("alphamat/input_images/plant.jpg"),
    _CV.format("hfs/data/000.jpg"),
    _CV.format("dnn_superres/butterfly.png"),
    *(_CV.format(f"text/scenetext0{i}.jpg") for i in range(1, 7)),
)
HELD_OUT_OPENCV: tuple[str, ...] = (
    _CV.format("data/building.jpg"),
    _CV.format("data/fruits.jpg"),
    _CV.format("data/squirrel_cls.jpg"),
    _CV.format("data/baboon.jpg"),
    _CV.format("text/scenetext03.jpg"),
    _CV.format("data/aero3.jpg"),
)

STELLARIUM_DIR = "stellarium-data/usr/share/stellarium/nebulae/default"


GCOMPRIS_PHOTOS_DIR = "gcompris-photos"


def corpus_dir() -> Path:
    """Where scripts/fetch-corpus.sh put the Debian packages' files."""
    env = os.environ.get("RESTOREFLOW_CORPUS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "restoreflow" / "corpus"


def _existing(rel: tuple[str, ...], root: Path) -> list[Path]:
    paths = [root / r for r in rel]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} corpus photos missing (first: {missing[0]}); "
            "run scripts/fetch-corpus.sh"
        )
    return paths


def training_photos(root: Path | None = None) -> list[Path]:
    """Photos the default prior is trained on (wallpapers, OpenCV, skimage; no held-out)."""
    root = root or corpus_dir()
    walls = [r for r in WALLPAPER_PHOTOS if r not in HELD_OUT_WALLPAPERS]
    cv = [r for r in OPENCV_PHOTOS if r not in HELD_OUT_OPENCV]
    skim = [n for n in samples.PHOTOS if n not in samples.HELD_OUT]
    return _existing(tuple(walls + cv), root) + samples.sample_paths(skim)


def held_out_photos(root: Path | None = None) -> list[Path]:
    """Photos never trained on: for benchmarks and calibration.

    The first ten (wallpapers, then skimage) are the set every earlier benchmark used;
    the OpenCV photos come last, so ``[:n]`` slices keep their meaning.
    """
    root = root or corpus_dir()
    return (_existing(HELD_OUT_WALLPAPERS, root) + samples.sample_paths(samples.HELD_OUT)
            + _existing(HELD_OUT_OPENCV, root))


def training_sets(images: list[str] | None) -> tuple[list[str], list[str]]:
    """(training files, evaluation files) of a prior's training: ``images`` without an
    evaluation set, or by default the training photos evaluated on the held-out ones."""
    if images:
        return list(images), []
    return [str(p) for p in training_photos()], [str(p) for p in held_out_photos()]


def benchmark_photos(root: Path | None = None) -> list[Path]:
    """More photos never trained on (monuments, animals, landscapes, musicians), extracted
    from gcompris-qt-data by ``scripts/fetch-corpus.sh``: sources for the source-grouped
    conformal benchmark, which needs more distinct photos than the held-out set. Sorted."""
    root = root or corpus_dir()
    d = root / GCOMPRIS_PHOTOS_DIR
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: missing; run scripts/fetch-corpus.sh")
    return sorted(d.glob("*.png"))


def astronomy_images(root: Path | None = None) -> list[Path]:
    """Deep-sky photos from stellarium-data (out of the photo domain), sorted."""
    root = root or corpus_dir()
    d = root / STELLARIUM_DIR
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: missing; run scripts/fetch-corpus.sh")
    return sorted(p for p in d.iterdir() if p.suffix.lower() == ".png")
