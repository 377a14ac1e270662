"""No-reference features of a restoration: computable from the measurement ``y``, the
operator ``A`` and the restoration ``x_hat`` (or its posterior samples) alone, without
the ground truth. They are the covariates of the conformal quality predictors in
:mod:`restoreflow.quality.conformal`.

Features (names as in :data:`FEATURE_NAMES`):

- ``measurement_consistency``: ``||A x_hat - y||_2 / (sigma_y sqrt(m))`` with
  ``m = y.numel()``. For Gaussian noise of standard deviation ``sigma_y`` and
  ``x_hat = x`` this is about 1; much larger values mean ``x_hat`` does not explain ``y``,
  much smaller ones that it fits the noise.
- ``pixel_std_mean``, ``pairwise_psnr_mean``: spread of J posterior samples (mean
  per-pixel standard deviation; mean PSNR between pairs of samples, in dB).
- ``rca_mean``, ``rca_min``: reverse-classification-accuracy style features (after
  Cosarinsky et al., "Conformal In-Context Reverse Classification Accuracy", adapted to
  restoration): the known PSNRs (dB) of the K reference neighbours retrieved for ``y``
  and restored the same way.
- ``grad_mean_xhat``, ``hf_energy_xhat``, ``grad_mean_ydagger``, ``hf_energy_ydagger``:
  mean gradient magnitude and high-frequency energy fraction of ``x_hat`` and ``A^+ y``.
- ``noise_sigma_y``: noise standard deviation of ``y`` estimated from its finest wavelet
  coefficients (``skimage.restoration.estimate_sigma``; intensity units).

Infinite PSNRs (identical images) are capped at :data:`PSNR_CAP` so features stay finite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .metrics import as_image_array, psnr_from_mse

__all__ = [
    "FEATURE_NAMES",
    "PSNR_CAP",
    "SIGMA_FLOOR",
    "compute_features",
    "feature_vector",
    "gradient_magnitude_mean",
    "high_frequency_energy",
    "measurement_consistency",
    "noise_level",
    "posterior_spread",
    "rca_feature",
]

#: Finite stand-in (dB) for the PSNR of identical images.
PSNR_CAP = 100.0
#: Smallest noise level used to normalise the measurement residual (sigma_y = 0 guard).
SIGMA_FLOOR = 1e-6

FEATURE_NAMES: tuple[str, ...] = (
    "measurement_consistency",
    "pixel_std_mean",
    "pairwise_psnr_mean",
    "rca_mean",
    "rca_min",
    "grad_mean_xhat",
    "hf_energy_xhat",
    "grad_mean_ydagger",
    "hf_energy_ydagger",
    "noise_sigma_y",
)


def _as_batch_tensor(x: Any, name: str):
    import torch

    t = torch.as_tensor(x)
    if not t.is_floating_point():
        t = t.double()
    if t.dim() == 2:
        t = t[None, None]
    elif t.dim() == 3:
        t = t[None]
    elif t.dim() != 4:
        raise ValueError(f"{name} must have shape (H, W), (C, H, W) or (B, C, H, W)")
    return t


def measurement_consistency(
    A: Any, x_hat: Any, y: Any, sigma_y: float, sigma_floor: float = SIGMA_FLOOR
) -> float:
    """Normalised measurement residual ``||A x_hat - y||_2 / (max(sigma_y, floor) sqrt(m))``.

    ``A`` has a method ``A(x)`` on ``(B, C, H, W)`` torch tensors (an
    :class:`~restoreflow.operators.LinearOperator`); ``x_hat`` and ``y`` are
    ``(C, H, W)`` or ``(B, C, H, W)`` tensors or arrays; ``m = y.numel()``. Dimensionless;
    about 1 when ``x_hat`` explains ``y`` up to Gaussian noise of std ``sigma_y``.
    """
    import torch

    if not sigma_y >= 0:
        raise ValueError(f"sigma_y must be >= 0, got {sigma_y}")
    if not sigma_floor > 0:
        raise ValueError(f"sigma_floor must be > 0, got {sigma_floor}")
    xb = _as_batch_tensor(x_hat, "x_hat")
    yb = _as_batch_tensor(y, "y").to(xb.dtype)
    with torch.no_grad():
        ax = A.A(xb)
    if ax.shape != yb.shape:
        raise ValueError(f"A(x_hat) has shape {tuple(ax.shape)} but y has {tuple(yb.shape)}")
    m = yb.numel()
    resid = torch.linalg.vector_norm((ax - yb).double()).item()
    return resid / (max(float(sigma_y), sigma_floor) * math.sqrt(m))


def posterior_spread(samples: Any, data_range: float = 1.0) -> dict[str, float]:
    """Spread of J posterior samples ``(J, C, H, W)`` (or ``(J, H, W)``), J >= 2.

    Returns ``pixel_std_mean = mean_p std_j(x_j[p])`` (sample std with ``ddof = 1``,
    intensity units) and ``pairwise_psnr_mean = mean_{j<k} PSNR(x_j, x_k)`` in dB, each
    pair's PSNR capped at :data:`PSNR_CAP`.
    """
    if hasattr(samples, "detach"):
        samples = samples.detach().cpu().double().numpy()
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim not in (3, 4):
        raise ValueError(f"samples must have shape (J, C, H, W) or (J, H, W), got {s.shape}")
    j = s.shape[0]
    if j < 2:
        raise ValueError(f"posterior_spread needs at least 2 samples, got {j}")
    if not np.isfinite(s).all():
        raise ValueError("samples contain NaN or infinite values")
    flat = s.reshape(j, -1)
    std_mean = float(flat.std(axis=0, ddof=1).mean())
    # direct differences (not the Gram trick) so near-identical samples keep precision
    mses = np.concatenate([((flat[i + 1 :] - flat[i]) ** 2).mean(axis=1) for i in range(j - 1)])
    psnrs = [min(psnr_from_mse(float(m), data_range), PSNR_CAP) for m in mses]
    return {"pixel_std_mean": std_mean, "pairwise_psnr_mean": float(np.mean(psnrs))}


def rca_feature(neighbour_psnrs: Sequence[float]) -> dict[str, float]:
    """Reverse-classification-accuracy features from the known PSNRs (dB) of the K
    retrieved neighbours restored the same way: ``{"mean": mean_k, "min": min_k}``
    (infinite PSNRs capped at :data:`PSNR_CAP`)."""
    p = np.asarray(list(neighbour_psnrs), dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError("rca_feature needs a non-empty list of neighbour PSNRs")
    if np.isnan(p).any() or (p == -np.inf).any():
        raise ValueError(f"neighbour PSNRs must not be NaN or -inf, got {p.tolist()}")
    p = np.minimum(p, PSNR_CAP)
    return {"mean": float(p.mean()), "min": float(p.min())}


def gradient_magnitude_mean(image: Any) -> float:
    """Mean gradient magnitude ``mean sqrt((dx)^2 + (dy)^2)`` with forward differences
    (intensity per pixel), averaged over the ``(H-1) x (W-1)`` grid and channels."""
    a = as_image_array(image)
    if a.ndim == 2:
        a = a[None]
    if min(a.shape[-2:]) < 2:
        raise ValueError(f"image too small for gradients: {a.shape}")
    dx = np.diff(a, axis=-1)[..., :-1, :]
    dy = np.diff(a, axis=-2)[..., :, :-1]
    return float(np.sqrt(dx**2 + dy**2).mean())


def high_frequency_energy(image: Any, cutoff: float = 0.25) -> float:
    """Fraction of the spectral energy of the mean-removed image at radial frequencies
    ``sqrt(fx^2 + fy^2) > cutoff`` (cycles per pixel; Nyquist is 0.5), summed over
    channels: ``sum_{|f|>c} |F|^2 / sum_f |F|^2`` in [0, 1]; 0 for a constant image."""
    if not 0 < cutoff < math.sqrt(0.5):
        raise ValueError(f"cutoff must be in (0, 0.707) cycles/pixel, got {cutoff}")
    a = as_image_array(image)
    if a.ndim == 2:
        a = a[None]
    a = a - a.mean(axis=(-2, -1), keepdims=True)
    power = np.abs(np.fft.fft2(a)) ** 2
    fy = np.fft.fftfreq(a.shape[-2])[:, None]
    fx = np.fft.fftfreq(a.shape[-1])[None, :]
    high = np.sqrt(fx**2 + fy**2) > cutoff
    total = float(power.sum())
    if total <= 0:
        return 0.0
    return float(power[:, high].sum() / total)


def noise_level(y: Any) -> float:
    """Noise standard deviation of ``y`` (intensity units) estimated from the median
    absolute finest-scale wavelet coefficient (``skimage.restoration.estimate_sigma``,
    averaged over channels)."""
    from skimage.restoration import estimate_sigma

    a = as_image_array(y, "y")
    return float(estimate_sigma(a, channel_axis=0 if a.ndim == 3 else None, average_sigmas=True))


def compute_features(
    A: Any,
    x_hat: Any,
    y: Any,
    sigma_y: float,
    samples: Any | None = None,
    neighbour_psnrs: Sequence[float] | None = None,
    y_dagger: Any | None = None,
) -> dict[str, float]:
    """All available no-reference features of one restoration, keyed by
    :data:`FEATURE_NAMES`. The spread features need ``samples`` (J >= 2) and the RCA
    features ``neighbour_psnrs``; they are left out when those are None. ``y_dagger``
    (``A^+ y``) is computed with ``A.A_dagger`` when not given."""
    feats: dict[str, float] = {
        "measurement_consistency": measurement_consistency(A, x_hat, y, sigma_y),
        "grad_mean_xhat": gradient_magnitude_mean(x_hat),
        "hf_energy_xhat": high_frequency_energy(x_hat),
        "noise_sigma_y": noise_level(y),
    }
    if y_dagger is None:
        import torch

        with torch.no_grad():
            y_dagger = A.A_dagger(_as_batch_tensor(y, "y"))
    feats["grad_mean_ydagger"] = gradient_magnitude_mean(y_dagger)
    feats["hf_energy_ydagger"] = high_frequency_energy(y_dagger)
    if samples is not None:
        feats.update(posterior_spread(samples))
    if neighbour_psnrs is not None:
        r = rca_feature(neighbour_psnrs)
        feats["rca_mean"], feats["rca_min"] = r["mean"], r["min"]
    return {k: feats[k] for k in FEATURE_NAMES if k in feats}


def feature_vector(
    features: Mapping[str, float], names: Sequence[str] = FEATURE_NAMES
) -> np.ndarray:
    """The features as a float64 vector in the order of ``names``; raises KeyError naming
    every missing feature and ValueError for non-finite values."""
    missing = [n for n in names if n not in features]
    if missing:
        raise KeyError(f"missing features: {missing}")
    v = np.array([float(features[n]) for n in names], dtype=np.float64)
    bad = [n for n, x in zip(names, v, strict=True) if not np.isfinite(x)]
    if bad:
        raise ValueError(f"non-finite features: {bad}")
    return v
