"""scripts/gpu_prior.py: the GPU training recipe, run on the CPU with a tiny step count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from restoreflow import samples
from restoreflow.models.prior import DiffusionPrior

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_recipe_trains_exports_and_evaluates_on_cpu(tmp_path):
    pack = tmp_path / "pack"
    (pack / "train").mkdir(parents=True)
    (pack / "held_out").mkdir()
    for n in ("coins.png", "brick.png"):
        Image.open(samples.sample_path(n)).convert("RGB").save(pack / "train" / f"{n}.jpg")
    crop = np.asarray(Image.open(samples.sample_path("chelsea.png")).convert("RGB"))[:64, :64]
    Image.fromarray(crop).save(pack / "held_out" / "chelsea.png")
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "scripts" / "gpu_prior.py"), "train", str(pack), str(out),
           "--device", "cpu", "--steps", "2", "--batch", "2", "--crop", "32"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    ev = json.loads((out / "eval.json").read_text())
    assert ev["steps"] == 2 and ev["images"] == 1
    assert 5 < ev["nlm"] < 60 and 5 < ev["prior_x0"] < 60
    prior = DiffusionPrior.load(out / "prior")
    assert prior.unet.config.block_out_channels == [32, 64, 128, 128]
    card = (out / "MODEL_CARD.md").read_text()
    assert "2 steps of batch 2 x 32px crops" in card
