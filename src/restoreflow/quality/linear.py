"""The linear predictor ``f(x)`` of the conformal bounds, on standardised features, and
the checks and standardisation of a feature matrix that its fits share (ridge:
:mod:`restoreflow.quality.ridge`; quantile regression: :mod:`restoreflow.quality.quantreg`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LinearModel:
    """``f(x) = intercept + sum_j coef_j (x_j - mean_j) / scale_j`` (standardised
    features; ``scale_j = 1`` for a constant feature)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LinearModel):
            return NotImplemented
        return self.intercept == other.intercept and all(
            np.array_equal(getattr(self, f), getattr(other, f)) for f in ("mean", "scale", "coef")
        )

    def predict(self, features: Any) -> np.ndarray:
        X = features_2d(features, self.coef.size)
        return self.intercept + ((X - self.mean) / self.scale) @ self.coef

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "coef": [float(v) for v in self.coef],
            "intercept": float(self.intercept),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LinearModel:
        m = cls(
            mean=np.asarray(d["mean"], dtype=np.float64),
            scale=np.asarray(d["scale"], dtype=np.float64),
            coef=np.asarray(d["coef"], dtype=np.float64),
            intercept=float(d["intercept"]),
        )
        if not (m.mean.shape == m.scale.shape == m.coef.shape and m.coef.ndim == 1):
            raise ValueError("linear model mean, scale and coef must be 1-D of equal length")
        return m


def features_2d(features: Any, d: int | None = None) -> np.ndarray:
    X = np.asarray(features, dtype=np.float64)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2:
        raise ValueError(f"features must have shape (n, d) or (d,), got {X.shape}")
    if d is not None and X.shape[1] != d:
        raise ValueError(f"expected {d} features per row, got {X.shape[1]}")
    if not np.isfinite(X).all():
        raise ValueError("features contain NaN or infinite values")
    return X


def standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return (X - mean) / scale, mean, scale


def regression_inputs(features: Any, targets: Any):
    """The checked targets ``v`` and the standardised features ``(Z, mean, scale)``."""
    from .quantiles import scores_1d

    X = features_2d(features)
    v = scores_1d(targets, "targets")
    if v.size != X.shape[0]:
        raise ValueError(f"{X.shape[0]} feature rows but {v.size} targets")
    return v, *standardise(X)
