"""The run report: one static, self-contained HTML page.

Everything is inline (thumbnails and plots as base64 PNG data URIs, CSS in a <style>
element, one tiny script), so the page opens from a file, a mail attachment or an S3
console without any network access; a Content-Security-Policy forbids loading anything
else. Every string that comes from the store (image names come from user files) is
HTML-escaped.

What it shows is read by :mod:`restoreflow.report.gather`; the stylesheet and the one
script are :mod:`restoreflow.report.style`.

A conformal lower bound at level ``alpha`` reads "PSNR >= b dB with probability
1 - alpha": over exchangeable images the true PSNR is below ``b`` for at most a fraction
``alpha`` of them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from restoreflow.report.gather import gather, load_calibration, number
from restoreflow.report.style import CSS, LOAD_SCRIPT
from restoreflow.storage.layout import DEGRADED, INPUT, INTERVAL_HI, INTERVAL_LO, RESTORED

if TYPE_CHECKING:
    from restoreflow.storage.store import TileStore

log = logging.getLogger(__name__)


# -- formatting -----------------------------------------------------------------------

def _e(v: Any) -> str:
    """Escape any value for HTML text and attributes."""
    return escape("" if v is None else str(v), quote=True)


def _fmt(v: Any, digits: int = 2, unit: str = "") -> str:
    f = number(v)
    if f is None:
        return "—"
    return f"{f:.{digits}f}{(' ' + unit) if unit else ''}"


def _fmt_apart(a: float, b: float, least: int = 1, most: int = 6) -> tuple[str, str]:
    """``a`` and ``b`` with the fewest decimals (at least ``least``) that tell them apart:
    a bound of 23.95 dB against a threshold of 24 reads "23.95" / "24.00", not "24.0" /
    "24.0". Equal values (or closer than ``most`` decimals) keep ``least`` decimals."""
    for d in range(least, most + 1):
        fa, fb = f"{a:.{d}f}", f"{b:.{d}f}"
        if fa != fb:
            return fa, fb
    return f"{a:.{least}f}", f"{b:.{least}f}"


def _fmt_seconds(v: Any) -> str:
    s = number(v)
    if s is None:
        return _e(v)
    if s < 60:
        return f"{s:.1f} s" if s >= 0.1 or s == 0 else f"{s * 1000:.0f} ms"
    if s < 3600:
        return f"{int(s // 60)} min {int(round(s % 60)):02d} s"
    return f"{int(s // 3600)} h {int(round(s % 3600 / 60)):02d} min"


def _fmt_time(v: Any) -> str:
    """Epoch seconds or an ISO string as "YYYY-MM-DD HH:MM:SS UTC"."""
    f = number(v)
    if f is not None:
        return datetime.fromtimestamp(f, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return _e(v) if v else "—"


def _fmt_spec(v: Any) -> str:
    """A degradation spec (string or dict) as one readable line."""
    if v is None:
        return "—"
    if isinstance(v, Mapping):
        d = dict(v)
        kind = next((d.pop(k) for k in ("kind", "name", "type", "operator") if k in d), None)
        rest = ", ".join(f"{k}={json.dumps(x) if not isinstance(x, str) else x}"
                         for k, x in d.items())
        head = str(kind) if kind is not None else ""
        return _e(f"{head} ({rest})" if head and rest else head or rest)
    # a narrow column breaks the line between operators, not inside a name
    return _e(v).replace("+", "+<wbr>").replace(",", ",<wbr>")


def _on_off(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if v is None:
        return "—"
    return _e(v)


def _prob(alpha: float | None) -> str:
    return f"{100 * (1 - alpha):.0f}%" if alpha is not None else "?"


def _size_text(shape: Sequence[int]) -> str:
    c, h, w = shape
    return f"{w}×{h} " + ("RGB" if c == 3 else "grey" if c == 1 else f"{c} bands")


# -- rendering ------------------------------------------------------------------------

def _img(thumb, alt: str) -> str:
    return (f'<img src="{thumb.uri}" width="{thumb.width}" height="{thumb.height}" '
            f'alt="{_e(alt)}">')


def _figure(thumb, body: str) -> str:
    """A figure as wide as its thumbnail (at least 180 px, room for the caption)."""
    return f'<figure style="width:{max(thumb.width, 180)}px">{body}</figure>'


def _missing(text: str) -> str:
    return f'<figure><div class="missing">{_e(text)}</div></figure>'


# the per-pixel interval width is in normalised units: (raw - norm_offset) / norm_scale
UNCERTAINTY_UNIT_SHORT = "width, normalised"
UNCERTAINTY_UNIT = "normalised units: 1 = the image's full value range"


def _source_units(store: TileStore, image_id: str, u) -> str:
    """``; 5.1–102 in uint8 source values``: the width range times the image's
    ``norm_scale`` (a width does not depend on ``norm_offset``); empty without one."""
    try:
        attrs = store.attrs(INTERVAL_HI, image_id)
    except KeyError:
        return ""
    scale, dtype = number(attrs.get("norm_scale")), attrs.get("dtype")
    if scale is None or scale == 1.0 or number(u.vmin) is None or number(u.vmax) is None:
        return ""
    kind = f"{_e(dtype)} source values" if dtype else "source values"
    return (f"; {u.vmin * scale:.3g}–{u.vmax * scale:.3g} in {kind}, "
            f"mean {u.mean * scale:.3g}")


def _figures(store: TileStore, image_id: str, row: Mapping, pixel: Mapping | None) -> str:
    from restoreflow.report import thumbs

    have = {c: store.has(c, image_id)
            for c in (INPUT, DEGRADED, RESTORED, INTERVAL_LO, INTERVAL_HI)}
    ref = next((c for c in (INPUT, RESTORED, DEGRADED) if have[c]), None)
    if ref is None:
        return '<div class="note bad">no pixels for this image in the store</div>'
    shape = store.shape(ref, image_id)
    size = thumbs.display_size(shape[1], shape[2])
    parts = []
    for coll, label in ((INPUT, "source"), (DEGRADED, "degraded"), (RESTORED, "restored")):
        if not have[coll]:
            if coll == RESTORED:
                parts.append(_missing("not restored"))
            continue
        try:
            sh = store.shape(coll, image_id)
            t = thumbs.store_thumb(store, coll, image_id, size)
        except Exception as exc:  # noqa: BLE001 - reported on the page, the rest goes on
            log.warning("report: %s/%s: %s", coll, image_id, exc)
            parts.append(_missing(f"{label}: cannot read ({type(exc).__name__}: {exc})"))
            continue
        parts.append(_figure(t, f"{_img(t, label)}<figcaption><b>{label}</b> · "
                                f"{_size_text(sh)}</figcaption>"))
    if have[INTERVAL_LO] and have[INTERVAL_HI]:
        try:
            u = thumbs.uncertainty_thumb(store, image_id, size, INTERVAL_LO, INTERVAL_HI)
        except Exception as exc:  # noqa: BLE001 - reported on the page, the rest goes on
            log.warning("report: intervals of %s: %s", image_id, exc)
            parts.append(_missing(f"uncertainty: cannot read ({type(exc).__name__}: {exc})"))
        else:
            stops = ", ".join(thumbs.colour_stops())
            parts.append(_figure(
                u.thumb,
                f"{_img(u.thumb, 'uncertainty')}"
                f'<div class="cbar" style="background: linear-gradient(to right, {stops})">'
                f'</div><div class="cbar-labels"><span>{_fmt(u.vmin, 3)}</span>'
                f'<span class="muted">{UNCERTAINTY_UNIT_SHORT}</span>'
                f"<span>{_fmt(u.vmax, 3)}</span></div>"
                f"<figcaption><b>uncertainty</b> · interval width "
                f"{_fmt(u.vmin, 3)}–{_fmt(u.vmax, 3)}, mean {_fmt(u.mean, 3)} "
                f"({UNCERTAINTY_UNIT}){_source_units(store, image_id, u)}</figcaption>"
            ))
    return f'<div class="figs">{"".join(parts)}</div>'


def _pixel_text(row: Mapping, pixel: Mapping | None) -> str:
    """The RCPS guarantee of the per-pixel intervals, in words."""
    lam = number(row.get("lambda"))
    eps = number(pixel.get("epsilon")) if pixel else None
    delta = number(pixel.get("delta")) if pixel else None
    lam_text = f" (λ = {lam:.3g})" if lam is not None else ""
    if eps is not None and delta is not None:
        return (f"pixel intervals{lam_text}: on average over new images, at most "
                f"{100 * eps:.0f}% of pixels outside their interval, with probability "
                f"{100 * (1 - delta):.0f}% (a single image may have more)")
    return f"pixel intervals{lam_text}" if lam_text else ""


def _metrics(row: Mapping, alpha: float | None, pixel_text: str = "") -> str:
    a = number(row.get("alpha"))
    a = a if a is not None else alpha
    p_lo, s_lo = number(row.get("psnr_lower")), number(row.get("ssim_lower"))
    p_true, s_true = number(row.get("psnr_true")), number(row.get("ssim_true"))
    items = []
    mp = number(row.get("min_psnr"))
    # the same digits for the bound and the required PSNR, enough to tell them apart
    p_text, mp_text = _fmt_apart(p_lo, mp) if p_lo is not None and mp is not None else (
        None if p_lo is None else f"{p_lo:.1f}", None)
    if p_lo is not None:
        items.append(f'<div class="bound">PSNR ≥ <b>{p_text} dB</b> with probability '
                     f"{_prob(a)}</div>")
    if s_lo is not None:
        items.append(f'<div class="bound">SSIM ≥ <b>{s_lo:.3f}</b> with probability '
                     f"{_prob(a)}</div>")
    if p_lo is None and s_lo is None:
        items.append('<div class="muted">no conformal bound</div>')
    truth = []
    if p_true is not None:
        held = "" if p_lo is None else (
            ' <span class="held">✓ bound held</span>' if p_true >= p_lo
            else ' <span class="missed">✗ bound missed</span>')
        truth.append(f"true PSNR <b>{p_true:.2f} dB</b>{held}")
    if s_true is not None:
        held = "" if s_lo is None else (
            ' <span class="held">✓</span>' if s_true >= s_lo else ' <span class="missed">✗</span>')
        truth.append(f"true SSIM <b>{s_true:.3f}</b>{held}")
    if truth:
        items.append(f'<div>{" · ".join(truth)}</div>')
    out = f'<div class="metrics">{"".join(items)}</div>'
    if pixel_text:
        out += f'<div class="small muted">{_e(pixel_text)}</div>'
    if row.get("flagged"):
        why = (f"the PSNR bound {p_text} dB is below the required {mp_text} dB"
               if p_lo is not None and mp is not None else "flagged by the quality check")
        out += f'<div class="note bad"><b>FLAGGED</b>: {_e(why)}</div>'
    if row.get("warning"):
        out += f'<div class="note">{_e(row["warning"])}</div>'
    feats = row.get("features")
    if isinstance(feats, Mapping) and feats:
        cells = "".join(f"<tr><td>{_e(k)}</td><td class=num>{_fmt(v, 4)}</td></tr>"
                        for k, v in sorted(feats.items()))
        out += (f"<details><summary>no-reference features ({len(feats)})</summary>"
                f'<table class="t small" style="width:auto">{cells}</table></details>')
    return out


def _card(store: TileStore, idx: int, row: Mapping, alpha: float | None,
          pixel: Mapping | None) -> str:
    image_id = str(row.get("image_id"))
    name = row.get("_name") or image_id
    flagged = bool(row.get("flagged"))
    if flagged:
        badge = '<span class="badge flagged">FLAGGED</span>'
    elif row.get("out_of_calibration"):
        badge = '<span class="badge flagged">OUT OF CALIBRATION</span>'
    elif number(row.get("psnr_lower")) is not None:
        badge = '<span class="badge ok">OK</span>'
    else:
        badge = '<span class="badge none">NO BOUND</span>'
    run = f' · run <code>{_e(row["run_id"])}</code>' if row.get("_show_run") else ""
    has_intervals = store.has(INTERVAL_HI, image_id)
    return (
        f'<section class="card{" flagged" if flagged else ""}" id="img-{idx}">'
        f"<header><h3>{_e(name)}</h3>{badge}"
        f'<span class="muted small">id <code>{_e(image_id)}</code>{run}</span></header>'
        f"{_figures(store, image_id, row, pixel)}"
        f"{_metrics(row, alpha, _pixel_text(row, pixel) if has_intervals else '')}</section>"
    )


def _mean(vals: Sequence[float | None]) -> float | None:
    v = [x for x in vals if x is not None]
    return sum(v) / len(v) if v else None


def _summary(rows: Sequence[Mapping], alpha: float | None) -> str:
    n = len(rows)
    flagged = [(i, r) for i, r in enumerate(rows) if r.get("flagged")]
    p_lo = [number(r.get("psnr_lower")) for r in rows]
    s_lo = [number(r.get("ssim_lower")) for r in rows]
    p_tr = [number(r.get("psnr_true")) for r in rows]
    s_tr = [number(r.get("ssim_true")) for r in rows]
    nb = sum(v is not None for v in p_lo)
    shifted = sum(bool(r.get("out_of_calibration")) for r in rows)
    body = [("images", str(n)),
            ("flagged", f'<b style="color:var(--bad)">{len(flagged)}</b>' if flagged else "0"),
            ("out of calibration (bound not guaranteed)",
             f'<b style="color:var(--bad)">{shifted}</b>' if shifted else "0"),
            ("with a bound", f"{nb} of {n}" + (f" (probability {_prob(alpha)})" if nb else "")),
            ("mean PSNR bound", _fmt(_mean(p_lo), 2, "dB")),
            ("mean SSIM bound", _fmt(_mean(s_lo), 3))]
    if any(v is not None for v in p_tr):
        body.append(("mean true PSNR", _fmt(_mean(p_tr), 2, "dB")))
        pairs = [(b, t) for b, t in zip(p_lo, p_tr, strict=True)
                 if b is not None and t is not None]
        if pairs:
            held = sum(t >= b for b, t in pairs)
            body.append(("PSNR bound held", f"{held} of {len(pairs)} "
                                            f"({100 * held / len(pairs):.0f}%)"))
    if any(v is not None for v in s_tr):
        body.append(("mean true SSIM", _fmt(_mean(s_tr), 3)))
    cells = "".join(f"<tr><th>{k}</th><td class=num>{v}</td></tr>" for k, v in body)
    out = f'<table class="t">{cells}</table>'
    if flagged:
        links = ", ".join(f'<a href="#img-{i}">{_e(r.get("_name") or r.get("image_id"))}</a>'
                          for i, r in flagged[:50])
        more = f" and {len(flagged) - 50} more" if len(flagged) > 50 else ""
        out += f'<p class="small">Flagged: {links}{more}</p>'
    return out


def _run_info(store_uri: str, run: Mapping | None, run_ids: Sequence[str],
              alpha: float | None) -> str:
    kv = [("store", f"<code>{_e(store_uri)}</code>")]
    if run is None:
        ids = ", ".join(f"<code>{_e(r)}</code>" for r in run_ids) or "—"
        kv.append(("runs", ids + ' <span class="muted">(no runs table: everything in the '
                               "store)</span>"))
    else:
        kv.append(("run", f"<code>{_e(run.get('run_id'))}</code>"
                          + (f" · {_e(run['name'])}" if run.get("name") else "")))
        kv += [("degradation", _fmt_spec(run.get("degradation"))),
               ("sampler", f"{_e(run.get('sampler') or '—')}, {_e(run.get('steps') or '?')} "
                           "steps"),
               ("adaptation (LoRA)", _on_off(run.get("adapt")))]
    kv.append(("calibration α", f"{alpha:g} (bounds hold with probability {_prob(alpha)})"
               if alpha is not None else "not calibrated: no bounds"))
    if run is not None:
        kv.append(("started", _fmt_time(run.get("started"))))
        kv.append(("finished", _fmt_time(run.get("finished"))))
        counts = run.get("counts")
        if isinstance(counts, Mapping) and counts:
            chips = "".join(f"<span>{_e(k)} <b>{_e(v)}</b></span>" for k, v in counts.items())
            kv.append(("counts", f'<div class="chips">{chips}</div>'))
        timings = run.get("timings")
        if isinstance(timings, Mapping) and timings:
            chips = "".join(f"<span>{_e(k)} <b>{_fmt_seconds(v)}</b></span>"
                            for k, v in timings.items())
            kv.append(("timings", f'<div class="chips">{chips}</div>'))
        if run.get("settings_hash"):
            kv.append(("settings hash", f"<code>{_e(run['settings_hash'])}</code>"))
    return '<dl class="kv">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in kv) + "</dl>"


def _calibration_section(store: TileStore, hashes: Sequence[str], rows: Sequence[Mapping]
                         ) -> tuple[str, float | None, dict | None]:
    """HTML of the calibration plots, the calibration alpha and the pixel calibration."""
    from restoreflow.report.plots import calibration_png
    from restoreflow.report.thumbs import data_uri

    if not hashes:
        return ('<p class="note">not calibrated: no bounds (this run has no conformal '
                "calibration)</p>", None, None)
    parts, alpha, pixel = [], None, None
    for h in hashes:
        cal, problem = load_calibration(store, h)
        if cal is None:
            parts.append(f'<p class="note">{_e(problem)}</p>')
            continue
        a = number(cal.get("alpha"))
        alpha = a if alpha is None else alpha
        if pixel is None and isinstance(cal.get("pixel"), Mapping):
            pixel = dict(cal["pixel"])
        test = [r for r in rows if r.get("settings_hash") in (h, None)]
        png = calibration_png(cal, test)
        n = cal.get("n", len(cal.get("rows") or []))
        folds = {}
        for r in cal.get("rows") or []:
            folds[r.get("fold", "cal")] = folds.get(r.get("fold", "cal"), 0) + 1
        fold_text = ", ".join(f"{v} {k}" for k, v in sorted(folds.items()))
        if "unused" in folds:  # the full conformal bound keeps one image per source
            fold_text += "; one image per source calibrates the bound"
        notes = ""
        cov = cal.get("coverage")
        if isinstance(cov, Mapping) and cov.get("pixel_note"):
            notes = f'<p class="note small">{_e(cov["pixel_note"])}</p>'
        parts.append(
            f'<div class="panel plot"><img src="{data_uri(png)}" alt="calibration plot">'
            f'<p class="small muted">Calibration <code>{_e(h)}</code>: {_e(n)} images '
            f"({_e(fold_text)}), α = {_fmt(a, 3)}. Each point is one calibration image at "
            "(lower bound, true value); points below the line are images whose true "
            "quality fell below its bound. Diamonds: this run's images with a known "
            f"true value.</p>{notes}</div>"
        )
    return "".join(parts), alpha, pixel


def render_report(store: TileStore, run_id: str | None = None, *,
                  max_images: int | None = None) -> str:
    """The report page as a string (see :func:`build_report`)."""
    from restoreflow.storage.sources import strip_credentials

    t0 = time.perf_counter()
    run, rows, run_ids, hashes = gather(store, run_id)
    cal_html, alpha, pixel = _calibration_section(store, hashes, rows)
    if alpha is None:
        alpha = next((a for a in (number(r.get("alpha")) for r in rows) if a is not None), None)

    shown = rows if max_images is None else rows[:max(0, int(max_images))]
    cards = "".join(_card(store, i, r, alpha, pixel) for i, r in enumerate(shown))
    if len(shown) < len(rows):
        cards += (f'<p class="note">Showing {len(shown)} of {len(rows)} images (flagged '
                  "first); the summary covers all of them.</p>")
    if not rows:
        cards = '<p class="note">no images to report: nothing restored yet</p>'

    store_uri = strip_credentials(store.uri)
    title = "restoreflow report"
    if run is not None:
        title += f" — {run.get('name') or run.get('run_id')}"
    script_hash = base64.b64encode(hashlib.sha256(LOAD_SCRIPT.encode()).digest()).decode()
    csp = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
           f"script-src 'sha256-{script_hash}'")
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style>"
        f"<script>{LOAD_SCRIPT}</script></head>\n<body><main>"
        f"<h1>{_e(title)}</h1>"
        f'<p class="muted small">made {made} from <code>{_e(store_uri)}</code></p>'
        '<div class="top">'
        f'<div class="panel"><h2 style="margin-top:0">Run</h2>'
        f"{_run_info(store_uri, run, run_ids, alpha)}</div>"
        f'<div class="panel"><h2 style="margin-top:0">Summary</h2>{_summary(rows, alpha)}'
        "</div></div>"
        f"<h2>Calibration</h2>{cal_html}"
        f"<h2>Images ({len(rows)})</h2>{cards}"
        f"<footer>restoreflow · built in {time.perf_counter() - t0:.1f} s · "
        "conformal bounds hold over exchangeable images, not for each image with "
        "certainty</footer>"
        "</main></body></html>\n"
    )


def build_report(store: TileStore, out_path: str | os.PathLike, run_id: str | None = None,
                 *, max_images: int | None = None) -> Path:
    """Write the HTML report of a run to ``out_path`` (atomically) and return its path.

    ``run_id=None`` reports the latest run of the ``runs`` table (by ``finished``, else
    ``started``); without a runs table it reports every quality row in the store, and
    without quality rows every image of ``restored``. ``max_images`` caps the number of
    image cards (flagged images first); the summary always covers every image.
    ValueError when ``run_id`` names no run.
    """
    page = render_report(store, run_id, max_images=max_images)
    out = Path(out_path).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    from restoreflow.storage.writers import write_atomic

    write_atomic(out, page.encode("utf-8"))  # a normal file's permissions (0o666 & ~umask)
    return out
