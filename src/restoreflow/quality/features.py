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
- ``y_mean``, ``y_std``, ``y_dark_fraction``, ``y_colour_spread``, ``y_p99``, ``y_p10``,
  ``y_saturation`` (:data:`GUARD_FEATURES`, :func:`measurement_statistics`): what the
  measurement looks like (brightness, contrast, share of dark pixels, colourfulness,
  highlights, dark floor, colour saturation relative to brightness), the covariates of
  the shift guard (:mod:`restoreflow.quality.novelty`), not of the bounds.

Infinite PSNRs (identical images) are capped at :data:`PSNR_CAP` so features stay finite.

A name ``log10:NAME`` in :func:`feature_vector` is the derived feature
``log10(max(NAME, LOG_FLOOR))``: PSNR is a log of the error energy, and the energies above
(gradients, high-frequency energy, the samples' spread) predict it linearly once logged
(the calibration's defaults, ``calibrate.feature_names``;
benchmarks/results/explore_conformal_features.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .metrics import psnr_from_mse

__all__ = [
    "FEATURE_NAMES",
    "GUARD_FEATURES",
    "PSNR_CAP",
    "SIGMA_FLOOR",
    "compute_features",
    "feature_vector",
    "gradient_magnitude_mean",
    "high_frequency_energy",
    "measurement_consistency",
    "measurement_statistics",
    "noise_level",
    "posterior_spread",
    "rca_feature",
]

#: Finite stand-in (dB) for the PSNR of identical images.
PSNR_CAP = 100.0
#: Smallest noise level used to normalise the measurement residual (sigma_y = 0 guard).
SIGMA_FLOOR = 1e-6
#: Floor of a ``log10:`` feature's argument (an exactly flat image has zero gradients).
LOG_FLOOR = 1e-12
LOG_PREFIX = "log10:"

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
    "y_mean",
    "y_std",
    "y_dark_fraction",
    "y_colour_spread",
    "y_p99",
    "y_p10",
    "y_saturation",
)
#: Features of the shift guard (what the measurement looks like). ``y_p10`` and
#: ``y_saturation`` let an astronomy calibration tell photos apart (a star field's dark
#: floor is the sky); what the guard flags is measured in benchmarks/results/conformal.md.
GUARD_FEATURES: tuple[str, ...] = ("y_mean", "y_std", "y_dark_fraction", "y_colour_spread",
                                   "y_p99", "y_p10", "y_saturation")
DARK_LEVEL = 0.1
SATURATION_EPS = 1e-3  # brightness under which a pixel's saturation is ~0


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
    from restoreflow.operators.base import channel_groups

    xb = _as_batch_tensor(x_hat, "x_hat")
    yb = _as_batch_tensor(y, "y").to(xb.dtype)
    # a channel-wise operator is applied one channel at a time (memory of one channel)
    groups = channel_groups(A, xb.shape[1]) if yb.shape[1] == xb.shape[1] else [slice(None)]
    sq = 0.0
    for g in groups:
        with torch.no_grad():
            ax = A.A(xb[:, g])
        if ax.shape != yb[:, g].shape:
            raise ValueError(f"A(x_hat) has shape {tuple(ax.shape)} but y has {tuple(yb.shape)}")
        d = ax.sub_(yb[:, g])
        del ax
        # sum of squares in float64, band by band (no image-sized float64 copy)
        sq += sum(float(torch.sum(b.double() ** 2)) for b in d.split(256, dim=-2))
        del d
    m = yb.numel()
    return math.sqrt(sq) / (max(float(sigma_y), sigma_floor) * math.sqrt(m))


def _channels(image: Any, name: str = "image", dtype=np.float64):
    """The channels of an (H, W), (C, H, W) or (1, C, H, W) image as new ``dtype`` arrays,
    one at a time: an image-sized float64 copy never exists."""
    shape = tuple(image.shape)
    if len(shape) == 4 and shape[0] == 1:
        image, shape = image[0], shape[1:]
    if len(shape) == 2:
        image, shape = image[None], (1, *shape)
    if len(shape) != 3:
        raise ValueError(f"{name} must have shape (H, W) or (C, H, W), got {shape}")
    for c in range(shape[0]):
        ch = image[c]
        if hasattr(ch, "detach"):  # torch: a numpy view, copied below
            ch = ch.detach().cpu().numpy()
        yield np.array(ch, dtype=dtype)  # always a copy (callers update it in place)


def _per_channel(fn, image: Any, name: str = "image", dtype=np.float64) -> list:
    """``[fn(channel) for channel in _channels(image)]`` with one channel copy alive at a
    time (a comprehension keeps the previous one until the next exists)."""
    out = []
    for a in _channels(image, name, dtype):
        out.append(fn(a))
        del a
    return out


def _grad_parts(a: np.ndarray, band: int = 256) -> tuple[float, int]:
    """(sum of forward-difference gradient magnitudes, count) of one channel, by bands."""
    h, w = a.shape
    if min(h, w) < 2:
        raise ValueError(f"image too small for gradients: {a.shape}")
    total = 0.0
    for r0 in range(0, h - 1, band):
        blk = a[r0 : min(r0 + band, h - 1) + 1]
        dx = np.diff(blk, axis=-1)[:-1, :]
        dy = np.diff(blk, axis=-2)[:, :-1]
        total += float(np.sqrt(dx**2 + dy**2).sum())
    return total, (h - 1) * (w - 1)


def _hf_parts(a: np.ndarray, cutoff: float) -> tuple[float, float]:
    """(energy above ``cutoff``, total energy) of one mean-removed channel, from its half
    spectrum (real input: the other half mirrors it) computed by bands."""
    import torch

    from restoreflow.operators import fft

    h, w = a.shape
    a -= a.mean()  # a is this function's own copy (see _channels)
    spec = fft.rfft2(torch.from_numpy(a))
    wv = np.full(w // 2 + 1, 2.0)  # columns 1 .. ceil(w/2)-1 stand for two
    wv[0] = 1.0
    if w % 2 == 0:
        wv[-1] = 1.0
    fy, fx = np.fft.fftfreq(h), np.fft.rfftfreq(w)
    high = total = 0.0
    rows = max(1, 2**22 // (w // 2 + 1))
    for r0 in range(0, h, rows):
        p = (spec[r0 : r0 + rows].abs() ** 2).numpy() * wv
        mask = np.sqrt(fx[None, :] ** 2 + fy[r0 : r0 + rows, None] ** 2) > cutoff
        high += float(p[mask].sum())
        total += float(p.sum())
    return high, total


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
    parts = _per_channel(_grad_parts, image)
    return sum(t for t, _ in parts) / sum(n for _, n in parts)


def high_frequency_energy(image: Any, cutoff: float = 0.25) -> float:
    """Fraction of the spectral energy of the mean-removed image at radial frequencies
    ``sqrt(fx^2 + fy^2) > cutoff`` (cycles per pixel; Nyquist is 0.5), summed over
    channels: ``sum_{|f|>c} |F|^2 / sum_f |F|^2`` in [0, 1]; 0 for a constant image."""
    if not 0 < cutoff < math.sqrt(0.5):
        raise ValueError(f"cutoff must be in (0, 0.707) cycles/pixel, got {cutoff}")
    parts = _per_channel(lambda a: _hf_parts(a, cutoff), image)
    total = sum(t for _, t in parts)
    if total <= 0:
        return 0.0
    return sum(hi for hi, _ in parts) / total


def noise_level(y: Any) -> float:
    """Noise standard deviation of ``y`` (intensity units) estimated from the median
    absolute finest-scale wavelet coefficient (``skimage.restoration.estimate_sigma``,
    averaged over channels)."""
    from skimage.restoration import estimate_sigma

    # the mean of the per-channel estimates (estimate_sigma's average_sigmas), on float32
    # channels: the float64 wavelet transform of one 8192 px channel alone takes 1.5 GB;
    # the estimate moves by ~1e-7 relative
    sigmas = _per_channel(lambda a: estimate_sigma(a, channel_axis=None), y, "y", np.float32)
    return float(np.mean(sigmas))


def measurement_statistics(y: Any) -> dict[str, float]:
    """:data:`GUARD_FEATURES` of a measurement ``y`` ((C, H, W) or (1, C, H, W), values
    clipped to [0, 1]): mean and standard deviation of the luminance (channel mean), the
    fraction of pixels darker than :data:`DARK_LEVEL`, the mean spread between channels
    (0 for grey), the 99th and 10th percentiles of the luminance and the mean saturation
    ``(max - min) / max`` over channels (0 for grey; black pixels count 0)."""
    t = y.detach().cpu().numpy() if hasattr(y, "detach") else np.asarray(y)
    a = np.clip(t.reshape(t.shape[-3:]) if t.ndim >= 3 else t[None], 0, 1).astype(np.float32)
    lum = a.mean(axis=0)
    hi = a.max(axis=0)
    spread = hi - a.min(axis=0)
    return {"y_mean": float(lum.mean()), "y_std": float(lum.std()),
            "y_dark_fraction": float((lum < DARK_LEVEL).mean()),
            "y_colour_spread": float(spread.mean()),
            "y_p99": float(np.percentile(lum, 99)), "y_p10": float(np.percentile(lum, 10)),
            "y_saturation": float(np.mean(spread / np.maximum(hi, SATURATION_EPS)))}


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
        **measurement_statistics(y),
    }
    if y_dagger is None:  # A^+ y one channel at a time for a channel-wise operator
        import torch

        from restoreflow.operators.base import channel_groups

        yb = _as_batch_tensor(y, "y")
        grad, hf = [], []
        for g in channel_groups(A, yb.shape[1]):
            with torch.no_grad():
                yd = A.A_dagger(yb[:, g])
            for c in range(yd.shape[1]):
                a = next(_channels(yd[0, c]))
                if c == yd.shape[1] - 1:
                    del yd  # the float64 copy of the last channel is all that is needed
                grad.append(_grad_parts(a))
                hf.append(_hf_parts(a, 0.25))
                del a
        feats["grad_mean_ydagger"] = sum(t for t, _ in grad) / sum(n for _, n in grad)
        total = sum(t for _, t in hf)
        feats["hf_energy_ydagger"] = sum(h for h, _ in hf) / total if total > 0 else 0.0
    else:
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
    """The features as a float64 vector in the order of ``names`` (``log10:NAME`` the
    log10 of feature NAME, floored at :data:`LOG_FLOOR`); raises KeyError naming every
    missing feature and ValueError for non-finite values."""
    base = [n.removeprefix(LOG_PREFIX) for n in names]
    missing = [n for n in base if n not in features]
    if missing:
        raise KeyError(f"missing features: {missing}")
    v = np.array([math.log10(max(float(features[b]), LOG_FLOOR)) if n.startswith(LOG_PREFIX)
                  else float(features[b]) for n, b in zip(names, base, strict=True)],
                 dtype=np.float64)
    bad = [n for n, x in zip(names, v, strict=True) if not np.isfinite(x)]
    if bad:
        raise ValueError(f"non-finite features: {bad}")
    return v
