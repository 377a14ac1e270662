"""Conformal quality bounds on real restorations: coverage, tightness, feature ablation.

Phase 1 (``--phase restore``, expensive, cached and resumable): a pool of random crops
(``--crop`` px, default 64) of real images, half from the 10 held-out photos
(``corpus.held_out_photos()``, crop k of photo ``i mod 10``) and half from the deep-sky
astronomy images (``corpus.astronomy_images()``; ``--astro-crops`` crops per image, the
images taken in a seeded random order), every image first resized (Lanczos) so its
shorter side is at most ``--short-side`` px (512, as the other benchmarks; a 64 px crop of
a 5120 px wallpaper is a flat patch). Crop positions are seeded per crop, so a pool of
n crops is the first n crops of any larger pool. Each crop is degraded with

    deblur   gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)
    sr       sr(factor=4,kernel=bicubic)+gaussian_noise(sigma=0.01)

(``DegradationSpec.parse(...).build`` and ``.apply`` with
``make_generator(spec, seed, crop id)``, as the pipeline's ``simulate``) and restored once
with DDPG (``restore_image``, its default options for the task, ``--steps`` UNet
evaluations, ``--samples`` J posterior samples, restore generator seeded as
``restore_stored`` does). Per restoration the cache keeps the true PSNR / SSIM of the
posterior mean ``x_hat`` (``restoreflow.quality.metrics``), every no-reference feature
as ``restore_stored`` computes it (``compute_features(A, x_hat, y, max(sigma_y, 1e-3),
samples=samples)``) and the per-pixel miscoverage curve ``L(lambda)`` of the J-sample
[5%, 95%] intervals on the pipeline's lambda grid. The cache is one JSON file under
``benchmarks/results/tmp/``, named by a hash of everything that determines a record
(crop, resize, seed, steps, samples, sampler options, prior hash); it is rewritten after
every restoration, so an interrupted run resumes where it stopped (``--time-limit``
stops a session cleanly after that many minutes).

Phase 2 (``--phase analyse``, cheap): per degradation and domain (photos, astronomy,
mixed), ``--splits`` random calibration/test splits of the pool (``--cal-fraction`` of
the crops calibrate; ``np.random.default_rng([seed, split])``). On the calibration part:
``ConformalLowerBound.fit`` (methods ``residual`` and ``cqr``, its own random fit/cal
fold split, the features of ``pipeline.feature_names(J)``) and the trivial bound
``TrivialLowerBound.fit`` (a constant order statistic of the calibration PSNRs). On the
test part: empirical coverage ``mean(psnr_true >= bound)`` (mean over splits and its 5th
percentile) and the mean gap ``psnr_true - bound`` in dB (smaller = tighter). Feature
ablation: the same splits (and the same inner fit/cal folds) with one feature group
dropped (consistency; posterior spread; image statistics), with one group alone, and
with each single feature dropped; reported as the change of the mean gap against all
features (positive = the dropped features tightened the bound). Also: SSIM bounds, a
split by source image (no test crop shares a source image with calibration; not covered
by the exchangeability guarantee, a robustness check) and the RCPS per-pixel intervals
(lambda calibrated with ``calibrate_lambda`` at ``--epsilon``/``--delta``; test
miscoverage at that lambda).

Bars (issue): at alpha = 0.1, mean coverage in [1 - alpha - 0.03, 1] on real
restorations; feature-based bounds tighter (smaller mean gap) than the trivial bound.

    OMP_NUM_THREADS=1 python -m benchmarks.bench_conformal --quick        # ~2-3 min
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

TASKS: dict[str, str] = {
    "deblur": "gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)",
    "sr": "sr(factor=4,kernel=bicubic)+gaussian_noise(sigma=0.01)",
}
DOMAINS = ("photo", "astro", "mixed")
METHODS = ("residual", "cqr")
SAMPLER = "ddpg"
CACHE_DIR = RESULTS / "tmp"
# feature groups of pipeline.feature_names(J >= 2)
GROUPS: dict[str, tuple[str, ...]] = {
    "consistency": ("measurement_consistency",),
    "spread": ("pixel_std_mean", "pairwise_psnr_mean"),
    "image_stats": ("grad_mean_xhat", "hf_energy_xhat", "grad_mean_ydagger",
                    "hf_energy_ydagger", "noise_sigma_y"),
}
QUICK = dict(pool_size=24, crop=64, steps=8, cal_fraction=0.75, splits=100)
DEFAULTS = dict(pool_size=200, crop=64, steps=25, cal_fraction=0.5, splits=200)


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


# --- pool --------------------------------------------------------------------------------


def pool_items(n: int, crop: int, short_side: int, astro_crops: int, seed: int) -> list[dict]:
    """The first n crops, photos and astronomy images alternating (so any prefix of the
    restoration order is balanced). Each item: id, domain, source, path, k."""
    from restoreflow.models import corpus

    photos = corpus.held_out_photos()
    astro = corpus.astronomy_images()
    order = np.random.default_rng(_seed("astro-order", seed)).permutation(len(astro))
    n_photo = n // 2
    n_astro = n - n_photo
    ph = [{"domain": "photo", "path": photos[i % len(photos)], "k": i // len(photos)}
          for i in range(n_photo)]
    ast = [{"domain": "astro", "path": astro[order[i // astro_crops]], "k": i % astro_crops}
           for i in range(n_astro)]
    items = []
    for i in range(max(n_photo, n_astro)):
        items += [lst[i] for lst in (ph, ast) if i < len(lst)]
    for it in items:
        it["source"] = it["path"].name
        it["id"] = f"{it['domain']}/{it['source']}/c{crop}s{short_side}/{it['k']}"
    return items


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
    from restoreflow.stages.restore import default_options

    opts = {}
    for task, text in TASKS.items():
        spec = DegradationSpec.parse(text)
        opts[task] = default_options(SAMPLER, task, spec.sigma_y)
    return {"crop": args.crop, "short_side": args.short_side, "seed": args.seed,
            "steps": args.steps, "samples": args.samples, "sampler": SAMPLER,
            "astro_crops": args.astro_crops, "options": opts, "tasks": TASKS,
            "prior_hash": prior_hash}


def cache_path(st: dict) -> Path:
    key = hashlib.sha256(json.dumps(st, sort_keys=True).encode()).hexdigest()[:12]
    return CACHE_DIR / f"conformal_pool_{key}.json"


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


# --- phase 1: restore ---------------------------------------------------------------------


def restore_record(prior, item: dict, task: str, x, st: dict) -> dict:
    import torch

    from restoreflow.degradation import DegradationSpec, make_generator, seed_for
    from restoreflow.quality.features import compute_features
    from restoreflow.quality.metrics import psnr, ssim
    from restoreflow.quality.rcps import base_intervals, excess
    from restoreflow.stages.calibrate import LAMBDA_GRID
    from restoreflow.stages.restore import restore_image

    spec = DegradationSpec.parse(TASKS[task])
    g = make_generator(spec, st["seed"], item["id"])
    deg = spec.build(tuple(x.shape), generator=g)
    y = deg.apply(x[None], g)[0].float()
    gr = torch.Generator().manual_seed(seed_for(spec.hash, st["seed"], f"{item['id']}/restore"))
    t0 = time.perf_counter()
    samples = restore_image(prior, deg.operator, y, deg.sigma_y, sampler=SAMPLER,
                            steps=st["steps"], generator=gr, num_samples=st["samples"],
                            options=dict(st["options"][task]))
    seconds = time.perf_counter() - t0
    x_hat = samples.mean(0)
    feats = compute_features(deg.operator, x_hat, y, max(deg.sigma_y, 1e-3),
                             samples=samples if st["samples"] >= 2 else None)
    truth = x.clamp(0, 1).double().numpy()
    rec = {"id": item["id"], "task": task, "domain": item["domain"], "source": item["source"],
           "psnr": psnr(x_hat, truth), "ssim": ssim(x_hat, truth), "features": feats,
           "seconds": seconds}
    if st["samples"] >= 2:
        e = np.sort(excess(base_intervals(samples.numpy()), truth).ravel())
        loss = 1.0 - np.searchsorted(e, LAMBDA_GRID, side="right") / e.size
        rec["pixel_loss"] = [round(float(v), 6) for v in loss]
    return rec


def run_restore(args, st: dict, path: Path, items: list[dict]) -> dict:
    from restoreflow.models.prior import DiffusionPrior

    data = load_cache(path, st)
    todo = [(it, t) for it in items for t in TASKS if f"{t}/{it['id']}" not in data["records"]]
    have = len(items) * len(TASKS) - len(todo)
    print(f"pool: {len(items)} crops x {len(TASKS)} degradations; {have} cached in {path}, "
          f"{len(todo)} to restore", flush=True)
    if not todo:
        return data
    prior = DiffusionPrior.load(args.prior)
    if prior.model_hash != st["prior_hash"]:
        raise RuntimeError(f"prior changed while starting ({prior.model_hash} != "
                           f"{st['prior_hash']}); pass a fixed snapshot with --prior")
    t_start = time.perf_counter()
    for i, (it, task) in enumerate(todo, 1):
        x = load_crop(it, args.crop, args.short_side, args.seed)
        rec = restore_record(prior, it, task, x, st)
        data["records"][f"{task}/{it['id']}"] = rec
        save_cache(path, data)
        el = time.perf_counter() - t_start
        eta = el / i * (len(todo) - i)
        print(f"[{have + i}/{len(items) * len(TASKS)}] {task:6s} {it['id']:60s} "
              f"PSNR {rec['psnr']:6.2f} dB  {rec['seconds']:5.1f}s  elapsed {_fmt_time(el)}  "
              f"ETA {_fmt_time(eta)}", flush=True)
        if args.time_limit and el > 60 * args.time_limit and i < len(todo):
            print(f"time limit reached: {len(todo) - i} restorations left; rerun to resume",
                  flush=True)
            break
    return data


# --- phase 2: analyse ------------------------------------------------------------------------


def configs(names: list[str]) -> dict[str, list[int]]:
    """Feature subsets (column indices into ``names``) for the ablation."""
    idx = {n: i for i, n in enumerate(names)}
    out = {"all": list(range(len(names)))}
    for g, members in GROUPS.items():
        keep = [idx[n] for n in names if n not in members]
        alone = [idx[n] for n in names if n in members]
        if alone and keep:
            out[f"-{g}"] = keep
            out[f"only {g}"] = alone
    for n in names:
        out[f"-{n}"] = [idx[m] for m in names if m != n]
    return out


def _bound(X, v, Xt, alpha, rng, method) -> np.ndarray:
    from restoreflow.quality.conformal import ConformalLowerBound

    try:
        m = ConformalLowerBound.fit(X, v, alpha, rng, method=method)
    except ValueError:  # calibration fold too small for a finite quantile
        return np.full(Xt.shape[0], -math.inf)
    return m.bound(Xt)


def _stats(cov: list[float], gap: list[float]) -> dict:
    c, g = np.array(cov), np.array(gap)
    return {"coverage_mean": float(c.mean()), "coverage_p5": float(np.percentile(c, 5)),
            "coverage_min": float(c.min()),
            "gap_mean": float(g.mean()) if np.isfinite(g).all() else math.inf,
            "gap_median": float(np.median(g)),
            "infinite_bounds": int((~np.isfinite(g)).sum())}


def analyse_set(recs: list[dict], names: list[str], args, ablation: bool) -> dict:
    from restoreflow.quality.conformal import TrivialLowerBound
    from restoreflow.quality.features import feature_vector
    from restoreflow.quality.rcps import RiskControlError, calibrate_lambda
    from restoreflow.stages.calibrate import LAMBDA_GRID

    X = np.stack([feature_vector(r["features"], names) for r in recs])
    targets = {"psnr": np.array([r["psnr"] for r in recs]),
               "ssim": np.array([r["ssim"] for r in recs])}
    n = len(recs)
    n_cal = int(round(args.cal_fraction * n))
    cfgs = configs(names) if ablation else {"all": list(range(len(names)))}
    acc: dict = {}

    def add(key, cov, gap):
        c, g = acc.setdefault(key, ([], []))
        c.append(cov)
        g.append(gap)

    pix = {"lam": [], "test_risk": [], "fail": 0}
    L = np.array([r["pixel_loss"] for r in recs]) if "pixel_loss" in recs[0] else None
    for s in range(args.splits):
        perm = np.random.default_rng([args.seed, s]).permutation(n)
        cal, test = perm[:n_cal], perm[n_cal:]
        for target, v in targets.items():
            vt = v[test]
            tb = TrivialLowerBound.fit(v[cal], args.alpha).value
            add((target, "trivial", "-"), float(np.mean(vt >= tb)), float(np.mean(vt - tb)))
            for method in METHODS:
                for cname, cols in cfgs.items() if target == "psnr" else [("all", cfgs["all"])]:
                    rng = np.random.default_rng([args.seed, s, 1])  # same folds for all
                    b = _bound(X[cal][:, cols], v[cal], X[test][:, cols], args.alpha, rng,
                               method)
                    add((target, method, cname), float(np.mean(vt >= b)), float(np.mean(vt - b)))
        if L is not None:
            try:
                lam = calibrate_lambda(L[cal], LAMBDA_GRID, args.epsilon, args.delta)
                j = int(np.flatnonzero(LAMBDA_GRID == lam)[0])
                pix["lam"].append(lam)
                pix["test_risk"].append(float(L[test, j].mean()))
            except RiskControlError:
                pix["fail"] += 1
    out: dict = {"n": n, "n_cal": n_cal, "n_test": n - n_cal,
                 "n_cal_fold": n_cal - int(round(0.5 * n_cal)), "bounds": {}}
    for (target, method, cname), (cov, gap) in acc.items():
        out["bounds"].setdefault(target, {}).setdefault(method, {})[cname] = _stats(cov, gap)
    for target in targets:
        b = out["bounds"][target]
        tr = b["trivial"]["-"]["gap_mean"]
        for method in METHODS:
            for st in b[method].values():
                st["gap_vs_trivial"] = st["gap_mean"] - tr
                st["gap_vs_all"] = st["gap_mean"] - b[method]["all"]["gap_mean"]
    if L is not None:
        r = np.array(pix["test_risk"])
        out["pixel"] = {"epsilon": args.epsilon, "delta": args.delta, "failures": pix["fail"],
                        "lam_mean": float(np.mean(pix["lam"])) if pix["lam"] else None,
                        "test_risk_mean": float(r.mean()) if r.size else None,
                        "frac_test_risk_le_eps": float(np.mean(r <= args.epsilon))
                        if r.size else None}
    return out


def analyse_by_source(recs: list[dict], names: list[str], args) -> dict:
    """Mixed domain, all features: calibration and test crops from disjoint source images
    (``--cal-fraction`` of the source images calibrate)."""
    from restoreflow.quality.conformal import TrivialLowerBound
    from restoreflow.quality.features import feature_vector

    X = np.stack([feature_vector(r["features"], names) for r in recs])
    v = np.array([r["psnr"] for r in recs])
    src = np.array([f"{r['domain']}/{r['source']}" for r in recs])
    uniq = np.unique(src)
    acc: dict = {k: ([], []) for k in ("trivial", *METHODS)}
    for s in range(args.splits):
        perm = np.random.default_rng([args.seed, s, 2]).permutation(uniq.size)
        cal_src = set(uniq[perm[: int(round(args.cal_fraction * uniq.size))]])
        is_cal = np.array([x in cal_src for x in src])
        cal, test = np.flatnonzero(is_cal), np.flatnonzero(~is_cal)
        if cal.size < 4 or test.size == 0:
            continue
        vt = v[test]
        tb = TrivialLowerBound.fit(v[cal], args.alpha).value
        acc["trivial"][0].append(float(np.mean(vt >= tb)))
        acc["trivial"][1].append(float(np.mean(vt - tb)))
        for method in METHODS:
            b = _bound(X[cal], v[cal], X[test], args.alpha,
                       np.random.default_rng([args.seed, s, 1]), method)
            acc[method][0].append(float(np.mean(vt >= b)))
            acc[method][1].append(float(np.mean(vt - b)))
    return {"sources": int(uniq.size),
            **{k: _stats(c, g) for k, (c, g) in acc.items() if c}}


def run_analyse(args, data: dict, items: list[dict]) -> dict:
    from restoreflow.stages.calibrate import feature_names

    names = feature_names(args.samples)
    res: dict = {"feature_names": names, "groups": {k: list(v) for k, v in GROUPS.items()},
                 "tasks": {}}
    ids = {it["id"] for it in items}
    for task in TASKS:
        recs = [r for k, r in data["records"].items()
                if r["task"] == task and r["id"] in ids]
        if len(recs) < 8:
            print(f"{task}: only {len(recs)} restorations cached; skipped", flush=True)
            continue
        t0 = time.perf_counter()
        tr: dict = {"pool": {}, "domains": {}}
        for dom in DOMAINS:
            sub = [r for r in recs if dom == "mixed" or r["domain"] == dom]
            if len(sub) < 8:
                continue
            p = np.array([r["psnr"] for r in sub])
            tr["pool"][dom] = {"n": len(sub), "psnr_mean": float(p.mean()),
                               "psnr_std": float(p.std()), "psnr_min": float(p.min()),
                               "psnr_max": float(p.max()),
                               "ssim_mean": float(np.mean([r["ssim"] for r in sub])),
                               "seconds_mean": float(np.mean([r["seconds"] for r in sub]))}
            tr["domains"][dom] = analyse_set(sub, names, args, ablation=True)
        tr["by_source"] = analyse_by_source(recs, names, args)
        res["tasks"][task] = tr
        print(f"{task}: analysed {len(recs)} restorations in "
              f"{time.perf_counter() - t0:.0f}s", flush=True)
    res["bars"] = bars(res, args.alpha)
    return res


def bars(res: dict, alpha: float) -> dict:
    lo = 1 - alpha - 0.03
    rows = []
    for task, tr in res["tasks"].items():
        for dom, d in tr["domains"].items():
            b = d["bounds"]["psnr"]
            for method in METHODS:
                st = b[method]["all"]
                vacuous = st["infinite_bounds"] > 0
                rows.append({"task": task, "domain": dom, "method": method,
                             "coverage": st["coverage_mean"], "vacuous": vacuous,
                             "coverage_ok": not vacuous and lo <= st["coverage_mean"] <= 1.0,
                             "gap": st["gap_mean"], "trivial_gap": b["trivial"]["-"]["gap_mean"],
                             "tighter": st["gap_mean"] < b["trivial"]["-"]["gap_mean"]})
    return {"coverage_range": [lo, 1.0], "rows": rows,
            "coverage_ok_rows": sum(r["coverage_ok"] for r in rows),
            "tighter_rows": sum(r["tighter"] for r in rows), "n_rows": len(rows),
            "coverage_all_ok": all(r["coverage_ok"] for r in rows),
            "tighter_all": all(r["tighter"] for r in rows)}


# --- report ---------------------------------------------------------------------------------


def _f(x, nd=2, signed=False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:+.{nd}f}" if signed else f"{x:.{nd}f}"


def markdown(res: dict, args) -> str:
    st = res["settings"]
    a = args.alpha
    lines = [
        f"Prior `{res['prior']}` (hash {st['prior_hash'][:12]}); DDPG, {st['steps']} steps, "
        f"J = {st['samples']} posterior samples, default options per task; "
        f"{st['crop']} px random crops (images resized to a shorter side <= "
        f"{st['short_side']} px); pool: {res['pool']['crops']} crops per degradation "
        f"(half held-out photos, half astronomy, {st['astro_crops']} crops per astronomy "
        f"image), {res['pool']['cached']} of {res['pool']['wanted']} restorations cached. "
        f"alpha = {a}; {args.splits} random calibration/test splits, "
        f"{args.cal_fraction:.0%} calibration (of which half fits the predictor, half "
        f"calibrates the quantile); features: {', '.join(res['feature_names'])}.",
        "",
        "Degradations: " + "; ".join(f"{k} = `{v}`" for k, v in TASKS.items()) + ".",
        "",
        "## Pool (true quality of the posterior mean)",
        "",
        "| task | domain | n | PSNR mean | std | min | max | SSIM mean | s/restoration |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, tr in res["tasks"].items():
        for dom, p in tr["pool"].items():
            lines.append(f"| {task} | {dom} | {p['n']} | {p['psnr_mean']:.2f} | "
                         f"{p['psnr_std']:.2f} | {p['psnr_min']:.2f} | {p['psnr_max']:.2f} | "
                         f"{p['ssim_mean']:.3f} | {p['seconds_mean']:.1f} |")
    for target, unit in (("psnr", "dB"), ("ssim", "")):
        lines += [
            "",
            f"## {target.upper()} lower bound: coverage and gap (true - bound"
            + (f", {unit})" if unit else ")"),
            "",
            f"Coverage = fraction of test images with true {target.upper()} >= bound, mean "
            f"over splits (5th percentile over splits); target >= {1 - a:.2f}"
            + (f", bar [{1 - a - 0.03:.2f}, 1]" if target == "psnr" else "")
            + ". Gap = mean over splits of the mean test gap; trivial = constant "
            "order statistic of the calibration values.",
            "",
            "| task | domain | n cal / test (cal fold) | bound | coverage (p5) | gap | "
            "gap - trivial |",
            "|---|---|---|---|---|---|---|",
        ]
        nd = 2 if target == "psnr" else 3
        for task, tr in res["tasks"].items():
            for dom, d in tr["domains"].items():
                b = d["bounds"][target]
                size = f"{d['n_cal']} / {d['n_test']} ({d['n_cal_fold']})"
                for method in ("trivial", *METHODS):
                    s = b[method]["-" if method == "trivial" else "all"]
                    lines.append(
                        f"| {task} | {dom} | {size} | {method} | {s['coverage_mean']:.3f} "
                        f"({s['coverage_p5']:.3f}) | {_f(s['gap_mean'], nd)} | "
                        + ("-" if method == "trivial" else _f(s["gap_vs_trivial"], nd, True))
                        + " |")
    # ablation
    for method in METHODS:
        cols = [(t, dm) for t, tr in res["tasks"].items() for dm in tr["domains"]]
        if not cols:
            break
        first = res["tasks"][cols[0][0]]["domains"][cols[0][1]]["bounds"]["psnr"][method]
        lines += [
            "",
            f"## Feature ablation ({method}): change of the mean PSNR gap (dB) against all "
            "features",
            "",
            "Positive = the bound is looser without those features (they tighten it). Same "
            "splits and folds for every subset. First row: the gap with all features.",
            "",
            "| features | " + " | ".join(f"{t} {dm}" for t, dm in cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        for cname in first:
            cells = []
            for t, dm in cols:
                s = res["tasks"][t]["domains"][dm]["bounds"]["psnr"][method][cname]
                cells.append(_f(s["gap_mean"]) if cname == "all"
                             else _f(s["gap_vs_all"], 2, True))
            lines.append(f"| {cname} | " + " | ".join(cells) + " |")
        lines.append("| trivial (no features) | " + " | ".join(
            _f(-res["tasks"][t]["domains"][dm]["bounds"]["psnr"][method]["all"]
               ["gap_vs_trivial"], 2, True) for t, dm in cols) + " |")
    lines += [
        "",
        "## Split by source image (mixed domain, all features)",
        "",
        "No test crop shares a source image with the calibration crops (outside the "
        "exchangeability assumption: a robustness check, no bar).",
        "",
        "| task | sources | bound | coverage (p5) | gap (dB) |",
        "|---|---|---|---|---|",
    ]
    for task, tr in res["tasks"].items():
        bs = tr["by_source"]
        for k in ("trivial", *METHODS):
            if k in bs:
                lines.append(f"| {task} | {bs['sources']} | {k} | {bs[k]['coverage_mean']:.3f} "
                             f"({bs[k]['coverage_p5']:.3f}) | {_f(bs[k]['gap_mean'])} |")
    lines += [
        "",
        f"## Per-pixel intervals (RCPS, epsilon = {args.epsilon}, delta = {args.delta})",
        "",
        "J-sample [5%, 95%] intervals widened by lambda (calibrated on the calibration "
        "part); test risk = mean fraction of test pixels outside their interval. The "
        "guarantee is P(risk <= epsilon) >= 1 - delta; the fraction of splits with test "
        "risk <= epsilon is a noisy proxy (the test risk is itself an estimate).",
        "",
        "| task | domain | lambda mean | test risk mean | splits with test risk <= eps | "
        "no lambda |",
        "|---|---|---|---|---|---|",
    ]
    for task, tr in res["tasks"].items():
        for dom, d in tr["domains"].items():
            p = d.get("pixel")
            if p:
                lines.append(f"| {task} | {dom} | {_f(p['lam_mean'], 3)} | "
                             f"{_f(p['test_risk_mean'], 4)} | "
                             f"{_f(p['frac_test_risk_le_eps'], 3)} | {p['failures']} |")
    b = res["bars"]
    lines += ["", "## Bars", ""]
    lo = b["coverage_range"][0]
    for r in b["rows"]:
        lines.append(
            f"- {r['task']} {r['domain']} {r['method']}: coverage {r['coverage']:.3f} "
            + ("(vacuous: infinite bounds, calibration fold too small: FAIL)" if r["vacuous"]
               else f"{'in' if r['coverage_ok'] else 'NOT in'} [{lo:.2f}, 1] "
               f"({'pass' if r['coverage_ok'] else 'FAIL'})")
            + f"; gap {_f(r['gap'])} dB vs trivial "
            f"{_f(r['trivial_gap'])} dB "
            f"({'tighter: pass' if r['tighter'] else 'not tighter: FAIL'})")
    lines += ["", f"Coverage bar met in {b['coverage_ok_rows']} of {b['n_rows']} rows "
              f"({'PASS' if b['coverage_all_ok'] else 'FAIL'}); tightness bar met in "
              f"{b['tighter_rows']} of {b['n_rows']} rows "
              f"({'PASS' if b['tighter_all'] else 'FAIL'})."]
    if res["pool"]["cached"] < res["pool"]["wanted"]:
        lines += ["", f"Partial pool: {res['pool']['cached']} of {res['pool']['wanted']} "
                  "restorations; rerun to complete."]
    if args.quick:
        lines += ["", "Quick run (`--quick`): a tiny pool and few steps to check the benchmark "
                  "end to end; the numbers are not the benchmark's result (calibration folds "
                  "this small give infinite bounds, shown as inf, in the single domains)."]
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", choices=("restore", "analyse", "all"), default="all")
    ap.add_argument("--quick", action="store_true",
                    help=f"tiny pool for an end-to-end check ({QUICK})")
    ap.add_argument("--pool-size", type=int, default=None,
                    help=f"crops per degradation (default {DEFAULTS['pool_size']})")
    ap.add_argument("--crop", type=int, default=None,
                    help=f"crop size, a multiple of 4 (default {DEFAULTS['crop']})")
    ap.add_argument("--short-side", type=int, default=512)
    ap.add_argument("--astro-crops", type=int, default=2, help="crops per astronomy image")
    ap.add_argument("--steps", type=int, default=None,
                    help=f"DDPG steps (default {DEFAULTS['steps']})")
    ap.add_argument("--samples", type=int, default=4, help="J posterior samples (>= 2)")
    ap.add_argument("--prior", default=None, help="diffusers dir (default: shipped prior)")
    ap.add_argument("--splits", type=int, default=None,
                    help=f"random calibration/test splits (default {DEFAULTS['splits']})")
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--cal-fraction", type=float, default=None,
                    help=f"calibration share of each split (default {DEFAULTS['cal_fraction']})")
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
    if args.crop % 4:
        ap.error("--crop must be a multiple of 4 (SR x4)")
    if args.samples < 2:
        ap.error("--samples must be >= 2 (posterior spread features, pixel intervals)")
    name = args.name or ("conformal_quick" if args.quick else "conformal")

    from restoreflow.stages.models import prior_hash

    st = settings(args, prior_hash(args.prior))
    path = cache_path(st)
    items = pool_items(args.pool_size, args.crop, args.short_side, args.astro_crops, args.seed)
    if args.phase in ("restore", "all"):
        data = run_restore(args, st, path, items)
    else:
        data = load_cache(path, st)
    if args.phase == "restore":
        return
    t0 = time.perf_counter()
    res = run_analyse(args, data, items)
    if not res["tasks"]:
        raise SystemExit("nothing to analyse: restore more of the pool first (--phase restore)")
    ids = {it["id"] for it in items}
    cached = sum(1 for r in data["records"].values() if r["id"] in ids)
    res = {"prior": args.prior or "default", "settings": st, "cache": str(path),
           "pool": {"crops": len(items), "wanted": len(items) * len(TASKS), "cached": cached},
           "analysis": {"alpha": args.alpha, "splits": args.splits,
                        "cal_fraction": args.cal_fraction, "seed": args.seed,
                        "epsilon": args.epsilon, "delta": args.delta,
                        "seconds": time.perf_counter() - t0},
           "quick": args.quick, **res}
    out = write_results(name, _json_safe(res), markdown(res, args))
    print(out.read_text())


if __name__ == "__main__":
    main()
