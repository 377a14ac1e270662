"""Split-conformal lower bounds on the quality of a restoration.

Setting: calibration images ``i = 1..n`` with no-reference features ``x_i`` (see
:mod:`restoreflow.quality.features`) and true quality ``v_i`` (PSNR in dB, or SSIM),
exchangeable with the test image. The calibration set is split at random (with an
explicit ``numpy.random.Generator``) into a *fit fold*, on which a quality predictor is
fitted, and a *calibration fold* ``I_2`` of size ``n_2`` on which conformity scores are
computed:

- ``method="residual"``: ridge regression ``mu(x)`` on standardised features (ridge
  chosen by leave-one-out on the fit fold);
  score ``s_i = mu(x_i) - v_i``; bound ``L(x) = mu(x) - q``.
- ``method="cqr"`` (conformalised quantile regression, Romano, Patterson & Candes 2019):
  linear quantile regression ``q_alpha(x)`` of level ``alpha`` fitted by minimising the
  pinball loss; score ``s_i = q_alpha(x_i) - v_i``; bound ``L(x) = q_alpha(x) - q``.

with ``q = conformal_quantile({s_i : i in I_2}, alpha)``, the
``ceil((n_2 + 1)(1 - alpha))``-th smallest score. Because the test score is exchangeable
with the calibration scores, its rank among the ``n_2 + 1`` scores is uniform, so

    P(v_test >= L(x_test)) = P(s_test <= q) >= 1 - alpha

(marginally over calibration and test data), and ``< 1 - alpha + 1/(n_2 + 1)`` when the
scores have no ties.

:class:`TrivialLowerBound` is the feature-free baseline. All calibrations serialise to
plain JSON (``to_dict``/``from_dict``; infinities as the strings ``"inf"`` / ``"-inf"``)
together with a caller-supplied ``settings_hash``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .features import feature_vector

__all__ = [
    "ConformalLowerBound",
    "LinearModel",
    "Method",
    "TrivialLowerBound",
    "calibration_from_dict",
    "conformal_lower_quantile",
    "conformal_quantile",
    "fit_quantile_regression",
    "fit_ridge",
    "flag",
    "pinball_loss",
]

Method = Literal["residual", "cqr"]
_METHODS = ("residual", "cqr")
FORMAT_VERSION = 1
# (n+1)(1-alpha) is computed in floating point: 20 * 0.9 must give rank 18, not 19.
_RANK_EPS = 1e-9


# --------------------------------------------------------------------------- quantiles


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return a


def _scores_1d(scores: Any, name: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError(f"{name} contain NaN")
    return s


def conformal_quantile(scores: Any, alpha: float) -> float:
    """Finite-sample conformal quantile of ``n`` scores at level ``1 - alpha``:

        q = s_(k),   k = ceil((n + 1)(1 - alpha)),

    the k-th smallest score, and ``+inf`` when ``k > n`` (too few scores for level
    ``1 - alpha``). For a new score exchangeable with the ``n`` scores,
    ``P(s_new <= q) >= 1 - alpha``.
    """
    a = _check_alpha(alpha)
    s = np.sort(_scores_1d(scores))
    n = s.size
    k = math.ceil((n + 1) * (1.0 - a) - _RANK_EPS)
    if k > n:
        return math.inf
    return float(s[max(k, 1) - 1])


def conformal_lower_quantile(values: Any, alpha: float) -> float:
    """Finite-sample lower conformal quantile of ``n`` values:

        v_(k),   k = floor(alpha (n + 1)),

    the k-th smallest value, and ``-inf`` when ``k = 0``. For a new value exchangeable
    with the ``n`` values, ``P(v_new >= v_(k)) >= 1 - alpha`` (it equals
    ``-conformal_quantile(-values, alpha)``).
    """
    a = _check_alpha(alpha)
    v = np.sort(_scores_1d(values, "values"))
    k = math.floor(a * (v.size + 1) + _RANK_EPS)
    if k < 1:
        return -math.inf
    return float(v[k - 1])


# --------------------------------------------------------------------------- predictors


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
        X = _features_2d(features, self.coef.size)
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


def _features_2d(features: Any, d: int | None = None) -> np.ndarray:
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


def _standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return (X - mean) / scale, mean, scale


RIDGE_GRID = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e4)


def fit_ridge(features: Any, targets: Any, ridge: float | str = "auto") -> LinearModel:
    """Ridge regression on standardised features ``z`` (closed form):

        b = argmin (1/n) ||v - vbar - Z b||^2 + ridge ||b||^2
          = (Z^T Z / n + ridge I)^{-1} Z^T (v - vbar) / n,   intercept = vbar

    (the intercept is not penalised). ``ridge="auto"`` picks it from ``RIDGE_GRID`` by
    exact leave-one-out error on these rows (``e_i = r_i / (1 - h_ii)``): with a few dozen
    calibration images and several features, a nearly unpenalised fit chases noise, and
    the largest ridge is close to the constant predictor. The choice uses only the fit
    fold, so the conformal guarantee is unchanged.
    """
    X = _features_2d(features)
    v = _scores_1d(targets, "targets")
    if v.size != X.shape[0]:
        raise ValueError(f"{X.shape[0]} feature rows but {v.size} targets")
    Z, mean, scale = _standardise(X)
    n, d = Z.shape
    vbar = float(v.mean())
    if ridge == "auto":
        ridge = min(RIDGE_GRID, key=lambda lam: _loo_error(Z, v - vbar, lam))
    if not (isinstance(ridge, int | float) and ridge >= 0):
        raise ValueError(f"ridge must be >= 0 or 'auto', got {ridge!r}")
    coef = np.linalg.lstsq(Z.T @ Z / n + ridge * np.eye(d), Z.T @ (v - vbar) / n,
                           rcond=None)[0]
    return LinearModel(mean=mean, scale=scale, coef=coef, intercept=vbar)


def _loo_error(Z: np.ndarray, r: np.ndarray, ridge: float) -> float:
    """Mean squared leave-one-out residual of the ridge fit (centred Z and targets)."""
    n, d = Z.shape
    inv = np.linalg.pinv(Z.T @ Z / n + ridge * np.eye(d))
    fitted = Z @ (inv @ (Z.T @ r / n))
    h = 1.0 / n + np.einsum("ij,jk,ik->i", Z, inv, Z) / n  # leverage, intercept included
    e = (r - fitted) / np.maximum(1.0 - h, 1e-12)
    return float(np.mean(e**2))


def pinball_loss(targets: Any, predictions: Any, tau: float) -> float:
    """Mean pinball (quantile) loss ``mean rho_tau(v - f)``,
    ``rho_tau(u) = max(tau u, (tau - 1) u)``."""
    u = np.asarray(targets, dtype=np.float64) - np.asarray(predictions, dtype=np.float64)
    return float(np.mean(np.maximum(tau * u, (tau - 1.0) * u)))


def fit_quantile_regression(features: Any, targets: Any, tau: float) -> LinearModel:
    """Linear quantile regression of level ``tau`` on standardised features:

        (b0, b) = argmin sum_i rho_tau(v_i - b0 - z_i^T b).

    Solved exactly as the dual linear program (Koenker & Bassett 1978)

        max_d v^T d   s.t.  [1 Z]^T d = 0,   tau - 1 <= d_i <= tau

    with HiGHS (``scipy.optimize.linprog``); ``(b0, b)`` are the multipliers of the
    equality constraints. Raises RuntimeError if the solver fails or if the primal and
    dual objectives disagree.
    """
    from scipy.optimize import linprog

    if not 0.0 < tau < 1.0:
        raise ValueError(f"tau must be in (0, 1), got {tau}")
    X = _features_2d(features)
    v = _scores_1d(targets, "targets")
    if v.size != X.shape[0]:
        raise ValueError(f"{X.shape[0]} feature rows but {v.size} targets")
    Z, mean, scale = _standardise(X)
    n, d = Z.shape
    design = np.hstack([np.ones((n, 1)), Z])
    res = linprog(-v, A_eq=design.T, b_eq=np.zeros(d + 1), bounds=(tau - 1.0, tau), method="highs")
    if res.status != 0:
        raise RuntimeError(f"quantile regression LP failed: {res.message}")
    beta = -np.asarray(res.eqlin.marginals, dtype=np.float64)
    primal = float(np.sum(np.maximum(tau * (v - design @ beta), (tau - 1) * (v - design @ beta))))
    dual = float(-res.fun)
    if abs(primal - dual) > 1e-6 * (1.0 + abs(dual)):
        raise RuntimeError(f"quantile regression: primal {primal} != dual {dual} objective")
    return LinearModel(mean=mean, scale=scale, coef=beta[1:], intercept=float(beta[0]))


# --------------------------------------------------------------------------- helpers


def _enc(x: float) -> float | str:
    """JSON-safe float: infinities as strings."""
    x = float(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if math.isnan(x):
        raise ValueError("cannot serialise NaN")
    return x


def _dec(x: float | str) -> float:
    return float(x)


def _check_kind(d: Mapping[str, Any], kind: str) -> None:
    if d.get("kind") != kind:
        raise ValueError(f"expected a serialised {kind}, got kind={d.get('kind')!r}")
    if d.get("version") != FORMAT_VERSION:
        raise ValueError(f"unsupported {kind} format version {d.get('version')!r}")


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")


def _check_rng(rng: Any) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")


def _split(
    X: np.ndarray, v: np.ndarray, rng: np.random.Generator, fit_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if not 0.0 < fit_fraction < 1.0:
        raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
    n = X.shape[0]
    if v.size != n:
        raise ValueError(f"{n} feature rows but {v.size} true values")
    n_fit = int(round(fit_fraction * n))
    if n_fit < 2 or n - n_fit < 1:
        raise ValueError(f"cannot split {n} calibration images with fit_fraction {fit_fraction}")
    perm = rng.permutation(n)
    i_fit, i_cal = perm[:n_fit], perm[n_fit:]
    return X[i_fit], v[i_fit], X[i_cal], v[i_cal]


def _finite_quantile(scores: np.ndarray, alpha: float) -> float:
    q = conformal_quantile(scores, alpha)
    if math.isinf(q):
        need = math.ceil((1.0 - alpha) / alpha - _RANK_EPS)
        raise ValueError(
            f"the calibration fold has {scores.size} images; alpha={alpha} needs at least "
            f"{need} for a finite bound"
        )
    return q


def _names(names: Sequence[str] | None, d: int) -> tuple[str, ...]:
    if names is None:
        return tuple(f"x{j}" for j in range(d))
    names = tuple(str(n) for n in names)
    if len(names) != d:
        raise ValueError(f"{len(names)} feature names for {d} features")
    return names


# --------------------------------------------------------------------------- bounds


@dataclass(frozen=True)
class ConformalLowerBound:
    """Split-conformal lower bound ``L(x) = f(x) - q`` on a quality value ``v``, with
    ``P(v >= L(x)) >= 1 - alpha`` for an image exchangeable with the calibration images.

    ``f`` is the ridge prediction (``method="residual"``) or the linear ``alpha``-quantile
    regression (``method="cqr"``), and ``q`` the conformal quantile of the scores
    ``f(x_i) - v_i`` on the calibration fold. Build with :meth:`fit` or :meth:`fit_split`.
    """

    method: Method
    alpha: float
    feature_names: tuple[str, ...]
    model: LinearModel
    quantile: float
    n_fit: int
    n_cal: int
    target: str = "psnr"
    settings_hash: str = ""

    @classmethod
    def fit(
        cls,
        features: Any,
        true_values: Any,
        alpha: float,
        rng: np.random.Generator,
        fit_fraction: float = 0.5,
        method: Method = "residual",
        feature_names: Sequence[str] | None = None,
        ridge: float | str = "auto",
        target: str = "psnr",
        settings_hash: str = "",
    ) -> ConformalLowerBound:
        """Split ``(features (n, d), true_values (n,))`` at random with ``rng`` into a fit
        fold (``round(fit_fraction n)`` images) and a calibration fold, then
        :meth:`fit_split`. ``feature_names`` defaults to ``x0, x1, ...``."""
        _check_rng(rng)
        X = _features_2d(features)
        v = _scores_1d(true_values, "true_values")
        Xf, vf, Xc, vc = _split(X, v, rng, fit_fraction)
        return cls.fit_split(
            Xf, vf, Xc, vc, alpha, method, feature_names, ridge, target, settings_hash
        )

    @classmethod
    def fit_split(
        cls,
        fit_features: Any,
        fit_values: Any,
        cal_features: Any,
        cal_values: Any,
        alpha: float,
        method: Method = "residual",
        feature_names: Sequence[str] | None = None,
        ridge: float | str = "auto",
        target: str = "psnr",
        settings_hash: str = "",
    ) -> ConformalLowerBound:
        """Fit the predictor on the fit fold and the conformal quantile on the given
        calibration fold (which must not overlap the fit fold)."""
        a = _check_alpha(alpha)
        _check_method(method)
        Xf = _features_2d(fit_features)
        Xc = _features_2d(cal_features, Xf.shape[1])
        vc = _scores_1d(cal_values, "cal_values")
        if vc.size != Xc.shape[0]:
            raise ValueError(f"{Xc.shape[0]} calibration rows but {vc.size} values")
        if method == "residual":
            model = fit_ridge(Xf, fit_values, ridge)
        else:
            model = fit_quantile_regression(Xf, fit_values, a)
        q = _finite_quantile(model.predict(Xc) - vc, a)
        return cls(
            method=method,
            alpha=a,
            feature_names=_names(feature_names, Xf.shape[1]),
            model=model,
            quantile=q,
            n_fit=int(Xf.shape[0]),
            n_cal=int(Xc.shape[0]),
            target=target,
            settings_hash=settings_hash,
        )

    def predict(self, features: Any) -> np.ndarray:
        """``f(x)`` for features ``(n, d)`` (or ``(d,)``): shape ``(n,)``."""
        return self.model.predict(features)

    def bound(self, features: Any) -> np.ndarray:
        """Lower bounds ``f(x) - q`` for features ``(n, d)`` (or ``(d,)``): shape ``(n,)``."""
        return self.model.predict(features) - self.quantile

    def bound_features(self, features: Mapping[str, float]) -> float:
        """Lower bound for one image from its feature dict (keys ``feature_names``)."""
        return float(self.bound(feature_vector(features, self.feature_names))[0])

    def with_settings_hash(self, settings_hash: str) -> ConformalLowerBound:
        return _replace(self, settings_hash=settings_hash)

    def to_dict(self) -> dict[str, Any]:
        return _fitted_to_dict(self, "ConformalLowerBound", model=self.model.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConformalLowerBound:
        return cls(**_fitted_from_dict(d, "ConformalLowerBound", "model"))


def _fitted_to_dict(obj, kind: str, **models: dict) -> dict[str, Any]:
    """JSON form shared by the fitted conformal objects (their models passed in)."""
    return {"kind": kind, "version": FORMAT_VERSION, "method": obj.method,
            "alpha": obj.alpha, "target": obj.target,
            "feature_names": list(obj.feature_names), **models,
            "quantile": _enc(obj.quantile), "n_fit": obj.n_fit, "n_cal": obj.n_cal,
            "settings_hash": obj.settings_hash}


def _fitted_from_dict(d: Mapping[str, Any], kind: str, *model_keys: str) -> dict[str, Any]:
    """Validated constructor arguments of a fitted conformal object (models included)."""
    _check_kind(d, kind)
    _check_method(d["method"])
    models = {k: LinearModel.from_dict(d[k]) for k in model_keys}
    n_features = models[model_keys[0]].coef.size
    return {**models, "method": d["method"], "alpha": _check_alpha(d["alpha"]),
            "feature_names": _names(d["feature_names"], n_features),
            "quantile": _dec(d["quantile"]), "n_fit": int(d["n_fit"]),
            "n_cal": int(d["n_cal"]), "target": str(d["target"]),
            "settings_hash": str(d["settings_hash"])}


@dataclass(frozen=True)
class TrivialLowerBound:
    """Feature-free baseline: the constant ``L = v_(k)``, ``k = floor(alpha (n + 1))``
    (see :func:`conformal_lower_quantile`) of the ``n`` calibration values, so
    ``P(v_test >= L) >= 1 - alpha``; ``-inf`` when ``n`` is too small."""

    alpha: float
    value: float
    n: int
    target: str = "psnr"
    settings_hash: str = ""

    @classmethod
    def fit(
        cls, true_values: Any, alpha: float, target: str = "psnr", settings_hash: str = ""
    ) -> TrivialLowerBound:
        v = _scores_1d(true_values, "true_values")
        a = _check_alpha(alpha)
        return cls(
            alpha=a,
            value=conformal_lower_quantile(v, a),
            n=int(v.size),
            target=target,
            settings_hash=settings_hash,
        )

    def bound(self, features: Any) -> np.ndarray:
        """The constant bound, one per row of ``features`` (``(n, d)``, or ``(d,)``)."""
        X = np.asarray(features, dtype=np.float64)
        n = 1 if X.ndim <= 1 else X.shape[0]
        return np.full(n, self.value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "TrivialLowerBound",
            "version": FORMAT_VERSION,
            "alpha": self.alpha,
            "target": self.target,
            "value": _enc(self.value),
            "n": self.n,
            "settings_hash": self.settings_hash,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrivialLowerBound:
        _check_kind(d, "TrivialLowerBound")
        return cls(
            alpha=_check_alpha(d["alpha"]),
            value=_dec(d["value"]),
            n=int(d["n"]),
            target=str(d["target"]),
            settings_hash=str(d["settings_hash"]),
        )


_KINDS: dict[str, Any] = {
    "ConformalLowerBound": ConformalLowerBound,
    "TrivialLowerBound": TrivialLowerBound,
}


def calibration_from_dict(
    d: Mapping[str, Any],
) -> ConformalLowerBound | TrivialLowerBound:
    """Rebuild any serialised calibration from its ``kind`` field."""
    kind = d.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"unknown calibration kind {kind!r}; expected one of {list(_KINDS)}")
    return _KINDS[kind].from_dict(d)


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


def flag(bounds: Any, min_value: float) -> np.ndarray:
    """Boolean array, True where the lower bound does not certify ``min_value``
    (``bound < min_value``, or NaN): these images need review."""
    b = np.asarray(bounds, dtype=np.float64)
    return ~(b >= min_value)
