"""The default prior's GPU recipe: the same trainer, on one GPU, in under 9 minutes.

Two steps, because the GPU machine reaches no network and has no project install:

    # here (CPU, with the corpus fetched): pack the training data and the diffusers wheel
    python scripts/gpu_prior.py pack gpu-pack          # gpu-pack/ is git-ignored

    # on the GPU machine (python with torch; diffusers comes from the pack's wheels)
    python3 scripts/gpu_prior.py train gpu-pack OUT      # about 8.5 minutes
    # through the device tool: carry ["gpu-pack"], command
    #   PYTHONUNBUFFERED=1 python3 scripts/gpu_prior.py train gpu-pack $OUT
    #   (--init-from src/restoreflow/weights/default-prior to continue the shipped prior)
    # test of the recipe on a CPU, a few steps
    python scripts/gpu_prior.py train gpu-pack /tmp/out --device cpu --steps 3 --batch 2

``train`` runs :func:`restoreflow.models.training.train_prior` (bf16 autocast, batch 128
of 128 px crops, EMA) from scratch or from ``--init-from``, then writes to OUT:
``prior/`` (diffusers UNet2DModel + scheduler, safetensors), ``log.jsonl``,
``config.json``, ``eval.json`` (one-step x0 PSNR vs non-local means at 25/255 on the
held-out crops of the pack) and ``MODEL_CARD.md``. Bring OUT back and run
``scripts/export_default_prior.py OUT`` to ship it with the full licence table, after
``make bench`` shows it beats the shipped prior.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pack(dest: Path, max_side: int = 1600) -> None:
    """Training photos (JPEG q95, longer side <= max_side), held-out crops, wheels."""
    from PIL import Image

    sys.path.insert(0, str(ROOT / "src"))
    from restoreflow.models import corpus
    from restoreflow.models.training import center_crops

    (dest / "train").mkdir(parents=True, exist_ok=True)
    (dest / "held_out").mkdir(exist_ok=True)
    names = []
    for i, p in enumerate(corpus.training_photos()):
        im = Image.open(p).convert("RGB")
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        name = f"{i:03d}_{p.stem[:40]}.jpg"
        im.save(dest / "train" / name, quality=95)
        names.append({"file": name, "source": str(p)})
    for p, x in zip(held := corpus.held_out_photos(), center_crops(held, 256, 512),
                    strict=True):
        arr = (x.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        Image.fromarray(arr).save(dest / "held_out" / f"{p.stem[:40]}.png")
    (dest / "manifest.json").write_text(json.dumps({"train": names, "max_side": max_side},
                                                   indent=1))
    wheels = dest / "wheels"
    wheels.mkdir(exist_ok=True)
    import subprocess

    import diffusers

    for req in (f"diffusers=={diffusers.__version__}", "importlib_metadata"):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", "-d", str(wheels), req], check=True)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"packed {len(names)} training photos, {len(held)} held-out crops, "
          f"{size / 2**20:.1f} MiB in {dest}")


def _install_wheels(pack_dir: Path) -> None:
    """Unpack the pack's pure-python wheels onto sys.path when diffusers is missing."""
    try:
        import diffusers  # noqa: F401
        return
    except ImportError:
        pass
    import zipfile

    site = Path("/tmp/gpu-prior-site")
    for whl in sorted((pack_dir / "wheels").glob("*.whl")):
        zipfile.ZipFile(whl).extractall(site)
    sys.path.insert(0, str(site))


def x0_vs_nlm(prior, crops, sigma_255: float = 25.0, seed: int = 0) -> dict:
    """Mean PSNR of the prior's one-step x0 estimate and of NLM on the same noisy crops."""
    import numpy as np
    import torch
    from skimage.restoration import denoise_nl_means, estimate_sigma

    s = sigma_255 / 255
    t = prior.timestep_for_sigma(2 * s)
    ab = float(prior.abar(t))
    g = torch.Generator().manual_seed(seed)
    rows = []
    for x in crops:
        y = x + s * torch.randn(x.shape, generator=g)
        with torch.no_grad():
            x0 = prior.x0((math.sqrt(ab) * (2 * y - 1))[None].to(prior.device), t)[0].cpu()
        est = ((x0.float() + 1) / 2).clamp(0, 1)
        yn = y.permute(1, 2, 0).numpy()
        se = float(np.mean(estimate_sigma(yn, channel_axis=-1)))
        nlm = denoise_nl_means(yn, h=0.8 * se, sigma=se, fast_mode=True, patch_size=5,
                               patch_distance=6, channel_axis=-1)
        xn = x.permute(1, 2, 0).numpy()
        rows.append((10 * math.log10(1 / float(((est.permute(1, 2, 0).numpy() - xn) ** 2)
                                               .mean())),
                     10 * math.log10(1 / float(((np.clip(nlm, 0, 1) - xn) ** 2).mean()))))
    prior_db, nlm_db = (float(np.mean(c)) for c in zip(*rows, strict=True))
    return {"sigma_255": sigma_255, "images": len(crops), "prior_x0": prior_db, "nlm": nlm_db,
            "gain_over_nlm": prior_db - nlm_db}


def train(args: argparse.Namespace) -> None:
    _install_wheels(args.pack)
    sys.path.insert(0, str(ROOT / "src"))
    import numpy as np
    import torch
    from PIL import Image

    from restoreflow.models.prior import DiffusionPrior
    from restoreflow.models.training import TrainConfig, train_prior

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    crops = [torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy())
             .permute(2, 0, 1).float() / 255
             for p in sorted((args.pack / "held_out").glob("*.png"))]
    cfg = TrainConfig(
        out_dir=str(out / "run"), steps=args.steps, batch_size=args.batch, crop=args.crop,
        lr=args.lr, warmup=args.warmup, ema_decay=args.ema, device=args.device,
        bf16_autocast=args.device != "cpu", max_minutes=args.minutes, seed=args.seed,
        checkpoint_every=args.checkpoint_every, eval_every=args.eval_every,
        init_from=str(args.init_from) if args.init_from else None,
        extra={"recipe": "scripts/gpu_prior.py", "pack": str(args.pack)},
    )
    t0 = time.monotonic()
    files = sorted((args.pack / "train").glob("*.jpg"))
    prior_dir = train_prior(cfg, files, crops, log=lambda s: print(s, flush=True))
    minutes = (time.monotonic() - t0) / 60
    shutil.copytree(prior_dir, out / "prior", dirs_exist_ok=True)
    for f in ("log.jsonl", "config.json"):
        shutil.copy2(Path(cfg.out_dir) / f, out / f)
    prior = DiffusionPrior.load(out / "prior", device=args.device)
    ev = x0_vs_nlm(prior, crops)
    step = json.loads((Path(cfg.out_dir) / "checkpoint" / "state.json").read_text())["step"]
    ev.update(steps=step, minutes=round(minutes, 2), device=args.device,
              gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    (out / "eval.json").write_text(json.dumps(ev, indent=2))
    (out / "MODEL_CARD.md").write_text("\n".join([
        "# restoreflow prior (GPU recipe)", "",
        f"- diffusers UNet2DModel {tuple(cfg.block_out_channels)}, layers_per_block "
        f"{cfg.layers_per_block}, epsilon prediction, 1000-step linear DDPM schedule",
        f"- {step} steps of batch {cfg.batch_size} x {cfg.crop}px crops, lr {cfg.lr}, "
        f"EMA {cfg.ema_decay} (exported), bf16 autocast {cfg.bf16_autocast}",
        f"- {minutes:.1f} minutes on {ev['gpu'] or args.device}"
        + (f", initialised from {cfg.init_from}" if cfg.init_from else ", from scratch"),
        f"- data: {len(files)} photos of the project corpus (pack manifest.json; licences "
        "in the shipped model card)",
        f"- one-step x0 denoising at 25/255 on {ev['images']} held-out crops: "
        f"{ev['prior_x0']:.2f} dB vs non-local means {ev['nlm']:.2f} dB "
        f"({ev['gain_over_nlm']:+.2f} dB)", ""]))
    print(json.dumps(ev), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("dest", type=Path)
    p.add_argument("--max-side", type=int, default=1600)
    t = sub.add_parser("train")
    t.add_argument("pack", type=Path)
    t.add_argument("out", type=Path)
    t.add_argument("--device", default="cuda")
    t.add_argument("--minutes", type=float, default=6.5,
                   help="training-loop budget (loading and evaluation add ~2 min)")
    t.add_argument("--steps", type=int, default=1_000_000)
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--crop", type=int, default=128)
    t.add_argument("--lr", type=float, default=4e-4)
    t.add_argument("--warmup", type=int, default=500)
    t.add_argument("--ema", type=float, default=0.9995)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=2000)
    t.add_argument("--eval-every", type=int, default=4000)
    t.add_argument("--init-from", type=Path, help="a prior of the same architecture")
    args = ap.parse_args()
    if args.cmd == "pack":
        pack(args.dest, args.max_side)
    else:
        train(args)


if __name__ == "__main__":
    main()
