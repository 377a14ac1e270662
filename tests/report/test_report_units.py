"""The report's numbers read right (issue 19 item 9): a flag's reason tells the bound
from the threshold, and the uncertainty scale says its unit."""

from __future__ import annotations

import re

import numpy as np

from restoreflow.report import build_report
from restoreflow.storage.ingest import ingest_array
from restoreflow.storage.store import TileStore


def _derived(store, coll, iid, arr):
    arr = np.asarray(arr, dtype=np.float32)
    store.create_image(coll, iid, arr.shape, np.float32, attrs={"collection_attrs": {}})
    store.write_image(coll, iid, arr)
    store.mark_complete(coll, iid)


def _report(tmp_path, psnr_lower, min_psnr=24.0):
    store = TileStore(tmp_path / "store", tile_size=64)
    rng = np.random.default_rng(0)
    iid = ingest_array(store, rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), "owl.png")
    x = store.read("input", iid, normalised=True)
    _derived(store, "restored", iid, x)
    w = np.broadcast_to(np.linspace(0.02, 0.40, x.shape[2]), x.shape)
    _derived(store, "interval_lower", iid, x - w / 2)
    _derived(store, "interval_upper", iid, x + w / 2)
    store.write_table("quality", [{
        "image_id": iid, "name": "owl.png", "run_id": "r1", "psnr_lower": psnr_lower,
        "ssim_lower": 0.8, "alpha": 0.1, "min_psnr": min_psnr,
        "flagged": not psnr_lower >= min_psnr, "lambda": 0.02, "features": {}}])
    store.write_table("runs", [{"run_id": "r1", "name": "t", "started": 1.0, "finished": 2.0,
                                "counts": {}, "timings": {}}])
    return build_report(store, tmp_path / "report.html").read_text(encoding="utf-8")


def _reason(html):
    return re.search(r"<b>FLAGGED</b>: ([^<]*)</div>", html).group(1)


def test_flag_reason_has_the_digits_that_tell_bound_from_threshold(tmp_path):
    html = _report(tmp_path, 23.96)  # printed "24.0 dB ... below the required 24.0 dB"
    assert _reason(html) == "the PSNR bound 23.96 dB is below the required 24.00 dB"
    # the headline bound uses the same digits, so it does not read 24.0 either
    assert "PSNR ≥ <b>23.96 dB</b>" in html


def test_flag_reason_keeps_one_decimal_when_enough(tmp_path):
    assert _reason(_report(tmp_path, 22.4, 25.0)) == (
        "the PSNR bound 22.4 dB is below the required 25.0 dB")


def test_flag_reason_close_values(tmp_path):
    assert _reason(_report(tmp_path, 23.99951)) == (
        "the PSNR bound 23.9995 dB is below the required 24.0000 dB")


def test_uncertainty_scale_states_its_unit(tmp_path):
    html = _report(tmp_path, 30.0)
    cap = re.search(r"<b>uncertainty</b>([^<]*)</figcaption>", html).group(1)
    assert "interval width 0.020–0.400" in cap
    assert "normalised units: 1 = the image's full value range" in cap
    # an 8-bit image: the same widths in its own grey levels (x 255)
    assert "5.1–102 in uint8 source values" in cap
    labels = re.search(r'<div class="cbar-labels">(.*?)</div>', html).group(1)
    assert "width, normalised" in labels
