"""Exploration (issue 28's conformal goal: a gap under 4 dB on photos at 48 sources): do
log-scaled features make the PSNR lower bound tighter?

PSNR is a log of the error energy; the no-reference features are linear energies
(gradient means, high-frequency energies, the samples' pixel std). Feature sets, each
fitted by the full conformal bound (the default) and by split residual conformal, on
bench_conformal's pool (the newest cache, or ``--cache``), the same splits by source as
bench_conformal (``--cal`` calibration sources, every other source tests):

    linear      the energies as they are (the calibration's features before this study)
    +log        linear plus log10 of the positive energy features
    log         linear with those features replaced by their log10 (calibrate.feature_names
                since this study)

Prints, per task and domain, coverage and mean gap (true - bound) per set and method.
With ``--shift``: calibrate on ``--cal`` sources of one domain, test on every image of the
other; the bound's coverage (not guaranteed there) on all of them and on those the shift
guard does not flag (p-value > 0.1, its default level), per set and method.
Results: benchmarks/results/explore_conformal_features.md.

    OMP_NUM_THREADS=1 python -m benchmarks.explore_conformal_features --cal 24 48
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks.bench_conformal import DOMAINS, TASKS, Domain, _bound, pool_cache
from benchmarks.common import write_results

ENERGIES = ("grad_mean_xhat", "hf_energy_xhat", "grad_mean_ydagger", "hf_energy_ydagger",
            "pixel_std_mean")


def feature_sets(d: Domain, names: list[str]) -> dict[str, np.ndarray]:
    idx = [names.index(n) for n in ENERGIES if n in names]
    logs = np.log10(np.maximum(d.X[:, idx], 1e-12))
    keep = [i for i in range(len(names)) if i not in idx]
    return {"linear": d.X, "+log": np.column_stack([d.X, logs]),
            "log": np.column_stack([d.X[:, keep], logs])}


def main(argv=None) -> None:
    from restoreflow.stages.calibrate import feature_names

    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--cache", default=None)
    ap.add_argument("--cal", type=int, nargs="+", default=[24, 48])
    ap.add_argument("--splits", type=int, default=100)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--one-crop", action="store_true",
                    help="the first crop of each source only (one image per source, as a "
                         "calibration grouped by image)")
    ap.add_argument("--name", default="explore_conformal_features")
    ap.add_argument("--shift", action="store_true")
    a = ap.parse_args(argv)
    path = pool_cache(a.cache)
    data = json.loads(path.read_text())
    # the calibration's features with the energies unlogged: the sets below log them
    names = [n.removeprefix("log10:") for n in feature_names(data["settings"]["samples"])]
    if a.shift:
        return shift(a, data, path, names)
    rows = []
    for task in TASKS:
        recs = [r for r in data["records"].values() if r["task"] == task
                and (not a.one_crop or r["id"].endswith("/0"))]
        for dom in DOMAINS:
            d = Domain([r for r in recs if r["domain"] == dom], names)
            sets = feature_sets(d, names)
            v = d.v["psnr"]
            for n_cal in a.cal:
                acc: dict = {}
                for s in range(a.splits):
                    cal, test = d.split(n_cal, np.random.default_rng([0, s, n_cal]))
                    for fs, X in sets.items():
                        for method in ("full", "residual"):
                            b = _bound(d, cal, test, "psnr", a.alpha,
                                       np.random.default_rng([0, s, 1]), method, X=X)
                            c, g = acc.setdefault((fs, method), ([], []))
                            c.append(float(np.mean(v[test] >= b)))
                            g.append(float(np.mean(v[test] - b)))
                for (fs, method), (c, g) in acc.items():
                    row = {"task": task, "domain": dom, "cal": n_cal, "features": fs,
                           "method": method, "coverage": float(np.mean(c)),
                           "gap": float(np.mean(g))}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    lines = ["| task | domain | cal sources | method | " + " | ".join(
        f"{fs} gap (cov)" for fs in ("linear", "+log", "log")) + " |",
        "|---|---|---|---|---|---|---|"]
    for task in TASKS:
        for dom in DOMAINS:
            for n_cal in a.cal:
                for method in ("full", "residual"):
                    cells = []
                    for fs in ("linear", "+log", "log"):
                        r = next(x for x in rows if (x["task"], x["domain"], x["cal"],
                                                     x["method"], x["features"])
                                 == (task, dom, n_cal, method, fs))
                        cells.append(f"{r['gap']:.2f} ({r['coverage']:.3f})")
                    lines.append(f"| {task} | {dom} | {n_cal} | {method} | "
                                 + " | ".join(cells) + " |")
    md = (f"# Log-scaled features for the PSNR bound\n\n{__doc__.split(chr(10), 2)[2]}\n"
          f"Pool: `{path.name}`{' (first crop of each source only)' if a.one_crop else ''}; "
          f"{a.splits} splits per row, alpha {a.alpha}. Gap = mean "
          "(true PSNR - bound) over test crops, dB; cov = mean coverage.\n\n"
          + "\n".join(lines))
    print(f"wrote {write_results(a.name, {'rows': rows, 'one_crop': a.one_crop}, md)}")


def shift(a, data: dict, path, names: list[str]) -> None:
    from benchmarks.bench_conformal import _guard
    from restoreflow.quality.conformal import fit_lower_bound

    lines = ["| task | calibrate on | test on | method | linear: all / unflagged | "
             "log: all / unflagged | unflagged share |", "|---|---|---|---|---|---|---|"]
    rows = []
    for task in TASKS:
        recs = [r for r in data["records"].values() if r["task"] == task]
        doms = {dom: Domain([r for r in recs if r["domain"] == dom], names)
                for dom in DOMAINS}
        for ca, te in (("photo", "astro"), ("astro", "photo")):
            da, db = doms[ca], doms[te]
            sa, sb = feature_sets(da, names), feature_sets(db, names)
            acc: dict = {}
            for s in range(a.splits):
                cal, _ = da.split(a.cal[-1], np.random.default_rng([0, s, a.cal[-1]]))
                keep = _guard(da, cal).pvalue(db.G) > 0.1
                acc.setdefault("share", []).append(float(keep.mean()))
                for fs in ("linear", "log"):
                    for method in ("full", "residual"):
                        m = fit_lower_bound(method, sa[fs][cal], da.v["psnr"][cal], a.alpha,
                                            np.random.default_rng([0, s, 1]),
                                            groups=da.src[cal])
                        hit = db.v["psnr"] >= m.bound(sb[fs])
                        acc.setdefault((fs, method), []).append(
                            (float(hit.mean()), float(hit[keep].mean()) if keep.any()
                             else np.nan))
            for method in ("full", "residual"):
                cells = []
                for fs in ("linear", "log"):
                    c = np.array(acc[(fs, method)])
                    cells.append(f"{c[:, 0].mean():.3f} / {np.nanmean(c[:, 1]):.3f}")
                    rows.append({"task": task, "cal": ca, "test": te, "method": method,
                                 "features": fs, "coverage": float(c[:, 0].mean()),
                                 "coverage_unflagged": float(np.nanmean(c[:, 1]))})
                lines.append(f"| {task} | {ca} | {te} | {method} | {' | '.join(cells)} | "
                             f"{np.mean(acc['share']):.3f} |")
            print("\n".join(lines[-2:]), flush=True)
    md = (f"# Log-scaled features under a domain shift\n\n{__doc__.split(chr(10), 2)[2]}\n"
          f"Pool: `{path.name}`; {a.cal[-1]} calibration sources, {a.splits} splits, alpha "
          f"{a.alpha}. Coverage of the PSNR bound on every image of the other domain, and on "
          "those the guard leaves unflagged.\n\n" + "\n".join(lines))
    print(f"wrote {write_results(a.name + '_shift', {'rows': rows}, md)}")


if __name__ == "__main__":
    main()
