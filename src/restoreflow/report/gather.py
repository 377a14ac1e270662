"""What the run report shows, read from the store; :mod:`restoreflow.report.html` renders it.

Sources in the store:

- ``tables/runs.json``: one row per run (``run_id``, ``name``, ``degradation``,
  ``sampler``, ``steps``, ``adapt``, ``started``, ``finished``, ``counts``, ``timings``,
  ``settings_hash``, ``calibration``: the calibration's settings hash or null);
- ``tables/quality.json``: one row per (run, image) (``psnr_lower``, ``ssim_lower``,
  ``alpha``, ``flagged``, ``min_psnr``, optional ``psnr_true``, ``ssim_true``,
  ``lambda``, ``warning``, ``features``);
- ``calibrations/<settings_hash>.json``: the conformal calibration (rows of
  ``(bound, true)`` per calibration image, ``alpha``, ``coverage``, ``pixel``);
- collections ``input``, ``degraded``, ``restored``, ``interval_lower``,
  ``interval_upper`` for the thumbnails.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from restoreflow.storage.layout import INPUT, QUALITY_TABLE, RESTORED, RUNS_TABLE

if TYPE_CHECKING:
    from restoreflow.storage.store import TileStore


def number(v: Any) -> float | None:
    """``v`` as a finite float; None for bools, non-numbers, NaN and infinities."""
    if isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _time_key(run: Mapping) -> float:
    for k in ("finished", "started"):
        v = run.get(k)
        f = number(v)
        if f is not None:
            return f
        if isinstance(v, str) and v:
            try:
                dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
            except ValueError:
                continue
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            return dt.timestamp()
    return -math.inf


def select_run(runs: Sequence[Mapping], run_id: str | None) -> dict | None:
    """The run row named ``run_id``, or the latest run (by ``finished``, else ``started``;
    later rows win ties). None when there are no runs. ValueError for an unknown id."""
    if not runs:
        return None
    if run_id is not None:
        match = [r for r in runs if r.get("run_id") == run_id]
        if not match:
            known = ", ".join(str(r.get("run_id")) for r in runs[-10:])
            raise ValueError(f"no run {run_id!r} in the runs table (latest runs: {known})")
        return dict(match[-1])
    best = max(range(len(runs)), key=lambda i: (_time_key(runs[i]), i))
    return dict(runs[best])


def _dedupe(rows: Sequence[Mapping]) -> list[dict]:
    """Keep the last row per (run_id, image_id)."""
    out: dict[tuple, dict] = {}
    for r in rows:
        out[(r.get("run_id"), r.get("image_id"))] = dict(r)
    return list(out.values())


def load_calibration(store: TileStore, shash: str) -> tuple[dict | None, str | None]:
    path = f"calibrations/{shash}.json"
    try:
        if not store.exists(path):
            return None, f"calibration {shash} is not in the store ({path} missing): no plot"
        cal = json.loads(store.get_bytes(path))
    except (OSError, ValueError) as exc:
        return None, f"calibration {shash} could not be read: {exc}"
    if not isinstance(cal, dict):
        return None, f"calibration {shash}: {path} is not a JSON object"
    return cal, None


def gather(store: TileStore, run_id: str | None
           ) -> tuple[dict | None, list[dict], list[str], list[str]]:
    """``(run, rows, run_ids, hashes)`` for the report of ``run_id`` (see
    :func:`restoreflow.report.html.build_report` for which run and rows): the run row or
    None, its quality rows (one per image, each with ``_name`` and ``_show_run``, flagged
    first, then by name), the run ids they come from, and the settings hashes of the
    calibrations to show. ValueError when ``run_id`` names no run."""
    runs = store.read_table(RUNS_TABLE)
    quality = store.read_table(QUALITY_TABLE)
    run = select_run(runs, run_id)
    if run is not None:
        rows = _dedupe([r for r in quality if r.get("run_id") == run.get("run_id")])
    else:
        rows = _dedupe([r for r in quality if run_id is None or r.get("run_id") == run_id])
        if run_id is not None and not rows:
            raise ValueError(f"no run {run_id!r}: the store has no runs table and no quality "
                             "rows for that run")
    if not rows:
        rows = [{"image_id": i} for i in store.image_ids(RESTORED)]
    run_ids = sorted({str(r["run_id"]) for r in rows if r.get("run_id")})
    show_run = run is None and len(run_ids) > 1
    for r in rows:
        name = r.get("name")
        if not name:
            for coll in (INPUT, RESTORED):
                try:
                    name = store.attrs(coll, str(r.get("image_id"))).get("name")
                except (KeyError, ValueError):
                    continue
                if name:
                    break
        r["_name"] = name or str(r.get("image_id"))
        r["_show_run"] = show_run
    rows.sort(key=lambda r: (not r.get("flagged"), str(r["_name"]).lower(),
                             str(r.get("image_id"))))

    if run is not None:
        hashes = [run["calibration"]] if run.get("calibration") else []
    else:
        hashes = sorted({str(r["settings_hash"]) for r in rows if r.get("settings_hash")})
        hashes = [h for h in hashes if load_calibration(store, h)[0] is not None]
    return run, rows, run_ids, hashes
