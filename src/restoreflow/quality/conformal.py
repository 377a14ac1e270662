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

The quantile rule is :mod:`restoreflow.quality.quantiles`; the predictors ``f`` are
:class:`~restoreflow.quality.linear.LinearModel` fits (:mod:`restoreflow.quality.ridge`,
:mod:`restoreflow.quality.quantreg`). :class:`TrivialLowerBound` is the feature-free
baseline. All calibrations serialise to plain JSON (``to_dict``/``from_dict``;
infinities as the strings ``"inf"`` / ``"-inf"``) together with a caller-supplied
``settings_hash``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .features import feature_vector
from .full_conformal import FullConformalBound, full_min_sources
from .linear import LinearModel, features_2d
from .quantiles import (
    check_alpha,
    conformal_lower_quantile,
    grouped_conformal_quantile,
    scores_1d,
)
from .quantreg import fit_quantile_regression
from .ridge import fit_ridge

__all__ = [
    "ConformalLowerBound",
    "FullConformalBound",
    "fit_lower_bound",
    "min_sources",
    "method_min_sources",
    "split_by_group",
    "Method",
    "TrivialLowerBound",
    "calibration_from_dict",
    "flag",
]

Method = Literal["residual", "cqr"]
_METHODS = ("residual", "cqr")
#: every bound a calibration can use: full conformal ridge, or split conformal
BOUND_METHODS = ("full", *_METHODS)
FORMAT_VERSION = 1


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


def split_by_group(groups: np.ndarray, rng: np.random.Generator, fit_fraction: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the fit fold and of the calibration fold: ``round(fit_fraction G)``
    of the ``G`` groups (in a random order drawn with ``rng``) go to the fit fold, the
    others to the calibration fold, so no group is in both. With one row per group this
    is a random split of the rows."""
    if not 0.0 < fit_fraction < 1.0:
        raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
    uniq, codes = np.unique(groups, return_inverse=True)
    n_fit = int(round(fit_fraction * uniq.size))
    if n_fit < 2 or uniq.size - n_fit < 1:
        raise ValueError(f"cannot split {uniq.size} calibration sources with fit_fraction "
                         f"{fit_fraction}")
    is_fit = np.zeros(uniq.size, bool)
    is_fit[rng.permutation(uniq.size)[:n_fit]] = True
    return np.flatnonzero(is_fit[codes]), np.flatnonzero(~is_fit[codes])


def _groups(groups: Any, n: int) -> np.ndarray:
    """Each row's source as an array (default: every row its own source)."""
    if groups is None:
        return np.arange(n)
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"{g.size} groups for {n} rows")
    return g


def min_sources(alpha: float) -> int:
    """Fewest calibration-fold sources with a finite bound at ``alpha``:
    the smallest ``G`` with ``ceil((1 - alpha)(G + 1)) <= G``."""
    return math.ceil((1.0 - alpha) / alpha - 1e-9)


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
    n_cal_sources: int | None = None

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
        groups: Any = None,
    ) -> ConformalLowerBound:
        """Split ``(features (n, d), true_values (n,))`` at random with ``rng`` into a fit
        fold and a calibration fold by :func:`split_by_group` (``groups``: each row's
        source; default one source per row), then :meth:`fit_split`.
        ``feature_names`` defaults to ``x0, x1, ...``."""
        _check_rng(rng)
        X = features_2d(features)
        v = scores_1d(true_values, "true_values")
        if v.size != X.shape[0]:
            raise ValueError(f"{X.shape[0]} feature rows but {v.size} true values")
        g = _groups(groups, v.size)
        i_fit, i_cal = split_by_group(g, rng, fit_fraction)
        return cls.fit_split(X[i_fit], v[i_fit], X[i_cal], v[i_cal], alpha, method,
                             feature_names, ridge, target, settings_hash, g[i_cal])

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
        cal_groups: Any = None,
    ) -> ConformalLowerBound:
        """Fit the predictor on the fit fold and the conformal quantile on the given
        calibration fold (which must not share a source with the fit fold), every source
        of ``cal_groups`` weighing one (:func:`grouped_conformal_quantile`)."""
        a = check_alpha(alpha)
        _check_method(method)
        Xf = features_2d(fit_features)
        Xc = features_2d(cal_features, Xf.shape[1])
        vc = scores_1d(cal_values, "cal_values")
        if vc.size != Xc.shape[0]:
            raise ValueError(f"{Xc.shape[0]} calibration rows but {vc.size} values")
        if method == "residual":
            model = fit_ridge(Xf, fit_values, ridge)
        else:
            model = fit_quantile_regression(Xf, fit_values, a)
        gc = _groups(cal_groups, vc.size)
        n_sources = int(np.unique(gc).size)
        q = grouped_conformal_quantile(model.predict(Xc) - vc, gc, a)
        if math.isinf(q):
            raise ValueError(
                f"the calibration fold has {n_sources} sources; alpha={a} needs at least "
                f"{min_sources(a)} for a finite bound")
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
            n_cal_sources=n_sources,
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
            "n_cal_sources": obj.n_cal_sources, "settings_hash": obj.settings_hash}


def _fitted_from_dict(d: Mapping[str, Any], kind: str, *model_keys: str) -> dict[str, Any]:
    """Validated constructor arguments of a fitted conformal object (models included)."""
    _check_kind(d, kind)
    _check_method(d["method"])
    models = {k: LinearModel.from_dict(d[k]) for k in model_keys}
    n_features = models[model_keys[0]].coef.size
    return {**models, "method": d["method"], "alpha": check_alpha(d["alpha"]),
            "feature_names": _names(d["feature_names"], n_features),
            "quantile": _dec(d["quantile"]), "n_fit": int(d["n_fit"]),
            "n_cal": int(d["n_cal"]), "target": str(d["target"]),
            "settings_hash": str(d["settings_hash"]),
            "n_cal_sources": None if d.get("n_cal_sources") is None else int(d["n_cal_sources"])}


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
        cls, true_values: Any, alpha: float, target: str = "psnr", settings_hash: str = "",
        groups: Any = None,
    ) -> TrivialLowerBound:
        """``groups``: each value's source; every source then weighs one (the mirror
        image of :func:`grouped_conformal_quantile`)."""
        v = scores_1d(true_values, "true_values")
        a = check_alpha(alpha)
        value = (conformal_lower_quantile(v, a) if groups is None
                 else -grouped_conformal_quantile(-v, _groups(groups, v.size), a))
        return cls(
            alpha=a,
            value=value,
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
            alpha=check_alpha(d["alpha"]),
            value=_dec(d["value"]),
            n=int(d["n"]),
            target=str(d["target"]),
            settings_hash=str(d["settings_hash"]),
        )


_KINDS: dict[str, Any] = {
    "ConformalLowerBound": ConformalLowerBound,
    "FullConformalBound": FullConformalBound,
    "TrivialLowerBound": TrivialLowerBound,
}


def method_min_sources(method: str, alpha: float) -> int:
    """Fewest calibration sources with a finite bound by ``method`` at ``alpha``: full
    conformal uses them all; split conformal calibrates on half of them."""
    if method == "full":
        return full_min_sources(alpha)
    _check_method(method)
    return 2 * min_sources(alpha) - 1


def fit_lower_bound(method: str, features: Any, true_values: Any, alpha: float,
                    rng: np.random.Generator, feature_names: Sequence[str] | None = None,
                    target: str = "psnr", settings_hash: str = "", groups: Any = None
                    ) -> FullConformalBound | ConformalLowerBound:
    """A lower bound fitted by ``method`` (one of :data:`BOUND_METHODS`): the full
    conformal ridge bound, or a split conformal bound whose folds ``rng`` draws."""
    if method == "full":
        return FullConformalBound.fit(features, true_values, alpha, rng, feature_names,
                                      target, settings_hash, groups)
    return ConformalLowerBound.fit(features, true_values, alpha, rng, method=method,
                                   feature_names=feature_names, target=target,
                                   settings_hash=settings_hash, groups=groups)


def calibration_from_dict(
    d: Mapping[str, Any],
) -> ConformalLowerBound | FullConformalBound | TrivialLowerBound:
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
