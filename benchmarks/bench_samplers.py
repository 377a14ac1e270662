"""Guided samplers on held-out photos and astronomy images: PSNR, SSIM, seconds/megapixel.

Tasks (degradation specs, sigma in [0, 1] units):

    deblur   gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)
    sr       sr(factor=4,kernel=bicubic)+gaussian_noise(sigma=0.01)
    inpaint  inpaint(ratio=0.7)+gaussian_noise(sigma=0.01)        (70% pixels missing)

Methods: ``A^+ y`` (exact pseudo-inverse in model units: missing pixels are mid-grey),
``A^+_eta y`` (Tikhonov, eta = (2 sigma_y)^2 in model units, a classical baseline), and
DDNM+, DPS, DiffPIR, DDPG through :func:`restoreflow.stages.restore.restore_image` with the
default options of ``samplers.resolve_options`` (or ``--options`` JSON), all with the same
number of UNet evaluations (``--steps``, 100 by default). DPS also runs one backward pass
per step (about 3x the compute of a forward pass); its s/MP shows it.

Images: the first ``--images`` held-out photos (``corpus.held_out_photos()``) and
``--astro`` deep-sky images (``corpus.astronomy_images()``, those with a shorter side of
at least 512 px, evenly spread over the sorted list), as ``--size`` centre crops after
resizing the shorter side to 512 px (as benchmarks/bench_prior.py). Degradations are drawn
with ``restoreflow.degradation.make_generator(spec, seed, image name)``; the sampler's generator
is seeded with ``--seed``. PSNR and SSIM (skimage.metrics, data_range=1) on [0, 1] RGB.

The prior snapshot is copied first (the trainer rewrites it every few minutes) and the
training step of the copy is recorded.

    python -m benchmarks.bench_samplers                    # the shipped prior
    python -m benchmarks.bench_samplers --prior /work/train/default-prior/prior
    python -m benchmarks.bench_samplers --quick            # smoke run, minutes
    python -m benchmarks.bench_samplers --tune             # option grid on tuning images
    python -m benchmarks.bench_samplers --seams --steps 25 # seams on a 1024 px image
    python -m benchmarks.bench_samplers --curve 10 20 30 50 100 --tasks deblur sr

Classical peers (``benchmarks/peers.py``, the ``bench`` extra): BM3D for deblur and SR,
Richardson-Lucy for deblur. A side-by-side PNG (clean, y, BM3D, DDPG) of the first
``--figure`` images is written next to the tables.

``--tune`` runs a small grid of sampler options per task on images that are not in the
benchmark set (the last two held-out photos, by default at 128 px) and writes
``sampler_tuning.{json,md}``; the chosen values go into each sampler's ``resolve_options``.
Run single-threaded (``OMP_NUM_THREADS=1``) for comparable timings.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS, shown_like, write_results

TASKS: dict[str, str] = {
    "deblur": "gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)",
    "sr": "sr(factor=4,kernel=bicubic)+gaussian_noise(sigma=0.01)",
    "inpaint": "inpaint(ratio=0.7)+gaussian_noise(sigma=0.01)",
}
SAMPLER_METHODS = ("ddnm", "dps", "diffpir", "ddpg")
BASELINES = ("pinv", "pinv_eta")
# classical peers (benchmarks/peers.py) and the tasks they apply to
PEERS = {"bm3d": ("deblur", "sr"), "rl": ("deblur",)}
ALL_METHODS = (*BASELINES, *PEERS, *SAMPLER_METHODS)
LABELS = {
    "pinv": "A^+ y",
    "pinv_eta": "A^+_eta y",
    "bm3d": "BM3D",
    "rl": "Richardson-Lucy",
    "ddnm": "DDNM+",
    "dps": "DPS",
    "diffpir": "DiffPIR",
    "ddpg": "DDPG",
}

# Option grids for --tune: a few values around the published settings (restore.py notes).
GRID: dict[str, dict[str, list[dict]]] = {
    "ddpg": {
        "deblur": [
            dict(gamma=8.0, zeta=0.5, eta_tilde=0.7, step_size="decay"),
            dict(gamma=10.0, zeta=0.4, eta_tilde=0.7, step_size="decay"),
            dict(gamma=8.0, zeta=0.8, eta_tilde=0.7, step_size="decay"),
            dict(gamma=8.0, zeta=0.5, eta_tilde=2.0, step_size="decay"),
            dict(gamma=8.0, zeta=1.0, eta_tilde=0.7, step_size="decay"),
        ],
        "sr": [
            dict(gamma=300.0, zeta=1.0, eta_tilde=1.0, step_size="constant"),
            dict(gamma=300.0, zeta=0.7, eta_tilde=1.0, step_size="constant"),
            dict(gamma=10.0, zeta=0.8, eta_tilde=0.3, step_size="decay"),
            dict(gamma=30.0, zeta=1.0, eta_tilde=1.0, step_size="constant"),
        ],
        "inpaint": [
            dict(gamma=300.0, zeta=1.0, eta_tilde=1.0, step_size="constant"),
            dict(gamma=300.0, zeta=0.7, eta_tilde=1.0, step_size="constant"),
            dict(gamma=300.0, zeta=0.4, eta_tilde=1.0, step_size="constant"),
            dict(gamma=8.0, zeta=0.5, eta_tilde=0.7, step_size="decay"),
        ],
    },
    "ddnm": {
        "deblur": [
            dict(eta=0.85, eta_tilde=1.0),
            dict(eta=0.85, eta_tilde=4.0),
            dict(eta=1.0, eta_tilde=1.0),
            dict(eta=0.85, eta_tilde=0.0),
        ],
        "sr": [dict(eta=0.85, eta_tilde=1.0), dict(eta=1.0, eta_tilde=1.0), dict(eta=0.5)],
        "inpaint": [dict(eta=0.85, eta_tilde=1.0), dict(eta=1.0, eta_tilde=1.0), dict(eta=0.5)],
    },
    "dps": {
        # the paper's zeta' ~ 1 is for 1000 steps; with 10x fewer steps try larger ones
        "deblur": [dict(zeta_prime=1.0), dict(zeta_prime=3.0), dict(zeta_prime=10.0)],
        "sr": [dict(zeta_prime=1.0), dict(zeta_prime=3.0), dict(zeta_prime=10.0)],
        "inpaint": [dict(zeta_prime=1.0), dict(zeta_prime=3.0), dict(zeta_prime=10.0)],
    },
    "diffpir": {
        "deblur": [
            dict(lam=1.75, zeta=0.3),
            dict(lam=0.5, zeta=0.3),
            dict(lam=1.75, zeta=0.1),
            dict(lam=5.0, zeta=0.3),
            dict(lam=1.75, zeta=1.0),
        ],
        "sr": [
            dict(lam=0.25, zeta=0.1),
            dict(lam=1.0, zeta=0.1),
            dict(lam=0.25, zeta=0.3),
            dict(lam=0.25, zeta=1.0),
        ],
        "inpaint": [dict(lam=0.25, zeta=1.0), dict(lam=0.25, zeta=0.5), dict(lam=1.0, zeta=1.0)],
    },
}

# Second round (--tune --round 2): beyond the edges of GRID where the best value sat at an
# end (prior snapshot at step 1750: DDPG inpainting best at the smallest zeta, DDNM+
# deblurring at the largest eta_tilde, DPS at the largest zeta').
GRID_ROUND2: dict[str, dict[str, list[dict]]] = {
    "ddpg": {
        "inpaint": [
            dict(gamma=300.0, zeta=0.2, eta_tilde=1.0, step_size="constant"),
            dict(gamma=300.0, zeta=0.0, eta_tilde=1.0, step_size="constant"),
        ],
    },
    "ddnm": {
        "deblur": [dict(eta=1.0, eta_tilde=4.0), dict(eta=0.85, eta_tilde=16.0)],
    },
    "dps": {
        "deblur": [dict(zeta_prime=30.0)],
        "sr": [dict(zeta_prime=30.0)],
        "inpaint": [dict(zeta_prime=30.0)],
    },
}


# --- inputs -------------------------------------------------------------------------------


def snapshot_prior(src: str | Path, dest_root: Path) -> tuple[Path, int | None]:
    """Copy a (possibly live) prior directory; returns (copy, training step or None).

    The step is read from the trainer's ``../checkpoint/state.json`` before and after the
    copy; if it changed while copying, the copy is retried.
    """
    src = Path(src)
    state = src.parent / "checkpoint" / "state.json"

    def step() -> int | None:
        try:
            return int(json.loads(state.read_text())["step"])
        except (OSError, ValueError, KeyError):
            return None

    for _ in range(5):
        before = step()
        dest = dest_root / f"prior-step{before}"
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest)
        if step() == before:
            return dest, before
        time.sleep(5)
    raise RuntimeError(f"{src}: the snapshot kept changing while being copied")


def astro_paths(n: int, min_side: int = 512) -> list[Path]:
    from PIL import Image

    from restoreflow.models import corpus

    big = []
    for p in corpus.astronomy_images():
        with Image.open(p) as im:
            if min(im.size) >= min_side:
                big.append(p)
    if n <= 0 or not big:
        return []
    idx = sorted({round(i * (len(big) - 1) / max(n - 1, 1)) for i in range(n)})
    return [big[i] for i in idx]


def load_images(photos: list[Path], astro: list[Path], size: int) -> list[dict]:
    from restoreflow.models.training import center_crops

    out = []
    for domain, paths in (("photo", photos), ("astro", astro)):
        for p, x in zip(paths, center_crops(paths, size, 512), strict=True):
            out.append({"name": p.name, "domain": domain, "x": x})
    return out


def degrade(task: str, item: dict, seed: int):
    from restoreflow.degradation import DegradationSpec, make_generator

    spec = DegradationSpec.parse(TASKS[task])
    g = make_generator(spec, seed, item["name"])
    deg = spec.build(image_shape=tuple(item["x"].shape), generator=g)
    y = deg.apply(item["x"][None], g)[0].float()
    return deg.operator, y, float(deg.sigma_y)


# --- methods and metrics ---------------------------------------------------------------------


def run_method(prior, op, y, sigma_y, method, steps, seed, options=None, tile=256):
    """(restored (3, H, W) in [0, 1], seconds)."""
    from restoreflow.spec import RestoreOptions
    from restoreflow.stages.restore import restore_image

    t0 = time.perf_counter()
    if method in PEERS:
        from benchmarks import peers

        if method == "rl":
            x = peers.richardson_lucy(y, op.kernel)
        elif hasattr(op, "kernel"):
            x = peers.bm3d_deblur(y, op.kernel, sigma_y)
        else:
            x = peers.bm3d_sr(y, op.factor, sigma_y)
        return x, time.perf_counter() - t0
    if method in BASELINES:
        eta = 0.0 if method == "pinv" else (2 * sigma_y) ** 2
        with torch.no_grad():
            # in model units, as the samplers see it, then back to [0, 1]
            ones = torch.ones_like(op.A_adjoint(y[None]))
            y_m = 2 * y[None] - op.A(ones)
            x = ((op.A_dagger(y_m, eta=eta) + 1) / 2).clamp(0, 1)[0]
        return x, time.perf_counter() - t0
    x = restore_image(prior, op, y, sigma_y,
                      RestoreOptions(sampler=method, steps=steps, tile=tile, options=options or {}),
                      generator=torch.Generator().manual_seed(seed))[0]
    return x, time.perf_counter() - t0


def metrics(est: torch.Tensor, ref: torch.Tensor) -> dict:
    from skimage.metrics import structural_similarity

    a = est.permute(1, 2, 0).double().numpy()
    b = ref.permute(1, 2, 0).double().numpy()
    mse = float(np.mean((a - b) ** 2))
    psnr = 10 * math.log10(1.0 / max(mse, 1e-12))
    ssim = float(structural_similarity(a, b, data_range=1.0, channel_axis=-1))
    return {"psnr": psnr, "ssim": ssim}


# --- benchmark ---------------------------------------------------------------------------


def run_benchmark(args, prior, prior_info: dict) -> dict:
    from restoreflow.models import corpus
    from restoreflow.samplers import resolve_options

    photos = corpus.held_out_photos()[: args.images]
    items = load_images(photos, astro_paths(args.astro), args.size)
    methods = [m for m in ALL_METHODS if m in args.methods]
    user_opts = json.loads(args.options) if args.options else {}
    rows, shown = [], {}
    for task in args.tasks:
        for item in items:
            op, y, sigma_y = degrade(task, item, args.seed)
            for m in methods:
                if m in PEERS and task not in PEERS[m]:
                    continue
                opts = None
                if m in SAMPLER_METHODS:
                    opts = {**resolve_options(m, task, sigma_y), **user_opts.get(m, {})}
                x, sec = run_method(prior, op, y, sigma_y, m, args.steps, args.seed, opts)
                if item in items[: args.figure] and m in ("bm3d", "ddpg"):
                    shown.setdefault((task, item["name"]), {"clean": item["x"], "y": y})[m] = x
                mp = item["x"].shape[1] * item["x"].shape[2] / 1e6
                row = {
                    "task": task,
                    "image": item["name"],
                    "domain": item["domain"],
                    "method": m,
                    "options": opts,
                    **metrics(x, item["x"]),
                    "seconds": sec,
                    "s_per_mp": sec / mp,
                }
                rows.append(row)
                print(
                    f"{task:8s} {item['domain']:5s} {item['name'][:28]:28s} {m:8s} "
                    f"PSNR {row['psnr']:6.2f} SSIM {row['ssim']:.3f} {sec:7.1f}s",
                    flush=True,
                )
    return {
        "prior": prior_info,
        "steps": args.steps,
        "size": args.size,
        "seed": args.seed,
        "tasks": {t: TASKS[t] for t in args.tasks},
        "images": [{"name": it["name"], "domain": it["domain"]} for it in items],
        "rows": rows,
        "summary": summarize(rows),
        "figure": side_by_side(shown, args.name or "bench_samplers") if shown else None,
    }


def side_by_side(shown: dict, stem: str, cols=("clean", "y", "bm3d", "ddpg"),
                 labels: dict | None = None) -> str:
    """PNG grid: one row per (task, image), one column per entry of ``cols`` (by default
    clean, y (nearest-upsampled), BM3D, DDPG), each but the clean one with its PSNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or LABELS
    fig, axes = plt.subplots(len(shown), len(cols), figsize=(3 * len(cols), 3.1 * len(shown)),
                             squeeze=False)
    for ax_row, ((task, name), ims) in zip(axes, shown.items(), strict=True):
        for ax, c in zip(ax_row, cols, strict=True):
            ax.axis("off")
            if c not in ims:
                continue
            im = shown_like(ims[c], ims["clean"])
            ax.imshow(im.clamp(0, 1).permute(1, 2, 0).numpy())
            title = {"clean": f"{task}: {name[:24]}", "y": "degraded y"}.get(c) or labels[c]
            if c != "clean":
                title += f"  {metrics(im, ims['clean'])['psnr']:.2f} dB"
            ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = RESULTS / f"{stem}_side_by_side.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path.name


def run_curve(args, prior, prior_info: dict) -> dict:
    """DDPG PSNR against the number of steps, photos only, default options."""
    from restoreflow.models import corpus
    from restoreflow.samplers import resolve_options

    items = load_images(corpus.held_out_photos()[: args.images], [], args.size)
    rows = []
    for task in args.tasks:
        for item in items:
            op, y, sigma_y = degrade(task, item, args.seed)
            opts = resolve_options("ddpg", task, sigma_y)
            for n in args.curve:
                x, sec = run_method(prior, op, y, sigma_y, "ddpg", n, args.seed, opts)
                rows.append({"task": task, "image": item["name"], "steps": n,
                             **metrics(x, item["x"]), "seconds": sec})
                print(f"{task} {item['name'][:24]:24s} steps {n:4d} "
                      f"PSNR {rows[-1]['psnr']:.2f} {sec:.1f}s", flush=True)
    curve = {}
    for task in args.tasks:
        for n in args.curve:
            r = [x for x in rows if x["task"] == task and x["steps"] == n]
            curve[f"{task}/{n}"] = {k: float(np.mean([x[k] for x in r]))
                                    for k in ("psnr", "ssim", "seconds")}
    return {"prior": prior_info, "size": args.size, "seed": args.seed, "steps": args.curve,
            "tasks": {t: TASKS[t] for t in args.tasks},
            "images": [it["name"] for it in items], "rows": rows, "curve": curve}


def curve_markdown(res: dict) -> str:
    top = max(res["steps"])
    lines = [f"DDPG, default options, prior hash {res['prior']['hash'][:12]} (step "
             f"{res['prior']['step']}); {len(res['images'])} held-out photos "
             f"({', '.join(res['images'])}), {res['size']} px; mean PSNR (dB) / SSIM / "
             "seconds per image, one thread.", "",
             "| task | steps | PSNR | SSIM | s/image | PSNR - PSNR@" + str(top) + " |",
             "|---|---|---|---|---|---|"]
    for task in res["tasks"]:
        ref = res["curve"][f"{task}/{top}"]["psnr"]
        for n in res["steps"]:
            c = res["curve"][f"{task}/{n}"]
            lines.append(f"| {task} | {n} | {c['psnr']:.2f} | {c['ssim']:.3f} | "
                         f"{c['seconds']:.1f} | {c['psnr'] - ref:+.2f} |")
        ok = [n for n in res["steps"] if res["curve"][f"{task}/{n}"]["psnr"] >= ref - 0.3]
        lines.append(f"| {task} | fewest within 0.3 dB: {min(ok)} | | | | |")
    return "\n".join(lines)


def summarize(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        for dom in (r["domain"], "all"):
            key = f"{r['task']}/{dom}/{r['method']}"
            out.setdefault(key, []).append(r)
    return {
        k: {
            "psnr": float(np.mean([r["psnr"] for r in v])),
            "ssim": float(np.mean([r["ssim"] for r in v])),
            "s_per_mp": float(np.mean([r["s_per_mp"] for r in v])),
            "n": len(v),
        }
        for k, v in out.items()
    }


def markdown(res: dict) -> str:
    p = res["prior"]
    photos = [i["name"] for i in res["images"] if i["domain"] == "photo"]
    astro = [i["name"] for i in res["images"] if i["domain"] == "astro"]
    lines = [
        f"Prior `{p['source']}` snapshot at training step {p['step']} (hash "
        f"{p['hash'][:12]}); {res['steps']} UNet evaluations per sampler "
        f"(DPS adds a backward pass per step); {res['size']} px centre crops; seed "
        f"{res['seed']}.",
        "",
        f"Photos ({len(photos)}): {', '.join(photos)}. Astronomy ({len(astro)}): "
        f"{', '.join(astro) or '-'}.",
        "",
        "Tasks: " + "; ".join(f"{k}: `{v}`" for k, v in res["tasks"].items()) + ".",
        "PSNR (dB) / SSIM, mean over images; s/MP = wall seconds per megapixel, one thread.",
        "",
        "| task | method | photos PSNR | photos SSIM | astro PSNR | astro SSIM | s/MP |",
        "|---|---|---|---|---|---|---|",
    ]
    s = res["summary"]
    methods = [m for m in ALL_METHODS if any(r["method"] == m for r in res["rows"])]
    for task in res["tasks"]:
        for m in methods:
            ph, ast, al = (s.get(f"{task}/{d}/{m}") for d in ("photo", "astro", "all"))
            if al is None:
                continue

            def cell(e, k):
                return "-" if e is None else (f"{e[k]:.2f}" if k == "psnr" else f"{e[k]:.3f}")

            lines.append(
                f"| {task} | {LABELS[m]} | {cell(ph, 'psnr')} | {cell(ph, 'ssim')} | "
                f"{cell(ast, 'psnr')} | {cell(ast, 'ssim')} | {al['s_per_mp']:.0f} |"
            )
    deltas = []
    for task in res["tasks"]:
        d, b = s.get(f"{task}/photo/ddpg"), s.get(f"{task}/photo/bm3d")
        if d and b:
            deltas.append(f"{task}: DDPG - BM3D on photos {d['psnr'] - b['psnr']:+.2f} dB PSNR, "
                          f"{d['ssim'] - b['ssim']:+.3f} SSIM")
    if deltas:
        lines += ["", *[f"- {x}" for x in deltas]]
    if res.get("figure"):
        lines += ["", f"![side by side]({res['figure']})"]
    lines += ["", "Options used (samplers.resolve_options unless overridden):", ""]
    seen = set()
    for r in res["rows"]:
        if r["options"] is not None and (r["task"], r["method"]) not in seen:
            seen.add((r["task"], r["method"]))
            lines.append(f"- {r['task']} / {LABELS[r['method']]}: `{json.dumps(r['options'])}`")
    return "\n".join(lines)


# --- tuning ----------------------------------------------------------------------------------


def run_tuning(args, prior, prior_info: dict) -> dict:
    from restoreflow.models import corpus

    grid = GRID if args.round == 1 else GRID_ROUND2

    photos = corpus.held_out_photos()[-args.tune_images :]
    items = load_images(photos, [], args.tune_size)
    rows = []
    for task in args.tasks:
        for item in items:
            op, y, sigma_y = degrade(task, item, args.seed)
            for m in [m for m in SAMPLER_METHODS if m in args.methods]:
                for opts in grid.get(m, {}).get(task, []):
                    x, sec = run_method(prior, op, y, sigma_y, m, args.steps, args.seed, opts)
                    row = {"task": task, "image": item["name"], "method": m, "options": opts}
                    row.update(metrics(x, item["x"]), seconds=sec)
                    rows.append(row)
                    print(
                        f"tune {task:8s} {item['name'][:20]:20s} {m:8s} {json.dumps(opts):70s}"
                        f" PSNR {row['psnr']:6.2f} SSIM {row['ssim']:.3f} {sec:6.1f}s",
                        flush=True,
                    )
    best: dict = {}
    table = []
    for task in args.tasks:
        for m in [m for m in SAMPLER_METHODS if m in args.methods]:
            cands = []
            for opts in grid.get(m, {}).get(task, []):
                rs = [
                    r
                    for r in rows
                    if r["task"] == task and r["method"] == m and r["options"] == opts
                ]
                cands.append(
                    (
                        float(np.mean([r["psnr"] for r in rs])),
                        float(np.mean([r["ssim"] for r in rs])),
                        opts,
                    )
                )
                table.append((task, m, opts, cands[-1][0], cands[-1][1]))
            if cands:
                best.setdefault(m, {})[task] = max(cands, key=lambda c: c[0])[2]
    return {
        "prior": prior_info,
        "round": args.round,
        "steps": args.steps,
        "size": args.tune_size,
        "images": [it["name"] for it in items],
        "rows": rows,
        "grid_means": [
            {"task": t, "method": m, "options": o, "psnr": p, "ssim": s} for t, m, o, p, s in table
        ],
        "best_by_psnr": best,
    }


def tuning_markdown(res: dict) -> str:
    p = res["prior"]
    lines = [
        f"Option grid, prior snapshot at training step {p['step']} (hash {p['hash'][:12]}); "
        f"{res['steps']} steps; {res['size']} px centre crops of {', '.join(res['images'])} "
        "(not in the benchmark set). Mean PSNR / SSIM; best PSNR per sampler and task in bold.",
        "",
        "| task | sampler | options | PSNR | SSIM |",
        "|---|---|---|---|---|",
    ]
    for g in res["grid_means"]:
        bold = res["best_by_psnr"][g["method"]][g["task"]] == g["options"]
        ps = f"**{g['psnr']:.2f}**" if bold else f"{g['psnr']:.2f}"
        lines.append(
            f"| {g['task']} | {LABELS[g['method']]} | `{json.dumps(g['options'])}` | {ps} | "
            f"{g['ssim']:.3f} |"
        )
    return "\n".join(lines)


# --- seams on a large image -------------------------------------------------------------------


def seam_ratio(img: torch.Tensor, tile: int, overlap: int) -> float:
    """Mean |gradient| across tile border lines / mean |gradient| elsewhere (C, H, W)."""
    from restoreflow.models.tiled import tile_starts

    ratios = []
    for dim in (1, 2):
        n = img.shape[dim]
        starts = tile_starts(n, tile, overlap)
        lines = {s for s in starts if s > 0} | {s + tile for s in starts if s + tile < n}
        at = torch.zeros(n - 1, dtype=torch.bool)
        at[[line - 1 for line in sorted(lines)]] = True
        g = img.diff(dim=dim).abs().movedim(dim, 0)  # (n-1, ...)
        ratios.append(float(g[at].mean() / g[~at].mean()))
    return float(np.mean(ratios))


def run_seams(args, prior, prior_info: dict) -> dict:
    """DDPG deblur of one 1024 x 1024 photo crop, tiled (256 px tiles, 64 px overlap) and
    untiled with the same generator seed. The seam ratio along the tile border lines is
    compared between the two (same content, so the untiled run is the control), and the
    tiled output is compared with the untiled one (PSNR)."""
    from restoreflow.models import corpus
    from restoreflow.models.training import center_crops

    path = corpus.held_out_photos()[0]
    x = center_crops([path], args.seam_size, None)[0]
    item = {"name": path.name, "domain": "photo", "x": x}
    op, y, sigma_y = degrade("deblur", item, args.seed)
    tiled, sec = run_method(prior, op, y, sigma_y, "ddpg", args.steps, args.seed, None)
    whole, sec_whole = run_method(
        prior, op, y, sigma_y, "ddpg", args.steps, args.seed, None, tile=args.seam_size
    )
    res = {
        "prior": prior_info,
        "image": path.name,
        "size": args.seam_size,
        "steps": args.steps,
        "task": TASKS["deblur"],
        "tile": 256,
        "overlap": 64,
        "seam_ratio_tiled": seam_ratio(tiled, 256, 64),
        "seam_ratio_untiled": seam_ratio(whole, 256, 64),
        "seam_ratio_clean": seam_ratio(x, 256, 64),
        "seam_ratio_error_tiled": seam_ratio(tiled - x, 256, 64),
        "seam_ratio_error_untiled": seam_ratio(whole - x, 256, 64),
        "psnr_tiled_vs_untiled": metrics(tiled, whole)["psnr"],
        "seconds_tiled": sec,
        "seconds_untiled": sec_whole,
        "tiled": metrics(tiled, x),
        "untiled": metrics(whole, x),
    }
    print(json.dumps(res), flush=True)
    return res


def seams_markdown(r: dict) -> str:
    p = r["prior"]
    return (
        f"Seams: DDPG deblur (`{r['task']}`) of a {r['size']}x{r['size']} crop of "
        f"{r['image']}, {r['steps']} steps, prior snapshot step {p['step']} (hash "
        f"{p['hash'][:12]}); tiled = {r['tile']} px tiles with {r['overlap']} px overlap, "
        "untiled = one UNet pass over the whole image, same generator seed.\n\n"
        "Seam ratio = mean |gradient| across the tile border lines / mean |gradient| "
        "elsewhere, on the same lines for every row. Content alone makes it differ from 1 "
        "(clean image); the untiled run is the control for the tiled one.\n\n"
        "| run | ratio (output) | ratio (output - clean) | PSNR | SSIM | seconds |\n"
        "|---|---|---|---|---|---|\n"
        f"| tiled | {r['seam_ratio_tiled']:.3f} | {r['seam_ratio_error_tiled']:.3f} | "
        f"{r['tiled']['psnr']:.2f} | {r['tiled']['ssim']:.3f} | {r['seconds_tiled']:.0f} |\n"
        f"| untiled | {r['seam_ratio_untiled']:.3f} | {r['seam_ratio_error_untiled']:.3f} | "
        f"{r['untiled']['psnr']:.2f} | {r['untiled']['ssim']:.3f} | "
        f"{r['seconds_untiled']:.0f} |\n"
        f"| clean | {r['seam_ratio_clean']:.3f} | - | - | - | - |\n\n"
        f"Tiled vs untiled output: PSNR {r['psnr_tiled_vs_untiled']:.2f} dB."
    )


# --- entry point ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--prior", default=None, help="prior dir (default: the shipped prior)")
    ap.add_argument("--steps", type=int, default=100, help="UNet evaluations per sampler")
    ap.add_argument("--images", type=int, default=4, help="number of held-out photos")
    ap.add_argument("--astro", type=int, default=2, help="number of astronomy images")
    ap.add_argument("--size", type=int, default=256, help="centre crop size (px)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument(
        "--methods",
        nargs="+",
        default=list(ALL_METHODS),
        choices=list(ALL_METHODS),
    )
    ap.add_argument("--options", help='JSON overrides per sampler, e.g. {"dps": {"zeta_prime": 3}}')
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 2 photos, 1 astro, 128 px, 20 steps"
    )
    ap.add_argument("--tune", action="store_true", help="run the option grid instead")
    ap.add_argument("--seams", action="store_true", help="seam check on one large image instead")
    ap.add_argument("--seam-size", type=int, default=1024)
    ap.add_argument("--tune-images", type=int, default=2)
    ap.add_argument("--tune-size", type=int, default=128)
    ap.add_argument("--round", type=int, default=1, choices=(1, 2), help="tuning grid round")
    ap.add_argument("--name", help="results file stem (default by mode)")
    ap.add_argument("--figure", type=int, default=3,
                    help="side-by-side PNG of the first N images (clean, y, BM3D, DDPG)")
    ap.add_argument("--curve", type=int, nargs="+",
                    help="instead: DDPG PSNR at these step counts (photos), e.g. 10 20 30 50 100")
    ap.add_argument("--workdir", default="/tmp/restoreflow-bench", help="prior snapshot copies")
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.astro, args.size, args.steps = 2, 1, 128, 20
        args.tune_images, args.tune_size, args.seam_size = 1, 64, 512

    from restoreflow.models.prior import DEFAULT_PRIOR_DIR, DiffusionPrior

    src = Path(args.prior) if args.prior else DEFAULT_PRIOR_DIR
    if args.prior is None:  # shipped weights: the model card names the training step
        card = (src / "MODEL_CARD.md").read_text()
        m = re.search(r"(\d+) (?:optimisation |training )?steps", card)
        local, step = src, int(m.group(1)) if m else None
    elif (src.parent / "checkpoint").is_dir():
        local, step = snapshot_prior(src, Path(args.workdir))
    else:  # a copy made earlier: prior-step<N>
        m = re.fullmatch(r"prior-step(\d+)", src.name)
        local, step = src, int(m.group(1)) if m else None
    prior = DiffusionPrior.load(local)
    info = {"source": str(src), "step": step, "hash": prior.model_hash}
    print(f"prior {src} step {step} hash {prior.model_hash[:12]}", flush=True)

    if args.curve:
        res = run_curve(args, prior, info)
        name = args.name or "ddpg_steps"
        path = write_results(name, res, curve_markdown(res))
    elif args.seams:
        res = run_seams(args, prior, info)
        name = args.name or "sampler_seams"
        path = write_results(name, res, seams_markdown(res))
    elif args.tune:
        res = run_tuning(args, prior, info)
        name = args.name or ("sampler_tuning_quick" if args.quick else "sampler_tuning")
        if args.round == 2:
            name += "_round2"
        path = write_results(name, res, tuning_markdown(res))
    else:
        res = run_benchmark(args, prior, info)
        name = args.name or ("bench_samplers_quick" if args.quick else "bench_samplers")
        path = write_results(name, res, markdown(res))
    print(f"wrote {path} and {RESULTS / (name + '.json')}")


if __name__ == "__main__":
    main()
