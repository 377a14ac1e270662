"""Do posterior samples say where a restoration is wrong? Spread-error rank correlation of
J samples, per pixel and per image, for solvers on the denoiser prior and on the UNet.

For each image: J samples x_1..x_J (``restore_image(num_samples=J)``), the restoration
``m = mean_j x_j``, the per-pixel spread ``s = std_j x_j`` (mean over channels) and error
``e = |m - x|`` (mean over channels). Reported:

- per pixel: Spearman's rho between s and e over the pixels of each image, averaged over
  images (how well the spread map tracks the error map: what the per-pixel intervals use);
- per image: Spearman's rho between the mean spread and the RMSE over images (what the
  features of the PSNR bound use);
- distinct: the share of images whose J samples all differ (max |x_i - x_j| > 1e-4).

Images: the benchmark's held-out photos and astronomy images (bench_denoiser_prior), 128 px.

    python -m benchmarks.bench_posterior_spread
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from benchmarks.bench_denoiser_prior import TASKS, bench_images, degrade
from benchmarks.common import write_results

METHODS = [("ffdnet", "hqs", 8), ("ffdnet", "ddpg", 20), ("ffdnet", "idbp", 20),
           ("unet", "ddpg", 30)]


def main(argv: list[str] | None = None) -> None:
    from restoreflow.stages.models import load_prior
    from restoreflow.stages.restore import restore_image

    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--astro", type=int, default=6)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--tasks", nargs="+", default=["deblur", "sr"], choices=list(TASKS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", nargs="+", default=None,
                    help="prior:sampler:steps entries (default: the four above)")
    ap.add_argument("--name", default="posterior_spread")
    args = ap.parse_args(argv)
    methods = METHODS if not args.methods else [
        (m.split(":")[0], m.split(":")[1], int(m.split(":")[2])) for m in args.methods]
    torch.set_num_threads(1)
    images = bench_images(args)
    rows = []
    priors = {p: load_prior(p) for p in {m[0] for m in methods}}
    for task in args.tasks:
        for prior_name, sampler, steps in methods:
            per_img = []
            for item in images:
                op, y, sigma_y = degrade(task, item, args.seed)
                t0 = time.perf_counter()
                xs = restore_image(priors[prior_name], op, y, sigma_y, sampler=sampler,
                                   steps=steps, num_samples=args.samples,
                                   generator=torch.Generator().manual_seed(args.seed))
                sec = time.perf_counter() - t0
                m = xs.mean(0)
                s = xs.std(0).mean(0).flatten().numpy()
                e = (m - item["x"]).abs().mean(0).flatten().numpy()
                rho = spearmanr(s, e).statistic if s.std() > 0 else float("nan")
                diffs = [float((xs[i] - xs[j]).abs().max()) for i in range(len(xs))
                         for j in range(i + 1, len(xs))]
                per_img.append({"image": item["name"], "domain": item["domain"],
                                "pixel_rho": float(rho), "spread": float(s.mean()),
                                "rmse": float(((m - item["x"]) ** 2).mean().sqrt()),
                                "distinct": min(diffs) > 1e-4, "seconds": sec})
                print(f"{task} {prior_name} {sampler} {item['name'][:20]} rho "
                      f"{rho:.3f} spread {s.mean():.4f} {sec:.1f}s", flush=True)
            img_rho = spearmanr([r["spread"] for r in per_img],
                                [r["rmse"] for r in per_img]).statistic
            rows.append({"task": task, "prior": prior_name, "sampler": sampler,
                         "steps": steps, "per_image": per_img,
                         "pixel_rho": float(np.nanmean([r["pixel_rho"] for r in per_img])),
                         "image_rho": float(img_rho),
                         "distinct": float(np.mean([r["distinct"] for r in per_img])),
                         "spread": float(np.mean([r["spread"] for r in per_img])),
                         "seconds": float(np.mean([r["seconds"] for r in per_img]))})
    lines = [f"{len(images)} images ({args.size} px; held-out photos and astronomy), "
             f"J = {args.samples} samples, seed {args.seed}; Spearman rho of spread vs "
             "error.", "",
             "| task | prior | solver | steps | per-pixel rho (mean over images) | "
             "per-image rho | images with J distinct samples | mean spread | s / image |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['prior']} | {r['sampler']} | {r['steps']} | "
                     f"{r['pixel_rho']:.3f} | {r['image_rho']:.3f} | {r['distinct']:.0%} | "
                     f"{r['spread']:.4f} | {r['seconds']:.1f} |")
    res = {"args": vars(args), "rows": rows}
    path = write_results(args.name, json.loads(json.dumps(res)), "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
