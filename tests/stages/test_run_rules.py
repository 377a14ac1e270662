"""The driver's rules of a run (stages/run.py): when a stored calibration applies, and
why none does (issue 33, item 1; issue 30, item 1)."""

from __future__ import annotations

import json

from restoreflow.settings import Settings
from restoreflow.spec import CalibrationOptions
from restoreflow.stages.config import RestoreConfig
from restoreflow.stages.run import calibration_applies, made_with, no_calibration_reason
from restoreflow.storage.store import TileStore

DEG = "gaussian_blur(sigma=1)+gaussian_noise(sigma=0.05)"


def test_a_calibration_applies_only_to_the_options_and_images_it_was_made_with():
    c = CalibrationOptions(clean=["cal/"], alpha=0.1)
    stored = {"made_with": made_with(c, ["b", "a"])}
    assert calibration_applies(stored, c, ["a", "b"])
    assert calibration_applies(stored, c.model_copy(update={"min_psnr": 30.0}), ["a", "b"])
    assert calibration_applies(stored, c.model_copy(update={"clean": ["elsewhere/"]}),
                               ["a", "b"])  # the same images from another folder
    assert not calibration_applies(stored, c.model_copy(update={"alpha": 0.2}), ["a", "b"])
    assert not calibration_applies(stored, c.model_copy(update={"pixel_epsilon": 0.2}),
                                   ["a", "b"])
    assert not calibration_applies(stored, c.model_copy(update={"group_by": "folder"}),
                                   ["a", "b"])
    assert not calibration_applies(stored, c, ["a", "b", "c"])
    assert not calibration_applies({"alpha": 0.1}, c, ["a", "b"])  # older: not recorded
    assert not calibration_applies(None, c, ["a", "b"])


def test_no_calibration_reason_names_what_differs(tmp_path):
    store = TileStore(str(tmp_path / "st"), Settings())
    cfg = RestoreConfig(degradation=DEG, restore={"posterior_samples": 2})
    assert no_calibration_reason(store, cfg).startswith("the store holds no calibration")
    other = cfg.model_copy(update={"restore": cfg.restore.model_copy(
        update={"posterior_samples": 4, "steps": 20})})
    store.put_bytes("calibrations/abc.json", json.dumps(
        {"settings_hash": "abc", "settings": other.model_dump(mode="json")}).encode())
    why = no_calibration_reason(store, cfg)
    assert why.startswith("no calibration for these settings; the closest (abc) differs in ")
    assert "restore.posterior_samples (4 vs 2)" in why and "restore.steps (20 vs 8)" in why


def test_scoring_without_a_pixel_rule_removes_stale_intervals(tmp_path):
    """Intervals of an earlier calibration would describe another restoration: scoring
    against a calibration with no pixel rule (here none at all) removes them
    (issue 33, item 4)."""
    import numpy as np

    from restoreflow.stages.run import score_images

    store = TileStore(str(tmp_path / "st"), Settings())
    store.create_image("restored", "a", (3, 8, 8), np.float32,
                       attrs={"features": {"measurement_consistency": 0.1}})
    store.mark_complete("restored", "a")
    for coll in ("interval_lower", "interval_upper"):
        store.create_image(coll, "a", (3, 8, 8), np.float32)
        store.mark_complete(coll, "a")
    cfg = RestoreConfig(degradation=DEG, restore={"posterior_samples": 2})
    scores = score_images(store, cfg, ["a"], "r1", "h", None, {}, None)
    assert len(scores.rows) == 1 and not scores.intervals
    assert not store.listed_ids("interval_lower") and not store.listed_ids("interval_upper")
