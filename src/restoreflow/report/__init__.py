"""restoreflow.report: the static HTML report of a run (thumbnails, conformal bounds,
calibration plot), self-contained so it opens without network access.

Heavy imports (matplotlib, Pillow) happen inside the functions that draw.
"""

from .html import build_report, render_report, select_run

__all__ = ["build_report", "render_report", "select_run"]
