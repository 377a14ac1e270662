"""Per-pixel uncertainty intervals with risk control (RCPS).

From J posterior samples ``x^(1..J)`` of one image, per-pixel base intervals ``[l, u]``
are either sample quantiles (``kind="quantile"``: ``l, u`` the ``lower_q`` and
``upper_q`` quantiles over the J samples, linear interpolation) or
``mean +- k std`` (``kind="std"``, ``ddof = 1``). They are widened by ``lambda >= 0`` times
a per-pixel scale ``w``:

    T_lambda(p) = [l(p) - lambda w(p), u(p) + lambda w(p)]

with ``w = 1`` (``scale="constant"``: a band of the same width everywhere, intensity
units), ``w(p) = u(p) - l(p) + floor`` (``scale="spread"``, K-RCPS-like: pixels where
the posterior samples disagree get wider intervals; ``floor > 0`` keeps pixels where all
samples agree from getting an empty widening) or (``scale="local"``)

    w(p) = sqrt(G_4 * (u - l)(p) * mean(u - l)) + floor,

the geometric mean of the spread around the pixel (Gaussian, sigma :data:`LOCAL_SIGMA`
px, per channel) and the image's mean spread: an image whose samples disagree more gets
wider intervals everywhere, and within an image the regions where they disagree get the
wider ones. On real restorations most of the gain over a constant band comes from the
image level, and the smoothing makes the per-pixel part a steadier estimate than the
raw spread of J samples (benchmarks/results/explore_pixel_scale.md, conformal.md). A
tile needs a halo of :data:`LOCAL_HALO` px and the image's mean spread
(:meth:`PixelCalibration.widen`'s ``image_spread``) to get exactly the whole image's
intervals. :meth:`PixelCalibration.widen` then cuts the intervals to the data range
(:data:`DATA_RANGE`, normalised intensities): the truth lies in it, so no coverage is lost
and an interval never claims values the image cannot take (on dark astronomy crops the
mean width drops by a third).

The loss of an image is its miscoverage, the fraction of pixels whose true value lies
outside its interval, ``L(lambda) = (1/P) #{p : x(p) not in T_lambda(p)}`` in [0, 1],
non-increasing in ``lambda``. ``lambda`` is calibrated on n calibration images by the
Risk-Controlling Prediction Sets procedure (Bates, Angelopoulos, Lei, Malik & Jordan,
2021) with an upper confidence bound ``R^+(lambda)`` of the risk ``R(lambda) = E L(lambda)``,
the Waudby-Smith-Ramdas betting bound (``bound="wsr"``, :mod:`.wsr`, the default) or the
Hoeffding-Bentkus bound (``bound="hb"``, what calibrations before it used):

    lambda_hat = min{lambda in grid : R^+(lambda') <= epsilon for all grid lambda' >= lambda}

which guarantees ``P(R(lambda_hat) <= epsilon) >= 1 - delta`` over the calibration draw
for images exchangeable with the calibration images. Hoeffding-Bentkus must assume the
largest variance a mean risk allows (every image's loss 0 or 1); an image's loss is the
fraction of its pixels missed, which varies far less than that, and the WSR bound adapts
to it: at 48 calibration sources it certifies epsilon = 0.1 with an empirical risk of
about 0.05 where Hoeffding-Bentkus needs about 0.023, so the intervals of the same
guarantee are narrower (``benchmarks/results/conformal.md``).

The pipeline stores each image's base intervals (the restore stage), builds the loss
matrix from them one image at a time (:func:`loss_matrix`) and keeps the result as a
:class:`PixelCalibration`, the ``pixel`` entry of a stored calibration.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple

import numpy as np

from restoreflow.quality.wsr import wsr_ucb

__all__ = [
    "BOUNDS",
    "Bound",
    "DEFAULT_BOUND",
    "IntervalKind",
    "Intervals",
    "PixelCalibration",
    "RiskControlError",
    "DEFAULT_FLOORS",
    "LOCAL_HALO",
    "LOCAL_SIGMA",
    "SCALES",
    "Scale",
    "base_intervals",
    "calibrate_lambda",
    "excess",
    "group_mean_losses",
    "interval_scale",
    "hb_pvalue",
    "hb_ucb",
    "loss_matrix",
    "miscoverage",
    "pixel_intervals",
    "risk_ucb",
]

IntervalKind = Literal["quantile", "std"]
Bound = Literal["hb", "wsr"]
BOUNDS = ("hb", "wsr")
DEFAULT_BOUND: Bound = "wsr"
Scale = Literal["constant", "spread", "local"]
SCALES = ("constant", "spread", "local")
#: Floors used when a setting leaves them open (intensity units).
DEFAULT_FLOORS = {"constant": 0.0, "spread": 0.02, "local": 0.001}
DATA_RANGE = (0.0, 1.0)  # normalised intensities: the truth lies in it
LOCAL_SIGMA = 4.0  # px: Gaussian smoothing of the spread of the "local" scale
_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default support, in sigmas
LOCAL_HALO = int(_TRUNCATE * LOCAL_SIGMA + 0.5)  # its kernel radius
_BISECTION_STEPS = 60  # interval length 2^-60: below float resolution of R


class RiskControlError(ValueError):
    """No lambda on the grid controls the risk at the requested (epsilon, delta)."""


class Intervals(NamedTuple):
    """Per-pixel interval bounds, each of the image's shape."""

    lower: np.ndarray
    upper: np.ndarray


def _np(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return a


def base_intervals(
    samples: Any,
    lower_q: float = 0.05,
    upper_q: float = 0.95,
    kind: IntervalKind = "quantile",
    k: float = 2.0,
    axis: int = 0,
) -> Intervals:
    """Unwidened intervals ``[l, u]`` over the J samples along ``axis`` (J >= 2):
    ``lower_q``/``upper_q`` sample quantiles, or ``mean -+ k std`` for ``kind="std"``."""
    s = _np(samples, "samples")
    if s.shape[axis] < 2:
        raise ValueError(f"need at least 2 samples along axis {axis}, got {s.shape[axis]}")
    if kind == "quantile":
        if not 0.0 <= lower_q < upper_q <= 1.0:
            raise ValueError(f"need 0 <= lower_q < upper_q <= 1, got {lower_q}, {upper_q}")
        lo, hi = np.quantile(s, [lower_q, upper_q], axis=axis)
    elif kind == "std":
        if not k >= 0:
            raise ValueError(f"k must be >= 0, got {k}")
        mu = s.mean(axis=axis)
        sd = s.std(axis=axis, ddof=1)
        lo, hi = mu - k * sd, mu + k * sd
    else:
        raise ValueError(f"kind must be 'quantile' or 'std', got {kind!r}")
    return Intervals(lo, hi)


def pixel_intervals(
    samples: Any,
    lam: float,
    lower_q: float = 0.05,
    upper_q: float = 0.95,
    kind: IntervalKind = "quantile",
    k: float = 2.0,
) -> Intervals:
    """``[l - lam, u + lam]`` per pixel from samples ``(J, C, H, W)`` (see
    :func:`base_intervals`); ``lower``/``upper`` have shape ``(C, H, W)``."""
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    lo, hi = base_intervals(samples, lower_q, upper_q, kind, k)
    return Intervals(lo - lam, hi + lam)


def interval_scale(intervals: Intervals, scale: Scale = "constant", floor: float = 0.0,
                   image_spread: float | None = None):
    """The per-pixel widening unit ``w`` of ``scale``: ``1.0`` (constant), the array
    ``u - l + floor`` (spread) or ``sqrt(G * (u - l) * s) + floor`` (local; ``s`` =
    ``image_spread``, by default the mean of ``u - l`` over the given intervals, which
    must then be the whole image; ``G`` smooths each channel, reflecting at the edges).
    ``floor > 0`` for spread and local."""
    if scale == "constant":
        return 1.0
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if not floor > 0:
        raise ValueError(f"the {scale} scale needs floor > 0, got {floor}")
    lo, hi = intervals
    d = np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)
    if scale == "spread":
        return d + floor
    from scipy.ndimage import gaussian_filter

    s = float(d.mean()) if image_spread is None else float(image_spread)
    sig = (0,) * (d.ndim - 2) + (LOCAL_SIGMA, LOCAL_SIGMA)
    smooth = np.maximum(gaussian_filter(d, sig, truncate=_TRUNCATE), 0.0)
    return np.sqrt(smooth * max(s, 0.0)) + floor


def excess(intervals: Intervals, truth: Any, scale: Scale = "constant",
           floor: float = 0.0) -> np.ndarray:
    """``e(p) = max(l(p) - x(p), x(p) - u(p)) / w(p)``: pixel p is outside
    ``[l - lam w, u + lam w]`` iff ``e(p) > lam`` (``w`` as :func:`interval_scale`)."""
    lo, hi = intervals
    t = _np(truth, "truth")
    if t.shape != np.shape(lo):
        raise ValueError(f"truth has shape {t.shape} but intervals {np.shape(lo)}")
    e = np.maximum(lo - t, t - hi) / interval_scale(intervals, scale, floor)
    if np.isnan(e).any():
        raise ValueError("intervals contain NaN")
    return e


def miscoverage(intervals: Intervals, truth: Any) -> float:
    """Fraction of pixels with ``truth`` outside ``[lower, upper]`` (closed interval)."""
    return float(np.mean(excess(intervals, truth) > 0))


def loss_matrix(intervals: Iterable[Intervals], truths: Iterable[Any], lambdas: Any,
                scale: Scale = "constant", floor: float = 0.0) -> np.ndarray:
    """Per-image miscoverage ``L_i(lambda_j)``, shape ``(n, len(lambdas))``: the fraction
    of image i's pixels whose truth lies outside ``[l - lambda_j w, u + lambda_j w]``
    (``w`` as :func:`interval_scale`). ``intervals`` are the n images' base intervals
    (:func:`base_intervals`), ``truths`` the matching true images; images may differ in
    size. Both are consumed one image at a time, so generators that read images from a
    store keep one image in memory.
    """
    lam = np.asarray(lambdas, dtype=np.float64)
    if lam.ndim != 1:
        raise ValueError("lambdas must be 1-D")
    rows = []
    for iv, t in zip(intervals, truths, strict=True):
        e = np.sort(excess(iv, t, scale, floor), axis=None)
        # #{p : e(p) > lam} / P, the same float as np.mean(e > lam)
        rows.append((e.size - np.searchsorted(e, lam, side="right")) / e.size)
    if not rows:
        raise ValueError("no images to compute losses on")
    return np.stack(rows)


# --------------------------------------------------------------------------- HB bound


def _h1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``h1(a, b) = a log(a/b) + (1 - a) log((1 - a)/(1 - b))`` (KL of Bernoullis)."""
    from scipy.special import xlogy

    with np.errstate(divide="ignore", invalid="ignore"):
        return xlogy(a, a) - xlogy(a, b) + xlogy(1 - a, 1 - a) - xlogy(1 - a, 1 - b)


def hb_pvalue(risk_hat: Any, n: int, R: Any) -> np.ndarray:
    """Hoeffding-Bentkus p-value of the null ``risk >= R`` given the mean ``risk_hat`` of
    n losses in [0, 1]:

        p_H = exp(-n h1(min(risk_hat, R), R)),
        p_B = e P(Binom(n, R) <= ceil(n risk_hat)),
        p   = min(p_H, p_B).
    """
    from scipy.special import bdtr

    r = np.asarray(risk_hat, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    p_h = np.exp(-n * _h1(np.minimum(r, R), R))
    k = np.ceil(n * r - 1e-9)  # n * risk_hat is a count up to rounding error
    p_b = math.e * bdtr(k, n, R)
    return np.minimum(p_h, p_b)


def hb_ucb(risk_hat: Any, n: int, delta: float) -> Any:
    """Hoeffding-Bentkus upper confidence bound ``sup{R in [0, 1] : p(R) > delta}`` of
    the risk (see :func:`hb_pvalue`), by bisection on ``[risk_hat, 1]`` (``p`` is
    non-increasing there and ``p(risk_hat) > delta``); the returned value is the upper
    end of the final bracket, so it errs on the conservative side. Vectorised over
    ``risk_hat``; returns a float for scalar input.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    r = np.asarray(risk_hat, dtype=np.float64)
    if ((r < 0) | (r > 1) | np.isnan(r)).any():
        raise ValueError("risk_hat must lie in [0, 1]")
    lo = r.copy()
    hi = np.ones_like(r)
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        above = hb_pvalue(r, n, mid) > delta
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    hi = np.where(r >= 1.0, 1.0, hi)
    return float(hi) if hi.ndim == 0 else hi


def risk_ucb(L: np.ndarray, delta: float, bound: Bound = DEFAULT_BOUND) -> np.ndarray:
    """Upper confidence bounds of the mean risk of each column of ``L`` (n, m) of losses
    in [0, 1]: Waudby-Smith-Ramdas (``"wsr"``, :func:`.wsr.wsr_ucb`) or
    Hoeffding-Bentkus (``"hb"``, :func:`hb_ucb` of the column means)."""
    if bound == "wsr":
        return np.atleast_1d(wsr_ucb(L, delta))
    if bound == "hb":
        return np.atleast_1d(hb_ucb(L.mean(axis=0), L.shape[0], delta))
    raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}")


def min_sources_for(epsilon: float, delta: float, bound: Bound = DEFAULT_BOUND,
                    most: int = 100_000) -> int:
    """Fewest calibration sources with which any per-pixel rule can be certified at
    (``epsilon``, ``delta``): even all-zero losses have an upper confidence bound above
    ``epsilon`` with fewer (e.g. 24 sources give 0.1012 > 0.1 under WSR)."""
    lo, hi = 1, 1
    while risk_ucb(np.zeros((hi, 1)), delta, bound)[0] > epsilon:
        lo, hi = hi + 1, hi * 2
        if hi > most:
            return most
    while lo < hi:  # the bound of n zero losses falls as n grows
        mid = (lo + hi) // 2
        if risk_ucb(np.zeros((mid, 1)), delta, bound)[0] > epsilon:
            lo = mid + 1
        else:
            hi = mid
    return lo


def calibrate_lambda(
    losses: np.ndarray | Callable[[float], Any],
    lambdas: Any,
    epsilon: float,
    delta: float,
    bound: Bound = DEFAULT_BOUND,
) -> float:
    """RCPS: the smallest ``lambda`` on the (increasing) grid such that the upper
    confidence bound (``bound``, see :func:`risk_ucb`) of the risk at ``lambda'`` is at
    most ``epsilon`` for every grid ``lambda' >= lambda``.

    ``losses`` is the matrix ``L_i(lambda_j)`` of shape ``(n, len(lambdas))`` (see
    :func:`loss_matrix`) or a function ``lambda -> (n,)`` per-image losses in [0, 1]
    (evaluated from the largest lambda down, stopping at the first failure). Raises
    :class:`RiskControlError` if even the largest lambda fails.
    """
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
    lam = np.asarray(lambdas, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0 or not (np.diff(lam) > 0).all():
        raise ValueError("lambdas must be a non-empty strictly increasing 1-D grid")

    def check(losses_j: Any) -> np.ndarray:
        v = np.asarray(losses_j, dtype=np.float64)
        if ((v < 0) | (v > 1) | np.isnan(v)).any():
            raise ValueError("losses must lie in [0, 1]")
        return v

    if callable(losses):
        chosen = None
        for j in range(lam.size - 1, -1, -1):
            v = check(losses(float(lam[j])))
            if risk_ucb(v[:, None], delta, bound)[0] > epsilon:
                break
            chosen = j
    else:
        L = check(losses)
        if L.ndim != 2 or L.shape[1] != lam.size:
            raise ValueError(f"losses must have shape (n, {lam.size}), got {L.shape}")
        ucb = risk_ucb(L, delta, bound)
        ok = ucb <= epsilon
        # first index from the top where the UCB fails; everything above it passes
        fails = np.flatnonzero(~ok)
        chosen = 0 if fails.size == 0 else int(fails[-1]) + 1
        if chosen >= lam.size:
            chosen = None
    if chosen is None:
        raise RiskControlError(
            f"no lambda up to {lam[-1]} controls the miscoverage at epsilon={epsilon}, "
            f"delta={delta}"
        )
    return float(lam[chosen])


def group_mean_losses(L: np.ndarray, groups: Sequence[Any] | None) -> np.ndarray:
    """Rows of ``L`` averaged within each group (source image), in order of first
    appearance; ``L`` itself when ``groups`` is None. Crops of one source are not
    independent; their mean loss is one draw per source, which is what the
    Hoeffding-Bentkus bound needs (the risk is then over new sources)."""
    if groups is None:
        return L
    g = list(groups)
    if len(g) != L.shape[0]:
        raise ValueError(f"{len(g)} groups for {L.shape[0]} images")
    order = list(dict.fromkeys(g))
    idx = {k: i for i, k in enumerate(order)}
    codes = np.array([idx[k] for k in g])
    sums = np.zeros((len(order), L.shape[1]))
    np.add.at(sums, codes, L)
    return sums / np.bincount(codes)[:, None]


@dataclass(frozen=True)
class PixelCalibration:
    """A calibrated per-pixel interval rule ``[l - lam w, u + lam w]`` (``l``, ``u`` the
    ``lower_q``/``upper_q`` sample quantiles, ``w`` the ``scale``'s unit, see
    :func:`interval_scale`) with ``P(E miscoverage <= epsilon) >= 1 - delta`` over the
    calibration sources. Its dict is the ``pixel`` entry of a stored calibration
    (``calibrations/<hash>.json``): keys ``lam, epsilon, delta, lower_q, upper_q, n``,
    ``scale``, ``floor``, ``n_sources``, ``mean_width`` (mean interval width on the
    calibration images at ``lam``) and ``bound`` (the risk bound that certified ``lam``);
    older calibrations lack the last five and are constant bands certified by
    Hoeffding-Bentkus)."""

    lam: float
    epsilon: float
    delta: float
    lower_q: float
    upper_q: float
    n: int
    scale: Scale = "constant"
    floor: float = 0.0
    n_sources: int | None = None
    mean_width: float | None = None
    bound: Bound = "hb"

    @classmethod
    def fit(
        cls,
        intervals: Iterable[Intervals],
        truths: Iterable[Any],
        lambdas: Any,
        epsilon: float,
        delta: float,
        lower_q: float = 0.05,
        upper_q: float = 0.95,
        scale: Scale = "constant",
        floor: float = 0.0,
        groups: Sequence[Any] | None = None,
        bound: Bound = DEFAULT_BOUND,
    ) -> PixelCalibration:
        """Calibrate ``lam`` by RCPS on the calibration images' base intervals and truths
        (as in :func:`loss_matrix`), one loss per source when ``groups`` names each
        image's source (:func:`group_mean_losses`); ``lower_q``/``upper_q`` record the
        quantiles those intervals were made with. Raises :class:`RiskControlError` as
        :func:`calibrate_lambda`."""
        ivs = list(intervals)
        L = group_mean_losses(loss_matrix(ivs, truths, lambdas, scale, floor), groups)
        lam = calibrate_lambda(L, lambdas, epsilon, delta, bound)
        cal = cls(lam=lam, epsilon=float(epsilon), delta=float(delta),
                  lower_q=float(lower_q), upper_q=float(upper_q), n=len(ivs),
                  scale=scale, floor=float(floor), n_sources=int(L.shape[0]), bound=bound)
        widths = [float(np.mean(w.upper - w.lower)) for w in map(cal.widen, ivs)]
        return replace(cal, mean_width=float(np.mean(widths)))

    @property
    def halo(self) -> int:
        """Pixels of context a tile needs on each side to get the whole image's
        intervals (:data:`LOCAL_HALO` for the local scale, else 0)."""
        return LOCAL_HALO if self.scale == "local" else 0

    def widen(self, intervals: Intervals, image_spread: float | None = None,
              data_range: tuple[float, float] | None = DATA_RANGE) -> Intervals:
        """The calibrated intervals ``[l - lam w, u + lam w]`` from base intervals (the
        whole image, or a tile with :attr:`halo` and the image's mean spread
        ``image_spread``, see :func:`interval_scale`), cut to ``data_range`` (the true
        image lies in it, so the cut loses no coverage; None: not cut)."""
        w = self.lam * interval_scale(intervals, self.scale, self.floor, image_spread)
        lo, hi = intervals.lower - w, intervals.upper + w
        if data_range is not None:
            lo, hi = np.clip(lo, *data_range), np.clip(hi, *data_range)
        return Intervals(lo, hi)

    def to_dict(self) -> dict[str, Any]:
        return {"lam": self.lam, "epsilon": self.epsilon, "delta": self.delta,
                "lower_q": self.lower_q, "upper_q": self.upper_q, "n": self.n,
                "scale": self.scale, "floor": self.floor, "n_sources": self.n_sources,
                "mean_width": self.mean_width, "bound": self.bound}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PixelCalibration:
        missing = [k for k in ("lam", "epsilon", "delta", "lower_q", "upper_q", "n") if k not in d]
        if missing:
            raise ValueError(f"pixel calibration lacks {', '.join(missing)}")
        opt = {k: d.get(k) for k in ("n_sources", "mean_width")}
        cal = cls(lam=float(d["lam"]), epsilon=float(d["epsilon"]), delta=float(d["delta"]),
                  lower_q=float(d["lower_q"]), upper_q=float(d["upper_q"]), n=int(d["n"]),
                  scale=d.get("scale", "constant"), floor=float(d.get("floor", 0.0)),
                  n_sources=None if opt["n_sources"] is None else int(opt["n_sources"]),
                  mean_width=None if opt["mean_width"] is None else float(opt["mean_width"]),
                  bound=d.get("bound", "hb"))
        if not (cal.lam >= 0 and 0 < cal.epsilon < 1 and 0 < cal.delta < 1 and cal.n >= 1
                and cal.bound in BOUNDS and cal.scale in SCALES
                and (cal.scale == "constant" or cal.floor > 0)):
            raise ValueError(f"invalid pixel calibration {dict(d)!r}")
        return cal
