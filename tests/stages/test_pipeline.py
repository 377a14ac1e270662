"""Pipeline stages on a real local store with a tiny prior: restore, adapt, calibrate, score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import save_tiny_prior
from restoreflow.degradation import DegradationSpec
from restoreflow.retrieval.stored import build_index, load_index
from restoreflow.stages.adapt import build_matched_index
from restoreflow.stages.calibrate import (
    LAMBDA_GRID,
    calibration_path,
    fit_calibration,
    load_calibration,
    prepare_intervals,
    save_calibration,
    score,
    truth_metrics,
    write_intervals,
)
from restoreflow.stages.config import RestoreConfig
from restoreflow.stages.models import prior_hash
from restoreflow.stages.restore import restore_one
from restoreflow.stages.simulate import simulate_image
from restoreflow.storage.ingest import ingest_array
from restoreflow.storage.layout import DEGRADED, INPUT, INTERVAL_HI, INTERVAL_LO, RESTORED
from restoreflow.storage.store import TileStore

SPEC = "gaussian_blur(sigma=1)+gaussian_noise(sigma=0.05)"


@pytest.fixture(scope="module")
def prior_dir(tmp_path_factory):
    return save_tiny_prior(tmp_path_factory.mktemp("prior") / "tiny")


def _images(store, n, size=32, seed=0, grey_every=0):
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(n):
        base = rng.random((size // 4, size // 4, 3))
        img = np.kron(base, np.ones((4, 4, 1)))  # blocky, not pure noise
        img = (img * 255).astype(np.uint8)
        if grey_every and i % grey_every == 0:
            img = img[..., 0]
        ids.append(ingest_array(store, img, f"img{i}.png"))
    return ids


@pytest.fixture()
def store(tmp_path):
    return TileStore(str(tmp_path / "store"), tile_size=16)


def cfg(prior_dir, adapt=None, **restore):
    """Tiny restore settings: 3 steps, 32 px tiles; ``restore`` fields override them."""
    return RestoreConfig(degradation=SPEC, prior=prior_dir,
                         restore={"steps": 3, "tile": 32, "overlap": 8, **restore},
                         adapt=adapt or {})


def test_restore_writes_outputs_and_is_idempotent(store, prior_dir):
    ids = _images(store, 2, grey_every=2)
    c = cfg(prior_dir, posterior_samples=2)
    spec = DegradationSpec.parse(SPEC)
    for i in ids:
        simulate_image(store, i, spec, seed=0)
        res = restore_one(store, i, c, DEGRADED)
        assert res is not None and np.isfinite(res["features"]["measurement_consistency"])
        out = store.read(RESTORED, i)
        assert out.shape == store.shape(INPUT, i) and np.isfinite(out).all()
        lo, hi = store.read("restored.samples_lower", i), store.read("restored.samples_upper", i)
        assert (lo <= hi + 1e-6).all()
        assert store.attrs(RESTORED, i)["status"] == "complete"
    before = store.read(RESTORED, ids[0])
    assert restore_one(store, ids[0], c, DEGRADED) is None  # same settings: skipped
    again = restore_one(store, ids[0], cfg(prior_dir, posterior_samples=2, steps=4),
                          DEGRADED)
    assert again is not None and not np.array_equal(before, store.read(RESTORED, ids[0]))


def test_restore_is_reproducible_across_stores(tmp_path, prior_dir):
    outs = []
    for k in range(2):
        st = TileStore(str(tmp_path / f"s{k}"), tile_size=16)
        (i,) = _images(st, 1)
        simulate_image(st, i, DegradationSpec.parse(SPEC), seed=0)
        restore_one(st, i, cfg(prior_dir), DEGRADED)
        outs.append(st.read(RESTORED, i))
    assert np.array_equal(outs[0], outs[1])


def test_adaptation_retrieves_caches_and_records(store, prior_dir):
    ids = _images(store, 5, seed=1)
    info = build_index(store, ids[1:], embedder="efficientnet-lite0")
    assert info["added"] == 4 and build_index(store, ids[1:])["added"] == 0
    simulate_image(store, ids[0], DegradationSpec.parse(SPEC), seed=0)
    c = cfg(prior_dir, adapt={"enabled": True, "neighbours": 2, "steps": 2})
    with pytest.raises(ValueError, match="no reference index 'default@"):
        restore_one(store, ids[0], c, DEGRADED)  # the flows build the matched index first
    matched = build_matched_index(store, "default", c.spec, c.seed, "efficientnet-lite0", "cpu")
    assert matched["index"] == c.retrieval_index == f"default@{c.spec.hash[:12]}"
    assert matched["added"] == 4 and matched["size"] == 4
    assert build_matched_index(store, "default", c.spec, c.seed, "efficientnet-lite0",
                               "cpu")["added"] == 0
    clean_e, deg_e = load_index(store, "default"), load_index(store, c.retrieval_index)
    assert list(clean_e.ids) == list(deg_e.ids)
    assert not np.allclose(clean_e.embeddings, deg_e.embeddings)  # the references degraded
    res = restore_one(store, ids[0], c, DEGRADED)
    nbrs = [n["id"] for n in res["neighbours"]]
    assert len(nbrs) == 2 and ids[0] not in nbrs and set(nbrs) <= set(ids[1:])
    assert res["adapter_cached"] is False
    assert store.exists(f"adapters/{res['adapter']}/adapter_model.safetensors")
    first = store.read(RESTORED, ids[0])
    store.delete_image(RESTORED, ids[0])
    res2 = restore_one(store, ids[0], c, DEGRADED)
    assert res2["adapter_cached"] is True and res2["adapter"] == res["adapter"]
    assert np.array_equal(first, store.read(RESTORED, ids[0]))
    assert c.settings_hash("h") != cfg(prior_dir).settings_hash("h")
    clean = cfg(prior_dir, adapt={"enabled": True, "neighbours": 2, "steps": 2,
                                  "match_degradation": False})
    assert clean.retrieval_index == "default"
    store.delete_image(RESTORED, ids[0])
    assert len(restore_one(store, ids[0], clean, DEGRADED)["neighbours"]) == 2


def test_calibrate_and_score(store, prior_dir):
    ids = _images(store, 10, seed=2)
    c = cfg(prior_dir, posterior_samples=2)
    shash = c.settings_hash(prior_hash(prior_dir))
    rows = []
    for i in ids:
        simulate_image(store, i, DegradationSpec.parse(SPEC), seed=0)
        res = restore_one(store, i, c, DEGRADED)
        rows.append({"image_id": i, "features": res["features"], **truth_metrics(store, i)})
    cal = fit_calibration(store, rows, c, shash, alpha=0.3, pixel_epsilon=0.25,
                            pixel_delta=0.2)
    save_calibration(store, cal)
    loaded = load_calibration(store, shash)
    assert loaded["n"] == 10 and 0 <= loaded["pixel"]["lam"] <= 1
    pixel = {k: loaded["pixel"][k] for k in ("lam", "epsilon", "delta", "lower_q", "upper_q",
                                              "n")}
    assert pixel == {"lam": _lambda_as_at_edcd80a(store, ids, c, 0.25, 0.2, "wsr"),
                     "epsilon": 0.25, "delta": 0.2, "lower_q": 0.05, "upper_q": 0.95, "n": 10}
    assert loaded["pixel"]["scale"] == "constant" and loaded["pixel"]["n_sources"] == 10
    assert loaded["pixel"]["bound"] == "wsr"
    # the bound of edcd80a on request, to the same lambda as then
    hb = fit_calibration(store, rows, c, shash, alpha=0.3, pixel_epsilon=0.25,
                         pixel_delta=0.2, pixel_bound="hb").pixel
    assert hb.bound == "hb" and hb.lam == _lambda_as_at_edcd80a(store, ids, c, 0.25, 0.2, "hb")
    assert hb.lam >= loaded["pixel"]["lam"]
    old = json.loads(OLD_CALIBRATION.read_text())
    assert set(old) <= set(loaded) and set(old["pixel"]) <= set(loaded["pixel"])
    # full conformal: every source calibrates (one row each); out-of-sample bounds and
    # coverage (leave one source out)
    assert loaded["sources"] == 10 and {r["fold"] for r in loaded["rows"]} == {"calibration"}
    assert loaded["psnr"]["kind"] == "FullConformalBound"
    split = fit_calibration(store, rows, c, shash, alpha=0.3, method="residual").to_dict()
    assert {r["fold"] for r in split["rows"]} == {"fit", "calibration"}
    assert loaded["coverage"]["method"] == "leave one source out"
    assert any("fewer than 20" in w for w in loaded["warnings"])
    # 10 images cannot certify epsilon = delta = 0.1 (HB bound at zero risk is 0.21)
    strict = fit_calibration(store, rows, c, shash, alpha=0.3)
    assert strict.pixel is None and "more calibration images" in strict.coverage["pixel_note"]
    # the grids end at intervals spanning everything: the remedy named is more sources
    assert "10 calibration sources cannot certify" in strict.coverage["pixel_note"]
    assert "needs at least 25" in strict.coverage["pixel_note"]
    s = score(rows[0]["features"], loaded, shash, min_psnr=99)
    assert s["psnr_lower"] is not None and s["flagged"] is True
    assert s["psnr_lower"] < 99 and s["out_of_calibration"] in (True, False)
    other = score(rows[0]["features"], loaded, "another-hash")
    assert other["psnr_lower"] is None and "other restore settings" in other["warning"]
    prepare_intervals(store, ids[0], s["pixel"])
    write_intervals(store, ids[0], s["pixel"])
    lo, hi = store.read(INTERVAL_LO, ids[0]), store.read(INTERVAL_HI, ids[0])
    assert lo.min() >= 0.0 and hi.max() <= 1.0  # cut to the data range
    inside = (lo > 0) & (hi < 1)  # (with the tiny prior most intervals are all of it)
    assert np.all(hi >= lo) and np.all((hi - lo)[inside] >= 2 * s["lambda"] - 1e-6)
    # alpha 0.05 needs 19 sources (full conformal; split conformal at 0.1 needs 17, 9 in
    # its calibration fold): no bound, and it says why
    few = fit_calibration(store, rows, c, shash, alpha=0.05)
    assert few.psnr is None and any("needs at least 19" in w for w in few.warnings)
    s = score(rows[0]["features"], few.to_dict(), shash)
    assert s["psnr_lower"] is None and "needs at least 19" in s["warning"]
    few = fit_calibration(store, rows, c, shash, alpha=0.1, method="residual")
    assert few.psnr is None and any("needs at least 17" in w for w in few.warnings)


OLD_CALIBRATION = Path(__file__).parent / "data" / "calibration-edcd80a.json"


def _lambda_as_at_edcd80a(store, ids, c, epsilon, delta, bound):
    """The per-pixel lambda as fit_calibration chose it at edcd80a (its own loop over
    LAMBDA_GRID; then always with the Hoeffding-Bentkus bound), kept here as the
    reference for the shipped code path."""
    from restoreflow.quality.rcps import Intervals, calibrate_lambda, excess

    losses = []
    for i in ids:
        e = excess(Intervals(store.read("restored.samples_lower", i),
                             store.read("restored.samples_upper", i)),
                   np.clip(store.read(INPUT, i, normalised=True), 0, 1))
        losses.append([(e > lam).mean() for lam in LAMBDA_GRID])
    return calibrate_lambda(np.array(losses), LAMBDA_GRID, epsilon, delta, bound)


def test_calibration_file_from_edcd80a_loads_and_scores(store):
    """A calibration file written by save_calibration at edcd80a (test_calibrate_and_score's
    images, tiny prior) still loads and scores to the numbers it gave then."""
    shash = "e238d850ca56eb18"
    store.put_bytes(calibration_path(shash), OLD_CALIBRATION.read_bytes())
    loaded = load_calibration(store, shash)
    assert loaded == json.loads(OLD_CALIBRATION.read_text())
    s = score(loaded["rows"][0]["features"], loaded, shash, min_psnr=20)
    assert s == {"psnr_lower": pytest.approx(7.7835087452458485, rel=1e-12),
                 "ssim_lower": pytest.approx(0.0890629997669869, rel=1e-12), "alpha": 0.3,
                 "flagged": True, "lambda": 0.835, "warning": None,
                 "out_of_calibration": None, "novelty_pvalue": None,  # no guard then
                 "pixel": {"lam": 0.835, "epsilon": 0.25, "delta": 0.2, "lower_q": 0.05,
                           "upper_q": 0.95, "n": 10, "scale": "constant", "floor": 0.0,
                           "n_sources": None, "mean_width": None,
                           "bound": "hb"}}  # the only bound then


def test_local_intervals_tile_by_tile_equal_the_whole_image(tmp_path):
    """The local scale smooths the spread and uses the image's mean spread: written tile
    by tile (16 px tiles, halo read around each) the intervals are the whole image's."""
    from restoreflow.quality.rcps import Intervals, PixelCalibration

    store = TileStore(str(tmp_path / "store"), tile_size=16)
    rng = np.random.default_rng(3)
    lo = rng.uniform(0, 0.5, (3, 45, 38)).astype(np.float32)
    hi = (lo + rng.exponential(0.05, lo.shape)).astype(np.float32)
    hi[:, :20, :20] += 0.3  # a region of doubt
    for coll, arr in ((RESTORED, (lo + hi) / 2), (f"{RESTORED}.samples_lower", lo),
                      (f"{RESTORED}.samples_upper", hi)):
        store.create_image(coll, "im", arr.shape, np.float32)
        store.write_region(coll, "im", arr, 0, 0)
    rule = PixelCalibration(lam=1.5, epsilon=0.1, delta=0.1, lower_q=0.05, upper_q=0.95, n=20,
                            scale="local", floor=0.001)
    pixel = rule.to_dict()
    prepare_intervals(store, "im", pixel)
    write_intervals(store, "im", pixel)
    want = rule.widen(Intervals(lo.astype(np.float64), hi.astype(np.float64)))
    got_lo, got_hi = store.read(INTERVAL_LO, "im"), store.read(INTERVAL_HI, "im")
    np.testing.assert_allclose(got_lo, want.lower, atol=2e-6)
    np.testing.assert_allclose(got_hi, want.upper, atol=2e-6)
    width = got_hi - got_lo
    assert width[:, :15, :15].mean() > 2 * width[:, 30:, 25:].mean()  # wider where in doubt


def test_references_are_degraded_like_the_queries(tmp_path, caplog):
    """degraded_like: a reference blurred and noised like the run's images (its own draw,
    not the query's), prepared as a query; a reference the operator cannot take (a mask
    of another size) is embedded clean, with a warning naming it."""
    from restoreflow.stages.adapt import degraded_like

    rng = np.random.default_rng(0)
    x = torch.from_numpy(np.kron(rng.random((3, 8, 8)), np.ones((1, 4, 4)))).float()
    prep = degraded_like(DegradationSpec.parse(SPEC), 0)
    a, b = prep("ref1", x), prep("ref1", x)
    assert a.shape == x.shape and torch.equal(a, b)  # deterministic per reference
    assert not torch.equal(prep("ref2", x), a)  # each reference its own noise
    # blurred: less high-frequency energy than the reference itself
    assert float(torch.diff(a, dim=-1).abs().mean()) < float(torch.diff(x, dim=-1).abs().mean())
    grey = prep("grey", x[:1])
    assert grey.shape == (3, 32, 32)  # a grey reference is degraded as a grey RGB image
    np.save(tmp_path / "mask.npy", np.eye(16))
    masked = degraded_like(DegradationSpec.parse(f"inpaint_mask(path={tmp_path / 'mask.npy'})"),
                           0)
    with caplog.at_level("WARNING"):
        assert torch.equal(masked("big", x), x)
    assert "reference big indexed clean" in caplog.text
