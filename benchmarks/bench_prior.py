"""Denoising benchmark of a prior's one-step x0 estimate vs non-local means (any prior
reference: the FFDNet default, the shipped UNet, a weight file...).

For each held-out photo (256x256 centre crop, [0,1]; the main set first resizes photos
so the shorter side is 512 px, a second set crops the full-resolution files, which for
the large wallpapers gives nearly flat patches) and noise level s/255:
y = x + s/255 n; prior: x0 estimate at the t whose noise-to-signal ratio matches
(see ``restoreflow.models.training.evaluate_x0``); baseline: scikit-image
``denoise_nl_means`` with its documented estimated-sigma settings
(h = 0.8 sigma_est, sigma = sigma_est, patch 5, distance 6, fast mode).
Same noise realisations for both. Bar (issue 4): prior >= NLM + 1 dB at 25/255.
``--bm3d`` adds colour BM3D with the true sigma (``peers.bm3d_denoise``, bench extra),
the stronger classical denoiser.

    python -m benchmarks.bench_prior [--prior DIR] [--sigmas 5 15 25 50]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from benchmarks.common import write_results


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(1.0 / float(np.mean((a - b) ** 2)))


def run(prior_path: str | None, sigmas: list[float], size: int = 256, seed: int = 0,
        short_side: int | None = 512, bm3d: bool = False) -> dict:
    from skimage.restoration import denoise_nl_means, estimate_sigma

    from restoreflow.models import corpus, priors
    from restoreflow.models.training import center_crops

    prior = priors.load(prior_path)
    paths = corpus.held_out_photos()
    clean = center_crops(paths, size, short_side)
    rows = []
    g = torch.Generator().manual_seed(seed)
    for s in sigmas:
        s01 = s / 255
        t = prior.timestep_for_sigma(2 * s01)
        ab = float(prior.abar(t))
        for p, x in zip(paths, clean, strict=True):
            y = x + s01 * torch.randn(x.shape, generator=g)
            with torch.no_grad():
                x0 = prior.x0((math.sqrt(ab) * (2 * y - 1))[None], t)[0]
            est = ((x0 + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()
            xn, yn = x.permute(1, 2, 0).numpy(), y.permute(1, 2, 0).numpy()
            se = float(np.mean(estimate_sigma(yn, channel_axis=-1)))
            nlm = denoise_nl_means(yn, h=0.8 * se, sigma=se, fast_mode=True, patch_size=5,
                                   patch_distance=6, channel_axis=-1)
            rows.append({"image": p.name, "sigma_255": s, "t": t, "noisy": psnr(yn, xn),
                         "prior_x0": psnr(est, xn), "nlm": psnr(np.clip(nlm, 0, 1), xn)})
            if bm3d:
                from benchmarks.peers import bm3d_denoise

                rows[-1]["bm3d"] = psnr(bm3d_denoise(y, s01).permute(1, 2, 0).numpy(), xn)
    summary = {}
    for s in sigmas:
        r = [row for row in rows if row["sigma_255"] == s]
        m = {k: float(np.mean([row[k] for row in r])) for k in ("noisy", "prior_x0", "nlm")
             + (("bm3d",) if bm3d else ())}
        summary[f"{s:g}"] = {**m, "gain_over_nlm": m["prior_x0"] - m["nlm"]}
        if bm3d:
            summary[f"{s:g}"]["gain_over_bm3d"] = m["prior_x0"] - m["bm3d"]
    return {"prior": prior.source, "prior_hash": prior.model_hash, "images": len(paths),
            "crop": size, "short_side": short_side, "rows": rows, "summary": summary}


def markdown(res: dict) -> str:
    scale = (f"resized to a {res['short_side']} px shorter side" if res["short_side"]
             else "at full resolution")
    b = "gain_over_bm3d" in next(iter(res["summary"].values()))
    lines = [f"Prior `{res['prior']}` (hash {res['prior_hash'][:12]}), {res['images']} held-out "
             f"photos {scale}, {res['crop']}px centre crops. PSNR in dB.", "",
             "| sigma (/255) | noisy | NLM | prior x0 | prior - NLM |"
             + (" BM3D | prior - BM3D |" if b else ""),
             "|---|---|---|---|---|" + ("---|---|" if b else "")]
    for s, v in res["summary"].items():
        lines.append(f"| {s} | {v['noisy']:.2f} | {v['nlm']:.2f} | {v['prior_x0']:.2f} | "
                     f"{v['gain_over_nlm']:+.2f} |"
                     + (f" {v['bm3d']:.2f} | {v['gain_over_bm3d']:+.2f} |" if b else ""))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prior", default=None,
                    help="a prior reference: ffdnet (default), unet, hybrid, a file or a dir")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[5, 15, 25, 50])
    ap.add_argument("--name", default="prior_denoising", help="results file stem")
    ap.add_argument("--bm3d", action="store_true",
                    help="add colour BM3D with the true sigma (the bench extra; ~9 s/image)")
    args = ap.parse_args()
    web = run(args.prior, args.sigmas, short_side=512, bm3d=args.bm3d)
    full = run(args.prior, args.sigmas, short_side=None, bm3d=args.bm3d)
    path = write_results(args.name, {"web_512": web, "full_resolution": full},
                         markdown(web) + "\n\n" + markdown(full))
    print(path.read_text())


if __name__ == "__main__":
    main()
