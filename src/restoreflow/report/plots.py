"""Calibration plots for the HTML report (matplotlib, Agg canvas, PNG bytes).

A conformal lower bound ``b(x)`` at level ``alpha`` promises ``P(true >= b) >= 1 - alpha``
over exchangeable images. The plot puts each calibration image at ``(bound, true)``: a
point on or above the line ``true = bound`` is covered, a point below it is a miss. In a
calibration with out-of-sample bounds (``coverage.method`` "leave one source out") each
image's bound comes from a calibration fitted without its source, and the title gives
their coverage next to the target ``1 - alpha``. Older calibrations stored in-sample
bounds: their points are drawn (fit fold grey) but no coverage figure is claimed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from restoreflow.storage.layout import out_of_sample_coverage

COVERED = "#1f77b4"
MISSED = "#d62728"
FIT = "#b0b0b0"
TEST_COVERED = "#2ca02c"
TEST_MISSED = "#ff7f0e"

TARGETS = {"psnr": ("PSNR", "dB"), "ssim": ("SSIM", "")}


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _pairs(rows: Sequence[Mapping], target: str, bound_key: str) -> list[tuple[float, float]]:
    out = []
    for r in rows:
        b, t = _num(r.get(bound_key)), _num(r.get(f"{target}_true"))
        if b is not None and t is not None:
            out.append((b, t))
    return out


def coverage_title(calibration: Mapping[str, Any], target: str) -> str:
    """The coverage part of a panel's title: the stored out-of-sample coverage, or "n/a"
    for calibrations that only have in-sample figures (those are never shown)."""
    oos = out_of_sample_coverage(calibration)
    cov = _num(oos.get(target)) if oos else None
    text = (f"out-of-sample coverage {100 * cov:.1f}%" if cov is not None
            else "coverage n/a (in-sample calibration: recalibrate)" if oos is None
            else "coverage n/a")
    alpha = _num(calibration.get("alpha"))
    if alpha is not None:
        text += f" (target {100 * (1 - alpha):.0f}%)"
    return text


def calibration_png(calibration: Mapping[str, Any],
                    test_rows: Sequence[Mapping[str, Any]] = (), dpi: int = 100) -> bytes:
    """PNG of bound vs true for PSNR (and SSIM when the calibration has it).

    ``calibration``: the stored calibration JSON (``rows`` with ``psnr_true``,
    ``psnr_bound``, ``ssim_true``, ``ssim_bound``, ``fold``; ``alpha``; ``coverage``).
    Out-of-sample points (every row of a leave-one-source-out calibration; the
    calibration fold of an older one) are blue when covered and red when missed; in-sample
    fit-fold points of older calibrations are light grey. ``test_rows`` (the
    report's quality rows with ``psnr_true`` / ``psnr_lower``) are drawn as diamonds,
    green when covered and orange when missed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = list(calibration.get("rows") or [])
    oos = out_of_sample_coverage(calibration) is not None
    targets = [t for t in TARGETS if _pairs(rows, t, f"{t}_bound")
               or _pairs(test_rows, t, f"{t}_lower")]
    if not targets:
        targets = ["psnr"]
    fig = Figure(figsize=(4.8 * len(targets), 5.4), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    for k, target in enumerate(targets):
        ax = fig.add_subplot(1, len(targets), k + 1)
        label, unit = TARGETS[target]
        bkey = f"{target}_bound"
        fit = [] if oos else _pairs([r for r in rows if r.get("fold") == "fit"], target, bkey)
        cal = _pairs([r for r in rows if oos or r.get("fold") != "fit"], target, bkey)
        cal_label = "left-out source" if oos else "calibration"
        test = _pairs(test_rows, target, f"{target}_lower")
        everything = fit + cal + test
        if fit:
            ax.scatter(*zip(*fit, strict=True), s=14, c=FIT, label=f"fit fold ({len(fit)})",
                       zorder=2, linewidths=0)
        for pts, colour, name in (
            ([p for p in cal if p[1] >= p[0]], COVERED, "covered"),
            ([p for p in cal if p[1] < p[0]], MISSED, "missed"),
        ):
            if pts:
                ax.scatter(*zip(*pts, strict=True), s=22, c=colour, zorder=3, linewidths=0,
                           label=f"{cal_label}, {name} ({len(pts)})")
        for pts, colour, name in (
            ([p for p in test if p[1] >= p[0]], TEST_COVERED, "covered"),
            ([p for p in test if p[1] < p[0]], TEST_MISSED, "missed"),
        ):
            if pts:
                ax.scatter(*zip(*pts, strict=True), s=46, c=colour, marker="D", zorder=4,
                           edgecolors="black", linewidths=0.6,
                           label=f"this run, {name} ({len(pts)})")
        if everything:
            vals = [v for p in everything for v in p]
            lo, hi = min(vals), max(vals)
            pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi) * 0.05, 0.01)
            lim = (lo - pad, hi + pad)
            ax.plot(lim, lim, color="black", lw=1, zorder=1, label="true = bound")
            ax.set_xlim(lim)
            ax.set_ylim(lim)
            ax.set_aspect("equal")
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2,
                      fontsize=8, frameon=False)
        else:
            ax.text(0.5, 0.5, "no calibration points", ha="center", va="center",
                    transform=ax.transAxes)
        title = f"{label}: {coverage_title(calibration, target)}"
        if oos:
            title += "\neach point bounded by a calibration without its source"
        ax.set_title(title, fontsize=10)
        u = f" [{unit}]" if unit else ""
        ax.set_xlabel(f"conformal lower bound{u}")
        ax.set_ylabel(f"true {label}{u}")
        ax.grid(True, lw=0.4, alpha=0.5)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    return buf.getvalue()
