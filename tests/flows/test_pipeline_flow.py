"""The pipeline flow end to end on a real Prefect API, with a tiny prior."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from helpers import save_tiny_prior
from restoreflow.storage.store import TileStore


def _write_pngs(d, n, seed, size=32):
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        base = rng.random((size // 4, size // 4, 3))
        img = (np.kron(base, np.ones((4, 4, 1))) * 255).astype(np.uint8)
        Image.fromarray(img).save(d / f"im{i}.png")
    return str(d)


@pytest.fixture()
def dirs(tmp_path):
    return {
        "src": _write_pngs(tmp_path / "src", 3, 0),
        "clean": _write_pngs(tmp_path / "clean", 10, 1),
        "corpus": _write_pngs(tmp_path / "corpus", 4, 2),
        "prior": save_tiny_prior(tmp_path / "prior"),
        "store": str(tmp_path / "store"),
        "out": str(tmp_path / "out"),
    }


class _Counting:
    """A pydantic validator that counts the validations it makes."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name.startswith("validate_"):
            def counted(*a, **k):
                self.calls += 1
                return attr(*a, **k)
            return counted
        return attr


@pytest.mark.slow
def test_pipeline_end_to_end_and_resume(prefect_api, dirs, monkeypatch, tmp_path):
    from restoreflow import degradation
    from restoreflow.flows.pipeline import pipeline_flow
    from restoreflow.spec import RunSpec

    (tmp_path / "bad.png").write_bytes(b"not a png")
    monkeypatch.setenv("RESTOREFLOW_TILE_SIZE", "16")
    from restoreflow.settings import get_settings

    get_settings.cache_clear()
    spec = {
        "name": "t", "sources": [dirs["src"], str(tmp_path / "bad.png")],
        "store": dirs["store"], "degradation": "gaussian_blur(sigma=1)+gaussian_noise(sigma=0.05)",
        "prior": dirs["prior"], "restore": {"steps": 3, "tile": 32, "overlap": 8,
                                            "posterior_samples": 2},
        "adapt": {"enabled": True, "corpus": [dirs["corpus"]], "neighbours": 2, "steps": 2},
        "calibration": {"clean": [dirs["clean"]], "alpha": 0.3, "min_psnr": 99,
                        "pixel_epsilon": 0.25, "pixel_delta": 0.2},
        "export": {"format": "png", "out": dirs["out"], "collections": ["restored"]},
        "report": None,
    }
    # the spec is validated once (where it is made), the degradation text parsed once
    validator = _Counting(RunSpec.__pydantic_validator__)
    monkeypatch.setattr(RunSpec, "__pydantic_validator__", validator)
    parsed: list[str] = []
    parse = degradation.DegradationSpec._parse_text.__func__
    monkeypatch.setattr(degradation.DegradationSpec, "_parse_text", classmethod(
        lambda cls, text: parsed.append(text) or parse(cls, text)))
    degradation._parsed.cache_clear()
    spec = RunSpec.model_validate(spec)
    s1 = pipeline_flow(spec)
    assert validator.calls == 1
    assert parsed and len(parsed) == len(set(parsed)), parsed
    assert s1["counts"] == {"images": 3, "restored": 3, "skipped": 0, "rejected": 1,
                            "flagged": 3, "exported": 3, "out_of_calibration": 0}
    assert s1["calibration"] == s1["settings_hash"] and s1["mean_psnr_lower"] is not None
    store = TileStore(dirs["store"])
    q = [r for r in store.read_table("quality") if r["run_id"] == s1["run_id"]]
    assert len(q) == 3 and all(r["psnr_lower"] < 99 and r["flagged"] for r in q)
    assert all(len(r["neighbours"]) == 2 for r in q)
    ids = [r["image_id"] for r in q]
    assert all(store.has("interval_lower", i) for i in ids)
    m = json.loads(store.get_bytes(f"runs/{s1['run_id']}/manifest.json"))
    assert m["prior_hash"] and m["versions"]["torch"] and len(m["adapters"]) == 3
    first = {i: store.read("restored", i) for i in ids}
    # second run of the same spec: nothing to restore, same outputs
    s2 = pipeline_flow(spec)
    assert validator.calls == 1
    assert s2["counts"]["restored"] == 0 and s2["counts"]["skipped"] == 3
    assert all(np.array_equal(first[i], store.read("restored", i)) for i in ids)
    cal_path = f"calibrations/{s1['settings_hash']}.json"
    assert json.loads(store.get_bytes(cal_path))["alpha"] == 0.3
    # the same settings with another calibration (alpha): calibrated again, never reused
    spec3 = spec.model_copy(update={"calibration": spec.calibration.model_copy(
        update={"alpha": 0.4})})
    s3 = pipeline_flow(spec3)
    assert s3["counts"]["restored"] == 0 and s3["calibration"] == s1["settings_hash"]
    assert json.loads(store.get_bytes(cal_path))["alpha"] == 0.4
    get_settings.cache_clear()
