"""Trust: truth metrics on simulated images, the conformal calibration of PSNR/SSIM
lower bounds (and the RCPS per-pixel lambda), each image's score, and the calibrated
per-pixel interval images. A calibration is stored under ``calibrations/<hash>.json``
and certifies exactly the restore settings of that hash."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from restoreflow.degradation import seed_for
from restoreflow.quality.rcps import PixelCalibration
from restoreflow.stages.config import RestoreConfig
from restoreflow.stages.restore import restore_outputs
from restoreflow.storage.layout import INPUT, INTERVAL_HI, INTERVAL_LO, RESTORED
from restoreflow.storage.store import TileStore

LAMBDA_GRID = np.round(np.linspace(0.0, 1.0, 201), 6)  # pixel values lie in [0, 1]


def truth_metrics(store: TileStore, image_id: str, out: str = RESTORED) -> dict:
    from restoreflow.quality.metrics import psnr, ssim

    x = store.read(INPUT, image_id, normalised=True)
    x_hat = store.read(out, image_id)
    return {"psnr_true": psnr(x_hat, np.clip(x, 0, 1)), "ssim_true": ssim(x_hat, np.clip(x, 0, 1))}


def feature_names(posterior_samples: int) -> list[str]:
    names = ["measurement_consistency", "grad_mean_xhat", "hf_energy_xhat",
             "grad_mean_ydagger", "hf_energy_ydagger", "noise_sigma_y"]
    if posterior_samples >= 2:
        names += ["pixel_std_mean", "pairwise_psnr_mean"]
    return names


@dataclass
class Calibration:
    settings_hash: str
    alpha: float
    psnr: dict
    ssim: dict
    pixel: PixelCalibration | None
    rows: list[dict] = field(default_factory=list)
    coverage: dict = field(default_factory=dict)
    trivial: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self) | {"n": len(self.rows)}
        d["pixel"] = None if self.pixel is None else self.pixel.to_dict()
        return d


def fit_calibration(store: TileStore, rows: list[dict], cfg: RestoreConfig, shash: str,
                    alpha: float, method: str = "residual", pixel_epsilon: float = 0.1,
                    pixel_delta: float = 0.1, out: str = RESTORED) -> Calibration:
    """Fit conformal lower bounds on PSNR and SSIM (and the per-pixel lambda) from the
    calibration rows ``{image_id, psnr_true, ssim_true, features}``."""
    from restoreflow.quality.conformal import ConformalLowerBound, TrivialLowerBound
    from restoreflow.quality.features import feature_vector
    from restoreflow.quality.rcps import Intervals, RiskControlError

    names = feature_names(cfg.restore.posterior_samples)
    X = np.stack([feature_vector(r["features"], names) for r in rows])
    models, trivial, coverage = {}, {}, {}
    for target in ("psnr", "ssim"):
        v = np.array([r[f"{target}_true"] for r in rows])
        rng = np.random.default_rng(seed_for(shash, cfg.seed, f"calibration/{target}"))
        m = ConformalLowerBound.fit(X, v, alpha, rng, method=method, feature_names=names,
                                    target=target, settings_hash=shash)
        models[target] = m
        trivial[target] = TrivialLowerBound.fit(v, alpha, target, shash).to_dict()
        b = m.bound(X)
        for r, bi in zip(rows, b, strict=True):
            r[f"{target}_bound"] = float(bi)
        coverage[target] = float(np.mean(v >= b))
    pixel = None
    if cfg.restore.posterior_samples < 2:
        pixel_note = "no per-pixel intervals: restore with posterior_samples >= 2"
    else:
        lo_c, hi_c = restore_outputs(cfg, out)[1:]
        ids = [r["image_id"] for r in rows]
        try:
            pixel = PixelCalibration.fit(
                (Intervals(store.read(lo_c, i), store.read(hi_c, i)) for i in ids),
                (np.clip(store.read(INPUT, i, normalised=True), 0, 1) for i in ids),
                LAMBDA_GRID, pixel_epsilon, pixel_delta, cfg.lower_q, cfg.upper_q)
            pixel_note = None
        except RiskControlError as exc:
            pixel_note = f"no per-pixel intervals: {exc}"
    coverage["pixel_note"] = pixel_note
    return Calibration(shash, alpha, models["psnr"].to_dict(), models["ssim"].to_dict(), pixel,
                       rows, coverage, trivial)


def calibration_path(shash: str) -> str:
    return f"calibrations/{shash}.json"


def save_calibration(store: TileStore, cal: Calibration) -> None:
    store.put_bytes(calibration_path(cal.settings_hash),
                    json.dumps(cal.to_dict(), indent=1).encode())


def load_calibration(store: TileStore, shash: str) -> dict | None:
    p = calibration_path(shash)
    return json.loads(store.get_bytes(p)) if store.exists(p) else None


def score(features: dict, calibration: dict | None, shash: str,
          min_psnr: float | None = None) -> dict:
    """Conformal lower bounds for one image; no bound (and a warning) when the
    calibration was made with other settings."""
    from restoreflow.quality.conformal import calibration_from_dict

    if calibration is None:
        return {"psnr_lower": None, "ssim_lower": None, "alpha": None, "flagged": False,
                "warning": "not calibrated: no bound"}
    if calibration["settings_hash"] != shash:
        return {"psnr_lower": None, "ssim_lower": None, "alpha": calibration["alpha"],
                "flagged": False,
                "warning": f"calibration {calibration['settings_hash']} was made with other "
                           f"restore settings than {shash}: no bound"}
    p = calibration_from_dict(calibration["psnr"]).bound_features(features)
    s = calibration_from_dict(calibration["ssim"]).bound_features(features)
    flagged = bool(min_psnr is not None and not p >= min_psnr)
    pixel = calibration.get("pixel")
    lam = PixelCalibration.from_dict(pixel).lam if pixel else None
    return {"psnr_lower": p, "ssim_lower": s, "alpha": calibration["alpha"], "flagged": flagged,
            "lambda": lam, "warning": None}


def prepare_intervals(store: TileStore, image_id: str, lam: float) -> None:
    """Driver: create the calibrated per-pixel interval images."""
    shape = store.shape(RESTORED, image_id)
    for coll in (INTERVAL_LO, INTERVAL_HI):
        store.create_image(coll, image_id, shape, np.float32,
                           attrs={"collection_attrs": {"lambda": lam}}, overwrite=True)


def write_intervals(store: TileStore, image_id: str, lam: float) -> None:
    """Worker: [l - lambda, u + lambda] tile by tile (RCPS-calibrated pixel intervals)."""
    for _, _, y0, y1, x0, x1 in store.tiles(RESTORED, image_id):
        lo = store.read_region(f"{RESTORED}.samples_lower", image_id, y0, y1, x0, x1)
        hi = store.read_region(f"{RESTORED}.samples_upper", image_id, y0, y1, x0, x1)
        store.write_region(INTERVAL_LO, image_id, lo - lam, y0, x0)
        store.write_region(INTERVAL_HI, image_id, hi + lam, y0, x0)
