"""The README's verb path leads to bounds: ingest, simulate, restore, calibrate and report,
each a separate command, give calibrated bounds and per-pixel intervals in the report
(only `run` scored images before; issue 30, item 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

EXE = os.path.join(os.path.dirname(sys.executable), "restoreflow")
DEG = "gaussian_blur(sigma=1)+gaussian_noise(sigma=0.05)"


def _pngs(folder, n, seed):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        base = rng.random((8, 8, 3))
        img = (np.kron(base, np.ones((4, 4, 1))) * 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"im{seed}_{i}.png")
    return str(folder)


def _verb(tmp_path, *args) -> str:
    env = {**os.environ, "RESTOREFLOW_DASK_WORKERS": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([EXE, *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=600, check=False)
    assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-3000:])
    return r.stdout


@pytest.mark.slow
def test_the_verb_path_gives_bounds_and_pixel_intervals(tmp_path):
    store = str(tmp_path / "st")
    src, clean = _pngs(tmp_path / "src", 3, 0), _pngs(tmp_path / "clean", 10, 1)
    _verb(tmp_path, "ingest", src, "--store", store)
    _verb(tmp_path, "simulate", "-d", DEG, "--store", store)
    out = _verb(tmp_path, "restore", "-d", DEG, "--store", store, "--samples", "2")
    assert "bounds: none (the store holds no calibration: run 'restoreflow calibrate'" in out
    out = _verb(tmp_path, "calibrate", "-d", DEG, "--store", store, "--clean", clean,
                "--samples", "2", "--alpha", "0.3", "--pixel-epsilon", "0.3",
                "--pixel-delta", "0.2")
    assert "per-pixel intervals: lambda=" in out, out
    assert "bounds: 3 restored image(s) of these settings scored" in out, out
    # the score verb scores them again, restoring nothing
    out = _verb(tmp_path, "score", "-d", DEG, "--store", store, "--samples", "2")
    assert "bounds: 3 image(s) scored against calibration" in out, out
    # restoring again with the same settings scores against the stored calibration
    out = _verb(tmp_path, "restore", "-d", DEG, "--store", store, "--samples", "2")
    assert "3 already done" in out and "bounds: 3 image(s) scored against calibration" in out
    _verb(tmp_path, "report", "--store", store, "--out", str(tmp_path / "r.html"))
    html = (tmp_path / "r.html").read_text()
    assert "no conformal bound" not in html
    rows = json.loads((tmp_path / "st" / "tables" / "quality.json").read_text())
    scored = [r for r in rows if r.get("psnr_lower") is not None]
    assert len({r["image_id"] for r in scored}) == 3
    assert all(os.path.isdir(tmp_path / "st" / c) for c in ("interval_lower", "interval_upper"))
    # other settings: no bounds, and the line says which setting differs
    out = _verb(tmp_path, "restore", "-d", DEG, "--store", store, "--samples", "3")
    assert "restore.posterior_samples (2 vs 3)" in out, out
