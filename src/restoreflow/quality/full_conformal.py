"""Full-conformal ridge lower bound on the quality of a restoration.

Split conformal (:class:`~restoreflow.quality.conformal.ConformalLowerBound`) spends half
the calibration sources on fitting the predictor and calibrates its quantile on the other
half only; with a few dozen sources that costs more than the features gain, and the
bound can be looser than the feature-free one. Full conformal (Vovk, Gammerman & Shafer,
"Algorithmic Learning in a Random World", 2005; for ridge regression Nouretdinov,
Melluish & Vovk, ICML 2001) uses every source for both:

For a test image with features ``x`` and a candidate quality ``y``, fit ridge regression
on the ``N = n + 1`` points ``(x_1, v_1) .. (x_n, v_n), (x, y)`` and take the scores
``s_i(y) = prediction_i - value_i``. ``y`` is *plausible* when the test point's score is
not among the ``floor(alpha N)`` largest, i.e. when at least ``k = floor(alpha N)``
calibration scores are ``>= s_test(y)``; the bound is the smallest plausible ``y``:

    L(x) = inf { y : #{i <= n : s_i(y) >= s_test(y)} >= k }.

Because the fit is a symmetric function of the ``N`` points, the test score's rank is
uniform and ``P(v_test >= L(x_test)) >= 1 - alpha`` exactly in finite samples, for an
image exchangeable with the calibration images. The fit here is symmetric too in how it
is tuned: features are standardised over the ``N`` rows, and the ridge penalty is chosen
from a fixed grid by generalised cross-validation on the ``N`` points (its criterion
depends on ``y``). The grid ends at an infinite penalty, the constant predictor, for
which ``L`` is exactly the feature-free order statistic ``v_(k)``
(:class:`~restoreflow.quality.conformal.TrivialLowerBound`): when the features do not
predict the quality, GCV falls back towards it.

Everything is linear in ``y``: the residuals are ``A + B y`` and each GCV criterion a
quadratic in ``y``, so the plausible set changes only where two scores cross or two
criteria cross. The bound is computed exactly by checking every such point and the
intervals between them.

Sources: the rows must be exchangeable with the test image. When a source gave several
rows (crops), one row per source is kept, drawn with the caller's generator (a new image
is one draw from a new source); :meth:`FullConformalBound.fit` reports how many rows it
used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .features import feature_vector
from .linear import features_2d
from .quantiles import check_alpha, scores_1d

__all__ = ["FullConformalBound", "full_min_sources", "one_row_per_source"]

KIND = "FullConformalBound"
FORMAT_VERSION = 1
#: ridge penalties in units of N (standardised features); inf = the constant predictor.
#: None below N: a weakly penalised fit lets an unusual test image pull the fit to its own
#: candidate value (leverage near 1), and its plausible set then reaches far below (on
#: the 64 px crops of benchmarks/results/conformal_ffdnet.md, 19 of 240 calibrations gave
#: some test image an unbounded bound with 0.01 N and 0.1 N on the grid, none without)
PENALTIES = (1.0, 10.0, 100.0, math.inf)


def full_min_sources(alpha: float) -> int:
    """Fewest calibration sources with a finite bound at ``alpha``: ``floor(alpha (n + 1))
    >= 1``."""
    return math.ceil(1.0 / check_alpha(alpha) - 1e-9) - 1


def one_row_per_source(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted row indices, one per source of ``groups``, drawn at random with ``rng``."""
    _, codes = np.unique(groups, return_inverse=True)
    order = rng.permutation(codes.size)
    _, first = np.unique(codes[order], return_index=True)
    return np.sort(order[first])


def _hat_matrices(Xa: np.ndarray) -> list[np.ndarray]:
    """The ridge hat matrix of the ``N`` augmented rows for each penalty of
    :data:`PENALTIES` (unpenalised intercept, features standardised over the rows)."""
    n = Xa.shape[0]
    mean = np.full((n, n), 1.0 / n)
    if Xa.shape[1] == 0:
        return [mean for _ in PENALTIES]
    sd = Xa.std(axis=0)
    Z = (Xa - Xa.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    G = Z.T @ Z
    out = []
    for lam in PENALTIES:
        if math.isinf(lam):
            out.append(mean)
        else:
            out.append(mean + Z @ np.linalg.solve(G + lam * n * np.eye(G.shape[0]), Z.T))
    return out


def _lower_bound(X: np.ndarray, v: np.ndarray, x: np.ndarray, k: int) -> float:
    """``L(x)`` for calibration rows ``(X, v)`` and the rank ``k`` (see the module
    docstring)."""
    n = v.size
    N = n + 1
    Hs = _hat_matrices(np.vstack([X, x[None]]))
    e_last = np.zeros(N)
    e_last[-1] = 1.0
    v0 = np.append(v, 0.0)
    A = np.stack([v0 - H @ v0 for H in Hs])                # residuals: A + B y
    B = np.stack([e_last - H[:, -1] for H in Hs])
    dof = np.array([N - np.trace(H) for H in Hs])
    # GCV_j(y) = N |A_j + B_j y|^2 / dof_j^2 = c0 + c1 y + c2 y^2
    w = N / dof ** 2
    c0, c1, c2 = (w * (A * A).sum(1), w * 2 * (A * B).sum(1), w * (B * B).sum(1))
    crit = []
    # score crossings: s_i(y) = s_test(y)  <=>  A_i + B_i y = A_N + B_N y
    dA = A[:, :n] - A[:, -1:]
    dB = B[:, -1:] - B[:, :n]
    ok = np.abs(dB) > 1e-12
    crit.append((dA[ok] / dB[ok]).ravel())
    # GCV crossings between every pair of penalties
    J = len(Hs)
    for a in range(J):
        for b in range(a + 1, J):
            r = np.roots([c2[a] - c2[b], c1[a] - c1[b], c0[a] - c0[b]])
            crit.append(r[np.isreal(r)].real)
    c = np.unique(np.concatenate(crit))
    c = c[np.isfinite(c)]
    if c.size == 0:
        c = np.array([float(v.mean())])
    mids = (c[:-1] + c[1:]) / 2
    span = max(1.0, float(c[-1] - c[0]))
    # candidate points in increasing order: below all, each point, each gap, above all
    ys = np.empty(2 * c.size + 1)
    ys[0] = c[0] - span
    ys[1:-1:2] = c
    ys[2:-1:2] = mids
    ys[-1] = c[-1] + span
    gcv = c0[:, None] + c1[:, None] * ys + c2[:, None] * ys ** 2    # (J, M)
    # ties go to the larger penalty (the simpler model): argmin over the reversed grid
    pick = J - 1 - np.argmin(gcv[::-1], axis=0)
    res = A[pick] + B[pick] * ys[:, None]                          # (M, N)
    # s_i >= s_test  <=>  -res_i >= -res_test  <=>  res_i <= res_test (with a float margin)
    tol = 1e-9 * (1.0 + np.abs(res[:, -1:]))
    count = (res[:, :n] <= res[:, -1:] + tol).sum(axis=1)
    hit = np.flatnonzero(count >= k)
    if hit.size == 0:
        return math.inf
    i = int(hit[0])
    if i == 0:
        return -math.inf
    # a gap (even index >= 2) starts at the point before it; a point is its own bound
    return float(ys[i - 1] if i % 2 == 0 else ys[i])


@dataclass(frozen=True)
class FullConformalBound:
    """Full-conformal ridge lower bound ``L(x)`` (module docstring) with
    ``P(v >= L(x)) >= 1 - alpha``; keeps its calibration rows (one per source)."""

    alpha: float
    feature_names: tuple[str, ...]
    X: np.ndarray = field(repr=False)
    v: np.ndarray = field(repr=False)
    n_rows: int = 0
    target: str = "psnr"
    settings_hash: str = ""
    method: str = "full"

    @property
    def n_cal_sources(self) -> int:
        return int(self.v.size)

    @property
    def k(self) -> int:
        return math.floor(self.alpha * (self.v.size + 1) + 1e-9)

    @classmethod
    def fit(cls, features: Any, true_values: Any, alpha: float, rng: np.random.Generator,
            feature_names: Sequence[str] | None = None, target: str = "psnr",
            settings_hash: str = "", groups: Any = None) -> FullConformalBound:
        """Keep one row per source of ``groups`` (default: every row its own source),
        drawn with ``rng``. ValueError when the sources are too few for a finite bound."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        a = check_alpha(alpha)
        X = features_2d(features)
        v = scores_1d(true_values, "true_values")
        if v.size != X.shape[0]:
            raise ValueError(f"{X.shape[0]} feature rows but {v.size} true values")
        g = np.arange(v.size) if groups is None else np.asarray(groups)
        if g.shape != v.shape:
            raise ValueError(f"{g.size} groups for {v.size} rows")
        keep = one_row_per_source(g, rng)
        if keep.size < full_min_sources(a):
            raise ValueError(f"{keep.size} calibration sources; alpha={a} needs at least "
                             f"{full_min_sources(a)} for a finite bound")
        names = (tuple(f"x{j}" for j in range(X.shape[1])) if feature_names is None
                 else tuple(str(n) for n in feature_names))
        if len(names) != X.shape[1]:
            raise ValueError(f"{len(names)} feature names for {X.shape[1]} features")
        return cls(a, names, X[keep], v[keep], int(v.size), target, settings_hash)

    def bound(self, features: Any) -> np.ndarray:
        """Lower bounds for features ``(m, d)`` (or ``(d,)``): shape ``(m,)``."""
        Xt = features_2d(features, self.X.shape[1])
        return np.array([_lower_bound(self.X, self.v, x, self.k) for x in Xt])

    def bound_features(self, features: Mapping[str, float]) -> float:
        """Lower bound for one image from its feature dict (keys ``feature_names``)."""
        return float(self.bound(feature_vector(features, self.feature_names))[0])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "version": FORMAT_VERSION, "method": self.method,
                "alpha": self.alpha, "target": self.target,
                "feature_names": list(self.feature_names), "X": self.X.tolist(),
                "v": self.v.tolist(), "n_rows": self.n_rows,
                "n_cal_sources": self.n_cal_sources, "settings_hash": self.settings_hash}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FullConformalBound:
        if d.get("kind") != KIND or d.get("version") != FORMAT_VERSION:
            raise ValueError(f"expected a serialised {KIND} version {FORMAT_VERSION}, got "
                             f"kind={d.get('kind')!r} version={d.get('version')!r}")
        names = tuple(str(n) for n in d["feature_names"])
        X = np.asarray(d["X"], dtype=np.float64).reshape(-1, len(names))
        v = scores_1d(d["v"], "v")
        if v.size != X.shape[0]:
            raise ValueError(f"{X.shape[0]} feature rows but {v.size} values")
        return cls(check_alpha(d["alpha"]), names, X, v, int(d.get("n_rows", v.size)),
                   str(d["target"]), str(d["settings_hash"]))
