"""Exploration (issue 17): which per-pixel scale narrows the RCPS intervals most?
30 photo and 30 astronomy sources of bench_conformal's pool (first crop each), DDPG 25
steps, J = 4; families: constant band; spread w = u - l + 0.02; the spread smoothed
(Gaussian sigma 1 and 2 px, 3x3 maximum, channel-mean Gaussian; + 0.02); and, second
round, with a floor of 0.001: the image's mean spread as a per-image constant, the spread
smoothed at 4 px, and their geometric mean (the ``local`` scale the pipeline adopted).
100 random splits 20 calibrate / 10 test, epsilon 0.2 (20 images cannot certify 0.1),
delta 0.1. Prints mean width (and vs constant) and test risk per family.
Results: benchmarks/results/explore_pixel_scale.md.

    OMP_NUM_THREADS=1 python -m benchmarks.explore_pixel_scale
"""

import time

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, maximum_filter

from benchmarks.bench_conformal import SAMPLER, SPREAD_GRID, TASKS, load_crop, pool_items
from restoreflow.degradation import DegradationSpec, make_generator, seed_for
from restoreflow.models.prior import DiffusionPrior
from restoreflow.quality.rcps import (
    DEFAULT_FLOORS,
    Intervals,
    base_intervals,
    calibrate_lambda,
    interval_scale,
)
from restoreflow.samplers import resolve_options
from restoreflow.spec import RestoreOptions
from restoreflow.stages.calibrate import LAMBDA_GRID, local_grid
from restoreflow.stages.restore import restore_image

torch.set_num_threads(1)
items = [it for it in pool_items(120, 2, 64, 512, 0) if it["k"] == 0]
ph = [it for it in items if it["domain"] == "photo"][:30]
ast = [it for it in items if it["domain"] == "astro"][:30]
prior = DiffusionPrior.load(None)
F = 0.02  # floor of the first round
F2 = DEFAULT_FLOORS["local"]  # floor of the second round (the local scale's default)
LOCAL_GRID = local_grid(F2)
FAM = {  # family: (w from the spread d = u - l, lambda grid)
    "constant": (None, LAMBDA_GRID),
    "spread": (lambda d: d + F, SPREAD_GRID),
    "gauss1": (lambda d: gaussian_filter(d, (0, 1, 1)) + F, SPREAD_GRID),
    "gauss2": (lambda d: gaussian_filter(d, (0, 2, 2)) + F, SPREAD_GRID),
    "max3": (lambda d: maximum_filter(d, (1, 3, 3)) + F, SPREAD_GRID),
    "gauss1_chan": (lambda d: np.repeat(gaussian_filter(d.mean(0, keepdims=True), (0, 1, 1)),
                                        d.shape[0], 0) + F, SPREAD_GRID),
    "image mean": (lambda d: np.full_like(d, d.mean()) + F2, LOCAL_GRID),
    "gauss4": (lambda d: gaussian_filter(d, (0, 4, 4)) + F2, LOCAL_GRID),
    "local": (lambda d: interval_scale(Intervals(np.zeros_like(d), d), "local", F2),
              LOCAL_GRID),
}
res = {}
t0 = time.time()
for task in TASKS:
    spec = DegradationSpec.parse(TASKS[task])
    opts = resolve_options(SAMPLER, task, spec.sigma_y)
    for dom, its in (("photo", ph), ("astro", ast)):
        curves = {f: [] for f in FAM}
        bw = {f: [] for f in FAM}
        for it in its:
            x = load_crop(it, 64, 512, 0)
            g = make_generator(spec, 0, it["id"])
            deg = spec.build(tuple(x.shape), generator=g)
            y = deg.apply(x[None], g)[0].float()
            gr = torch.Generator().manual_seed(seed_for(spec.hash, 0, f"{it['id']}/restore"))
            s = restore_image(prior, deg.operator, y, deg.sigma_y,
                              RestoreOptions(sampler=SAMPLER, steps=25, posterior_samples=4,
                                             options=dict(opts)),
                              generator=gr).numpy()
            lo, hi = base_intervals(s)
            t = x.clamp(0, 1).double().numpy()
            e0 = np.maximum(lo - t, t - hi)
            for f, (fn, grid) in FAM.items():
                w = np.ones_like(lo) if fn is None else fn(hi - lo)
                e = np.sort((e0 / w).ravel())
                curves[f].append(1 - np.searchsorted(e, grid, side="right") / e.size)
                # width at lambda j: mean(hi-lo) + 2*lam*mean(w)
                bw[f].append((float((hi - lo).mean()), float(w.mean())))
        n = len(its)
        out = {}
        for f in FAM:
            L = np.array(curves[f])
            grid = FAM[f][1]
            W = np.array(bw[f])
            ws = []
            rs = []
            for sp in range(100):
                perm = np.random.default_rng([sp]).permutation(n)
                cal, test = perm[:20], perm[20:]
                lam = calibrate_lambda(L[cal], grid, 0.2, 0.1)
                j = int(np.flatnonzero(grid == lam)[0])
                ws.append(np.mean(W[test, 0] + 2 * lam * W[test, 1]))
                rs.append(L[test, j].mean())
            out[f] = (round(float(np.mean(ws)), 4), round(float(np.mean(rs)), 4))
        c = out["constant"][0]
        print(
            task,
            dom,
            {f: (v[0], f"{100 * (v[0] / c - 1):+.1f}%", v[1]) for f, v in out.items()},
            f"{time.time() - t0:.0f}s",
            flush=True,
        )
