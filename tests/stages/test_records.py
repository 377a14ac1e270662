"""A run's records: the runs and quality rows, the summary and the manifest, with the
exact keys and values the tables, the report and the Prefect UI read."""

from __future__ import annotations

import json

import pytest

from restoreflow.spec import RunSpec
from restoreflow.stages import records
from restoreflow.stages.config import RestoreConfig
from restoreflow.storage.layout import QUALITY_TABLE, RUNS_TABLE, QualityRow, RunRow
from restoreflow.storage.store import TileStore

DEG = "gaussian_blur(sigma=1)"
RUN = RunSpec.from_dict({"name": "rec", "sources": ["/src"], "degradation": DEG, "seed": 3,
                         "restore": {"steps": 5, "sampler": "ddnm"}})
CFG = RestoreConfig.from_run(RUN)
FEATURES = {"measurement_consistency": 0.5, "noise_sigma_y": 0.1}
CALIBRATED = {"psnr_lower": 21.5, "ssim_lower": 0.6, "alpha": 0.1, "flagged": True,
              "lambda": 0.02, "warning": None}
UNCALIBRATED = {"psnr_lower": None, "ssim_lower": None, "alpha": None, "flagged": False,
                "warning": "not calibrated: no bound"}


class _Settings:
    device = "auto"

    def public(self):
        return {"device": "auto", "store": "/s"}


@pytest.fixture()
def store(tmp_path):
    return TileStore(str(tmp_path / "store"))


def _start(started=100.0):
    return records.start_row("rec-1", RUN, "/s", started)


def test_a_run_starts_with_its_identity_only():
    assert _start().to_row() == {"run_id": "rec-1", "name": "rec", "spec_hash": RUN.hash,
                                 "store": "/s", "status": "running", "started": 100.0}


def test_quality_row_of_a_calibrated_simulated_image():
    attrs = {"name": "a.png", "features": FEATURES,
             "neighbours": [{"id": "n1", "score": 0.9}, {"id": "n2", "score": 0.8}]}
    row = records.quality_row("img1", attrs, "rec-1", "h" * 16, 20.0, CALIBRATED,
                              {"psnr_true": 25.0, "ssim_true": 0.7})
    assert row.to_row() == {
        "image_id": "img1", "name": "a.png", "run_id": "rec-1", "settings_hash": "h" * 16,
        "min_psnr": 20.0, "psnr_lower": 21.5, "ssim_lower": 0.6, "alpha": 0.1, "flagged": True,
        "lambda": 0.02, "warning": None, "psnr_true": 25.0, "ssim_true": 0.7,
        "features": FEATURES, "neighbours": ["n1", "n2"]}
    # the order of the dict the flow wrote before (tables sort keys; kept anyway)
    assert list(row.to_row()) == [
        "image_id", "name", "run_id", "settings_hash", "min_psnr", "psnr_lower", "ssim_lower",
        "alpha", "flagged", "lambda", "warning", "psnr_true", "ssim_true", "features",
        "neighbours"]


def test_quality_row_without_calibration_or_truth_has_no_lambda_and_no_true_metrics():
    row = records.quality_row("img2", {"features": FEATURES}, "rec-1", "h", None,
                              UNCALIBRATED)
    assert row.to_row() == {
        "image_id": "img2", "name": None, "run_id": "rec-1", "settings_hash": "h",
        "min_psnr": None, "psnr_lower": None, "ssim_lower": None, "alpha": None,
        "flagged": False, "warning": "not calibrated: no bound", "features": FEATURES,
        "neighbours": []}


def test_quality_rows_refuse_a_score_they_do_not_know():
    with pytest.raises(ValueError, match="psnr_upper"):
        records.quality_row("i", {"features": {}}, "r", "h", None,
                            {**UNCALIBRATED, "psnr_upper": 1.0})


def _summary(monkeypatch, calibration, rows, truth):
    monkeypatch.setattr(records.time, "time", lambda: 200.0)
    results = {"img1": {"timings": {"restore": 2.0, "retrieve": 0.5}},
               "img3": {"timings": {"restore": 3.0}}}
    return records.run_summary(_start(), CFG, "h", calibration, ["img1", "img2", "img3"],
                               results, 1, rows, 4, truth, {"ingest": 1.0, "restore": 6.0})


def test_run_summary(monkeypatch):
    rows = [records.quality_row("img1", {"features": {}}, "rec-1", "h", 20.0, CALIBRATED),
            records.quality_row("img2", {"features": {}}, "rec-1", "h", 20.0,
                                {**CALIBRATED, "flagged": False, "psnr_lower": 23.5}),
            records.quality_row("img3", {"features": {}}, "rec-1", "h", 20.0,
                                {**CALIBRATED, "psnr_lower": None, "flagged": False})]
    truth = {"img1": {"psnr_true": 24.0}, "img2": {"psnr_true": 26.0}}
    summary = _summary(monkeypatch, {"settings_hash": "h"}, rows, truth)
    assert summary.to_row() == {
        "run_id": "rec-1", "name": "rec", "spec_hash": RUN.hash, "store": "/s",
        "degradation": RUN.degradation, "sampler": "ddnm", "steps": 5, "adapt": False,
        "settings_hash": "h", "calibration": "h",
        "counts": {"images": 3, "restored": 2, "skipped": 1, "rejected": 1, "flagged": 1,
                   "exported": 4, "out_of_calibration": 0},
        "mean_psnr_lower": 22.5, "mean_psnr_true": 25.0,
        # adaptation off: no retrieve or adapt rows of zeros (issue 30, item 9)
        "timings": {"ingest": 1.0, "restore": 6.0, "restore_compute": 5.0},
        "started": 100.0, "finished": 200.0, "status": "running"}
    with_report = records.with_report(summary, "/r.html", 0.25)
    assert with_report.to_row()["report"] == "/r.html"
    assert with_report.timings["report"] == 0.25 and list(with_report.to_row())[-1] == "report"
    assert "report" not in summary.to_row()


def test_run_summary_without_calibration_or_truth(monkeypatch):
    other = _summary(monkeypatch, {"settings_hash": "other"}, [], {})
    assert other.calibration is None and other.mean_psnr_lower is None
    assert other.mean_psnr_true is None and other.counts.flagged == 0
    assert _summary(monkeypatch, None, [], {}).calibration is None


def test_manifest_and_finish(store, monkeypatch):
    summary = _summary(monkeypatch, None, [], {})
    results = {"img1": {"device": "cuda:0", "adapter": "k1", "timings": {}},
               "img3": {"device": "cpu", "timings": {}}}
    rejected = [{"source": "/src/x.png", "reason": "not an image"}]
    m = records.run_manifest(summary, RUN, CFG, "p" * 12, _Settings(), results, rejected)
    assert list(m)[:len(summary.to_row())] == list(summary.to_row())
    assert {k: m[k] for k in list(m)[len(summary.to_row()):]} == {
        "spec": RUN.model_dump(mode="json"), "settings": {"device": "auto", "store": "/s"},
        "restore_config": CFG.model_dump(mode="json"), "prior_hash": "p" * 12,
        "versions": records.versions(), "host": m["host"], "platform": m["platform"],
        "device": "auto", "worker_devices": ["cpu", "cuda:0"], "seeds": {"run": 3},
        "rejected": rejected, "adapters": ["k1"], "calibration_summary": None}
    assert m["status"] == "complete" and set(records.versions()) == set(records.PACKAGES)
    # the calibration it was scored with: out-of-sample coverage only
    cal = {"settings_hash": "h", "alpha": 0.1, "n": 60, "sources": 30, "warnings": [],
           "coverage": {"psnr": 0.9, "ssim": 0.93, "method": "leave one source out"}}
    m2 = records.run_manifest(summary, RUN, CFG, "p" * 12, _Settings(), results, rejected, cal)
    assert m2["calibration_summary"] == {
        "settings_hash": "h", "alpha": 0.1, "images": 60, "sources": 30, "warnings": [],
        "coverage_out_of_sample": {"psnr": 0.9, "ssim": 0.93}}
    old = {**cal, "coverage": {"psnr": 1.0, "ssim": 1.0}}  # in-sample figures: not repeated
    assert records.calibration_summary(old)["coverage_out_of_sample"] is None

    records.record_run(store, _start())
    done = records.finish_run(store, summary, m)
    assert done.status == "complete"
    assert json.loads(store.get_bytes("runs/rec-1/manifest.json")) == json.loads(
        json.dumps(m))
    (row,) = store.read_table(RUNS_TABLE)
    assert row == {**summary.to_row(), "status": "complete"}


def test_run_ids_stay_unique(store):
    assert records.unique_run_id(store, "rec-1") == "rec-1"
    for run_id in ("rec-1", "rec-1-2"):
        records.record_run(store, records.start_row(run_id, RUN, "/s", 1.0))
    assert records.unique_run_id(store, "rec-1") == "rec-1-3"
    assert records.unique_run_id(store, "rec-9") == "rec-9"


def test_reconcile_marks_runs_left_running(store):
    for run_id in ("dead", "almost", "ok"):
        records.record_run(store, records.start_row(run_id, RUN, "/s", 1.0))
    store.put_bytes(records.manifest_path("almost"), b"{}")
    store.upsert_row(RUNS_TABLE, {**store.read_table(RUNS_TABLE)[2], "status": "complete"},
                     key=("run_id",))
    changed = records.reconcile_runs(store)
    assert [(r["run_id"], r["status"]) for r in changed] == [("dead", "interrupted"),
                                                             ("almost", "complete")]
    assert {r["run_id"]: r["status"] for r in store.read_table(RUNS_TABLE)} == {
        "dead": "interrupted", "almost": "complete", "ok": "complete"}
    assert records.reconcile_runs(store) == []


def test_quality_rows_are_written_once_per_run_and_image(store):
    rows = [records.quality_row("img1", {"features": {"f": float("inf")}}, "rec-1", "h", None,
                                CALIBRATED, {"psnr_true": float("inf"), "ssim_true": 1.0})]
    assert records.record_quality(store, rows) == 1
    assert records.record_quality(store, rows) == 0
    (back,) = store.read_table(QUALITY_TABLE)
    assert back["psnr_true"] == "inf" and back["features"] == {"f": "inf"}  # strict JSON
    assert QualityRow.model_validate(back).to_row() == {**rows[0].to_row(), **{
        "psnr_true": float("inf"), "features": {"f": float("inf")}}}


def test_prefect_artifact_forms(monkeypatch):
    rows = [records.quality_row("img1", {"name": "a.png", "features": {}}, "rec-1", "h", 20.0,
                                CALIBRATED, {"psnr_true": 24.0, "ssim_true": 0.7}),
            records.quality_row("img2", {"features": {}}, "rec-1", "h", None, UNCALIBRATED)]
    summary = records.with_report(_summary(monkeypatch, {"settings_hash": "h"}, rows, {}),
                                  "/r.html", 0.25)
    assert records.summary_markdown(summary) == "\n".join([
        "## restoreflow run `rec-1`", "",
        f"- degradation `{RUN.degradation}`, ddnm 5 steps, adaptation off",
        "- images 3: restored 2, skipped 1, rejected 1, flagged 1",
        "- calibration: h", "- report: `/r.html`", "",
        "| stage | seconds |", "|---|---|", "| ingest | 1.0 |", "| restore | 6.0 |",
        "| restore_compute | 5.0 |",
        "| report | 0.2 |"])
    assert records.quality_table(rows) == [
        {"image": "a.png", "image_id": "img1", "psnr_lower": 21.5, "ssim_lower": 0.6,
         "psnr_true": 24.0, "flagged": True, "out_of_calibration": None},
        {"image": "img2", "image_id": "img2", "psnr_lower": None, "ssim_lower": None,
         "psnr_true": None, "flagged": False, "out_of_calibration": None}]


def test_row_types_forbid_unknown_fields():
    with pytest.raises(ValueError):
        RunRow(run_id="r", name="n", spec_hash="s", store="/s", status="running",
               started=1.0, colour=1)
    with pytest.raises(ValueError):
        RunRow(run_id="r", name="n", spec_hash="s", store="/s", status="done", started=1.0)
