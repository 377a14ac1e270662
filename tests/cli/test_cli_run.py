"""`restoreflow run` on the embedded Dask cluster, then `rerun MANIFEST` into a new store:
bit-identical outputs; a bad spec fails before any work with the field named."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import save_tiny_prior
from restoreflow.storage.store import TileStore


def _cli(*args, cwd, env):
    exe = os.path.join(os.path.dirname(sys.executable), "restoreflow")
    return subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture()
def env(tmp_path):
    return {**os.environ, "PREFECT_HOME": str(tmp_path / "ph"), "RESTOREFLOW_DASK_WORKERS": "1",
            "RESTOREFLOW_TILE_SIZE": "16", "OMP_NUM_THREADS": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


@pytest.mark.slow
def test_run_then_rerun_is_bit_identical(tmp_path, env):
    """The spec uses paths relative to its folder A (run from A); the manifest records
    them absolute, so `rerun MANIFEST --store NEW` from another folder B finds the
    sources and prior and gives the same images (issue 19 item 3)."""
    a, b = tmp_path / "a", tmp_path / "b"
    src = a / "src"
    src.mkdir(parents=True)
    b.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        img = (np.kron(rng.random((8, 8, 3)), np.ones((4, 4, 1))) * 255).astype(np.uint8)
        Image.fromarray(img).save(src / f"p{i}.png")
    save_tiny_prior(a / "prior")
    spec = {"name": "cli", "sources": ["src"], "store": "store",
            "degradation": "inpaint(ratio=0.5)+gaussian_noise(sigma=0.02)",
            "prior": "prior",
            "restore": {"steps": 3, "tile": 32, "overlap": 8}, "report": None}
    (a / "spec.yaml").write_text(yaml.safe_dump(spec))
    r = _cli("run", "spec.yaml", cwd=a, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "restored" in r.stdout and "Traceback" not in r.stderr
    store = TileStore(str(a / "store"))
    (run,) = store.read_table("runs")
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(store.get_bytes(f"runs/{run['run_id']}/manifest.json"))
    m = json.loads(manifest.read_text())
    assert m["spec"]["degradation"].startswith("inpaint(") and m["device"] == "cpu"
    assert m["spec"]["sources"] == [str(src)] and m["spec"]["prior"] == str(a / "prior")
    assert m["spec"]["store"] == str(a / "store")
    r = _cli("rerun", str(manifest), "--store", "again", cwd=b, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    again = TileStore(str(b / "again"))
    ids = store.image_ids("restored")
    assert len(ids) == 2 and sorted(ids) == sorted(again.image_ids("restored"))
    for i in ids:
        assert np.array_equal(store.read("restored", i), again.read("restored", i))
        assert np.array_equal(store.read("degraded", i), again.read("degraded", i))
    (run2,) = again.read_table("runs")
    m2 = json.loads(again.get_bytes(f"runs/{run2['run_id']}/manifest.json"))
    assert m2["spec"]["store"] == str(b / "again")  # --store recorded absolute too


def test_bad_spec_fails_before_work(tmp_path, env):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(
        {"sources": ["x"], "degradation": "denoise", "restore": {"steps": -3}, "colour": 1}))
    r = _cli("run", "bad.yaml", cwd=tmp_path, env=env)
    assert r.returncode == 2
    assert "restore.steps" in r.stderr and "colour: unknown field" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "restoreflow-store").exists()
