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

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from restoreflow.spec import CalibrationOptions, RunSpec
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
    def from_rows(cls, report: dict, warn=None) -> IngestReport:
        """From the ingest's report (``{"rows": [{"status", "image_id", "source",
        "reason"}...]}``); each rejected file is reported through ``warn`` if given."""
        seen: dict[str, None] = {}
        for r in report["rows"]:
            if r["status"] != "rejected" and r["image_id"]:
                seen.setdefault(r["image_id"], None)
        rejected = [r for r in report["rows"] if r["status"] == "rejected"]
        for r in rejected if warn else ():
            warn(f"REJECTED {r['source']}: {r['reason']}")
        return cls(list(seen), rejected)

    def require_images(self, what: str) -> IngestReport:
        """This report; ValueError (before any other work) when the sources ``what`` gave
        no image."""
        if self.ids:
            return self
        r = self.rejected
        why = (f"all {len(r)} file(s) were rejected (e.g. {r[0]['source']}: {r[0]['reason']})"
               if r else "they hold no image files")
        raise ValueError(f"{what}: no images to work on: {why}")


def observed(spec: RunSpec) -> str:
    """The collection that holds a run's observations y: the simulated degradation of its
    sources, or the sources themselves (already degraded)."""
    return layout.DEGRADED if spec.simulate else layout.INPUT


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
    require_sources(sources, c.alpha, c.group_by, c.method)
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
    cal.settings = cfg.model_dump(mode="json")  # what a later mismatch names
    cal.made_with = made_with(calibration, clean_ids)
    save_calibration(store, cal)
    return cal.to_dict()


def made_with(calibration: CalibrationOptions, clean_ids: Iterable[str]) -> dict:
    """What a calibration depends on besides the restore settings: its options (alpha,
    grouping, pixel guarantee; not ``min_psnr``, a flagging threshold of the runs) and
    the clean images it was fitted on."""
    options = calibration.model_dump(mode="json", exclude={"clean", "min_psnr"})
    return {"options": options, "clean": sorted(clean_ids)}


def calibration_applies(stored: dict | None, calibration: CalibrationOptions,
                        clean_ids: Iterable[str]) -> bool:
    """Whether the stored calibration of a run's settings was made with the run's
    calibration options on the same clean images (one made by an older version, which
    did not record them, does not apply: it is made again)."""
    return stored is not None and stored.get("made_with") == made_with(calibration, clean_ids)


def _differences(a: Any, b: Any, where: str = "") -> list[str]:
    """``field (x vs y)`` for each leaf where the settings dicts ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b))
                for d in _differences(a.get(k), b.get(k), f"{where}.{k}" if where else k)]
    return [] if a == b else [f"{where} ({a!r} vs {b!r})"]


@dataclass
class VerbScoring:
    """What the restore and calibrate verbs score: the restorations of ``ids`` made with
    the settings hashed ``shash``, against ``calibration``; or, with no calibration, the
    ``note`` saying why there are no bounds."""

    shash: str
    ids: list[str]
    calibration: dict | None
    note: str | None = None


def verb_scoring(store: TileStore, cfg: RestoreConfig, ids: list[str],
                 out: str = layout.RESTORED) -> VerbScoring:
    """The stored calibration of ``cfg``'s settings and the images of ``ids`` restored
    with them into ``out`` (bounds are kept for the ``restored`` collection only)."""
    from restoreflow.stages.calibrate import load_calibration
    from restoreflow.stages.restore import is_restored, settings_key

    key = settings_key(cfg)
    if out != layout.RESTORED:
        return VerbScoring(key.current, [], None,
                           f"bounds are given for the {layout.RESTORED!r} collection")
    calibration = load_calibration(store, key.current, key.legacy)
    if calibration is None:
        return VerbScoring(key.current, [], None, no_calibration_reason(store, cfg))
    return VerbScoring(key.current, [i for i in ids if is_restored(
        store, i, key.current, legacy=key.legacy)], calibration)


def no_calibration_reason(store: TileStore, cfg: RestoreConfig) -> str:
    """Why no stored calibration applies to ``cfg``'s restorations: there is none, or
    those there were made with other settings (naming the fields that differ)."""
    from restoreflow.stages.calibrate import calibration_path

    mine = cfg.model_dump(mode="json")
    folder = calibration_path("h").rsplit("/", 1)[0]
    paths = [p for p in store.list_files(folder) if p.endswith(".json")]
    if not paths:
        return ("the store holds no calibration: run 'restoreflow calibrate' with the same "
                "settings (degradation, sampler, steps, samples, prior)")
    reasons = []
    for p in paths:
        stored = json.loads(store.get_bytes(p))
        diff = _differences(stored.get("settings"), mine) if stored.get("settings") else []
        reasons.append((len(diff) if diff else 99, stored.get("settings_hash", "?"), diff))
    n, shash, diff = min(reasons)
    what = ", ".join(diff[:4]) if diff else "settings not recorded (an older calibration)"
    return (f"no calibration for these settings; the closest ({shash}) differs in {what}: "
            "calibrate with the same settings")


@dataclass
class Scores:
    """The scores of a run's images: quality rows, the per-pixel interval rules to write
    ({image_id: pixel rule}, for J >= 2 posterior samples) and warnings per image."""

    rows: list = field(default_factory=list)
    intervals: dict[str, dict] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)


def calibration_summary(cal: dict) -> dict:
    """What the calibrate verb reports of a calibration it made."""
    return {**{k: cal[k] for k in ("settings_hash", "alpha", "coverage", "n", "sources",
                                   "warnings", "pixel")},
            "pixel_note": (cal.get("coverage") or {}).get("pixel_note")}


def score_images(store: TileStore, cfg: RestoreConfig, ids: list[str], run_id: str,
                 shash: str, calibration: dict | None, truth: dict[str, dict],
                 options: CalibrationOptions | None) -> Scores:
    """Score each restored image against the calibration (an image is flagged under the
    ``options``' ``min_psnr``); prepare the interval images of those that get a per-pixel
    rule (written by worker tasks, then :func:`finish_intervals`) and remove those of an
    earlier calibration from the others."""
    from restoreflow.stages import calibrate, records

    min_psnr = options.min_psnr if options else None
    out = Scores()
    held = {c: store.listed_ids(c) for c in (layout.INTERVAL_LO, layout.INTERVAL_HI)}
    for i in ids:
        attrs = store.attrs(layout.RESTORED, i)
        s = calibrate.score(attrs["features"], calibration, shash, min_psnr)
        if s["warning"]:
            out.warnings.append((i, s["warning"]))
        pixel = s.pop("pixel")
        if pixel is not None and cfg.restore.posterior_samples >= 2:
            calibrate.prepare_intervals(store, i, pixel)
            out.intervals[i] = pixel
        else:  # intervals of an earlier calibration would describe another restoration
            for coll in (c for c, have in held.items() if i in have):
                store.delete_image(coll, i)
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
