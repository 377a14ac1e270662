"""Trust: truth metrics on simulated images, the conformal calibration of PSNR/SSIM
lower bounds (and the RCPS per-pixel lambda), each image's score, and the calibrated
per-pixel interval images. A calibration is stored under ``calibrations/<hash>.json``
and certifies exactly the restore settings of that hash."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from restoreflow.degradation import seed_for
from restoreflow.quality.rcps import DEFAULT_BOUND, DEFAULT_FLOORS, PixelCalibration
from restoreflow.stages.config import RestoreConfig
from restoreflow.stages.restore import restore_outputs
from restoreflow.storage.layout import (
    COVERAGE_METHOD,
    INPUT,
    INTERVAL_HI,
    INTERVAL_LO,
    RESTORED,
)
from restoreflow.storage.store import TileStore

LAMBDA_GRID = np.round(np.linspace(0.0, 1.0, 201), 6)  # pixel values lie in [0, 1]


def spread_grid(floor: float) -> np.ndarray:
    """Lambdas of the spread scale: 0 to 1 / floor (there every interval spans the whole
    [0, 1] range, as lambda = 1 does for the constant band), 1001 values."""
    return np.round(np.linspace(0.0, 1.0 / floor, 1001), 6)


def local_grid(floor: float) -> np.ndarray:
    """Lambdas of the local scale: 0, then 2000 values spaced geometrically from 0.001 to
    1 / floor (steps of under 0.7%: the local unit spans orders of magnitude)."""
    return np.concatenate([[0.0], np.geomspace(1e-3, 1.0 / floor, 2000)])


def lambda_grid(scale: str, floor: float) -> np.ndarray:
    """The RCPS lambda grid of a pixel scale."""
    if scale == "constant":
        return LAMBDA_GRID
    return spread_grid(floor) if scale == "spread" else local_grid(floor)


NOVELTY_K = 3


def truth_metrics(store: TileStore, image_id: str, out: str = RESTORED) -> dict:
    from restoreflow.quality.metrics import psnr, ssim

    x = store.read(INPUT, image_id, normalised=True)
    x_hat = store.read(out, image_id)
    return {"psnr_true": psnr(x_hat, np.clip(x, 0, 1)), "ssim_true": ssim(x_hat, np.clip(x, 0, 1))}


def feature_names(posterior_samples: int) -> list[str]:
    """The covariates of the PSNR/SSIM bounds: the energies (gradients, high-frequency
    energy, the samples' spread) as log10, which PSNR follows linearly (0.3-0.9 dB
    tighter bounds at the same coverage than the energies themselves,
    benchmarks/results/explore_conformal_features.md)."""
    names = ["measurement_consistency", "log10:grad_mean_xhat", "log10:hf_energy_xhat",
             "log10:grad_mean_ydagger", "log10:hf_energy_ydagger", "noise_sigma_y"]
    if posterior_samples >= 2:
        names += ["log10:pixel_std_mean", "pairwise_psnr_mean"]
    return names


#: Fewer calibration sources than this: a warning (the bound holds but is loose).
FEW_SOURCES = 20


@dataclass
class Calibration:
    settings_hash: str
    alpha: float
    psnr: dict | None
    ssim: dict | None
    pixel: PixelCalibration | None
    rows: list[dict] = field(default_factory=list)
    coverage: dict = field(default_factory=dict)
    trivial: dict = field(default_factory=dict)
    guard: dict | None = None
    sources: int = 0
    warnings: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # the RestoreConfig it was made for
    made_with: dict = field(default_factory=dict)  # its options and clean images

    def to_dict(self) -> dict:
        d = asdict(self) | {"n": len(self.rows)}
        d["pixel"] = None if self.pixel is None else self.pixel.to_dict()
        return d


def sources_needed(alpha: float, method: str = "full") -> int:
    """Fewest calibration sources with a bound at ``alpha`` by ``method``
    (:func:`~restoreflow.quality.conformal.method_min_sources`)."""
    from restoreflow.quality.conformal import method_min_sources

    return method_min_sources(method, alpha)


def require_sources(sources: list[str], alpha: float, group_by: str,
                    method: str = "full") -> None:
    """Before any restoring: ValueError (one line) when the calibration images make too
    few sources for a bound at ``alpha`` (it would restore them all to say so)."""
    n, need = len(set(sources)), sources_needed(alpha, method)
    if n < need:
        raise ValueError(
            f"the calibration images make {n} source(s) (grouped by {group_by}); a bound at "
            f"alpha={alpha} needs at least {need}: add calibration images of other "
            "sources or raise alpha")


def source_of(attrs: dict, group_by: str) -> str:
    """The calibration image's source (exchangeability group) from its input attrs:
    ``image`` (each image its own source), ``folder`` (the folder of the file it came
    from) or ``metadata:KEY`` (a key of the file's metadata, e.g. a FITS header
    keyword). ValueError naming the image when the key is missing."""
    src = str(attrs.get("source", attrs.get("image_id")))
    if group_by == "image":
        return src
    if group_by == "folder":
        return src.rsplit("/", 1)[0] if "/" in src else "."
    key = group_by.removeprefix("metadata:")
    meta = attrs.get("source_metadata") or {}
    if key not in meta:
        raise ValueError(f"{src}: no metadata key {key!r} to group calibration images by")
    return f"{key}={meta[key]}"


def _loso_bounds(X, v, groups, alpha, method, names, seed) -> np.ndarray | None:
    """Each row's bound from a calibration fitted without the row's source (leave one
    source out), or None when some calibration without one source has no finite
    bound."""
    from restoreflow.quality.conformal import fit_lower_bound

    out = np.empty(v.size)
    for k, g in enumerate(np.unique(groups)):
        rest = groups != g
        try:
            m = fit_lower_bound(method, X[rest], v[rest], alpha,
                                np.random.default_rng([seed, k]), names, groups=groups[rest])
        except ValueError:
            return None
        out[~rest] = m.bound(X[~rest])
    return out


def _source_mean(hit: np.ndarray, groups: np.ndarray) -> float:
    """Mean over sources of the mean of ``hit`` within each source."""
    return float(np.mean([hit[groups == g].mean() for g in np.unique(groups)]))


def fit_calibration(store: TileStore, rows: list[dict], cfg: RestoreConfig, shash: str,
                    alpha: float, method: str = "full", pixel_epsilon: float = 0.1,
                    pixel_delta: float = 0.1, out: str = RESTORED,
                    pixel_scale: str = "constant",
                    pixel_floor: float | None = None,
                    pixel_bound: str = DEFAULT_BOUND) -> Calibration:
    """Fit conformal lower bounds on PSNR and SSIM, the shift guard and the per-pixel
    interval rule from the calibration rows ``{image_id, source, psnr_true, ssim_true,
    features}`` (``source`` defaults to the image). ``method`` ``full`` (full conformal:
    one row per source, each row's ``fold`` ``calibration`` or ``unused``) or a split
    method (``residual``, ``cqr``: folds ``fit`` and ``calibration`` split by source,
    every source weighing one). Each row gets its out-of-sample bounds
    ``{target}_bound`` (from a calibration without its source); ``coverage`` is their
    coverage (mean over sources), never that of the rows a model was fitted on.
    Too few sources for a finite bound: no bound (``psnr``/``ssim`` None) and a warning."""
    from restoreflow.quality.conformal import (
        ConformalLowerBound,
        FullConformalBound,
        TrivialLowerBound,
        split_by_group,
    )
    from restoreflow.quality.features import GUARD_FEATURES, feature_vector
    from restoreflow.quality.full_conformal import one_row_per_source
    from restoreflow.quality.novelty import NoveltyGuard

    names = feature_names(cfg.restore.posterior_samples)
    X = np.stack([feature_vector(r["features"], names) for r in rows])
    groups = np.array([str(r.get("source", r["image_id"])) for r in rows])
    n_sources = int(np.unique(groups).size)
    warnings = []
    if n_sources < FEW_SOURCES:
        warnings.append(f"{n_sources} calibration sources (fewer than {FEW_SOURCES}): the "
                        "bounds are loose; calibrate on more distinct images")
    seed = seed_for(shash, cfg.seed, "calibration/folds")
    if method == "full":
        fold = np.full(len(rows), "unused", dtype=object)
        fold[one_row_per_source(groups, np.random.default_rng(seed))] = "calibration"
    else:
        i_fit, i_cal = split_by_group(groups, np.random.default_rng(seed), 0.5) \
            if n_sources >= 3 else (np.arange(0), np.arange(len(rows)))
        fold = np.full(len(rows), "calibration", dtype=object)
        fold[i_fit] = "fit"
    models, trivial, coverage = {}, {}, {}
    for target in ("psnr", "ssim"):
        v = np.array([r[f"{target}_true"] for r in rows])
        trivial[target] = TrivialLowerBound.fit(v, alpha, target, shash, groups=groups).to_dict()
        try:
            if method == "full":  # the same generator: the rows the folds name
                m = FullConformalBound.fit(X, v, alpha, np.random.default_rng(seed), names,
                                           target, shash, groups)
            else:
                m = ConformalLowerBound.fit_split(
                    X[i_fit], v[i_fit], X[i_cal], v[i_cal], alpha, method, names,
                    target=target, settings_hash=shash, cal_groups=groups[i_cal])
        except ValueError:
            models[target] = None
            coverage[target] = None
            continue
        models[target] = m.to_dict()
        b = _loso_bounds(X, v, groups, alpha, method, names, seed)
        coverage[target] = None if b is None else _source_mean(v >= b, groups)
        for r, bi in zip(rows, b if b is not None else [None] * len(rows), strict=True):
            r[f"{target}_bound"] = None if bi is None else float(bi)
    if models["psnr"] is None:
        warnings.append(f"no bound: {n_sources} calibration sources; alpha={alpha} needs at "
                        f"least {sources_needed(alpha, method)}")
    for r, f in zip(rows, fold, strict=True):
        r["fold"] = f
        r["source"] = str(r.get("source", r["image_id"]))
    guard = None
    if n_sources > NOVELTY_K and all(set(GUARD_FEATURES) <= set(r["features"]) for r in rows):
        Xg = np.stack([feature_vector(r["features"], GUARD_FEATURES) for r in rows])
        guard = NoveltyGuard.fit(Xg, groups, GUARD_FEATURES, k=NOVELTY_K).to_dict()
    coverage["method"] = COVERAGE_METHOD
    pixel, coverage["pixel_note"] = _fit_pixel(store, rows, cfg, out, pixel_epsilon,
                                               pixel_delta, pixel_scale, pixel_floor,
                                               pixel_bound)
    return Calibration(shash, alpha, models["psnr"], models["ssim"], pixel, rows, coverage,
                       trivial, guard, n_sources, warnings)


def _fit_pixel(store, rows, cfg, out, epsilon, delta, scale, floor, bound):
    """The RCPS per-pixel rule (one loss per source) and a note when there is none."""
    from restoreflow.quality.rcps import Intervals, RiskControlError, min_sources_for

    if cfg.restore.posterior_samples < 2:
        return None, "no per-pixel intervals: restore with posterior_samples >= 2"
    lo_c, hi_c = restore_outputs(cfg, out)[1:]
    ids = [r["image_id"] for r in rows]
    floor = DEFAULT_FLOORS[scale] if floor is None or scale == "constant" else floor
    grid = lambda_grid(scale, floor)
    try:
        return PixelCalibration.fit(
            [Intervals(store.read(lo_c, i), store.read(hi_c, i)) for i in ids],
            (np.clip(store.read(INPUT, i, normalised=True), 0, 1) for i in ids),
            grid, epsilon, delta, cfg.lower_q, cfg.upper_q, scale,
            floor, [r["source"] for r in rows], bound), None
    except RiskControlError as exc:
        # every grid ends where the intervals span the whole data range (every loss 0),
        # so what fails is the number of sources for this epsilon and delta
        n, need = len(set(r["source"] for r in rows)), min_sources_for(epsilon, delta, bound)
        return None, (f"no per-pixel intervals: {exc}: {n} calibration sources cannot "
                      "certify it even with intervals spanning the whole data range (it "
                      f"needs at least {need}): use more calibration images or raise "
                      "pixel_epsilon / pixel_delta")


def calibration_path(shash: str) -> str:
    return f"calibrations/{shash}.json"


def save_calibration(store: TileStore, cal: Calibration) -> None:
    store.put_bytes(calibration_path(cal.settings_hash),
                    json.dumps(cal.to_dict(), indent=1).encode())


def load_calibration(store: TileStore, shash: str, legacy: Sequence[str] = ()) -> dict | None:
    """The stored calibration of settings hash ``shash``, else of one of the ``legacy``
    hashes older versions gave the same settings (then recorded under ``shash``)."""
    for h in (shash, *legacy):
        p = calibration_path(h)
        if store.exists(p):
            return {**json.loads(store.get_bytes(p)), "settings_hash": shash}
    return None


def score(features: dict, calibration: dict | None, shash: str,
          min_psnr: float | None = None) -> dict:
    """Conformal lower bounds for one image and its shift check; no bound (and a
    warning) when the calibration was made with other settings or has too few sources.
    An image unlike the calibration images is ``out_of_calibration``: its bound is not
    guaranteed (warning)."""
    from restoreflow.quality.conformal import calibration_from_dict
    from restoreflow.quality.novelty import NoveltyGuard

    none = {"psnr_lower": None, "ssim_lower": None, "flagged": False, "lambda": None,
            "pixel": None, "out_of_calibration": None, "novelty_pvalue": None}
    if calibration is None:
        return none | {"alpha": None, "warning": "not calibrated: no bound"}
    if calibration["settings_hash"] != shash:
        return none | {"alpha": calibration["alpha"],
                       "warning": f"calibration {calibration['settings_hash']} was made with "
                                  f"other restore settings than {shash}: no bound"}
    pixel = calibration.get("pixel")
    pixel = PixelCalibration.from_dict(pixel).to_dict() if pixel else None
    out = none | {"alpha": calibration["alpha"], "pixel": pixel,
                  "lambda": pixel["lam"] if pixel else None, "warning": None}
    guard = calibration.get("guard")
    if guard and set(guard["feature_names"]) <= set(features):  # older restorations lack them
        out |= NoveltyGuard.from_dict(guard).check(features)
    if calibration.get("psnr") is None:
        return out | {"warning": "; ".join(calibration.get("warnings") or ["no bound"])}
    p = calibration_from_dict(calibration["psnr"]).bound_features(features)
    s = calibration_from_dict(calibration["ssim"]).bound_features(features)
    flagged = bool(min_psnr is not None and not p >= min_psnr)
    warning = None
    if out["out_of_calibration"]:
        warning = (f"out of calibration (novelty p-value {out['novelty_pvalue']:.3f}): unlike "
                   "the calibration images, the bound is not guaranteed")
    return out | {"psnr_lower": p, "ssim_lower": s, "flagged": flagged, "warning": warning}


def prepare_intervals(store: TileStore, image_id: str, pixel: dict) -> None:
    """Driver: create the calibrated per-pixel interval images (``pixel``: the
    calibration's per-pixel rule)."""
    shape = store.shape(RESTORED, image_id)
    attrs = {k: pixel[k] for k in ("lam", "scale", "floor", "epsilon", "delta")}
    attrs["lambda"] = attrs.pop("lam")
    for coll in (INTERVAL_LO, INTERVAL_HI):
        store.create_image(coll, image_id, shape, np.float32,
                           attrs={"collection_attrs": attrs}, overwrite=True)


def write_intervals(store: TileStore, image_id: str, pixel: dict) -> None:
    """Worker: the calibrated intervals ``[l - lambda w, u + lambda w]`` tile by tile."""
    from restoreflow.quality.rcps import Intervals

    rule = PixelCalibration.from_dict(pixel)
    lo_c, hi_c = f"{RESTORED}.samples_lower", f"{RESTORED}.samples_upper"
    tiles = store.tiles(RESTORED, image_id)
    c, h, w = store.shape(RESTORED, image_id)
    spread = None
    if rule.scale == "local":  # the image's mean spread, one tile at a time
        spread = sum(float(np.sum(store.read_region(hi_c, image_id, y0, y1, x0, x1)
                                  - store.read_region(lo_c, image_id, y0, y1, x0, x1),
                                  dtype=np.float64))
                     for _, _, y0, y1, x0, x1 in tiles) / (c * h * w)
    m = rule.halo
    for _, _, y0, y1, x0, x1 in tiles:
        ya, yb, xa, xb = max(y0 - m, 0), min(y1 + m, h), max(x0 - m, 0), min(x1 + m, w)
        wide = rule.widen(Intervals(store.read_region(lo_c, image_id, ya, yb, xa, xb),
                                    store.read_region(hi_c, image_id, ya, yb, xa, xb)), spread)
        crop = (slice(None), slice(y0 - ya, y1 - ya), slice(x0 - xa, x1 - xa))
        store.write_region(INTERVAL_LO, image_id, wide.lower[crop].astype(np.float32), y0, x0)
        store.write_region(INTERVAL_HI, image_id, wide.upper[crop].astype(np.float32), y0, x0)
