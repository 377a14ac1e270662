"""Exploration (issue 28's conformal goal: a gap under 4 dB on photos at 48 sources): do
log-scaled features make the PSNR lower bound tighter?

PSNR is a log of the error energy; the no-reference features are linear energies
(gradient means, high-frequency energies, the samples' pixel std). Feature sets, each
fitted by the full conformal bound (the default) and by split residual conformal, on
bench_conformal's pool (the newest cache, or ``--cache``), the same splits by source as
bench_conformal (``--cal`` calibration sources, every other source tests):

    current     calibrate.feature_names (what the pipeline fits today)
    +log        current plus log10 of the positive energy features
    log         current with those features replaced by their log10

Prints, per task and domain, coverage and mean gap (true - bound) per set and method.
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
    return {"current": d.X, "+log": np.column_stack([d.X, logs]),
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
    a = ap.parse_args(argv)
    path = pool_cache(a.cache)
    data = json.loads(path.read_text())
    names = feature_names(data["settings"]["samples"])
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
        f"{fs} gap (cov)" for fs in ("current", "+log", "log")) + " |",
        "|---|---|---|---|---|---|---|"]
    for task in TASKS:
        for dom in DOMAINS:
            for n_cal in a.cal:
                for method in ("full", "residual"):
                    cells = []
                    for fs in ("current", "+log", "log"):
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


if __name__ == "__main__":
    main()
