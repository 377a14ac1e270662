"""Exploration (issue 17, round 3): which per-pixel widening unit ``w`` gives the narrowest
RCPS intervals ``[l - lambda w, u + lambda w]`` with the same guarantee? Reads the J
samples, truths and measurements that ``bench_conformal --phase restore`` keeps beside its
cache (no restoring), so any family can be tried on the benchmark's restorations.

Families (``d = u - l`` the J-sample [5%, 95%] spread, ``G_s`` a Gaussian of s px, ``m``
the image's mean of ``d``): ``constant``; ``local`` (the pipeline's default:
``sqrt(G_4 d * m) + 0.001``); other sigmas and exponents ``G_s d ^ a * m ^ (1 - a)``; the
image mean alone; a 32 px window instead of the image mean; a larger floor; ``local``
times the smoothed gradient magnitude of the posterior mean ^ 0.25 (edges), times the
image's measurement consistency, times the local misfit ``A^T (y - A x_mean)^2`` ^ 0.25;
``c: local`` centred on the posterior mean instead of ``[l, u]``; ``pred``: the image's
RMSE predicted from its no-reference features (``FEATURE_NAMES``, a ridge fit of log RMSE
on half the calibration sources) times ``(G_4 d / m) ^ 0.5``, lambda calibrated on the
other half as the pipeline's fit / calibration folds would (``constant`` and ``local``
calibrated on that half too, for comparison). ``cut to [0, 1]``: the constant and local
intervals cut to the data range, as the pipeline ships them.

Splits by source as bench_conformal: ``--cal`` calibration sources, the rest test; RCPS
``--epsilon``, ``--delta``, ``--bound``, one loss per source. Prints, per task and domain, the mean
width vs the constant band and the test risk of each family.

    python -m benchmarks.explore_pixel_family --cal 48 --splits 100
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.ndimage import gaussian_filter, sobel

from benchmarks.bench_conformal import (
    _curve,
    add_split_args,
    pixel_array_path,
    pool_cache,
    rcps_split,
)
from restoreflow.quality.features import FEATURE_NAMES, feature_vector
from restoreflow.quality.rcps import base_intervals

NAMES = [n for n in FEATURE_NAMES if not n.startswith("rca")]  # as bench_conformal's
GRID = np.concatenate([[0.0], np.geomspace(1e-3, 1e3, 3000)])
FLOOR = 0.001


def _g(a: np.ndarray, s: float) -> np.ndarray:
    return gaussian_filter(a, (0, s, s))


def units(samples: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Every family's unit ``w`` for one restoration, and its base intervals."""
    lo, hi = base_intervals(samples)
    d = hi - lo
    m = float(d.mean())
    gs = {k: np.maximum(_g(d, k), 0) for k in (2, 4, 8, 32)}
    mean = samples.mean(0)
    gm = np.hypot(sobel(mean, 1), sobel(mean, 2)).mean(0, keepdims=True)
    g4 = np.repeat(_g(gm, 4), d.shape[0], 0)
    g4 = g4 / max(float(g4.mean()), 1e-9) + 0.05
    loc = np.sqrt(gs[4] * m) + FLOOR
    return {
        "constant": np.ones_like(d),
        "local": loc,
        "G2 d^0.5 m^0.5": np.sqrt(gs[2] * m) + FLOOR,
        "G8 d^0.5 m^0.5": np.sqrt(gs[8] * m) + FLOOR,
        "G4 d^0.25 m^0.75": gs[4] ** 0.25 * m ** 0.75 + FLOOR,
        "G4 d^0.75 m^0.25": gs[4] ** 0.75 * m ** 0.25 + FLOOR,
        "image mean m": np.full_like(d, m + FLOOR),
        "sqrt(G2 d * G32 d)": np.sqrt(gs[2] * gs[32]) + FLOOR,
        "local + 0.01": loc + 0.01,
        "local * gradient^0.25": loc * g4 ** 0.25,
        "_rel": gs[4] / max(m, 1e-9),  # for ``pred``
    }, lo, hi



def local_misfit(task: str, item_id: str, mean: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``A^T (y - A x_mean)^2 / A^T 1 / sigma^2`` smoothed at 4 px: where the restoration
    explains its measurement worse than the noise."""
    import torch

    from benchmarks.bench_conformal import TASKS
    from restoreflow.degradation import DegradationSpec, make_generator

    spec = DegradationSpec.parse(TASKS[task])
    deg = spec.build(tuple(mean.shape), generator=make_generator(spec, 0, item_id))
    A = deg.operator
    xm = torch.from_numpy(mean[None].astype(np.float32))
    r2 = (torch.from_numpy(y[None]) - A.A(xm)) ** 2
    m = (A.A_adjoint(r2) / A.A_adjoint(torch.ones_like(r2)).clamp_min(1e-6))[0].numpy()
    return _g(m.astype(np.float64), 4) / max(deg.sigma_y, 1e-3) ** 2 + 0.1


def main() -> None:
    ap = argparse.ArgumentParser()
    add_split_args(ap, splits=100)
    ap.add_argument("--min-sources", type=int, default=0)
    args = ap.parse_args()
    path = pool_cache(args.cache)
    recs = json.loads(path.read_text())["records"]
    pdir = path.with_suffix("")
    t0 = time.time()
    groups: dict = {}
    for r in recs.values():
        f = pixel_array_path(pdir, r["task"], r["id"])
        if f.exists():
            groups.setdefault((r["task"], r["domain"]), []).append((r, f))
    print(f"{path.name}: {sum(map(len, groups.values()))} restorations with arrays")
    for (task, dom), rows in sorted(groups.items()):
        fams: dict[str, list] = {}
        base_w, rmse, src, X, keep = [], [], [], [], []
        for r, f in rows:
            z = np.load(f)
            u, lo, hi = units(z["samples"].astype(np.float64))
            t = z["truth"].astype(np.float64)
            err = np.maximum(np.maximum(lo - t, t - hi), 0.0)
            rel = u.pop("_rel")
            u["pred RMSE * (G4 d / m)^0.5"] = rel ** 0.5  # times the predicted RMSE
            mc = float(r["features"]["measurement_consistency"])
            misfit = local_misfit(task, r["id"], z["samples"].mean(0), z["y"])
            u["local * misfit^0.25"] = u["local"] * misfit ** 0.25
            u["local * consistency"] = u["local"] * mc
            errc = np.abs(t - z["samples"].astype(np.float64).mean(0))
            u["c: local"] = u["local"]  # centred: [mean - lambda w, mean + lambda w]
            keep.append((lo, hi, u["local"]))
            for k, w in u.items():
                e = (errc if k.startswith("c:") else err) / w
                fams.setdefault(k, []).append((e, float(w.mean())))
            base_w.append(float((hi - lo).mean()))
            rmse.append(float(np.sqrt(((z["samples"].mean(0) - t) ** 2).mean())))
            src.append(r["source"])
            X.append(feature_vector(r["features"], NAMES))
        sources, codes = np.unique(src, return_inverse=True)
        if sources.size < max(args.cal + 4, args.min_sources):
            print(f"{task} {dom}: {sources.size} sources, skipped")
            continue
        X, lrm, base_w = np.array(X), np.log(np.array(rmse)), np.array(base_w)
        # miscoverage of every record at every lambda (w scaled as is)
        curves = {k: np.array([_curve(e, GRID) for e, _ in v]) for k, v in fams.items()}
        wmean = {k: np.array([m for _, m in v]) for k, v in fams.items()}
        res: dict[str, list] = {}
        rng = np.random.default_rng(0)
        for _ in range(args.splits):
            perm = rng.permutation(sources.size)
            cal_s, test_s = perm[: args.cal], perm[args.cal:]
            cal = np.flatnonzero(np.isin(codes, cal_s))
            test = np.flatnonzero(np.isin(codes, test_s))
            half = np.isin(codes, cal_s[: args.cal // 2])
            fit, cal2 = np.flatnonzero(half & np.isin(codes, cal_s)), np.flatnonzero(
                ~half & np.isin(codes, cal_s))
            # ridge of log RMSE on standardised features, fitted on the fit half
            mu, sd = X[fit].mean(0), X[fit].std(0) + 1e-9
            Z = (X - mu) / sd
            A = np.c_[np.ones(len(fit)), Z[fit]]
            beta = np.linalg.solve(A.T @ A + 1.0 * np.eye(A.shape[1]), A.T @ lrm[fit])
            pred = np.exp(np.c_[np.ones(len(X)), Z] @ beta)
            for k in curves:
                for which, cset in (("", cal), (" (half)", cal2)):
                    isp = k.startswith("pred")
                    if isp and not which:
                        continue
                    if which and k not in ("local", "constant") and not isp:
                        continue
                    scale = pred if isp else np.ones(len(X))
                    # per-record unit multiplies w: e / scale on the same grid
                    L = curves[k] if not isp else np.array(
                        [np.interp(GRID * scale[i], GRID, curves[k][i]) for i in range(len(X))])
                    got = rcps_split(L, codes, cset, test, GRID, args.epsilon, args.delta,
                                     args.bound)
                    if got is None:
                        continue
                    lam, risk = got
                    bw = 0.0 if k.startswith("c:") else base_w[test]
                    width = float((bw + 2 * lam * wmean[k][test] * scale[test]).mean())
                    res.setdefault(k + which, []).append((width, risk))
                    if k in ("constant", "local") and not which:  # cut to [0, 1] as shipped
                        cut = np.mean([np.mean(np.clip(keep[i][1] + lam * keep[i][2]
                                                       ** (k == "local"), 0, 1)
                                               - np.clip(keep[i][0] - lam * keep[i][2]
                                                         ** (k == "local"), 0, 1))
                                       for i in test])
                        res.setdefault(k + " cut to [0, 1]", []).append((cut, risk))
        c = np.mean([w for w, _ in res["constant"]])
        cc = np.mean([w for w, _ in res["constant cut to [0, 1]"]])
        print(f"\n{task} {dom}: {sources.size} sources, {len(rows)} crops; constant width "
              f"{c:.3f} ({cc:.3f} cut to [0, 1]); {args.splits} splits, {args.cal} "
              "calibration sources")
        for k, v in res.items():
            w = np.array(v)
            ref = cc if "cut" in k else c
            print(f"  {k:30s} {w[:, 0].mean() / ref - 1:+7.1%}  risk {w[:, 1].mean():.3f} "
                  f"(<= eps {np.mean(w[:, 1] <= args.epsilon):.0%}; {len(v)} splits)")
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
