"""The ADIR claim on our data: does adapting the prior on retrieved neighbours help?

The default prior is trained on photos. Out-of-domain test set: astronomy images
(``corpus.astronomy_images()``, stellarium-data deep-sky PNGs). In-domain test set:
held-out photos (``corpus.held_out_photos()``). Reference corpus: other astronomy images
(disjoint from the test images) plus the prior's training photos
(``corpus.training_photos()``), mixed in one index.

Split: the astronomy images are sorted by name and shuffled with
``np.random.default_rng(--seed)``; the first ``--n-test`` are the test images, the next
``--n-corpus`` join the corpus. Every image is a ``--size`` centre crop after resizing
its shorter side to ``--short-side`` px (``training.center_crops``).

Tasks: ``gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)`` and
``sr(factor=4,kernel=bicubic)+gaussian_noise(sigma=0.01)``, drawn with
``make_generator(spec, seed, image name)``. For each test image and task, three
conditions restore y with DDPG (``restore_image``, ``--steps``) and the same sampling
seed:

    none        the base prior
    random      the prior adapted (``adapt_prior``) on K random corpus images
    retrieved   the prior adapted on the K nearest corpus images to the prepared query
                (``prepare_query(y, A, sigma_y)``, EfficientNet-Lite0, as the pipeline)
    oracle      (``--oracle``) the prior adapted on the clean test image itself: the
                best neighbour there can be, so the most retrieval could ever deliver
                with these adaptation settings, prior and sampler

Both adaptations use the same ``LoraSettings`` (defaults, ``steps=--adapt-steps``) and
the same LoRA seed. Adaptation and sampling are timed separately.

Retrieval accuracy, per task, for the raw query (y itself; the embedder resizes it) and
the prepared one: top-1/top-5 of the true source for ``--n-known`` degraded corpus images
(their source is in the index), and for the test images the same-class rate: the
fraction of the K neighbours from the query's own domain (astronomy or photo).

Bars (issue): on astronomy, retrieved >= none + 0.5 dB PSNR and retrieved > random;
adaptation time per image no longer than sampling time at default settings.

    OMP_NUM_THREADS=1 python -m benchmarks.bench_adapt            # full: results/adapt.*
    OMP_NUM_THREADS=1 python -m benchmarks.bench_adapt --quick    # smoke: results/adapt_quick.*
    python -m benchmarks.bench_adapt --prior /work/train/default-prior/prior
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import write_results

TASKS = {
    "deblur": "gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)",
    "sr": "sr(factor=4,kernel=bicubic)+gaussian_noise(sigma=0.01)",
}
CONDITIONS = ("none", "random", "retrieved")
ORACLE = "oracle"  # optional condition (--oracle)
QUERIES = ("raw", "prepared")
DOMAINS = ("astro", "photo")
FULL = dict(n_test=8, n_corpus=150, n_known=20, size=128, k=8, steps=100, adapt_steps=100)
QUICK = dict(n_test=2, n_corpus=20, n_known=4, size=64, k=2, steps=10, adapt_steps=5)


# --- data -----------------------------------------------------------------------------------


def short_names(paths: list[Path]) -> list[str]:
    """The file name, with parent folders added until it is unique among ``paths``."""
    out = []
    for p in paths:
        d = 1
        while sum(q.parts[-d:] == p.parts[-d:] for q in paths) > 1:
            d += 1
        out.append("/".join(p.parts[-d:]))
    return out


def min_side(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return min(im.size)


def load_data(n_test: int, n_corpus: int, size: int, short_side: int, seed: int):
    """(test images, corpus images): dicts {key, domain, x (3, size, size) in [0, 1]}."""
    from restoreflow.models import corpus
    from restoreflow.models.training import center_crops

    astro = [p for p in corpus.astronomy_images() if min_side(p) >= size]  # sorted by name
    order = np.random.default_rng(seed).permutation(len(astro))
    astro_test = sorted(astro[i] for i in order[:n_test])
    astro_corpus = sorted(astro[i] for i in order[n_test : n_test + n_corpus])
    train, held = corpus.training_photos(), corpus.held_out_photos()[:n_test]
    names = dict(zip(train + held, short_names(train + held), strict=True))

    def items(domain, paths):
        crops = center_crops(paths, size, short_side)
        return [{"key": f"{domain}/{names.get(p, p.name)}", "domain": domain, "x": x}
                for p, x in zip(paths, crops, strict=True)]

    test = items("astro", astro_test) + items("photo", held)
    refs = items("astro", astro_corpus) + items("photo", train)
    return test, refs


def degrade(task: str, x: torch.Tensor, key: str, seed: int):
    from restoreflow.degradation import DegradationSpec, make_generator

    spec = DegradationSpec.parse(TASKS[task])
    g = make_generator(spec, seed, key)
    deg = spec.build(tuple(x.shape), generator=g)
    return spec, deg, deg.apply(x[None], g)[0].float()


def load_prior(path: str | None, tmp: Path):
    """The prior (a snapshot of ``path`` when given: the trainer may rewrite it) and info."""
    from benchmarks.bench_samplers import snapshot_prior
    from restoreflow.models.prior import DiffusionPrior

    step = None
    if path:
        copy, step = snapshot_prior(path, tmp)
        prior = DiffusionPrior.load(copy)
        prior.source = str(path)
    else:
        prior = DiffusionPrior.load()
    return prior, {"source": prior.source, "hash": prior.model_hash, "step": step}


# --- retrieval ------------------------------------------------------------------------------


def queries(task: str, item: dict, seed: int) -> dict:
    """Degrade one image; its raw and prepared retrieval queries."""
    from restoreflow.retrieval.index import prepare_query

    spec, deg, y = degrade(task, item["x"], item["key"], seed)
    prepared = prepare_query(y, deg.operator, deg.sigma_y)
    return {"spec": spec, "deg": deg, "y": y, "raw": y, "prepared": prepared}


def search(emb, index, images: list[torch.Tensor], k: int) -> list[list[str]]:
    from restoreflow.models.embedders import embed_images

    return index.search(embed_images(emb, images).numpy(), k)[1]


def known_source_accuracy(emb, index, refs: list[dict], n_known: int, seed: int) -> dict:
    """Top-1/top-5 of the true source for degraded corpus images, per task and query."""
    from restoreflow.retrieval.index import retrieval_accuracy

    rng = np.random.default_rng(seed + 1)
    known = [refs[i] for i in sorted(rng.choice(len(refs), n_known, replace=False))]
    out = {}
    for task in TASKS:
        qs = [queries(task, it, seed) for it in known]
        out[task] = {mode: retrieval_accuracy(search(emb, index, [q[mode] for q in qs], 5),
                                              [it["key"] for it in known])
                     for mode in QUERIES}
    return {"n": len(known), "keys": [it["key"] for it in known], "by_task": out}


# --- restoration ----------------------------------------------------------------------------


def adapt(prior, refs_by_key: dict, ids: list[str], key: str, lora, seed: int):
    """(adapted prior, seconds, [first, last] LoRA loss); the LoRA seed depends on the
    test image only, so random and retrieved neighbours get the same seed."""
    from restoreflow.degradation import seed_for
    from restoreflow.models.lora import adapt_prior

    g = torch.Generator().manual_seed(seed_for(lora.hash, seed, key))
    t0 = time.perf_counter()
    adapted = adapt_prior(prior, [refs_by_key[i]["x"] for i in ids], lora, generator=g)
    losses = adapted.extra["lora"]["losses"]
    return adapted, time.perf_counter() - t0, [losses[0], losses[-1]]


def restore(model, q: dict, key: str, steps: int, seed: int):
    from restoreflow.degradation import seed_for
    from restoreflow.spec import RestoreOptions
    from restoreflow.stages.restore import restore_image

    g = torch.Generator().manual_seed(seed_for(q["spec"].hash, seed, f"{key}/restore"))
    t0 = time.perf_counter()
    x = restore_image(model, q["deg"].operator, q["y"], q["deg"].sigma_y,
                      RestoreOptions(sampler="ddpg", steps=steps),
                      generator=g)[0]
    return x, time.perf_counter() - t0


def tile_timing(prior, refs: list[dict], lora, args, size: int) -> dict:
    """Sampling and adaptation seconds for one ``size`` px image (``--time-size``,
    default 256, the pipeline's tile): the bar compares them at a realistic image size
    too, since sampling grows with the pixels and adaptation does not. The image: the
    corpus' first astronomy image, resized and cropped like the test images; deblur."""
    from restoreflow.models import corpus
    from restoreflow.models.training import center_crops

    path = next(p for p in corpus.astronomy_images() if min_side(p) >= size)
    item = {"key": f"timing/{path.name}", "x": center_crops([path], size, max(size, 256))[0]}
    q = queries("deblur", item, args.seed)
    _, sample_s = restore(prior, q, item["key"], args.steps, args.seed)
    ids = [r["key"] for r in refs[: args.k]]
    _, adapt_s, _ = adapt(prior, {r["key"]: r for r in refs}, ids, item["key"], lora, args.seed)
    return {"size": size, "image": path.name, "sample_s": sample_s, "adapt_s": adapt_s}


def run(args) -> dict:
    from restoreflow.degradation import seed_for
    from restoreflow.models.embedders import embed_images, get_embedder
    from restoreflow.models.lora import LoraSettings
    from restoreflow.quality.metrics import psnr, ssim
    from restoreflow.retrieval.index import ReferenceIndex

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        prior, prior_info = load_prior(args.prior, Path(tmp))
    test, refs = load_data(args.n_test, args.n_corpus, args.size, args.short_side, args.seed)
    refs_by_key = {r["key"]: r for r in refs}
    conditions = CONDITIONS + ((ORACLE,) if args.oracle else ())
    print(f"{len(test)} test images, {len(refs)} corpus images "
          f"({time.perf_counter() - t_start:.0f} s)", flush=True)

    emb = get_embedder("efficientnet-lite0")
    index = ReferenceIndex.empty(emb.dim, emb.name, emb.weights_hash)
    index.add(embed_images(emb, [r["x"] for r in refs]).numpy(), [r["key"] for r in refs])
    known = known_source_accuracy(emb, index, refs, args.n_known, args.seed)

    targets = {"target_modules": tuple(args.targets.split(","))} if args.targets else {}
    lora = LoraSettings(steps=args.adapt_steps, seed=args.seed, max_t=args.max_t, **targets)
    rows, same_class = [], []
    for item in test:
        key, x = item["key"], item["x"]
        rng = np.random.default_rng(seed_for("random-neighbours", args.seed, key))
        random_ids = [refs[i]["key"] for i in rng.choice(len(refs), args.k, replace=False)]
        adapters: dict[tuple, tuple] = {}  # neighbour ids -> adaptation (shared by tasks)
        for task in TASKS:
            q = queries(task, item, args.seed)
            found = {mode: search(emb, index, [q[mode]], args.k)[0] for mode in QUERIES}
            for mode in QUERIES:
                same = np.mean([refs_by_key[i]["domain"] == item["domain"] for i in found[mode]])
                same_class.append({"domain": item["domain"], "task": task, "query": mode,
                                   "image": key, "rate": float(same)})
            neighbours = {"none": [], "random": random_ids, "retrieved": found["prepared"],
                          ORACLE: [key]}
            for cond in conditions:
                ids = neighbours[cond]
                model, adapt_s, loss = prior, 0.0, None
                if ids:
                    if tuple(ids) not in adapters:
                        source = {key: item} if cond == ORACLE else refs_by_key
                        adapters[tuple(ids)] = adapt(prior, source, ids, key, lora, args.seed)
                    model, adapt_s, loss = adapters[tuple(ids)]
                x_hat, sample_s = restore(model, q, key, args.steps, args.seed)
                rows.append({"domain": item["domain"], "task": task, "image": key,
                             "condition": cond, "psnr": psnr(x_hat, x), "ssim": ssim(x_hat, x),
                             "adapt_s": adapt_s, "sample_s": sample_s, "lora_loss": loss,
                             "neighbours": ids})
            r = {row["condition"]: row for row in rows[-len(conditions):]}
            print(f"{key} {task}: PSNR " + " ".join(
                f"{c} {r[c]['psnr']:.2f}" for c in conditions) +
                f" | adapt {r['retrieved']['adapt_s']:.1f} s, sample "
                f"{r['none']['sample_s']:.1f} s", flush=True)

    timing = tile_timing(prior, refs, lora, args, args.time_size)
    print(f"at {timing['size']} px: adapt {timing['adapt_s']:.1f} s, sample "
          f"{timing['sample_s']:.1f} s", flush=True)

    settings = {k: getattr(args, k) for k in FULL} | {
        "short_side": args.short_side, "seed": args.seed, "quick": args.quick,
        "oracle": args.oracle,
        "sampler": "ddpg", "lora": lora.to_dict(), "embedder": emb.name,
        "default_settings": args.steps == FULL["steps"]
        and args.adapt_steps == LoraSettings().steps and lora.hash == LoraSettings(
            steps=args.adapt_steps, seed=args.seed).hash}
    res = {"prior": prior_info, "settings": settings, "tasks": TASKS,
           "split": {"test": [t["key"] for t in test], "corpus": [r["key"] for r in refs]},
           "retrieval": {"known_source": known, "same_class": summarise_same(same_class),
                         "same_class_rows": same_class},
           "rows": rows, "tile_timing": timing, "seconds": time.perf_counter() - t_start}
    res["summary"] = summarise(rows)
    res["retrieval"]["verdict"] = query_verdict(res["retrieval"])
    res["bars"] = bars(res)
    return res


# --- summary --------------------------------------------------------------------------------


def mean(v) -> float:
    return float(np.mean(v)) if len(v) else float("nan")


def summarise(rows: list[dict]) -> dict:
    """Per domain and task: per condition means, and deltas against none and random."""
    out = {}
    for domain in DOMAINS:
        for task in TASKS:
            r = [row for row in rows if row["domain"] == domain and row["task"] == task]
            if not r:
                continue
            conds = [c for c in CONDITIONS + (ORACLE,) if any(row["condition"] == c
                                                              for row in r)]
            by = {c: [row for row in r if row["condition"] == c] for c in conds}
            s = {c: {m: mean([row[m] for row in by[c]]) for m in ("psnr", "ssim", "adapt_s",
                                                                  "sample_s")}
                 for c in conds}
            for c in conds[1:]:
                for m in ("psnr", "ssim"):
                    s[c][f"d_{m}_none"] = s[c][m] - s["none"][m]
                s[c]["wins_over_none"] = sum(a["psnr"] > b["psnr"]
                                             for a, b in zip(by[c], by["none"], strict=True))
            s["retrieved"]["d_psnr_random"] = s["retrieved"]["psnr"] - s["random"]["psnr"]
            s["retrieved"]["d_ssim_random"] = s["retrieved"]["ssim"] - s["random"]["ssim"]
            s["n"] = len(by["none"])
            out[f"{domain}/{task}"] = s
    return out


def summarise_same(rows: list[dict]) -> dict:
    return {f"{d}/{t}/{q}": mean([r["rate"] for r in rows
                                  if (r["domain"], r["task"], r["query"]) == (d, t, q)])
            for d in DOMAINS for t in TASKS for q in QUERIES}


def query_verdict(ret: dict) -> dict:
    """Which query wins more of the retrieval figures (known-source top-1/top-5 and the
    out-of-domain same-class rate, per task); a tie keeps the pipeline's prepared query."""
    wins = {q: 0 for q in QUERIES}
    for task in TASKS:
        acc = ret["known_source"]["by_task"][task]
        figures = [(acc["raw"][k], acc["prepared"][k]) for k in ("top1", "top5")]
        figures.append((ret["same_class"][f"astro/{task}/raw"],
                        ret["same_class"][f"astro/{task}/prepared"]))
        for raw, prep in figures:
            if raw != prep:
                wins["raw" if raw > prep else "prepared"] += 1
    better = "tie" if wins["prepared"] == wins["raw"] else max(wins, key=wins.get)
    return {"wins": wins, "better": better, "pipeline_default": "prepared",
            "keep_default": better != "raw"}


def bars(res: dict) -> dict:
    out = {}
    for task in TASKS:
        s = res["summary"][f"astro/{task}"]["retrieved"]
        out[f"astro/{task}: retrieved >= none + 0.5 dB"] = bool(s["d_psnr_none"] >= 0.5)
        out[f"astro/{task}: retrieved > random"] = bool(s["d_psnr_random"] > 0)
    adapted = [r for r in res["rows"] if r["condition"] not in ("none", ORACLE)]
    out[f"adaptation time <= sampling time at {res['settings']['size']} px"] = bool(
        mean([r["adapt_s"] for r in adapted]) <= mean([r["sample_s"] for r in adapted]))
    tt = res.get("tile_timing")
    if tt:
        out[f"adaptation time <= sampling time at {tt['size']} px"] = bool(
            tt["adapt_s"] <= tt["sample_s"])
    return out


def markdown(res: dict) -> str:
    st, p = res["settings"], res["prior"]
    step = f" at training step {p['step']}" if p["step"] is not None else ""
    lora = st["lora"]
    lines = [
        f"Prior `{p['source']}`{step} (hash {p['hash'][:12]}). Test: {st['n_test']} astronomy "
        f"images (stellarium-data) and {st['n_test']} held-out photos; corpus: "
        f"{len(res['split']['corpus'])} images ({st['n_corpus']} other astronomy images + the "
        f"prior's training photos). {st['size']} px centre crops (shorter side resized to "
        f"{st['short_side']} px), seed {st['seed']}. DDPG, {st['steps']} steps; LoRA rank "
        f"{lora['rank']}, lr {lora['lr']}, {lora['steps']} steps of batch {lora['batch_size']} "
        f"at {lora['crop']} px on {', '.join(lora['target_modules'])}, adapter for t < "
        f"{lora.get('max_t') or 'T'}, "
        f"on K = {st['k']} neighbours (random or retrieved with the "
        f"prepared query, {st['embedder']}). Total {res['seconds'] / 60:.1f} min.",
        "\n**Quick run: the figures only show that the benchmark runs.**\n" if st["quick"]
        else "" if st["default_settings"] else "\n**Custom settings: not the defaults "
        "(sampling steps, LoRA steps or LoRA settings differ).**\n",
        "## Restoration (means; PSNR dB)", "",
        "| domain/task | condition | PSNR | SSIM | dPSNR vs none | dSSIM vs none | "
        "PSNR wins vs none | adapt s | sample s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in res["summary"].items():
        for c in (c for c in CONDITIONS + (ORACLE,) if c in s):
            v = s[c]
            d = (" | | " if c == "none" else f"{v['d_psnr_none']:+.2f} | "
                 f"{v['d_ssim_none']:+.4f} | {v['wins_over_none']}/{s['n']}")
            lines.append(f"| {name} | {c} | {v['psnr']:.2f} | {v['ssim']:.4f} | {d} | "
                         f"{v['adapt_s']:.1f} | {v['sample_s']:.1f} |")
    lines += ["", "Retrieved minus random: " + "; ".join(
        f"{name} {s['retrieved']['d_psnr_random']:+.2f} dB / "
        f"{s['retrieved']['d_ssim_random']:+.4f} SSIM" for name, s in res["summary"].items())]
    if st.get("oracle"):
        lines += ["", "Oracle: the prior adapted on the clean test image itself, with the same "
                  "settings; what perfect retrieval could add at most. Oracle minus none: "
                  + "; ".join(f"{name} {s[ORACLE]['d_psnr_none']:+.2f} dB"
                              for name, s in res["summary"].items())]

    ret = res["retrieval"]
    kn = ret["known_source"]
    lines += ["", "## Retrieval", "",
              f"Known source: {kn['n']} corpus images, degraded, queried against the index "
              "(top-1/top-5 of the true source). Same-class rate: fraction of the K "
              "neighbours of a test image from its own domain.", "",
              "| task | query | known top-1 | known top-5 | same-class astro | "
              "same-class photo |", "|---|---|---|---|---|---|"]
    for task in TASKS:
        for q in QUERIES:
            a = kn["by_task"][task][q]
            lines.append(f"| {task} | {q} | {a['top1']:.2f} | {a['top5']:.2f} | "
                         f"{ret['same_class'][f'astro/{task}/{q}']:.2f} | "
                         f"{ret['same_class'][f'photo/{task}/{q}']:.2f} |")
    v = ret["verdict"]
    lines += ["", f"Better query: **{v['better']}** (wins raw {v['wins']['raw']}, prepared "
              f"{v['wins']['prepared']}); the pipeline uses the prepared query: "
              + ("keep it." if v["keep_default"] else "switch to the raw query.")]

    adapted = [r for r in res["rows"] if r["condition"] not in ("none", ORACLE)]
    a_s, s_s = mean([r["adapt_s"] for r in adapted]), mean([r["sample_s"] for r in adapted])
    side = st["size"] * (a_s / s_s) ** 0.5
    lines += ["", "## Bars", ""]
    lines += [f"- {name}: **{'PASS' if ok else 'FAIL'}**" for name, ok in res["bars"].items()]
    lines += ["", f"Adaptation {a_s:.1f} s per image vs sampling {s_s:.1f} s at {st['size']} "
              f"px (ratio {a_s / s_s:.2f}); sampling scales with the pixels and adaptation "
              f"does not, so they cost the same at about {side:.0f} px square images."]
    tt = res.get("tile_timing")
    if tt:
        lines += ["", f"Measured at {tt['size']} px (one image, `{tt['image']}`, deblur): "
                  f"adaptation {tt['adapt_s']:.1f} s, sampling {tt['sample_s']:.1f} s (ratio "
                  f"{tt['adapt_s'] / tt['sample_s']:.2f})."]
    return "\n".join(lines)


def timing_only(args) -> None:
    """Adaptation vs sampling seconds at the benchmark size and at ``--time-size``:
    results/adapt_timing.*"""
    from restoreflow.models.lora import LoraSettings

    with tempfile.TemporaryDirectory() as tmp:
        prior, prior_info = load_prior(args.prior, Path(tmp))
    _, refs = load_data(args.n_test, args.n_corpus, args.size, args.short_side, args.seed)
    lora = LoraSettings(steps=args.adapt_steps, seed=args.seed)
    rows = [tile_timing(prior, refs, lora, args, s) for s in sorted({args.size, args.time_size})]
    lines = [f"Prior `{prior_info['source']}` (hash {prior_info['hash'][:12]}); DDPG "
             f"{args.steps} steps, one deblur restoration per size; LoRA defaults "
             f"({lora.steps} steps of batch {lora.batch_size} at {lora.crop} px) on K = "
             f"{args.k} corpus images.", "",
             "| image px | adapt s | sample s | adapt / sample |", "|---|---|---|---|"]
    lines += [f"| {r['size']} | {r['adapt_s']:.1f} | {r['sample_s']:.1f} | "
              f"{r['adapt_s'] / r['sample_s']:.2f} |" for r in rows]
    res = {"prior": prior_info, "settings": {"steps": args.steps, "k": args.k,
                                             "lora": lora.to_dict()}, "rows": rows}
    print(write_results(args.name or "adapt_timing", res, "\n".join(lines)).read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    ap.add_argument("--prior", default=None, help="diffusers dir (default: shipped prior)")
    ap.add_argument("--steps", type=int, help=f"DDPG steps ({FULL['steps']})")
    ap.add_argument("--adapt-steps", type=int, help=f"LoRA steps ({FULL['adapt_steps']})")
    ap.add_argument("-k", type=int, help=f"neighbours per image ({FULL['k']})")
    ap.add_argument("--n-test", type=int, help=f"test images per domain ({FULL['n_test']})")
    ap.add_argument("--n-corpus", type=int, help=f"astronomy corpus images ({FULL['n_corpus']})")
    ap.add_argument("--n-known", type=int, help=f"known-source queries ({FULL['n_known']})")
    ap.add_argument("--size", type=int, help=f"crop side in px ({FULL['size']})")
    ap.add_argument("--short-side", type=int, default=256, help="resize before cropping")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-t", type=int, default=None,
                    help="adapter only for t < max_t (LoraSettings.max_t)")
    ap.add_argument("--targets", default=None,
                    help="comma-separated LoRA target modules (LoraSettings.target_modules)")
    ap.add_argument("--time-size", type=int, default=None,
                    help="image side for the second timing (default 256, quick 128)")
    ap.add_argument("--timing-only", action="store_true",
                    help="only adaptation vs sampling time at 128 px and --time-size px")
    ap.add_argument("--oracle", action="store_true",
                    help="also adapt on the clean test image itself (upper bound)")
    ap.add_argument("--name", default=None, help="results name (default: adapt / adapt_quick)")
    args = ap.parse_args()
    for k, v in (QUICK if args.quick else FULL).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.time_size is None:
        args.time_size = 128 if args.quick else 256
    if args.timing_only:
        timing_only(args)
        return
    res = run(args)
    name = args.name or ("adapt_quick" if args.quick else "adapt")
    path = write_results(name, res, markdown(res))
    print(path.read_text())


if __name__ == "__main__":
    main()
