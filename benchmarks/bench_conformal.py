"""Conformal trust on real restorations, with calibration and test from different source
images: bound coverage and tightness, the shift guard, per-pixel intervals.

Phase 1 (``--phase restore``, expensive, cached and resumable): a pool of random crops
(``--crop`` px, default 64) of photos never trained on (``corpus.held_out_photos()`` and
``corpus.benchmark_photos()``: monuments, animals, landscapes and musicians from
gcompris-qt-data) and of deep-sky astronomy images (``corpus.astronomy_images()``):
``--sources`` source images per domain (a seeded random choice), ``--crops`` crops per
source, every image first resized (Lanczos) so its shorter side is at most
``--short-side`` px (512, as the other benchmarks). Each crop is degraded with

    deblur   gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)
    sr       sr(factor=4,kernel=bicubic)+gaussian_noise(sigma=0.01)

(``DegradationSpec.parse(...).build``/``.apply`` with ``make_generator(spec, seed, crop
id)``, as the pipeline's ``simulate``) and restored once with DDPG (``restore_image``, the
default options for the task, ``--steps`` UNet evaluations, ``--samples`` J posterior
samples, restore generator seeded as ``restore_stored`` does). The cache keeps per
restoration the true PSNR / SSIM of the posterior mean, every no-reference feature as
``restore_stored`` computes it, and the per-pixel miscoverage curves of the J-sample
[5%, 95%] intervals: widened by a constant (``LAMBDA_GRID``) and by lambda times the
per-pixel spread ``u - l + floor`` (``SPREAD_GRID``, for each floor of ``FLOORS``) and
by lambda times the local scale (``LOCAL_GRID``, the pipeline's default),
with the mean base width ``u - l``. The cache is one JSON file under
``benchmarks/results/tmp/`` named by a hash of the settings; it is rewritten at least
once a minute, so an interrupted run resumes about where it stopped. Beside it, a folder of the
same name keeps one ``.npz`` per restoration (its J samples, the truth and y), so other
interval families can be tried without restoring (``explore_pixel_family``,
``explore_pixel_samples``).

Phase 2 (``--phase analyse``, cheap). Every split is by source: per task and domain,
``--splits`` times, ``n`` source images (n in ``--cal-sources``, default 12, 24, 48) are
drawn to calibrate (all their crops) and every other source of the domain is a test
source; no test crop shares a source with a calibration crop. On the calibration part:
``ConformalLowerBound.fit`` (``residual`` and ``cqr``, its own fit/calibration folds by
source, each source weighing one in the quantile) and the trivial bound (a source-pooled
order statistic of the calibration PSNRs); on the test part the coverage
``mean(psnr_true >= bound)`` (mean over splits, and its 5th percentile) and the mean gap
``psnr_true - bound``. In-context references (at the largest n): the residual bound
with one more feature, the mean true PSNR of the 5 calibration sources whose
measurements look most like the image's (cosine similarity of EfficientNet-Lite0
embeddings of y, the retrieval embedder; a calibration image's own source is skipped),
and that feature alone. Shift guard (``NoveltyGuard`` on ``GUARD_FEATURES``, levels
0.05 and 0.1, its default): fraction of test images flagged ``out_of_calibration`` in
distribution and when the calibration domain differs from the test domain (photos ->
astronomy and the reverse), with the coverage of the bound under that shift. Pixel
intervals (RCPS, ``--epsilon``, ``--delta``, one loss per calibration source): the test
risk, the fraction of splits with test risk <= epsilon, and the mean interval width of the
constant band, of the spread-scaled intervals and of the local scale (the default), each
certified by the Waudby-Smith-Ramdas bound (the default) and by Hoeffding-Bentkus.

Bars (issue 17), at alpha = 0.1 and n = 48 calibration sources unless said: coverage of
the residual bound in [0.87, 1] in every row (every n); residual gap smaller than the
trivial gap by >= 1.0 dB; under shift >= 80% of shifted images flagged and < 10% of
in-distribution ones; pixel test risk <= epsilon in >= 1 - delta of the splits and the
default (local) mean width >= 25% below the constant band's.

    OMP_NUM_THREADS=1 python -m benchmarks.bench_conformal --quick        # ~3 min
    OMP_NUM_THREADS=1 python -m benchmarks.bench_conformal --phase restore --time-limit 60
    OMP_NUM_THREADS=1 python -m benchmarks.bench_conformal                 # all (resumes)
    python -m benchmarks.bench_conformal --phase analyse                   # tables only

Results: ``benchmarks/results/conformal.{json,md}`` (``conformal_quick`` with
``--quick``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, write_results
from restoreflow.quality.rcps import BOUNDS, DEFAULT_BOUND, DEFAULT_FLOORS, LOCAL_SIGMA
from restoreflow.stages.calibrate import local_grid

TASKS: dict[str, str] = {
    "deblur": "gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)",
    "sr": "sr(factor=4,kernel=bicubic)+gaussian_noise(sigma=0.01)",
}
DOMAINS = ("photo", "astro")
METHODS = ("full", "residual", "cqr")  # full conformal (the default), split conformal
DEFAULT_METHOD_BOUND = "full"
REF_METHODS = ("residual+refs", "refs only")  # with the in-context reference feature
SAMPLER = "ddpg"  # the explore_* scripts' caches (earlier bench_conformal runs: DDPG on the UNet)
CACHE_DIR = RESULTS / "tmp"
SAVE_EVERY_S = 60.0  # an interrupted phase 1 loses at most this much work
FLOORS = (0.005, 0.01, 0.02, 0.05)
REFERENCES = 5  # in-context reference sources per image
GUARD_LEVELS = (0.05, 0.1)  # a stricter level, and the guard's default (the bar)
SPREAD_GRID = np.round(np.linspace(0.0, 20.0, 401), 6)
LOCAL_FLOOR = DEFAULT_FLOORS["local"]  # the pipeline's default and its lambda grid
LOCAL_GRID = local_grid(LOCAL_FLOOR)
QUICK = dict(sources=12, crops=2, crop=64, splits=50, cal_sources=(8,))
DEFAULTS = dict(sources=120, crops=2, crop=64, splits=200, cal_sources=(12, 24, 48))


def _seed(*parts: object) -> int:
    text = ":".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") & ((1 << 63) - 1)


def _json_safe(obj):
    """Infinities as the strings "inf"/"-inf" and NaN as null (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _fmt_time(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"




@lru_cache(maxsize=12)
def _load(path: Path, short_side: int):
    """(3, H, W) float32 array in [0, 1], shorter side resized down to ``short_side``."""
    from PIL import Image

    im = Image.open(path).convert("RGB")
    s = short_side / min(im.size)
    if s < 1:
        im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.LANCZOS)
    return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0


def load_crop(item: dict, crop: int, short_side: int, seed: int):
    import torch

    a = _load(item["path"], short_side)
    _, h, w = a.shape
    if min(h, w) < crop:
        raise ValueError(f"{item['path']}: {w}x{h} is smaller than the {crop} px crop")
    r = np.random.default_rng(_seed("crop", seed, item["id"]))
    y0, x0 = int(r.integers(0, h - crop + 1)), int(r.integers(0, w - crop + 1))
    return torch.from_numpy(np.ascontiguousarray(a[:, y0 : y0 + crop, x0 : x0 + crop]))


# --- cache ---------------------------------------------------------------------------------


def settings(args, prior_hash: str) -> dict:
    from restoreflow.degradation import DegradationSpec
    from restoreflow.samplers import options_model, resolve_options

    opts = {}
    defaults = options_model(args.sampler)().model_dump()
    for task, text in TASKS.items():
        spec = DegradationSpec.parse(text)
        full = resolve_options(args.sampler, task, spec.sigma_y)
        # the options that differ from the solver's defaults (the caches' key since v2)
        opts[task] = {k: v for k, v in full.items() if defaults.get(k) != v}
    return {"crop": args.crop, "short_side": args.short_side, "seed": args.seed,
            "steps": args.steps, "samples": args.samples, "sampler": args.sampler,
            "options": opts, "tasks": TASKS, "floors": list(FLOORS),
            "spread_grid": [float(SPREAD_GRID[0]), float(SPREAD_GRID[-1]), SPREAD_GRID.size],
            "local": {"floor": LOCAL_FLOOR, "sigma": LOCAL_SIGMA, "grid": LOCAL_GRID.size},
            # what the options do not show: HQS injects fresh noise for J >= 2 since this
            # revision (a new cache; runs of other solvers keep theirs)
            **({"solver_revision": 2} if args.sampler == "hqs" else {}),
            "prior_hash": prior_hash}


def cache_path(st: dict) -> Path:
    key = hashlib.sha256(json.dumps(st, sort_keys=True).encode()).hexdigest()[:12]
    return CACHE_DIR / f"conformal_v2_pool_{key}.json"


def pool_cache(name: str | None) -> Path:
    """The cache JSON ``name`` (a path), or by default the most recently written one."""
    if name:
        return Path(name)
    return max(CACHE_DIR.glob("conformal_v2_pool_*[0-9a-f].json"),
               key=lambda p: p.stat().st_mtime)


def add_split_args(ap: argparse.ArgumentParser, splits: int) -> None:
    """The options the exploration scripts share: which pool (``--cache``), the splits by
    source (``--cal`` calibration sources, ``--splits``) and the RCPS guarantee
    (``--epsilon``, ``--delta``, ``--bound``; ``hb`` by default, the bound of their
    committed results)."""
    ap.add_argument("--cache", default=None, help="bench_conformal cache JSON (default newest)")
    ap.add_argument("--cal", type=int, default=48)
    ap.add_argument("--splits", type=int, default=splits)
    ap.add_argument("--epsilon", type=float, default=0.1)
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--bound", choices=BOUNDS, default="hb",
                    help="RCPS risk bound (explore_pixel_family.md: hb, the bound then)")


def load_cache(path: Path, st: dict) -> dict:
    if path.exists():
        data = json.loads(path.read_text())
        if data.get("settings") == st:
            return data
        raise RuntimeError(f"{path}: settings differ from this run's; remove it or rename")
    return {"settings": st, "records": {}}


def save_cache(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


# --- pool --------------------------------------------------------------------------------


def pool_items(n_sources: int, crops: int, crop: int, short_side: int, seed: int) -> list[dict]:
    """``crops`` crops of each of ``n_sources`` photos and as many astronomy images, source
    after source, the two domains alternating (any prefix of the restoration order is
    balanced). Each item: id, domain, source, path, k (crop number)."""
    from restoreflow.models import corpus

    paths = {"photo": corpus.held_out_photos() + corpus.benchmark_photos(),
             "astro": corpus.astronomy_images()}
    chosen = {}
    for dom, ps in paths.items():
        if len(ps) < n_sources:
            raise SystemExit(f"{dom}: {len(ps)} source images, {n_sources} wanted "
                             "(run scripts/fetch-corpus.sh)")
        order = np.random.default_rng(_seed("sources", dom, seed)).permutation(len(ps))
        chosen[dom] = [ps[i] for i in order[:n_sources]]
    items = []
    for i in range(n_sources):
        for dom in DOMAINS:
            p = chosen[dom][i]
            for k in range(crops):
                items.append({"domain": dom, "path": p, "k": k, "source": f"{dom}/{p.name}",
                              "id": f"{dom}/{p.name}/c{crop}s{short_side}/{k}"})
    return items


def restore_record(prior, item: dict, task: str, x, st: dict,
                   pixel_dir: Path | None = None) -> dict:
    import torch

    from restoreflow.degradation import DegradationSpec, make_generator, seed_for
    from restoreflow.quality.features import compute_features
    from restoreflow.quality.metrics import psnr, ssim
    from restoreflow.quality.rcps import base_intervals
    from restoreflow.spec import RestoreOptions
    from restoreflow.stages.restore import restore_image

    spec = DegradationSpec.parse(TASKS[task])
    g = make_generator(spec, st["seed"], item["id"])
    deg = spec.build(tuple(x.shape), generator=g)
    y = deg.apply(x[None], g)[0].float()
    gr = torch.Generator().manual_seed(seed_for(spec.hash, st["seed"], f"{item['id']}/restore"))
    t0 = time.perf_counter()
    samples = restore_image(prior, deg.operator, y, deg.sigma_y,
                            RestoreOptions(sampler=st["sampler"], steps=st["steps"],
                                           posterior_samples=st["samples"],
                                           options=dict(st["options"][task])),
                            generator=gr)
    seconds = time.perf_counter() - t0
    x_hat = samples.mean(0)
    feats = compute_features(deg.operator, x_hat, y, max(deg.sigma_y, 1e-3),
                             samples=samples if st["samples"] >= 2 else None)
    truth = x.clamp(0, 1).double().numpy()
    rec = {"id": item["id"], "task": task, "domain": item["domain"], "source": item["source"],
           "psnr": psnr(x_hat, truth), "ssim": ssim(x_hat, truth), "features": feats,
           "seconds": seconds}
    rec["pixel"] = pixel_curves(base_intervals(samples.numpy()), truth)
    if pixel_dir is not None:  # the arrays, so later interval families need no restoring
        pixel_dir.mkdir(parents=True, exist_ok=True)
        tmp = pixel_dir / f"{_seed(task, item['id'])}.part.npz"
        np.savez_compressed(tmp, samples=samples.numpy().astype(np.float32),
                            truth=truth.astype(np.float32), y=y.numpy())
        os.replace(tmp, pixel_array_path(pixel_dir, task, item["id"]))
    return rec


def pixel_array_path(pixel_dir: Path, task: str, item_id: str) -> Path:
    """Where phase 1 keeps a restoration's J samples, the truth and y (``.npz``)."""
    return pixel_dir / f"{_seed(task, item_id)}.npz"


def _curve(e: np.ndarray, grid: np.ndarray) -> list[float]:
    """Fraction of the values of ``e`` above each grid value."""
    e = np.sort(e, axis=None)
    return [round(float(v), 6) for v in 1.0 - np.searchsorted(e, grid, side="right") / e.size]


def pixel_curves(iv, truth) -> dict:
    """Miscoverage curves of the constant band, of the spread-scaled intervals (each
    floor of FLOORS) and of the local scale (the pipeline's default) on their lambda
    grids; the mean base width ``u - l`` and the mean local unit ``w``."""
    from restoreflow.quality.rcps import excess, interval_scale
    from restoreflow.stages.calibrate import LAMBDA_GRID

    return {"constant": _curve(excess(iv, truth), LAMBDA_GRID),
            "spread": {str(f): _curve(excess(iv, truth, "spread", f), SPREAD_GRID)
                       for f in FLOORS},
            "local": _curve(excess(iv, truth, "local", LOCAL_FLOOR), LOCAL_GRID),
            "local_unit": float(np.mean(interval_scale(iv, "local", LOCAL_FLOOR))),
            "base_width": float(np.mean(iv.upper - iv.lower))}


def run_restore(args, st: dict, path: Path, items: list[dict]) -> dict:
    from restoreflow.models import priors

    data = load_cache(path, st)
    todo = [(it, t) for it in items for t in TASKS if f"{t}/{it['id']}" not in data["records"]]
    have = len(items) * len(TASKS) - len(todo)
    print(f"pool: {len(items)} crops x {len(TASKS)} degradations; {have} cached in {path}, "
          f"{len(todo)} to restore", flush=True)
    if not todo:
        return data
    prior = priors.load(args.prior)
    if prior.model_hash != st["prior_hash"]:
        raise RuntimeError(f"prior changed while starting ({prior.model_hash} != "
                           f"{st['prior_hash']}); pass a fixed snapshot with --prior")
    t_start = saved = time.perf_counter()
    for i, (it, task) in enumerate(todo, 1):
        x = load_crop(it, args.crop, args.short_side, args.seed)
        rec = restore_record(prior, it, task, x, st, pixel_dir=path.with_suffix(""))
        data["records"][f"{task}/{it['id']}"] = rec
        if time.perf_counter() - saved > SAVE_EVERY_S or i == len(todo):
            save_cache(path, data)  # the JSON grows to tens of MB: not after every one
            saved = time.perf_counter()
        el = time.perf_counter() - t_start
        eta = el / i * (len(todo) - i)
        print(f"[{have + i}/{len(items) * len(TASKS)}] {task:6s} {it['id']:56s} "
              f"PSNR {rec['psnr']:6.2f} dB  {rec['seconds']:5.1f}s  elapsed {_fmt_time(el)}  "
              f"ETA {_fmt_time(eta)}", flush=True)
        if args.time_limit and el > 60 * args.time_limit and i < len(todo):
            save_cache(path, data)
            print(f"time limit reached: {len(todo) - i} restorations left; rerun to resume",
                  flush=True)
            break
    return data


# --- phase 2: analyse ------------------------------------------------------------------------


class Domain:
    """The records of one task and domain as arrays; ``src`` the source codes."""

    def __init__(self, recs: list[dict], names: list[str], emb: dict | None = None):
        from restoreflow.quality.features import GUARD_FEATURES, feature_vector

        self.recs = recs
        self.X = np.stack([feature_vector(r["features"], names) for r in recs])
        self.G = np.stack([feature_vector(r["features"], GUARD_FEATURES) for r in recs])
        self.v = {"psnr": np.array([r["psnr"] for r in recs]),
                  "ssim": np.array([r["ssim"] for r in recs])}
        self.sources, self.src = np.unique([r["source"] for r in recs], return_inverse=True)
        self.n_sources = self.sources.size
        px = [r["pixel"] for r in recs]
        self.L = {"constant": np.array([p["constant"] for p in px])}
        for f in FLOORS:
            self.L[f"spread {f}"] = np.array([p["spread"][str(f)] for p in px])
        self.L["local"] = np.array([p["local"] for p in px])
        self.local_unit = np.array([p["local_unit"] for p in px])
        self.base_width = np.array([p["base_width"] for p in px])
        self.E = (np.array([emb[f"{r['task']}/{r['id']}"] for r in recs]) if emb is not None
                  else None)

    def rows(self, source_codes: np.ndarray) -> np.ndarray:
        return np.flatnonzero(np.isin(self.src, source_codes))

    def split(self, n_cal: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        perm = rng.permutation(self.n_sources)
        return self.rows(perm[:n_cal]), self.rows(perm[n_cal:])


def _bound(d: Domain, cal, test, target, alpha, rng, method, X=None) -> np.ndarray:
    """Bounds of the test rows (``-inf`` when the calibration fold has too few sources);
    features ``X`` (default the domain's)."""
    from restoreflow.quality.conformal import fit_lower_bound

    X = d.X if X is None else X
    try:
        m = fit_lower_bound(method, X[cal], d.v[target][cal], alpha, rng, groups=d.src[cal])
    except ValueError:  # calibration fold too small for a finite quantile
        return np.full(test.size, -math.inf)
    return m.bound(X[test])


def _trivial(d: Domain, cal, target, alpha) -> float:
    from restoreflow.quality.conformal import TrivialLowerBound

    return TrivialLowerBound.fit(d.v[target][cal], alpha, groups=d.src[cal]).value


def _stats(cov: list[float], gap: list[float]) -> dict:
    c, g = np.array(cov), np.array(gap)
    return {"coverage_mean": float(c.mean()), "coverage_p5": float(np.percentile(c, 5)),
            "coverage_min": float(c.min()),
            "gap_mean": float(g.mean()) if np.isfinite(g).all() else math.inf,
            "gap_median": float(np.median(g)), "splits": int(c.size),
            "infinite_bounds": int((~np.isfinite(g)).sum())}


def rcps_split(L: np.ndarray, codes: np.ndarray, cal, test, grid: np.ndarray,
               epsilon: float, delta: float,
               bound: str = DEFAULT_BOUND) -> tuple[float, float] | None:
    """RCPS on one split: lambda from the calibration rows ``cal`` of the miscoverage
    curves ``L`` (rows on ``grid``; one loss per source ``codes``; risk bound ``bound``)
    and the mean test risk of the ``test`` rows at it; None when no lambda of the grid
    controls the risk."""
    from restoreflow.quality.rcps import RiskControlError, calibrate_lambda, group_mean_losses

    try:
        lam = calibrate_lambda(group_mean_losses(L[cal], codes[cal]), grid, epsilon, delta,
                               bound)
    except RiskControlError:
        return None
    return lam, float(L[test, int(np.flatnonzero(grid == lam)[0])].mean())


def _pixel(d: Domain, cal, test, args) -> dict:
    """RCPS lambda on the calibration sources (one loss per source) for each interval
    family and each risk bound (the default's families under their own names, the
    others' with the bound in brackets: ``local (hb)``); test risk and mean width on the
    test crops."""
    from restoreflow.stages.calibrate import LAMBDA_GRID

    out = {}
    bw = d.base_width[test].mean()
    for bound in (DEFAULT_BOUND, *(b for b in BOUNDS if b != DEFAULT_BOUND)):
        for fam, L in d.L.items():
            key = fam if bound == DEFAULT_BOUND else f"{fam} ({bound})"
            grid = {"constant": LAMBDA_GRID, "local": LOCAL_GRID}.get(fam, SPREAD_GRID)
            got = rcps_split(L, d.src, cal, test, grid, args.epsilon, args.delta, bound)
            if got is None:
                out[key] = None
                continue
            lam, risk = got
            if fam == "constant":
                width = bw + 2 * lam
            elif fam == "local":
                width = bw + 2 * lam * d.local_unit[test].mean()
            else:
                f = float(fam.split()[1])
                width = bw + 2 * lam * (bw + f)
            out[key] = {"lam": lam, "risk": risk, "width": float(width)}
    return out


def _same_bound_constant(fam: str) -> str:
    """The constant band certified by the same bound as family ``fam``."""
    return f"constant ({fam.split('(')[1]}" if "(" in fam else "constant"


def _guard(d: Domain, cal: np.ndarray):
    from restoreflow.quality.features import GUARD_FEATURES
    from restoreflow.quality.novelty import NoveltyGuard

    return NoveltyGuard.fit(d.G[cal], d.src[cal], GUARD_FEATURES)


def analyse_domain(d: Domain, args) -> dict:
    n_max = max(args.cal_sources)
    acc: dict = {}
    flags, pix = [], []

    def add(key, cov, gap):
        c, g = acc.setdefault(key, ([], []))
        c.append(cov)
        g.append(gap)

    for n_cal in args.cal_sources:
        if n_cal >= d.n_sources:
            continue
        for s in range(args.splits):
            cal, test = d.split(n_cal, np.random.default_rng([args.seed, s, n_cal]))
            for target in ("psnr", "ssim") if n_cal == n_max else ("psnr",):
                vt = d.v[target][test]
                tb = _trivial(d, cal, target, args.alpha)
                add((target, n_cal, "trivial"), float(np.mean(vt >= tb)),
                    float(np.mean(vt - tb)))
                for method in METHODS if target == "psnr" else ("full", "residual"):
                    b = _bound(d, cal, test, target, args.alpha,
                               np.random.default_rng([args.seed, s, 1]), method)
                    add((target, n_cal, method), float(np.mean(vt >= b)),
                        float(np.mean(vt - b)))
            if n_cal == n_max and d.E is not None:
                v = d.v["psnr"]
                ref_cal = reference_psnr(d.E[cal], v[cal], d.src[cal], d.E[cal], d.src[cal])
                ref_test = reference_psnr(d.E[cal], v[cal], d.src[cal], d.E[test],
                                          np.full(test.size, -1))
                X2 = np.column_stack([d.X, np.zeros(len(v))])
                X2[cal, -1], X2[test, -1] = ref_cal, ref_test
                for method, Xm in (("residual+refs", X2), ("refs only", X2[:, -1:])):
                    b = _bound(d, cal, test, "psnr", args.alpha,
                               np.random.default_rng([args.seed, s, 1]), "residual", X=Xm)
                    add(("psnr", n_cal, method), float(np.mean(v[test] >= b)),
                        float(np.mean(v[test] - b)))
            if n_cal == n_max:
                p = _guard(d, cal).pvalue(d.G[test])
                flags.append([float(np.mean(p <= lev)) for lev in GUARD_LEVELS])
                pix.append(_pixel(d, cal, test, args))
    out: dict = {"sources": int(d.n_sources), "crops": len(d.recs), "bounds": {}}
    for (target, n_cal, method), (cov, gap) in acc.items():
        out["bounds"].setdefault(target, {}).setdefault(str(n_cal), {})[method] = \
            _stats(cov, gap)
    for per_n in out["bounds"].values():
        for b in per_n.values():
            for st in b.values():
                st["gap_vs_trivial"] = st["gap_mean"] - b["trivial"]["gap_mean"]
    out["guard_in_distribution_flagged"] = (
        {str(lev): float(f) for lev, f in zip(GUARD_LEVELS, np.mean(flags, axis=0),
                                                strict=True)} if flags else None)
    fams: dict = {}
    for p in pix:
        for fam, r in p.items():
            fams.setdefault(fam, []).append(r)
    out["pixel"] = {}
    for fam, rs in fams.items():
        ok = [r for r in rs if r is not None]
        risk = np.array([r["risk"] for r in ok])
        out["pixel"][fam] = {
            "failures": len(rs) - len(ok),
            "lam_mean": float(np.mean([r["lam"] for r in ok])) if ok else None,
            "test_risk_mean": float(risk.mean()) if ok else None,
            "frac_risk_le_eps": float(np.mean(risk <= args.epsilon)) if ok else None,
            "width_mean": float(np.mean([r["width"] for r in ok])) if ok else None}
    for fam, st in out["pixel"].items():
        c = out["pixel"].get(_same_bound_constant(fam), {}).get("width_mean")
        st["width_vs_constant"] = (st["width_mean"] / c - 1) if c and st["width_mean"] else None
    return out


def analyse_shift(doms: dict[str, Domain], args) -> dict:
    """Calibrate on n_max sources of one domain, test on every source of the other."""
    from restoreflow.quality.conformal import ConformalLowerBound

    n_max = max(args.cal_sources)
    out = {}
    for a, b in (("photo", "astro"), ("astro", "photo")):
        da, db = doms[a], doms[b]
        if n_max >= da.n_sources:
            continue
        flagged, cov = [], []
        for s in range(args.splits):
            cal, _ = da.split(n_max, np.random.default_rng([args.seed, s, n_max]))
            p = _guard(da, cal).pvalue(db.G)
            flagged.append([float(np.mean(p <= lev)) for lev in GUARD_LEVELS])
            try:
                m = ConformalLowerBound.fit(da.X[cal], da.v["psnr"][cal], args.alpha,
                                            np.random.default_rng([args.seed, s, 1]),
                                            groups=da.src[cal])
            except ValueError:  # too few sources for a bound
                continue
            cov.append(float(np.mean(db.v["psnr"] >= m.bound(db.X))))
        f = np.array(flagged)
        out[f"{a}->{b}"] = {"flagged_mean": {str(lev): float(x) for lev, x in
                                             zip(GUARD_LEVELS, f.mean(0), strict=True)},
                            "flagged_min": {str(lev): float(x) for lev, x in
                                            zip(GUARD_LEVELS, f.min(0), strict=True)},
                            "coverage_mean": float(np.mean(cov)) if cov else None}
    return out


def backfill_guard_features(data: dict, items: list[dict], args, path: Path) -> None:
    """Records restored before the guard features existed get them from their
    measurement, regenerated exactly as ``restore_record`` made it."""
    from restoreflow.degradation import DegradationSpec, make_generator
    from restoreflow.quality.features import GUARD_FEATURES, measurement_statistics

    by_id = {it["id"]: it for it in items}
    todo = [r for r in data["records"].values()
            if r["id"] in by_id and not set(GUARD_FEATURES) <= set(r["features"])]
    for r in todo:
        spec = DegradationSpec.parse(TASKS[r["task"]])
        g = make_generator(spec, args.seed, r["id"])
        x = load_crop(by_id[r["id"]], args.crop, args.short_side, args.seed)
        deg = spec.build(tuple(x.shape), generator=g)
        r["features"].update(measurement_statistics(deg.apply(x[None], g)[0].float()))
    if todo:
        save_cache(path, data)
        print(f"guard features added to {len(todo)} cached records", flush=True)


def embeddings(data: dict, items: list[dict], args, path: Path) -> dict[str, list[float]]:
    """EfficientNet-Lite0 embeddings (the retrieval embedder) of every record's
    measurement, regenerated as ``restore_record`` made it; cached beside the pool."""
    import torch

    from restoreflow.degradation import DegradationSpec, make_generator
    from restoreflow.models.embedders import DEFAULT_EMBEDDER, get_embedder

    epath = path.with_name(path.stem + "_embeddings.json")
    emb = json.loads(epath.read_text()) if epath.exists() else {}
    by_id = {it["id"]: it for it in items}
    todo = [(k, r) for k, r in data["records"].items() if k not in emb and r["id"] in by_id]
    if todo:
        model = get_embedder(DEFAULT_EMBEDDER)
        for k, r in todo:
            spec = DegradationSpec.parse(TASKS[r["task"]])
            g = make_generator(spec, args.seed, r["id"])
            x = load_crop(by_id[r["id"]], args.crop, args.short_side, args.seed)
            deg = spec.build(tuple(x.shape), generator=g)
            y = deg.apply(x[None], g)[0].float().clamp(0, 1)
            with torch.no_grad():
                emb[k] = [round(float(v), 5) for v in model.embed(y[None])[0]]
        tmp = epath.with_suffix(".part")
        tmp.write_text(json.dumps(emb))
        os.replace(tmp, epath)
        print(f"embedded {len(todo)} measurements", flush=True)
    return emb


def reference_psnr(E_ref, v_ref, g_ref, E_q, g_q, k: int = REFERENCES) -> np.ndarray:
    """In-context references: for each query, the mean true PSNR of the ``k``
    calibration sources whose measurements look most like it (cosine similarity of the
    embeddings; a source counts once, by its most similar crop; the query's own source is
    skipped)."""
    S = E_q @ E_ref.T
    out = np.empty(len(E_q))
    for i in range(len(E_q)):
        best: dict = {}
        for j in np.argsort(-S[i]):
            if g_ref[j] != g_q[i] and g_ref[j] not in best:
                best[g_ref[j]] = v_ref[j]
                if len(best) == k:
                    break
        out[i] = np.mean(list(best.values()))
    return out


def run_analyse(args, data: dict, items: list[dict], path: Path) -> dict:
    from restoreflow.quality.features import GUARD_FEATURES
    from restoreflow.stages.calibrate import feature_names

    backfill_guard_features(data, items, args, path)
    emb = embeddings(data, items, args, path)
    names = feature_names(args.samples)
    res: dict = {"feature_names": names, "guard_features": list(GUARD_FEATURES),
                 "guard_levels": list(GUARD_LEVELS), "tasks": {}}
    ids = {it["id"] for it in items}
    for task in TASKS:
        recs = [r for r in data["records"].values() if r["task"] == task and r["id"] in ids]
        doms = {dom: Domain([r for r in recs if r["domain"] == dom], names, emb)
                for dom in DOMAINS if sum(r["domain"] == dom for r in recs) >= 8}
        if not doms:
            print(f"{task}: only {len(recs)} restorations cached; skipped", flush=True)
            continue
        t0 = time.perf_counter()
        tr: dict = {"pool": {}, "domains": {}}
        for dom, d in doms.items():
            p, q = d.v["psnr"], d.v["ssim"]
            tr["pool"][dom] = {"sources": int(d.n_sources), "crops": len(d.recs),
                               "psnr_mean": float(p.mean()), "psnr_std": float(p.std()),
                               "psnr_min": float(p.min()), "psnr_max": float(p.max()),
                               "ssim_mean": float(q.mean()),
                               "seconds_mean": float(np.mean([r["seconds"]
                                                              for r in d.recs]))}
            tr["domains"][dom] = analyse_domain(d, args)
        if len(doms) == 2:
            tr["shift"] = analyse_shift(doms, args)
        res["tasks"][task] = tr
        print(f"{task}: analysed {len(recs)} restorations in "
              f"{time.perf_counter() - t0:.0f}s", flush=True)
    res["bars"] = bars(res, args)
    return res


def bars(res: dict, args) -> dict:
    n_max = str(max(args.cal_sources))
    rows = []
    for task, tr in res["tasks"].items():
        for dom, d in tr["domains"].items():
            psnr = d["bounds"]["psnr"]
            m = DEFAULT_METHOD_BOUND
            covs = {n: b[m]["coverage_mean"] for n, b in psnr.items()
                    if not b[m]["infinite_bounds"]}
            row = {"task": task, "domain": dom, "method": m, "coverage": covs,
                   "no_bound_at": [n for n, b in psnr.items() if b[m]["infinite_bounds"]],
                   "coverage_ok": bool(covs) and all(0.87 <= c <= 1 for c in covs.values())}
            # issue 33: the default bound never looser than the feature-free one
            row["gap_vs_trivial_by_n"] = {n: b[m]["gap_vs_trivial"] for n, b in psnr.items()
                                          if not b[m]["infinite_bounds"]}
            row["never_looser_ok"] = all(g <= 0 for g in row["gap_vs_trivial_by_n"].values())
            if n_max in psnr:
                row["gap_vs_trivial"] = psnr[n_max][m]["gap_vs_trivial"]
                row["tighter_ok"] = row["gap_vs_trivial"] <= -1.0
            row["guard_in_flagged"] = d["guard_in_distribution_flagged"] or {}
            row["guard_in_ok"] = {lev: f < 0.10 for lev, f in row["guard_in_flagged"].items()}
            px = d["pixel"]
            if px.get("constant"):
                best = min((f for f in px if not f.startswith("constant")
                            and px[f]["width_mean"]),
                           key=lambda f: px[f]["width_mean"], default=None)
                row["pixel_risk_ok"] = all(p["frac_risk_le_eps"] is not None
                                           and p["frac_risk_le_eps"] >= 1 - args.delta
                                           for p in px.values())
                row["pixel_best"] = best
                row["pixel_default"] = "local" if "local" in px else None
                row["pixel_width_vs_constant"] = (px["local"]["width_vs_constant"]
                                                  if "local" in px else None)
                row["pixel_width_ok"] = (row["pixel_width_vs_constant"] is not None
                                         and row["pixel_width_vs_constant"] <= -0.25)
                # against the band the pipeline shipped before (same epsilon and delta)
                old = [f"constant ({b})" for b in BOUNDS if b != DEFAULT_BOUND]
                if "local" in px and old and (px.get(old[0]) or {}).get("width_mean"):
                    row["pixel_width_vs_previous_constant"] = (
                        px["local"]["width_mean"] / px[old[0]]["width_mean"] - 1)
            rows.append(row)
        for k, sh in tr.get("shift", {}).items():
            rows.append({"task": task, "shift": k, "flagged": sh["flagged_mean"],
                         "shift_ok": {lev: f >= 0.8 for lev, f in sh["flagged_mean"].items()}})
    return {"rows": rows}


# --- report ---------------------------------------------------------------------------------


def _f(x, nd=2, signed=False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:+.{nd}f}" if signed else f"{x:.{nd}f}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def _ok(flag) -> str:
    return "-" if flag is None else ("pass" if flag else "FAIL")


def markdown(res: dict, args) -> str:
    st = res["settings"]
    a = args.alpha
    n_max = str(max(args.cal_sources))
    lines = [
        f"Prior `{res['prior']}` (hash {st['prior_hash'][:12]}); {st['sampler'].upper()}, "
        f"{st['steps']} steps, "
        f"J = {st['samples']} posterior samples, default options per task; "
        f"{st['crop']} px random crops, {args.crops} per source image (images resized to a "
        f"shorter side <= {st['short_side']} px); {args.sources} source images per domain "
        "(photos never trained on: held-out set and gcompris-qt-data photos; deep-sky "
        f"astronomy images); {res['pool']['cached']} of {res['pool']['wanted']} "
        f"restorations cached. alpha = {a}; {args.splits} splits by source per row: n "
        "source images calibrate (all their crops; half the sources fit the predictor, "
        "half calibrate the quantile, each source weighing one), every other source image "
        "of the domain tests. Features: " + ", ".join(res["feature_names"]) + ".",
        "",
        "Degradations: " + "; ".join(f"{k} = `{v}`" for k, v in TASKS.items()) + ".",
        "",
        "## Pool (true quality of the posterior mean)",
        "",
        "| task | domain | sources | crops | PSNR mean | std | min | max | SSIM mean | "
        "s/restoration |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, tr in res["tasks"].items():
        for dom, p in tr["pool"].items():
            lines.append(f"| {task} | {dom} | {p['sources']} | {p['crops']} | "
                         f"{p['psnr_mean']:.2f} | {p['psnr_std']:.2f} | {p['psnr_min']:.2f} | "
                         f"{p['psnr_max']:.2f} | {p['ssim_mean']:.3f} | "
                         f"{p['seconds_mean']:.1f} |")
    lines += [
        "",
        "## PSNR lower bound: coverage and gap (true - bound, dB), test sources unseen",
        "",
        f"Coverage = fraction of test crops with true PSNR >= bound: mean over splits (5th "
        f"percentile over splits); target {1 - a:.2f}, bar [0.87, 1]. Gap = mean test gap; "
        "trivial = a source-pooled order statistic of the calibration PSNRs.",
        "",
        "| task | domain | cal sources | bound | coverage (p5) | gap | gap - trivial |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, tr in res["tasks"].items():
        for dom, d in tr["domains"].items():
            for n, b in d["bounds"]["psnr"].items():
                for method in [m for m in ("trivial", *METHODS, *REF_METHODS) if m in b]:
                    s = b[method]
                    if s["infinite_bounds"]:
                        lines.append(f"| {task} | {dom} | {n} | {method} | no bound in "
                                     f"{s['infinite_bounds']} of {s['splits']} splits (too "
                                     "few sources in the calibration fold) | - | - |")
                        continue
                    lines.append(
                        f"| {task} | {dom} | {n} | {method} | {s['coverage_mean']:.3f} "
                        f"({s['coverage_p5']:.3f}) | {_f(s['gap_mean'])} | "
                        + ("-" if method == "trivial" else _f(s["gap_vs_trivial"], 2, True))
                        + " |")
    lines += ["", f"## SSIM lower bound ({n_max} calibration sources)", "",
              "| task | domain | bound | coverage (p5) | gap | gap - trivial |",
              "|---|---|---|---|---|---|"]
    for task, tr in res["tasks"].items():
        for dom, d in tr["domains"].items():
            b = d["bounds"].get("ssim", {}).get(n_max)
            for method in ("trivial", "full", "residual") if b else ():
                s = b[method]
                lines.append(f"| {task} | {dom} | {method} | {s['coverage_mean']:.3f} "
                             f"({s['coverage_p5']:.3f}) | {_f(s['gap_mean'], 3)} | "
                             + ("-" if method == "trivial" else
                                _f(s["gap_vs_trivial"], 3, True)) + " |")
    lines += [
        "", f"## Shift guard ({n_max} calibration sources)", "",
        "Fraction of test images flagged `out_of_calibration` (novelty p-value <= level) at "
        "level 0.05 and at the guard's default level 0.1; guard features: "
        + ", ".join(res["guard_features"]) + ". In distribution: test sources of the "
        "calibration domain; shifted: every source of the other domain, with the coverage "
        "of the (no longer guaranteed) PSNR bound on them.",
        "",
        "| task | calibrate on | test on | flagged, level 0.05 (worst split) | "
        "flagged, level 0.1 (worst split) | bound coverage |",
        "|---|---|---|---|---|---|",
    ]
    for task, tr in res["tasks"].items():
        for dom, d in tr["domains"].items():
            f = d["guard_in_distribution_flagged"] or {}
            lines.append(f"| {task} | {dom} | {dom} (other sources) | "
                         f"{_f(f.get('0.05'), 3)} | {_f(f.get('0.1'), 3)} | - |")
        for k, sh in tr.get("shift", {}).items():
            src, dst = k.split("->")
            m, w = sh["flagged_mean"], sh["flagged_min"]
            lines.append(f"| {task} | {src} | {dst} | {m['0.05']:.3f} ({w['0.05']:.3f}) | "
                         f"{m['0.1']:.3f} ({w['0.1']:.3f}) | {_f(sh['coverage_mean'], 3)} |")
    lines += [
        "", f"## Per-pixel intervals (RCPS, epsilon = {args.epsilon}, delta = {args.delta}, "
        f"{n_max} calibration sources)", "",
        "constant: [l - lambda, u + lambda]; spread f: [l - lambda w, u + lambda w] with "
        "w = u - l + f; local (the default): w = sqrt(G * (u - l) * mean(u - l)) + "
        f"{LOCAL_FLOOR}, G a Gaussian of sigma {LOCAL_SIGMA:g} px; (l, u) the J-sample "
        "5% / 95% quantiles. Test risk = mean fraction of "
        "test pixels outside their interval; the guarantee is P(risk <= epsilon) >= "
        "1 - delta over calibration draws. Width = mean interval width on test crops "
        "(intensity in [0, 1], not cut to it). Families without a bracket: lambda "
        f"certified by the {DEFAULT_BOUND.upper()} bound (Waudby-Smith-Ramdas betting, the "
        "pipeline's default); (hb): by the Hoeffding-Bentkus bound, the pipeline's before. "
        "'vs constant': vs the constant band of the same bound.",
        "",
        "| task | domain | intervals | lambda mean | test risk mean | splits with risk <= eps "
        "| no lambda | mean width | vs constant |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, tr in res["tasks"].items():
        for dom, d in tr["domains"].items():
            for fam, p in d["pixel"].items():
                lines.append(f"| {task} | {dom} | {fam} | {_f(p['lam_mean'], 3)} | "
                             f"{_f(p['test_risk_mean'], 4)} | {_f(p['frac_risk_le_eps'], 3)} | "
                             f"{p['failures']} | {_f(p['width_mean'], 4)} | "
                             f"{_pct(p['width_vs_constant'])} |")
    lines += ["", "## Bars", ""]
    for r in res["bars"]["rows"]:
        if "shift" in r:
            lines.append(f"- {r['task']} shift {r['shift']}: flagged "
                         + ", ".join(f"{r['flagged'][lev]:.1%} at level {lev} (>= 80%: "
                                     f"{_ok(ok)})" for lev, ok in r["shift_ok"].items()))
            continue
        covs = ", ".join([f"n={n}: {c:.3f}" for n, c in r["coverage"].items()]
                         + [f"n={n}: no bound" for n in r["no_bound_at"]])
        lines.append(
            f"- {r['task']} {r['domain']}: {r['method']} coverage {covs} ([0.87, 1]: "
            f"{_ok(r['coverage_ok'])}); gap vs trivial "
            + ", ".join(f"n={n}: {_f(g, 2, True)}" for n, g in r["gap_vs_trivial_by_n"].items())
            + f" dB (never looser: {_ok(r['never_looser_ok'])}); at n={n_max} "
            f"{_f(r.get('gap_vs_trivial'), 2, True)} dB (<= -1.0: {_ok(r.get('tighter_ok'))}); "
            "in-distribution flagged " + ", ".join(
                f"{r['guard_in_flagged'][lev]:.3f} at level {lev} (< 0.10: {_ok(ok)})"
                for lev, ok in r["guard_in_ok"].items())
            + f"; pixel risk bar {_ok(r.get('pixel_risk_ok'))}; "
            f"default family ({r.get('pixel_default')}) width "
            f"{_pct(r.get('pixel_width_vs_constant'))} "
            f"vs constant (<= -25%: {_ok(r.get('pixel_width_ok'))}; narrowest: "
            f"{r.get('pixel_best')}; "
            f"{_pct(r.get('pixel_width_vs_previous_constant'))} vs the Hoeffding-Bentkus "
            "constant band)")
    if res["pool"]["cached"] < res["pool"]["wanted"]:
        lines += ["", f"Partial pool: {res['pool']['cached']} of {res['pool']['wanted']} "
                  "restorations; rerun to complete."]
    if args.quick:
        lines += ["", "Quick run (`--quick`): a tiny pool and few steps to check the benchmark "
                  "end to end; the numbers are not the benchmark's result."]
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", choices=("restore", "analyse", "all"), default="all")
    ap.add_argument("--quick", action="store_true",
                    help=f"tiny pool for an end-to-end check ({QUICK})")
    ap.add_argument("--sources", type=int, default=None,
                    help=f"source images per domain (default {DEFAULTS['sources']})")
    ap.add_argument("--crops", type=int, default=None,
                    help=f"crops per source image (default {DEFAULTS['crops']})")
    ap.add_argument("--crop", type=int, default=None,
                    help=f"crop size, a multiple of 4 (default {DEFAULTS['crop']})")
    ap.add_argument("--short-side", type=int, default=512)
    ap.add_argument("--sampler", default=None,
                    help="solver (default: the deblur/SR default, restoreflow.samplers."
                         "DEFAULT_METHOD; the earlier runs: ddpg with --prior unet)")
    ap.add_argument("--steps", type=int, default=None,
                    help="solver steps (default: the default method's, else the solver's)")
    ap.add_argument("--samples", type=int, default=4, help="J posterior samples (>= 2)")
    ap.add_argument("--prior", default=None,
                    help="prior reference (default: the default prior, ffdnet)")
    ap.add_argument("--splits", type=int, default=None,
                    help=f"splits by source per row (default {DEFAULTS['splits']})")
    ap.add_argument("--cal-sources", type=int, nargs="+", default=None,
                    help=f"calibration source counts (default {DEFAULTS['cal_sources']})")
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--epsilon", type=float, default=0.1, help="RCPS pixel miscoverage")
    ap.add_argument("--delta", type=float, default=0.1, help="RCPS failure probability")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=None,
                    help="stop restoring after this many minutes (resume later)")
    ap.add_argument("--name", default=None, help="results name (default conformal[_quick])")
    args = ap.parse_args()
    base = QUICK if args.quick else DEFAULTS
    for k, v in base.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    from restoreflow.samplers import DEFAULT_METHOD, default_steps

    method = DEFAULT_METHOD["deblur"]
    if method != DEFAULT_METHOD["sr"]:
        raise SystemExit("deblur and SR have different default solvers: pass --sampler")
    args.sampler = args.sampler or method[0]
    if args.steps is None:
        args.steps = 8 if args.quick and args.sampler != "hqs" else (
            method[1] if args.sampler == method[0] else default_steps(args.sampler))
    if args.crop % 4:
        ap.error("--crop must be a multiple of 4 (SR x4)")
    if args.samples < 2:
        ap.error("--samples must be >= 2 (posterior spread features, pixel intervals)")
    name = args.name or ("conformal_quick" if args.quick else "conformal")

    from restoreflow.stages.models import prior_hash

    st = settings(args, prior_hash(args.prior))
    path = cache_path(st)
    items = pool_items(args.sources, args.crops, args.crop, args.short_side, args.seed)
    if args.phase in ("restore", "all"):
        data = run_restore(args, st, path, items)
    else:
        data = load_cache(path, st)
    if args.phase == "restore":
        return
    t0 = time.perf_counter()
    res = run_analyse(args, data, items, path)
    if not res["tasks"]:
        raise SystemExit("nothing to analyse: restore more of the pool first (--phase restore)")
    ids = {it["id"] for it in items}
    cached = sum(1 for r in data["records"].values() if r["id"] in ids)
    res = {"prior": args.prior or "default (ffdnet)", "settings": st, "cache": str(path),
           "pool": {"crops": len(items), "wanted": len(items) * len(TASKS), "cached": cached},
           "analysis": {"alpha": args.alpha, "splits": args.splits,
                        "cal_sources": list(args.cal_sources), "seed": args.seed,
                        "epsilon": args.epsilon, "delta": args.delta,
                        "seconds": time.perf_counter() - t0},
           "quick": args.quick, **res}
    out = write_results(name, _json_safe(res), markdown(res, args))
    print(out.read_text())


if __name__ == "__main__":
    main()
