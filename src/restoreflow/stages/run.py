"""The driver's rules of a run: what the pipeline flow decides between its tasks.

Which ingested files are images to work on (:class:`IngestReport`), whether the sources
allow the run (no images, calibration images that are also run sources, fewer indexed
references than neighbours), where a calibration's images go
(:func:`calibration_plan`), how restored images are scored and their per-pixel
intervals planned (:func:`score_images`), and how images are batched for light CPU
tasks (:func:`cpu_batches`). ``flows/pipeline.py`` only submits
tasks and calls these.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from restoreflow.spec import CalibrationOptions
from restoreflow.stages.config import RestoreConfig
from restoreflow.storage import layout
from restoreflow.storage.store import TileStore


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Record the seconds the block took as ``timings[stage]``."""
    t = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - t


@dataclass(frozen=True)
class IngestReport:
    """What an ingest gave: the ids of the images to work on (in source order, each
    once) and the rows of the files it rejected (``source``, ``reason``)."""

    ids: list[str]
    rejected: list[dict] = field(default_factory=list)

    @classmethod
    def from_rows(cls, report: dict) -> IngestReport:
        """From the ingest's report (``{"rows": [{"status", "image_id", "source",
        "reason"}...]}``)."""
        seen: dict[str, None] = {}
        for r in report["rows"]:
            if r["status"] != "rejected" and r["image_id"]:
                seen.setdefault(r["image_id"], None)
        return cls(list(seen), [r for r in report["rows"] if r["status"] == "rejected"])

    def require_images(self, what: str) -> IngestReport:
        """This report; ValueError (before any other work) when the sources ``what`` gave
        no image."""
        if self.ids:
            return self
        r = self.rejected
        why = (f"all {len(r)} file(s) were rejected (e.g. {r[0]['source']}: {r[0]['reason']})"
               if r else "they hold no image files")
        raise ValueError(f"{what}: no images to work on: {why}")


def check_held_out(clean_ids: Iterable[str], ids: Iterable[str]) -> None:
    """Calibration images must not be run sources (the bound would not be out of sample)."""
    overlap = sorted(set(clean_ids) & set(ids))
    if overlap:
        raise ValueError(f"{len(overlap)} calibration images are also run sources "
                         f"(e.g. {overlap[0]}); calibration images must be held out")


def check_index_size(size: int, neighbours: int) -> None:
    """Adaptation retrieves ``neighbours`` references: the index must hold as many."""
    if size < neighbours:
        raise ValueError(f"adapt.neighbours={neighbours} but the reference index holds "
                         f"{size} images; add to adapt.corpus or lower it")


@dataclass(frozen=True)
class CalibrationPlan:
    """A calibration's inputs: each clean image's source (exchangeability group), the
    settings hash it certifies and the collections its degraded and restored images go to."""

    sources: list[str]
    settings_hash: str
    degraded: str
    restored: str


def calibration_plan(store: TileStore, cfg: RestoreConfig, shash: str, clean_ids: list[str],
                     calibration: CalibrationOptions) -> CalibrationPlan:
    """The plan of a calibration on ``clean_ids``; ValueError (one line, before any
    restoring) when they make too few sources for a bound at ``calibration.alpha``."""
    from restoreflow.stages.calibrate import require_sources, source_of

    c = calibration
    sources = [source_of(store.attrs(layout.INPUT, i), c.group_by) for i in clean_ids]
    require_sources(sources, c.alpha, c.group_by)
    return CalibrationPlan(sources, shash, f"calibration-{cfg.spec.hash}.degraded",
                           f"calibration-{shash}.restored")


def fit_and_save_calibration(store: TileStore, cfg: RestoreConfig, plan: CalibrationPlan,
                             clean_ids: list[str], truths: dict[str, dict],
                             calibration: CalibrationOptions) -> dict:
    """Fit the calibration on the restored clean images and store it under its settings
    hash; returns its dict."""
    from restoreflow.stages.calibrate import fit_calibration, save_calibration

    c, out = calibration, plan.restored
    rows = [{"image_id": i, "features": store.attrs(out, i)["features"], "source": src,
             **truths[i]} for i, src in zip(clean_ids, plan.sources, strict=True)]
    cal = fit_calibration(store, rows, cfg, plan.settings_hash, c.alpha, c.method,
                          c.pixel_epsilon, c.pixel_delta, out, c.pixel_scale, c.pixel_floor,
                          c.pixel_bound)
    save_calibration(store, cal)
    return cal.to_dict()


@dataclass
class Scores:
    """The scores of a run's images: quality rows, the per-pixel interval rules to write
    ({image_id: pixel rule}, for J >= 2 posterior samples) and warnings per image."""

    rows: list = field(default_factory=list)
    intervals: dict[str, dict] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)


def score_images(store: TileStore, cfg: RestoreConfig, ids: list[str], run_id: str,
                 shash: str, calibration: dict | None, truth: dict[str, dict],
                 min_psnr: float | None) -> Scores:
    """Score each restored image against the calibration; prepare the interval images of
    those that get a per-pixel rule (written by worker tasks, then
    :func:`finish_intervals`)."""
    from restoreflow.stages import calibrate, records

    out = Scores()
    for i in ids:
        attrs = store.attrs(layout.RESTORED, i)
        s = calibrate.score(attrs["features"], calibration, shash, min_psnr)
        if s["warning"]:
            out.warnings.append((i, s["warning"]))
        pixel = s.pop("pixel")
        if pixel is not None and cfg.restore.posterior_samples >= 2:
            calibrate.prepare_intervals(store, i, pixel)
            out.intervals[i] = pixel
        out.rows.append(records.quality_row(i, attrs, run_id, shash, min_psnr, s, truth.get(i)))
    return out


def finish_intervals(store: TileStore, image_ids: Iterable[str]) -> None:
    """Mark the per-pixel interval images the workers wrote complete."""
    for i in image_ids:
        for coll in (layout.INTERVAL_LO, layout.INTERVAL_HI):
            store.mark_complete(coll, i)


def cpu_batches(store: TileStore, image_ids: list[str], n_workers: int,
                collection: str = "input", max_pixels: int = 4 * 2**20,
                max_images: int = 16) -> list[list[str]]:
    """Group image ids for light CPU tasks (simulate, metrics): Prefect on Dask costs
    ~0.1 s per task on a small machine, more than such a task's work on a small image.
    A batch holds at most ``max_images`` images and ``max_pixels`` pixels (a larger image
    goes alone), and there are at least two batches per Dask worker when there are
    enough images, so the ``n_workers`` workers stay evenly loaded."""
    per_batch = max(1, min(max_images, -(-len(image_ids) // (2 * n_workers))))
    out: list[list[str]] = []
    pixels = 0
    for i in image_ids:
        _, h, w = store.shape(collection, i)
        if out and len(out[-1]) < per_batch and pixels + h * w <= max_pixels:
            out[-1].append(i)
            pixels += h * w
        else:
            out.append([i])
            pixels = h * w
    return out
