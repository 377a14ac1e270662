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
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/

from restoreflow import samples  # noqa: E402
from restoreflow.models import corpus  # noqa: E402

DEST = Path(__file__).resolve().parent.parent / "src" / "restoreflow" / "weights" / "default-prior"

LICENSE_NOTE = """\
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
                best = (st.get("License", "?").split()[0], st.get("Copyright", ""))
            elif pat != "*" and fnmatch.fnmatch(name, Path(pat).name):
                return st.get("License", "?").split()[0], st.get("Copyright", "")
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
    for rel in corpus.WALLPAPER_PHOTOS:
        lic, who = license_of(rel, root)
        split = "held out" if rel in corpus.HELD_OUT_WALLPAPERS else "train"
        name = rel.split("/")[4] if rel.startswith("plasma") else Path(rel).name
        rows.append(f"| {rel.split('/')[0]}: {name} | {split} | {lic} | {who[:60]} |")
    for n in samples.PHOTOS:
        split = "held out" if n in samples.HELD_OUT else "train"
        rows.append(f"| scikit-image data: {n} | {split} | {SKIMAGE_LICENSES[n]} | |")
    return "\n".join(rows)


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
    for f in ("config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json"):
        shutil.copy2(args.run_dir / "prior" / f, DEST / f)
    rows = loss_curve(args.run_dir / "log.jsonl", DEST / "loss_curve.png")
    cfg = json.loads((args.run_dir / "config.json").read_text())
    losses = [r for r in rows if "loss" in r]
    last = losses[-1]
    milestones = [r for r in losses if r["step"] % 2000 == 0] + [last]
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
        f"layers_per_block {cfg['layers_per_block']}, DownBlock2D/UpBlock2D only (no "
        "attention: fully convolutional, any size that is a multiple of 8)",
        f"- {n_params:,} parameters, fp32 safetensors",
        f"- epsilon prediction, {cfg['num_train_timesteps']}-step linear beta schedule "
        "(DDPM), images in [-1, 1], RGB", f"- content hash `{prior.model_hash}`", "",
        "## Training", "",
        f"- {last['step']} steps of batch {cfg['batch_size']} random {cfg['crop']}x{cfg['crop']}"
        f" crops at scales {tuple(cfg['scales'])}, flips and 90-degree rotations",
        f"- AdamW lr {cfg['lr']} ({cfg['warmup']}-step warm-up), grad clip {cfg['grad_clip']}, "
        f"EMA {cfg['ema_decay']} (exported), bf16 autocast = {cfg['bf16_autocast']}",
        f"- {last['elapsed_s'] / 60:.0f} minutes on {cfg['num_threads'] or 'all'} CPU thread(s) "
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
