"""HTML report: built from a small real store, checked as text, as images and in a real
headless Chromium (screenshot not blank, every inline image decoded)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restoreflow.report import build_report, render_report, select_run, thumbs
from restoreflow.report.plots import MISSED, calibration_png, coverage_title
from restoreflow.storage.ingest import ingest_array
from restoreflow.storage.store import TileStore

TILE = 64
SCRIPT_NAME = "<script>alert(1)</script>.png"
SHASH = "cafe0123456789ab"


# -- helpers ----------------------------------------------------------------------------

def chromium() -> str | None:
    """Path of a Chromium binary (Debian package ``chromium``), or None."""
    return shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def run_chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    exe = chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    profile = tmp / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={"HOME": str(tmp), "PATH": "/usr/bin:/bin"})


def add_derived(store: TileStore, coll: str, image_id: str, arr: np.ndarray) -> None:
    arr = np.asarray(arr, dtype=np.float32)
    store.create_image(coll, image_id, arr.shape, np.float32, attrs={"collection_attrs": {}})
    store.write_image(coll, image_id, arr)
    store.mark_complete(coll, image_id)


def img_srcs(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', html)


def decode(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


class Refs(HTMLParser):
    """Every src/href/action attribute value in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"
        self.refs += [v or "" for k, v in attrs if k in ("src", "href", "action", "srcset")]


def calibration_json(rng: np.random.Generator, n: int = 40) -> dict:
    rows = []
    for i in range(n):
        t = float(rng.normal(28, 2))
        b = t - float(abs(rng.normal(1.5, 1.0))) + (2.5 if i % 20 == 4 else 0.0)  # 10% misses
        s = float(np.clip(rng.normal(0.85, 0.04), 0, 1))
        rows.append({"image_id": f"cal{i:02d}", "psnr_true": t, "psnr_bound": b,
                     "ssim_true": s, "ssim_bound": s - 0.05 + (0.08 if i % 20 == 4 else 0),
                     "fold": "fit" if i % 2 else "cal"})
    cal = [r for r in rows if r["fold"] == "cal"]
    return {"settings_hash": SHASH, "alpha": 0.1, "rows": rows, "n": n,
            "coverage": {"psnr": float(np.mean([r["psnr_true"] >= r["psnr_bound"] for r in cal])),
                         "ssim": 0.9, "pixel_note": None},
            "pixel": {"lam": 0.02, "epsilon": 0.1, "delta": 0.1}}


def make_store(root: Path, *, calibrated: bool = True, tables: bool = True) -> dict:
    """A store with an RGB (super-resolution degraded), a grey uint16 and a script-named
    image, their restorations and per-pixel intervals, and quality/runs tables."""
    rng = np.random.default_rng(0)
    store = TileStore(root, tile_size=TILE)
    yy, xx = np.mgrid[0:96, 0:128]
    rgb = np.stack([xx * 2, yy * 2, 255 - xx - yy // 2], -1).clip(0, 255).astype(np.uint8)
    rgb[30:60, 40:80] = (230, 200, 40)
    gy, gx = np.mgrid[0:70, 0:50]
    grey = (30000 + 20000 * np.sin(gx / 6.0) * np.cos(gy / 9.0)).astype(np.uint16)
    third = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ids = {
        "rgb": ingest_array(store, rgb, "harbour.png"),
        "grey": ingest_array(store, grey, "cells.tif"),
        "script": ingest_array(store, third, SCRIPT_NAME),
    }
    for key, iid in ids.items():
        x = store.read("input", iid, normalised=True)
        if key == "rgb":  # x2 super-resolution: the degraded image is smaller
            y = x.reshape(3, 48, 2, 64, 2).mean(axis=(2, 4))
        else:
            y = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1)
        if key != "script":
            add_derived(store, "degraded", iid, y)
        r = np.clip(x + rng.normal(0, 0.01, x.shape), 0, 1)
        add_derived(store, "restored", iid, r)
        # interval width 0.02 at the left edge growing to 0.40 at the right edge
        w = np.broadcast_to(np.linspace(0.02, 0.40, x.shape[2]), x.shape)
        add_derived(store, "interval_lower", iid, r - w / 2)
        add_derived(store, "interval_upper", iid, r + w / 2)
    cal = calibration_json(rng)
    if calibrated:
        store.put_bytes(f"calibrations/{SHASH}.json", json.dumps(cal).encode())

    def qrow(key, run_id, psnr_lower, flagged=False, **more):
        return {"image_id": ids[key], "name": store.attrs("input", ids[key])["name"],
                "run_id": run_id, "settings_hash": SHASH,
                "psnr_lower": psnr_lower if calibrated else None,
                "ssim_lower": 0.8123 if calibrated else None,
                "alpha": 0.1 if calibrated else None, "flagged": flagged, "min_psnr": 25.0,
                "lambda": 0.02, "features": {"noise_level": 0.013, "hf_energy": 0.2}, **more}

    quality = [
        qrow("rgb", "run-old", 20.0),
        qrow("rgb", "run-new", 27.31, psnr_true=29.5, ssim_true=0.91),
        qrow("grey", "run-new", 30.02, psnr_true=29.0, ssim_true=0.88),
        qrow("script", "run-new", 22.4, flagged=calibrated, psnr_true=24.0, ssim_true=0.7),
    ]
    runs = [  # the newest run is listed first: the report picks it by time, not position
        {"run_id": "run-new", "name": "nightly <b>archive</b>", "spec_hash": "s1",
         "degradation": {"kind": "superres", "factor": 2, "sigma_y": 0.01},
         "sampler": "ddpg", "steps": 50, "adapt": True, "started": 1_700_000_100.0,
         "finished": 1_700_000_900.0,
         "counts": {"done": 3, "skipped": 0, "rejected": 1},
         "timings": {"ingest": 1.25, "restore": 754.0, "score": 0.04},
         "settings_hash": SHASH, "calibration": SHASH if calibrated else None},
        {"run_id": "run-old", "name": "first try", "spec_hash": "s0", "degradation": "blur",
         "sampler": "dps", "steps": 20, "adapt": False, "started": 1_600_000_000.0,
         "finished": 1_600_000_500.0, "counts": {"done": 1}, "timings": {},
         "settings_hash": SHASH, "calibration": SHASH if calibrated else None},
    ]
    if tables:
        store.write_table("quality", quality)
        store.write_table("runs", runs)
    return {"store": store, "ids": ids, "calibration": cal}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    info = make_store(root / "store")
    out = build_report(info["store"], root / "out" / "report.html")
    return {**info, "out": out, "html": out.read_text(encoding="utf-8"), "root": root}


# -- the page as text -------------------------------------------------------------------

def test_page_is_self_contained_and_escapes_names(built):
    html = built["html"]
    parser = Refs()
    parser.feed(html)
    assert parser.refs, "the page should reference its inline images"
    for ref in parser.refs:
        assert ref.startswith(("data:image/png;base64,", "#")), ref[:60]
    assert "http://" not in html and "https://" not in html
    assert parser.scripts == 1  # only the image-load check
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in html
    assert "<script>alert(1)" not in html
    assert "nightly &lt;b&gt;archive&lt;/b&gt;" in html  # run names are escaped too
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_page_shows_latest_run_bounds_and_flags(built):
    html, ids = built["html"], built["ids"]
    assert "run-new" in html and "run-old" not in html
    assert "superres (factor=2, sigma_y=0.01)" in html
    assert "ddpg, 50 steps" in html and "<dd>on</dd>" in html
    assert "done <b>3</b>" in html and "rejected <b>1</b>" in html
    assert "restore <b>12 min 34 s</b>" in html and "ingest <b>1.2 s</b>" in html
    assert "PSNR ≥ <b>27.3 dB</b> with probability 90%" in html
    assert "SSIM ≥ <b>0.812</b> with probability 90%" in html
    assert "true PSNR <b>29.50 dB</b>" in html
    # the flagged image comes first, with its badge and reason
    cards = re.findall(r'<section class="card[^"]*" id="img-\d+">.*?</section>', html, re.S)
    assert len(cards) == 3
    assert ids["script"] in cards[0] and "FLAGGED" in cards[0]
    assert "below the required 25.0 dB" in cards[0]
    assert sum("badge flagged" in c for c in cards) == 1
    # summary: 3 images, 1 flagged, mean bound, mean true PSNR, bound held 2 of 3
    assert "<th>images</th><td class=num>3</td>" in html
    mean_bound = (27.31 + 30.02 + 22.4) / 3
    assert f"{mean_bound:.2f} dB" in html
    assert f"{(29.5 + 29.0 + 24.0) / 3:.2f} dB" in html
    assert "2 of 3 (67%)" in html
    # uncertainty value range under the map: widths 0.02 .. 0.40
    assert "interval width 0.020–0.400" in html
    assert ("on average over new images, at most 10% of pixels outside their interval, "
            "with probability 90% (a single image may have more)") in html
    assert "empirical coverage" not in html  # that is in the plot, not the text
    assert "calibration plot" in html


def test_thumbnails_sizes_grey_and_superres(built):
    html, ids = built["html"], built["ids"]
    cards = {i: c for c in re.findall(r'<section class="card.*?</section>', html, re.S)
             for i in ids.values() if i in c}
    sizes = [decode(u).size for u in img_srcs(html)]
    assert max(max(s) for s in sizes[1:]) <= thumbs.THUMB_MAX
    # grey source stays a grey PNG; RGB is RGB
    grey = [decode(u) for u in img_srcs(cards[ids["grey"]])]
    assert grey[0].mode == "L" and grey[2].mode == "L"  # source, degraded, restored
    assert grey[3].mode == "RGB"  # the colour-mapped uncertainty
    rgb = [decode(u) for u in img_srcs(cards[ids["rgb"]])]
    assert [im.mode for im in rgb] == ["RGB"] * 4
    # the 64x48 SR input is shown at the size of the 128x96 source (x2 => 256x192)
    assert {im.size for im in rgb} == {(256, 192)}
    # nearest neighbour: every 4x4 block of the degraded thumbnail is one stored pixel
    deg = np.asarray(rgb[1]).astype(int)
    assert (deg[::4, ::4] == deg[3::4, 3::4]).all()
    stored = built["store"].read("degraded", ids["rgb"])
    want = np.rint(np.moveaxis(stored, 0, -1) * 255)
    assert np.abs(deg[::4, ::4] - want).max() <= 0


def test_uncertainty_map_follows_colormap(built):
    ids = built["ids"]
    u = thumbs.uncertainty_thumb(built["store"], ids["grey"], (70, 50))
    assert u.vmin == pytest.approx(0.02, abs=1e-6) and u.vmax == pytest.approx(0.40, abs=1e-6)
    img = np.asarray(decode(u.thumb.uri))
    lo, hi = thumbs.colour_map(np.array([0.02, 0.40]), 0.02, 0.40)
    assert (img[:, 0] == lo).all() and (img[:, -1] == hi).all()


def test_calibration_plot_marks_misses():
    rng = np.random.default_rng(1)
    cal = calibration_json(rng)
    miss = np.array([int(MISSED[i:i + 2], 16) for i in (1, 3, 5)])

    def has_colour(png: bytes, rgb: np.ndarray) -> int:
        a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
        return int((np.abs(a - rgb).sum(-1) == 0).sum())

    png = calibration_png(cal)
    im = Image.open(io.BytesIO(png))
    assert im.size[0] > 1.5 * im.size[1]  # PSNR and SSIM panels side by side
    assert has_colour(png, miss) > 20
    for r in cal["rows"]:  # no miss left: no red point
        r["psnr_bound"] = min(r["psnr_bound"], r["psnr_true"])
        r["ssim_bound"] = min(r["ssim_bound"], r["ssim_true"])
    assert has_colour(calibration_png(cal), miss) == 0


def test_calibration_plot_claims_only_out_of_sample_coverage():
    """An old calibration's stored coverage was in-sample (fit rows included): the plot
    claims no figure for it. A leave-one-source-out calibration shows its stored
    out-of-sample coverage, not the coverage of the rows' in-sample bounds."""
    cal = calibration_json(np.random.default_rng(2))
    cal["coverage"]["psnr"] = 1.0  # what the in-sample figure looked like in the demo
    assert "n/a" in coverage_title(cal, "psnr") and "100.0" not in coverage_title(cal, "psnr")
    cal["coverage"] = {"psnr": 0.875, "ssim": 0.9, "method": "leave one source out"}
    assert coverage_title(cal, "psnr") == "out-of-sample coverage 87.5% (target 90%)"
    calibration_png(cal)  # draws every row as an out-of-sample point


def test_large_and_bottom_up_images(tmp_path):
    store = TileStore(tmp_path / "s", tile_size=TILE)
    a = np.zeros((300, 600), np.uint8)
    a[:150] = 200  # top half bright
    iid = ingest_array(store, a, "wide.png", metadata={"row_order": "bottom-up"})
    t = thumbs.store_thumb(store, "input", iid, thumbs.display_size(300, 600))
    img = np.asarray(decode(t.uri))
    assert img.shape == (128, 256)
    # bottom-up: row 0 of the array is the bottom of the picture
    assert img[-10:].mean() == pytest.approx(200, abs=1) and img[:10].max() == 0
    w = np.full((1, 300, 600), 0.1, np.float32)
    w[:, :, :300] = 0.3
    add_derived(store, "interval_lower", iid, np.zeros_like(w))
    add_derived(store, "interval_upper", iid, w)
    u = thumbs.uncertainty_thumb(store, iid, (128, 256))
    assert (u.vmin, u.vmax) == (pytest.approx(0.1), pytest.approx(0.3))
    assert u.mean == pytest.approx(0.2)


def test_display_size():
    assert thumbs.display_size(64, 48) == (256, 192)
    assert thumbs.display_size(100, 70) == (200, 140)
    assert thumbs.display_size(1000, 2000) == (128, 256)
    assert thumbs.display_size(5000, 3) == (256, 1)
    with pytest.raises(ValueError):
        thumbs.display_size(0, 5)


# -- run selection and degenerate stores ------------------------------------------------

def test_explicit_run_and_unknown_run(built):
    html = render_report(built["store"], "run-old")
    assert "run-old" in html and "first try" in html
    assert len(re.findall(r'<section class="card', html)) == 1
    with pytest.raises(ValueError, match="no run 'nope'"):
        render_report(built["store"], "nope")


def test_select_run_by_time():
    runs = [{"run_id": "b", "finished": "2025-01-02T00:00:00+00:00"},
            {"run_id": "a", "finished": "2025-03-01T00:00:00Z"},
            {"run_id": "c", "started": 1.0e9}]
    assert select_run(runs, None)["run_id"] == "a"
    assert select_run([], None) is None


def test_uncalibrated_run(tmp_path):
    info = make_store(tmp_path / "store", calibrated=False)
    html = build_report(info["store"], tmp_path / "r.html").read_text()
    assert "not calibrated: no bounds" in html
    assert "calibration plot" not in html and "FLAGGED" not in html
    assert "NO BOUND" in html and "PSNR ≥" not in html


def test_no_tables_reports_every_restored_image(tmp_path):
    info = make_store(tmp_path / "store", tables=False)
    html = render_report(info["store"])
    assert len(re.findall(r'<section class="card', html)) == 3
    assert "no runs table" in html and "not calibrated: no bounds" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in html  # name from the attrs


def test_written_atomically(built, tmp_path):
    out = tmp_path / "r.html"
    out.write_text("old")
    path = build_report(built["store"], out, max_images=1)
    assert path == out.resolve()
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and "Showing 1 of 3 images" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


# -- in a real browser --------------------------------------------------------------------

def test_report_renders_in_chromium(built):
    root, out = built["root"], built["out"]
    shot = root / "screenshot.png"
    res = run_chromium(root, f"--screenshot={shot}", "--window-size=1280,2000",
                       out.as_uri())
    assert shot.exists(), res.stderr[-2000:]
    a = np.asarray(Image.open(shot).convert("RGB"))
    assert a.shape[:2] == (2000, 1280)
    assert a.std() > 20
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 2000
    res = run_chromium(root, "--dump-dom", out.as_uri())
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', res.stdout)
    assert m, f"load script did not run: {res.stdout[:300]!r} {res.stderr[-1000:]}"
    n = len(img_srcs(built["html"]))
    assert (int(m[1]), int(m[2])) == (n, n) and n == 12


def test_the_degradation_line_breaks_between_operators():
    """A narrow column breaks the degradation text after '+' or ',', not mid-word (issue
    30, item 9)."""
    from restoreflow.report.html import _fmt_spec

    assert _fmt_spec("gaussian_blur(sigma=3,size=9)+gaussian_noise(sigma=0.05)") == (
        "gaussian_blur(sigma=3,<wbr>size=9)+<wbr>gaussian_noise(sigma=0.05)")


def test_the_calibration_panel_says_why_images_are_unused(tmp_path):
    """A full conformal calibration keeps one image per source; the panel says why the
    others are 'unused' instead of leaving a bare count."""
    from restoreflow.report.html import _calibration_section

    store = TileStore(tmp_path / "s", tile_size=TILE)
    cal = calibration_json(np.random.default_rng(3), n=10)
    for i, r in enumerate(cal["rows"]):
        r["fold"] = "calibration" if i % 2 else "unused"
    store.put_bytes(f"calibrations/{SHASH}.json", json.dumps(cal).encode())
    html, alpha, _ = _calibration_section(store, [SHASH], [])
    assert "5 calibration, 5 unused; one image per source calibrates the bound" in html
    assert alpha == 0.1
