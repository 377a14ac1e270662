"""The demo: bundled sample photos, a simulated degradation, restoration, calibration.

``prepare_demo(workdir)`` writes small demo images (resized bundled photos, so the demo
runs in minutes on 2 CPU cores) and calibration crops of *other* bundled photos (one
folder per photo, grouped by folder: the bound is checked on photos it was not
calibrated on, as in real life), and returns the run spec that
``restoreflow demo`` runs with the embedded defaults. Adaptation (ADIR) is off, as it is
by default: on the shipped prior it does not improve photos (benchmarks/results/adapt.md).
``prepare_demo(workdir, adapt=True)`` also writes a reference corpus of other bundled
images and turns it on (3 neighbours, 20 LoRA steps), to see what it does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from restoreflow import samples

DEMO_SIZE = 128
CAL_PER_PHOTO = 2
#: Calibration sources: every bundled image the demo does not restore that is a real
#: photograph or scan (scikit-image's, and matplotlib's sample portrait): 14 sources of
#: mixed kinds. That is few: the demo calibrates at alpha 0.2 (alpha 0.1 needs 17
#: sources) and warns that its bounds are loose.
CAL_PHOTOS = ("camera.png", "coins.png", "grass.png", "gravel.png", "brick.png",
              "motorcycle_left.png", "retina.jpg", "clock_motion.png", "moon.png", "page.png",
              "cell.png", "ihc.png", "hubble_deep_field.jpg")
DEMO_ALPHA = 0.2
CORPUS = ("camera.png", "coins.png", "grass.png", "gravel.png", "brick.png",
          "motorcycle_left.png", "hubble_deep_field.jpg", "moon.png")


def _rgb(path: Path):
    from PIL import Image

    return Image.open(path).convert("RGB")


def _square(im, size: int, box=None):
    from PIL import Image

    w, h = im.size
    s = min(w, h)
    box = box or ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return im.crop(box).resize((size, size), Image.Resampling.LANCZOS)


def calibration_photos() -> list[Path]:
    """The demo's calibration sources (see :data:`CAL_PHOTOS`)."""
    import matplotlib

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return samples.sample_paths(CAL_PHOTOS) + ([hopper] if hopper.is_file() else [])


def prepare_demo(workdir: str | Path, seed: int = 0, adapt: bool = False) -> dict:
    """Write demo inputs under ``workdir`` and return the demo run spec (a dict);
    ``adapt`` adds a reference corpus and turns adaptation on."""
    work = Path(workdir)
    dirs = {k: work / k for k in ("inputs", "calibration", "corpus") if adapt or k != "corpus"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in samples.HELD_OUT:
        _square(_rgb(samples.sample_path(name)), DEMO_SIZE).save(
            dirs["inputs"] / f"{Path(name).stem}.png")
    for path in calibration_photos():
        im = _rgb(path)
        w, h = im.size
        folder = dirs["calibration"] / path.stem
        folder.mkdir(exist_ok=True)
        # square crops of 60-90% of the short side, resized to the demo size
        for k in range(CAL_PER_PHOTO):
            s = int(rng.integers(int(0.6 * min(w, h)), int(0.9 * min(w, h))))
            x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
            _square(im, DEMO_SIZE, (x, y, x + s, y + s)).save(folder / f"{k}.png")
    for name in CORPUS if adapt else ():
        im = _rgb(samples.sample_path(name))
        im.thumbnail((256, 256))
        im.save(dirs["corpus"] / f"{Path(name).stem}.png")
    spec = {
        "name": "demo",
        "sources": [str(dirs["inputs"])],
        "store": str(work / "store"),
        "degradation": "gaussian_blur(sigma=2)+gaussian_noise(sigma=0.03)",
        "simulate": True,
        "seed": seed,
        "restore": {"posterior_samples": 4},  # the default: HQS on the FFDNet prior
        "calibration": {"clean": [str(dirs["calibration"])], "alpha": DEMO_ALPHA,
                        "min_psnr": 24.0, "pixel_epsilon": 0.2, "pixel_delta": 0.1,
                        "group_by": "folder"},
        "export": {"format": "png", "out": str(work / "exports"),
                   "collections": ["restored"]},
        "report": str(work / "report.html"),
    }
    if adapt:  # LoRA adapts a diffusion UNet: the shipped one
        spec["prior"] = "unet"
        spec["restore"] = {"sampler": "ddpg", "steps": 30, "posterior_samples": 4}
        spec["adapt"] = {"enabled": True, "corpus": [str(dirs["corpus"])], "neighbours": 3,
                         "steps": 20}
    return spec
