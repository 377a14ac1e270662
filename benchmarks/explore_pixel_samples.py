"""Exploration (issue 17): do more posterior samples narrow the local-scale intervals of
deblurred photos? For each deblurred photo crop of bench_conformal's pool (its arrays,
J = 4) restore 4 more samples of the same measurement (restore generator seeded with
``<id>/restore-more``), then compare RCPS intervals from the first 4 samples and from
all 8: constant band and local scale, ``--splits`` source-grouped splits with ``--cal``
calibration sources, epsilon / delta as the benchmark (0.1 / 0.1). The J = 8 arrays are
kept beside the pool's (``<pool>_j8/``) so a rerun only analyses.

    OMP_NUM_THREADS=1 python -m benchmarks.explore_pixel_samples --task deblur --domain photo
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_conformal import (
    LOCAL_FLOOR,
    LOCAL_GRID,
    SAMPLER,
    TASKS,
    _curve,
    add_split_args,
    pixel_array_path,
    pool_cache,
    rcps_split,
)
from restoreflow.quality.rcps import base_intervals, excess, interval_scale
from restoreflow.stages.calibrate import LAMBDA_GRID


def more_samples(prior, rec: dict, st: dict, y: np.ndarray, k: int):
    import torch

    from restoreflow.degradation import DegradationSpec, make_generator, seed_for
    from restoreflow.spec import RestoreOptions
    from restoreflow.stages.restore import restore_image

    task = rec["task"]
    spec = DegradationSpec.parse(TASKS[task])
    x_shape = (3, st["crop"], st["crop"])
    deg = spec.build(x_shape, generator=make_generator(spec, st["seed"], rec["id"]))
    gr = torch.Generator().manual_seed(
        seed_for(spec.hash, st["seed"], f"{rec['id']}/restore-more"))
    return restore_image(prior, deg.operator, torch.from_numpy(y), deg.sigma_y,
                         RestoreOptions(sampler=SAMPLER, steps=st["steps"], posterior_samples=k,
                                        options=dict(st["options"][task])),
                         generator=gr).numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    add_split_args(ap, splits=200)
    ap.add_argument("--task", default="deblur")
    ap.add_argument("--domain", default="photo")
    args = ap.parse_args()
    import torch

    from restoreflow.models.prior import DiffusionPrior

    torch.set_num_threads(1)
    path = pool_cache(args.cache)
    data = json.loads(path.read_text())
    st, recs = data["settings"], data["records"]
    pdir, mdir = path.with_suffix(""), Path(str(path.with_suffix("")) + "_j8")
    mdir.mkdir(exist_ok=True)
    rows = [r for r in recs.values() if r["task"] == args.task and r["domain"] == args.domain
            and pixel_array_path(pdir, r["task"], r["id"]).exists()]
    prior = None  # loaded when some crop still lacks its extra samples
    t0 = time.time()
    out = {"J=4": {}, "J=8": {}}
    src = []
    for i, r in enumerate(rows, 1):
        z = np.load(pixel_array_path(pdir, r["task"], r["id"]))
        f = pixel_array_path(mdir, r["task"], r["id"])
        if f.exists():
            extra = np.load(f)["samples"]
        else:
            if prior is None:
                prior = DiffusionPrior.load(None)
                if prior.model_hash != st["prior_hash"]:
                    raise SystemExit(f"the pool was restored with prior {st['prior_hash']}, "
                                     f"not {prior.model_hash}")
            extra = more_samples(prior, r, st, z["y"], 4)
            np.savez_compressed(f, samples=extra.astype(np.float32))
            print(f"[{i}/{len(rows)}] {r['id']} {time.time() - t0:.0f}s", flush=True)
        t = z["truth"].astype(np.float64)
        for name, s in (("J=4", z["samples"]), ("J=8", np.concatenate([z["samples"], extra]))):
            iv = base_intervals(s.astype(np.float64))
            o = out[name]
            o.setdefault("constant", []).append(_curve(excess(iv, t), LAMBDA_GRID))
            o.setdefault("local", []).append(_curve(excess(iv, t, "local", LOCAL_FLOOR),
                                                   LOCAL_GRID))
            o.setdefault("base", []).append(float((iv.upper - iv.lower).mean()))
            o.setdefault("unit", []).append(float(interval_scale(iv, "local",
                                                                  LOCAL_FLOOR).mean()))
        src.append(r["source"])
    sources, codes = np.unique(src, return_inverse=True)
    rng = np.random.default_rng(0)
    res: dict = {}
    for _ in range(args.splits):
        perm = rng.permutation(sources.size)
        cal = np.flatnonzero(np.isin(codes, perm[: args.cal]))
        test = np.flatnonzero(np.isin(codes, perm[args.cal:]))
        for name, o in out.items():
            for fam, grid in (("constant", LAMBDA_GRID), ("local", LOCAL_GRID)):
                got = rcps_split(np.array(o[fam]), codes, cal, test, grid, args.epsilon,
                                 args.delta, args.bound)
                if got is None:
                    continue
                lam, risk = got
                unit = 1.0 if fam == "constant" else np.array(o["unit"])[test]
                width = float(np.mean(np.array(o["base"])[test] + 2 * lam * unit))
                res.setdefault((name, fam), []).append((width, risk))
    print(f"\n{args.task} {args.domain}: {len(rows)} crops of {sources.size} sources, "
          f"{args.splits} splits, {args.cal} calibration sources, epsilon {args.epsilon}")
    c4 = np.mean([w for w, _ in res[("J=4", "constant")]])
    for (name, fam), v in res.items():
        w = np.array(v)
        own = np.mean([x for x, _ in res[(name, "constant")]])
        print(f"  {name} {fam:9s} width {w[:, 0].mean():.3f} ({w[:, 0].mean() / c4 - 1:+.1%} "
              f"vs J=4 constant; {w[:, 0].mean() / own - 1:+.1%} vs its constant)  "
              f"risk {w[:, 1].mean():.3f}  <= eps {np.mean(w[:, 1] <= args.epsilon):.0%}")
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
