"""Shift guard: is a new image like the calibration images?

A conformal bound holds for images exchangeable with the calibration images. This
guard tests that for one image at a time from features of its measurement (the
pipeline uses :data:`~restoreflow.quality.features.GUARD_FEATURES`: brightness,
contrast, dark share, colourfulness, highlights, dark floor and saturation of ``y``; the
bound's own covariates hardly tell photos from star fields,
benchmarks/results/conformal.md). Features that
are positive on every calibration image are log-transformed; all are then robustly
standardised (median, and the interquartile range over 1.349, of the calibration
images). The novelty score of an image is its mean
Euclidean distance to the ``k`` nearest calibration *sources* (a source's distance is
that of its nearest crop). Each calibration image gets the same score computed without
its own source, and the conformal p-value of a new image is

    p(x) = (1 + sum_g w_g #{i in g : s_i >= s(x)}) / (G + 1),   w_g = 1 / n_g,

every calibration source weighing one (as in
:func:`~restoreflow.quality.quantiles.grouped_conformal_quantile`). For an image
exchangeable with the calibration sources ``P(p <= level) <= level`` (approximately: a
new image is compared with all G sources, a calibration image with G - 1, which only
makes new images look less novel); an image with ``p <= level`` is flagged
``out_of_calibration``: its bound is not guaranteed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .features import feature_vector
from .linear import features_2d

__all__ = ["NoveltyGuard"]

_IQR_TO_SD = 1.349
_SCALE_FLOOR = 1e-12
DEFAULT_LEVEL = 0.1  # benchmarks/results/conformal.md: 2.4-2.9% flagged at 0.05, 7.7-8.0% here
DEFAULT_K = 3  # nearest calibration sources averaged


def _pooled_tail(scores: np.ndarray, codes: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``sum_g (1/n_g) #{i in g : scores_i >= s}`` for each value of ``s``."""
    w = 1.0 / np.bincount(codes)[codes]
    return ((scores[None, :] >= s[:, None]) * w[None, :]).sum(axis=1)


@dataclass(frozen=True)
class NoveltyGuard:
    """Fitted shift guard (see the module docstring). Build with :meth:`fit`."""

    feature_names: tuple[str, ...]
    log_features: tuple[bool, ...]
    center: tuple[float, ...]
    scale: tuple[float, ...]
    reference: tuple[tuple[float, ...], ...]  # standardised calibration features
    sources: tuple[int, ...]                  # each reference row's source (0..G-1)
    scores: tuple[float, ...]                 # each row's score without its own source
    k: int = DEFAULT_K
    level: float = DEFAULT_LEVEL

    @classmethod
    def fit(cls, features: Any, groups: Sequence[Any], feature_names: Sequence[str],
            k: int = DEFAULT_K, level: float = DEFAULT_LEVEL) -> NoveltyGuard:
        """Fit on the calibration images' features ``(n, d)`` and sources; needs at
        least ``k + 1`` sources."""
        X = features_2d(features)
        names = tuple(str(n) for n in feature_names)
        if len(names) != X.shape[1]:
            raise ValueError(f"{len(names)} feature names for {X.shape[1]} features")
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        _, codes = np.unique(np.asarray(groups), return_inverse=True)
        if codes.size != X.shape[0]:
            raise ValueError(f"{codes.size} groups for {X.shape[0]} rows")
        n_sources = int(codes.max()) + 1
        if n_sources < k + 1:
            raise ValueError(f"the shift guard needs at least {k + 1} calibration sources, "
                             f"got {n_sources}")
        logs = (X > 0).all(axis=0)
        T = np.where(logs, np.log(np.where(logs, X, 1.0)), X)
        center = np.median(T, axis=0)
        q75, q25 = np.percentile(T, [75, 25], axis=0)
        scale = np.maximum((q75 - q25) / _IQR_TO_SD, _SCALE_FLOOR)
        Z = (T - center) / scale
        guard = cls(names, tuple(bool(b) for b in logs), tuple(center.tolist()),
                    tuple(scale.tolist()), tuple(map(tuple, Z.tolist())),
                    tuple(codes.tolist()), (), int(k), float(level))
        own = [guard._score_z(Z[i], exclude=int(codes[i])) for i in range(Z.shape[0])]
        return replace(guard, scores=tuple(own))

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        logs = np.array(self.log_features)
        with np.errstate(divide="ignore", invalid="ignore"):
            T = np.where(logs, np.log(np.where(logs, np.maximum(X, 1e-300), 1.0)), X)
        return (T - np.array(self.center)) / np.array(self.scale)

    def _score_z(self, z: np.ndarray, exclude: int = -1) -> float:
        R = np.array(self.reference)
        src = np.array(self.sources)
        d = np.linalg.norm(R - z[None, :], axis=1)
        per_source = np.full(int(src.max()) + 1, np.inf)
        np.minimum.at(per_source, src, d)
        if exclude >= 0:
            per_source = np.delete(per_source, exclude)
        return float(np.sort(per_source)[: self.k].mean())

    def score(self, features: Any) -> np.ndarray:
        """Novelty scores of feature rows ``(n, d)`` (or ``(d,)``): shape ``(n,)``."""
        Z = self._standardise(features_2d(features, len(self.feature_names)))
        return np.array([self._score_z(z) for z in Z])

    def pvalue(self, features: Any) -> np.ndarray:
        """Conformal p-values of feature rows: small = unlike the calibration images."""
        s = self.score(features)
        codes = np.array(self.sources)
        tail = _pooled_tail(np.array(self.scores), codes, s)
        return (1.0 + tail) / (int(codes.max()) + 2.0)

    def check(self, features: Mapping[str, float]) -> dict[str, Any]:
        """One image (feature dict): ``{"novelty_pvalue", "out_of_calibration"}``."""
        p = float(self.pvalue(feature_vector(features, self.feature_names))[0])
        return {"novelty_pvalue": p, "out_of_calibration": bool(p <= self.level)}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "NoveltyGuard", "version": 1, "feature_names": list(self.feature_names),
                "log_features": list(self.log_features), "center": list(self.center),
                "scale": list(self.scale), "reference": [list(r) for r in self.reference],
                "sources": list(self.sources), "scores": list(self.scores), "k": self.k,
                "level": self.level}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NoveltyGuard:
        if d.get("kind") != "NoveltyGuard" or d.get("version") != 1:
            raise ValueError(f"not a serialised NoveltyGuard: kind={d.get('kind')!r}")
        return cls(tuple(d["feature_names"]), tuple(bool(b) for b in d["log_features"]),
                   tuple(map(float, d["center"])), tuple(map(float, d["scale"])),
                   tuple(tuple(map(float, r)) for r in d["reference"]),
                   tuple(map(int, d["sources"])), tuple(map(float, d["scores"])),
                   int(d["k"]), float(d["level"]))
