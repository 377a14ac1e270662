"""Names and rules of the store's layout, in one place (docs/store-layout.md has it in full)::

    <store>/zarr.json                      root group, attrs {"restoreflow_layout": 1,
                                                                  "tile_size": T}
    <store>/<collection>/zarr.json         one group per collection (input, degraded, ...)
    <store>/<collection>/<image_id>/       one group per image, attrs = provenance + status
        pixels                             array dims ("band", "y", "x"), shape (C, H, W),
                                           chunks (C, T, T): one tile per chunk
    <store>/tables/<name>.json             small JSON tables (list of row dicts)

``input`` holds what was ingested (sources, calibration and corpus images); ``degraded``
the simulated measurements y; ``restored`` the restorations (with
``restored.samples_lower`` / ``restored.samples_upper`` for posterior-sample quantiles);
``interval_lower`` / ``interval_upper`` the calibrated per-pixel intervals. An image's
``status`` is "writing" until every tile is written, then "complete". The rows of the
``runs`` and ``quality`` tables are :class:`RunRow` and :class:`QualityRow`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

INPUT, DEGRADED, RESTORED = "input", "degraded", "restored"
INTERVAL_LO, INTERVAL_HI = "interval_lower", "interval_upper"

# tables (storage/tables.py: ``tables/<name>.json``)
RUNS_TABLE, QUALITY_TABLE, REJECTED_TABLE = "runs", "quality", "rejected"

LAYOUT_VERSION = 1

PIXELS = "pixels"
DIMS = ("band", "y", "x")
TABLES_DIR = "tables"
SOURCE_DTYPES = ("uint8", "uint16", "int16", "int32", "float32", "float64")
DERIVED_DTYPE = "float32"
STATUS_WRITING = "writing"
STATUS_COMPLETE = "complete"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RESERVED = {TABLES_DIR, "zarr.json"}


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in RESERVED:
        raise ValueError(
            f"invalid {kind} name {name!r}: use 1-128 characters [A-Za-z0-9._-], "
            f"starting with a letter or digit, not {sorted(RESERVED)}"
        )
    return name


# ---- table rows -------------------------------------------------------------------------
# Rows are written as JSON objects (``TileStore.write_table``: keys sorted, non-finite
# floats as strings). ``to_row()`` leaves out the fields that were not given: a run's row
# holds only what is known at its start until the run finishes, and a quality row has
# ``lambda`` only when the image was scored against its calibration and ``psnr_true`` /
# ``ssim_true`` only when its degradation was simulated.

RunStatus = Literal["running", "complete", "interrupted", "failed"]


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_row(self) -> dict:
        """The row as written to its table (fields not given are absent)."""
        return self.model_dump(mode="python", by_alias=True, exclude_unset=True)


class RunCounts(_Row):
    images: int
    restored: int
    skipped: int
    rejected: int
    flagged: int
    exported: int
    out_of_calibration: int = 0


class RunRow(_Row):
    """A row of the ``runs`` table (and the run summary a pipeline returns). At the run's
    start only its identity, ``status="running"`` and ``started``; the rest when it ends."""

    run_id: str
    name: str
    spec_hash: str
    store: str
    degradation: str | None = None
    sampler: str | None = None
    steps: int | None = None
    adapt: bool | None = None
    settings_hash: str | None = None
    calibration: str | None = Field(None, description="the settings hash it was scored with")
    counts: RunCounts | None = None
    mean_psnr_lower: float | None = None
    mean_psnr_true: float | None = None
    timings: dict[str, float] | None = Field(None, description="seconds per stage")
    started: float
    finished: float | None = None
    status: RunStatus
    report: str | None = None
    error: str | None = Field(None, description="why a failed run stopped (one line)")


class QualityRow(_Row):
    """A row of the ``quality`` table: one image's conformal bounds, flag and features in
    one run (key ``run_id``, ``image_id``)."""

    image_id: str
    name: str | None
    run_id: str
    settings_hash: str
    min_psnr: float | None
    psnr_lower: float | None
    ssim_lower: float | None
    alpha: float | None
    flagged: bool
    lambda_: float | None = Field(None, alias="lambda",
                                  description="RCPS per-pixel lambda of the calibration")
    warning: str | None
    out_of_calibration: bool | None = Field(
        None, description="unlike the calibration images (shift guard): bound not guaranteed")
    novelty_pvalue: float | None = None
    psnr_true: float | None = None
    ssim_true: float | None = None
    features: dict[str, float]
    neighbours: list[str]


#: ``coverage.method`` of a calibration whose row bounds and coverage are out of sample
#: (each source bounded by a calibration made without it); older calibrations lack it.
COVERAGE_METHOD = "leave one source out"


def out_of_sample_coverage(calibration: Mapping[str, Any]) -> dict | None:
    """The calibration's out-of-sample PSNR/SSIM coverage, or None when it only has
    in-sample figures (those are never shown)."""
    cov = calibration.get("coverage")
    if not isinstance(cov, Mapping) or cov.get("method") != COVERAGE_METHOD:
        return None
    return {t: cov.get(t) for t in ("psnr", "ssim")}
