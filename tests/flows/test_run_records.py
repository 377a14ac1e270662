"""Run records stay true when a run dies part-way (issue 20 item 4)."""

from __future__ import annotations

import pytest
from test_pipeline_flow import _write_pngs

from helpers import save_tiny_prior
from restoreflow.storage.store import TileStore


def _spec(tmp_path, name: str, images: int) -> dict:
    """A small run that exports PNGs (the stage the tests make fail)."""
    return {"name": name, "sources": [_write_pngs(tmp_path / "src", images, 0)],
            "store": str(tmp_path / "store"),
            "degradation": "gaussian_blur(sigma=1)+gaussian_noise(sigma=0.05)",
            "prior": save_tiny_prior(tmp_path / "prior"),
            "restore": {"steps": 2, "tile": 32, "overlap": 8},
            "export": {"format": "png", "out": str(tmp_path / "out")}, "report": None}


def _stop_at_export(monkeypatch, spec: dict, export_task, error, match: str):
    """Run ``spec`` with ``export_task`` in place of the export task, expecting ``error``;
    returns the pipeline module (export restored) for the next run."""
    import restoreflow.flows.pipeline as F

    monkeypatch.setenv("RESTOREFLOW_TILE_SIZE", "16")
    with monkeypatch.context() as m:
        m.setattr(F, "export_task", export_task)
        with pytest.raises(error, match=match):
            F.pipeline_flow(spec)
    return F


class _Dies:
    """Stands in for the export task: the driver dies when it reaches export."""

    def submit(self, *a, **k):
        raise KeyboardInterrupt("killed during export")


def test_a_run_that_dies_stays_running_then_is_marked_interrupted(prefect_api, tmp_path,
                                                                   monkeypatch):
    spec = _spec(tmp_path, "rec", 2)
    F = _stop_at_export(monkeypatch, spec, _Dies(), BaseException, "killed during export")
    store = TileStore(tmp_path / "store")
    (dead,) = store.read_table("runs")
    assert dead["status"] == "running" and "counts" not in dead
    assert not store.exists(f"runs/{dead['run_id']}/manifest.json")
    # the quality rows it wrote belong to a run that the runs table knows
    q = store.read_table("quality")
    assert q and {r["run_id"] for r in q} == {dead["run_id"]}

    summary = F.pipeline_flow(spec)
    runs = {r["run_id"]: r for r in TileStore(tmp_path / "store").read_table("runs")}
    assert runs[dead["run_id"]]["status"] == "interrupted"
    assert runs[summary["run_id"]]["status"] == "complete"
    assert runs[summary["run_id"]]["counts"]["exported"] == 2
    assert store.exists(f"runs/{summary['run_id']}/manifest.json")


class _Fails:
    """Stands in for the export task: it raises an ordinary error."""

    def submit(self, *a, **k):
        raise RuntimeError("disk full\nsecond line")


def test_a_run_that_fails_is_marked_failed_with_its_error(prefect_api, tmp_path, monkeypatch):
    spec = _spec(tmp_path, "fail", 1)
    F = _stop_at_export(monkeypatch, spec, _Fails(), RuntimeError, "disk full")
    (row,) = TileStore(tmp_path / "store").read_table("runs")
    assert row["status"] == "failed"
    assert row["error"] == "RuntimeError: disk full"
    assert row["finished"] >= row["started"]
    # the next run leaves it failed (it is not a killed run)
    F.pipeline_flow(spec)
    runs = TileStore(tmp_path / "store").read_table("runs")
    assert [r["status"] for r in runs if r["run_id"] == row["run_id"]] == ["failed"]
