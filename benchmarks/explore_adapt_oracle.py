"""Exploration (issue 16): why does adapting on the clean test image itself (the oracle)
barely move the restoration? Oracle gain against adapter capacity and training steps.

For ``--n`` astronomy test images of ``bench_adapt`` (same split, 128 px centre crops,
seed 0) the shipped prior is fine-tuned on the clean test image itself (the best
neighbour retrieval could find) with increasing capacity:

    lora r8 x100     the pipeline's default LoRA (rank 8, lr 2e-3, 100 steps of batch 4)
    lora r8 x400     4x the steps
    lora r32 x400    rank 32 (alpha 32), 400 steps
    full x400        every UNet weight (Adam lr 1e-4, 400 steps of batch 4 at 64 px)

and measured three ways: the training loss on fixed draws before/after
(``lora.neighbour_loss``), the one-step x0 denoising PSNR of the image at sigma 25/255
and 50/255 (what the prior itself learnt), and the DDPG restoration PSNR (``--steps``,
default task options, one sample, the same sampling seed for every condition) for
deblurring and 4x super-resolution as ``bench_adapt`` degrades them. If denoising gains
dB where restoration gains tenths, the measurement guidance, not the adapter, decides
the result.

    OMP_NUM_THREADS=1 python -m benchmarks.explore_adapt_oracle --n 3
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from benchmarks.bench_adapt import TASKS, degrade, load_data, restore
from benchmarks.common import write_results
from restoreflow.degradation import seed_for
from restoreflow.models.lora import (
    LoraSettings,
    _draw,
    _loss,
    _prepare_images,
    adapt_prior,
    neighbour_loss,
)
from restoreflow.models.prior import DiffusionPrior
from restoreflow.models.training import CropSampler, evaluate_x0
from restoreflow.quality.metrics import psnr

CONDITIONS = {
    "lora r8 x100": dict(kind="lora", rank=8, alpha=8.0, steps=100),
    "lora r8 x400": dict(kind="lora", rank=8, alpha=8.0, steps=400),
    "lora r32 x400": dict(kind="lora", rank=32, alpha=32.0, steps=400),
    "full x400": dict(kind="full", lr=1e-4, steps=400),
}


def full_finetune(prior: DiffusionPrior, images: list[torch.Tensor], lr: float, steps: int,
                  seed: int) -> DiffusionPrior:
    """Every UNet weight trained with the prior's own loss on ``images`` (64 px crops)."""
    g = torch.Generator().manual_seed(seed)
    unet = copy.deepcopy(prior.unet).train().requires_grad_(True)
    opt = torch.optim.Adam(unet.parameters(), lr=lr)
    sampler = CropSampler(_prepare_images(images, 3), 64, g)
    with torch.enable_grad():
        for _ in range(steps):
            loss = _loss(unet, prior, *_draw(sampler, prior, 4, g))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    unet.eval().requires_grad_(False)
    out = copy.copy(prior)
    out.unet = unet
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3, help="astronomy test images")
    ap.add_argument("--steps", type=int, default=50, help="DDPG steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 adapt steps each")
    args = ap.parse_args()
    if args.quick:
        for c in CONDITIONS.values():
            c["steps"] = 2
    torch.set_num_threads(1)
    test, _ = load_data(8, 0, 128, 256, args.seed)
    test = [t for t in test if t["domain"] == "astro"][: args.n]
    base = DiffusionPrior.load()
    rows = []
    t_all = time.perf_counter()
    for item in test:
        x, key = item["x"], item["key"]
        qs = {task: dict(zip(("spec", "deg", "y"), degrade(task, x, key, args.seed), strict=True))
              for task in TASKS}
        models = {"none": (base, 0.0)}
        for name, c in CONDITIONS.items():
            t0 = time.perf_counter()
            if c["kind"] == "lora":
                s = LoraSettings(rank=c["rank"], alpha=c["alpha"], steps=c["steps"])
                g = torch.Generator().manual_seed(seed_for(s.hash, args.seed, key))
                m = adapt_prior(base, [x], s, generator=g)
            else:
                m = full_finetune(base, [x], c["lr"], c["steps"], seed_for(name, args.seed, key))
            models[name] = (m, time.perf_counter() - t0)
        for name, (m, secs) in models.items():
            row = {"image": key, "condition": name, "adapt_s": round(secs, 1),
                   "loss": neighbour_loss(m, [x]),
                   "denoise": evaluate_x0(m, [x], (25.0, 50.0), seed=1)}
            for task, q in qs.items():
                xr, _ = restore(m, q, key, args.steps, args.seed)
                row[task] = psnr(xr.clamp(0, 1), x)
            rows.append(row)
            print(json.dumps(row), flush=True)
    res = {"prior": base.model_hash[:12], "args": vars(args), "conditions": CONDITIONS,
           "rows": rows, "seconds": round(time.perf_counter() - t_all, 1)}
    lines = [
             f"Prior {res['prior']}; {args.n} astronomy test images of bench_adapt (128 px), "
             f"each condition fine-tuned on the clean test image itself (oracle); DDPG "
             f"{args.steps} steps. Means over images; d = minus 'none'.", "",
             "| condition | adapt s | loss | d loss | x0 PSNR s25 | d | x0 PSNR s50 | d | "
             "deblur PSNR | d | sr PSNR | d |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ref = {k: np.mean([r[k] if k in TASKS or k == "loss" else r["denoise"][k]
                       for r in rows if r["condition"] == "none"])
           for k in ("loss", "25", "50", *TASKS)}
    for name in ["none", *CONDITIONS]:
        rs = [r for r in rows if r["condition"] == name]
        v = {"loss": np.mean([r["loss"] for r in rs]),
             **{k: np.mean([r["denoise"][k] for r in rs]) for k in ("25", "50")},
             **{t: np.mean([r[t] for r in rs]) for t in TASKS}}
        lines.append(
            f"| {name} | {np.mean([r['adapt_s'] for r in rs]):.0f} | {v['loss']:.4f} | "
            f"{100 * (v['loss'] / ref['loss'] - 1):+.0f}% | "
            + " | ".join(f"{v[k]:.2f} | {v[k] - ref[k]:+.2f}" for k in ("25", "50", *TASKS))
            + " |")
    name = "explore_adapt_oracle" + ("_quick" if args.quick else "")
    print(write_results(name, res, "\n".join(lines)).read_text())


if __name__ == "__main__":
    main()
