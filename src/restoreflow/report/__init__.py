"""restoreflow.report: the static HTML report of a run (thumbnails, conformal bounds,
calibration plot), self-contained so it opens without network access.

Heavy imports (matplotlib, Pillow) happen inside the functions that draw.
"""

from .gather import select_run
from .html import build_report, render_report

__all__ = ["build_report", "render_report", "select_run"]
