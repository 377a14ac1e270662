"""Copy a trained prior into the package and write its model card.

    python scripts/export_default_prior.py RUN_DIR [--bench benchmarks/results/prior_denoising.json]

RUN_DIR is a train-prior output directory (prior/, log.jsonl, config.json). Writes
src/restoreflow/weights/default-prior/{config.json, diffusion_pytorch_model.safetensors,
scheduler_config.json, MODEL_CARD.md, loss_curve.png}.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/

from restoreflow import samples  # noqa: E402
from restoreflow.models import corpus  # noqa: E402

DEST = Path(__file__).resolve().parent.parent / "src" / "restoreflow" / "weights" / "default-prior"

LICENSE_NOTE = """\
OpenCV's sample photos are distributed by Debian's opencv-doc under its `Files: *` stanza
(Apache-2.0 AND BSD-3-Clause); some are classic test images whose original provenance is
not documented there (Debian already removed the one with known licence problems).
Astronomy images are not in the training set (they are the out-of-domain test set of the
adaptation benchmark). The weights are trained on the images below. Several are under
copyleft licenses (GPL-2+, LGPL-3, CC-BY-SA); whether trained weights are a derivative
work of their training images is unsettled. For a product that must avoid that question,
retrain on the CC0/CC-BY subset (`restoreflow train-prior --image ...`)."""


def stanzas(path: Path) -> list[dict]:
    out, cur, key = [], {}, None
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            if cur:
                out.append(cur)
            cur, key = {}, None
        elif line[0] in " \t" and key:
            cur[key] += " " + line.strip()
        elif ":" in line:
            key, val = line.split(":", 1)
            cur[key] = val.strip()
    if cur:
        out.append(cur)
    return out


def short_license(field: str) -> str:
    """The licence expression of a copyright stanza (``Apache-2.0 AND BSD-3-Clause``),
    without the licence text that may follow it."""
    m = re.match(r"\S+(?: (?:AND|OR|and|or) \S+)*", field.strip())
    return m.group(0) if m else "?"


def license_of(rel: str, root: Path) -> tuple[str, str]:
    pkg = rel.split("/")[0]
    if pkg == "plasma-workspace-wallpapers":
        meta = root / Path(rel).parents[2] / "metadata.json"
        m = json.loads(meta.read_text())["KPlugin"]
        return m.get("License", "?"), ", ".join(a.get("Name", "") for a in m.get("Authors", []))
    copyright_file = root / pkg / "usr/share/doc" / pkg / "copyright"
    name = Path(rel).name
    best = ("?", "")
    for st in stanzas(copyright_file):
        for pat in st.get("Files", "").split():
            if pat == "*" and best[0] == "?":
                best = (short_license(st.get("License", "?")), st.get("Copyright", ""))
            elif Path(pat).name != "*" and fnmatch.fnmatch(name, Path(pat).name):
                # source-tree paths differ from installed ones: match by file name, and
                # never let a directory wildcard (modules/flann/*) claim every file
                return short_license(st.get("License", "?")), st.get("Copyright", "")
    return best


# From the docstrings of the skimage.data functions (scikit-image 0.26).
SKIMAGE_LICENSES = {
    "astronaut.png": "public domain (NASA)",
    "chelsea.png": "CC0 (Stefan van der Walt)",
    "coffee.png": "CC0 (Rachel Michetti)",
    "rocket.jpg": "public domain (SpaceX)",
    "camera.png": "CC0 (Lav Varshney)",
    "coins.png": "no known copyright restrictions",
    "grass.png": "CC0 (CC0Textures)",
    "gravel.png": "CC0 (CC0Textures)",
    "brick.png": "CC0 (CC0Textures)",
    "motorcycle_left.png": "Middlebury 2014 stereo data set (research data, terms unstated)",
}


def license_table() -> str:
    """Markdown table: every corpus photo, its split, license and copyright holder."""
    root = corpus.corpus_dir()
    rows = ["| photo | split | license | copyright |", "|---|---|---|---|"]
    held = corpus.HELD_OUT_WALLPAPERS + corpus.HELD_OUT_OPENCV
    for rel in corpus.WALLPAPER_PHOTOS + corpus.OPENCV_PHOTOS:
        lic, who = license_of(rel, root)
        split = "held out" if rel in held else "train"
        name = rel.split("/")[4] if rel.startswith("plasma") else Path(rel).name
        rows.append(f"| {rel.split('/')[0]}: {name} | {split} | {lic} | {who[:60]} |")
    for n in samples.PHOTOS:
        split = "held out" if n in samples.HELD_OUT else "train"
        rows.append(f"| scikit-image data: {n} | {split} | {SKIMAGE_LICENSES[n]} | |")
    return "\n".join(rows)


def previous_training(card: Path) -> list[str]:
    """The training lines of the card being replaced (a run that started from it)."""
    if not card.is_file():
        return []
    text = card.read_text()
    part = text.split("## Training", 1)[-1].split("Loss (", 1)[0]
    old = [ln[2:] for ln in part.splitlines() if ln.startswith("- ")]
    if not old:
        return []
    return ["- Stage 1, the previous default prior (this run started from its weights):",
            *[f"  {ln}" for ln in old], "- Stage 2, this run (optimiser state restarted):"]


def loss_curve(log: Path, out: Path) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    losses = [r for r in rows if "loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.plot([r["step"] for r in losses], [r["loss"] for r in losses], lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("eps MSE (mean of 50 steps)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--bench", type=Path,
                    default=Path("benchmarks/results/prior_denoising.json"))
    args = ap.parse_args()
    DEST.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((args.run_dir / "config.json").read_text())
    history = previous_training(DEST / "MODEL_CARD.md") if cfg.get("init_from") else []
    prev_steps = sum(int(m) for m in re.findall(r"^  (\d+) steps of batch", "\n".join(history),
                                                 flags=re.M))
    for f in ("config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json"):
        shutil.copy2(args.run_dir / "prior" / f, DEST / f)
    rows = loss_curve(args.run_dir / "log.jsonl", DEST / "loss_curve.png")
    losses = [r for r in rows if "loss" in r]
    last = losses[-1]
    milestones = [r for r in losses if r["step"] % 2000 == 0] + [last]
    # elapsed_s restarts at 0 when a run resumes: add up the segments
    seconds = sum(a["elapsed_s"] for a, b in zip(losses, [*losses[1:], None], strict=True)
                  if b is None or b["elapsed_s"] < a["elapsed_s"])
    from restoreflow.models.prior import DiffusionPrior

    prior = DiffusionPrior.load(DEST)
    n_params = sum(p.numel() for p in prior.unet.parameters())
    bench = json.loads(args.bench.read_text()) if args.bench.is_file() else None
    lines = [
        "# restoreflow default prior", "",
        "A small pixel-space DDPM prior trained by restoreflow itself, so that every stage "
        "works offline with no downloaded weights.", "",
        "## Architecture", "",
        f"- diffusers `UNet2DModel`, block_out_channels {tuple(cfg['block_out_channels'])}, "
        f"layers_per_block {cfg['layers_per_block']}, DownBlock2D/UpBlock2D, "
        "self-attention only in the middle block (any size that is a multiple of 8)",
        f"- {n_params:,} parameters, fp32 safetensors",
        f"- epsilon prediction, {cfg['num_train_timesteps']}-step linear beta schedule "
        "(DDPM), images in [-1, 1], RGB", f"- content hash `{prior.model_hash}`", "",
        "## Training", "",
        f"- {prev_steps + last['step']} steps in all"
        + (" (two stages; benchmarks read this line)" if history else ""),
        *history,
        f"- {last['step']} steps of batch {cfg['batch_size']} random {cfg['crop']}x{cfg['crop']}"
        f" crops at scales {tuple(cfg['scales'])}, flips and 90-degree rotations",
        f"- AdamW lr {cfg['lr']} ({cfg['warmup']}-step warm-up), grad clip {cfg['grad_clip']}, "
        f"EMA {cfg['ema_decay']} (exported), bf16 autocast = {cfg['bf16_autocast']}",
        f"- {seconds / 60:.0f} minutes on {cfg['num_threads'] or 'all'} CPU thread(s) "
        "of a 2-core AMD EPYC VM, shared with other jobs for most of the run "
        "(`restoreflow train-prior`, resumable)",
        f"- seed {cfg['seed']}", "",
        "Loss (mean eps-MSE over 50 steps):", "",
        "| step | loss |", "|---|---|",
        *[f"| {r['step']} | {r['loss']:.4f} |" for r in milestones], "",
        "![loss curve](loss_curve.png)", "",
        "## Data and licenses", "", LICENSE_NOTE, "", license_table(), "",
    ]
    if bench:
        from benchmarks.bench_prior import markdown

        lines += ["## Denoising (one-step x0 estimate vs non-local means)", "",
                  "From `make bench` (`benchmarks/bench_prior.py`):", "",
                  markdown(bench["web_512"]), "", markdown(bench["full_resolution"]), ""]
    (DEST / "MODEL_CARD.md").write_text("\n".join(lines))
    print(f"exported to {DEST}")


if __name__ == "__main__":
    main()
