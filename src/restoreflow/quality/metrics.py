"""Full-reference image quality: PSNR and SSIM of a restoration against the ground truth.

Both are thin wrappers over scikit-image (``peak_signal_noise_ratio``,
``structural_similarity``) that accept numpy arrays or torch tensors of shape ``(H, W)``
or ``(C, H, W)`` (a leading batch axis of size 1 is dropped) with intensities on a scale
of ``data_range`` (1 for images in [0, 1]).

    PSNR(x, x_ref) = 10 log10(data_range^2 / MSE),   MSE = mean((x - x_ref)^2)   [dB]

PSNR is ``+inf`` for identical images. SSIM is the mean structural similarity index of
Wang et al. (2004) over all pixels and channels (dimensionless, 1 for identical images).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["as_image_array", "mse", "psnr", "psnr_from_mse", "ssim"]


def as_image_array(x: Any, name: str = "image") -> np.ndarray:
    """``x`` (numpy array or torch tensor) as a float64 numpy array ``(H, W)`` or
    ``(C, H, W)``; a leading batch axis of size 1 is dropped."""
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (H, W) or (C, H, W), got {a.shape}")
    return a


def _pair(x: Any, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    a = as_image_array(x, "x")
    b = as_image_array(ref, "ref")
    if a.shape != b.shape:
        raise ValueError(f"x has shape {a.shape} but ref has shape {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("images contain NaN or infinite values")
    return a, b


def mse(x: Any, ref: Any) -> float:
    """Mean squared error ``mean((x - ref)^2)`` over all pixels and channels."""
    a, b = _pair(x, ref)
    return float(np.mean((a - b) ** 2))


def psnr_from_mse(mse_value: float, data_range: float = 1.0) -> float:
    """``10 log10(data_range^2 / mse)`` in dB; ``+inf`` when ``mse == 0``."""
    if mse_value < 0:
        raise ValueError(f"mse must be >= 0, got {mse_value}")
    if mse_value == 0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse_value)


def psnr(x: Any, ref: Any, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio of ``x`` against the reference ``ref`` in dB
    (``skimage.metrics.peak_signal_noise_ratio``); ``+inf`` for identical images."""
    from skimage.metrics import peak_signal_noise_ratio

    a, b = _pair(x, ref)
    if np.array_equal(a, b):  # skimage would divide by zero (and warn)
        return math.inf
    return float(peak_signal_noise_ratio(b, a, data_range=data_range))


def ssim(x: Any, ref: Any, data_range: float = 1.0) -> float:
    """Mean SSIM of ``x`` against ``ref`` (``skimage.metrics.structural_similarity``,
    7x7 uniform window, channels along axis 0).

    Images smaller than 7 pixels on a side use the largest odd window that fits
    (at least 3); smaller images raise ValueError.
    """
    from skimage.metrics import structural_similarity

    a, b = _pair(x, ref)
    side = min(a.shape[-2:])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels, got {a.shape}")
    return float(
        structural_similarity(
            b,
            a,
            data_range=data_range,
            win_size=win,
            channel_axis=0 if a.ndim == 3 else None,
        )
    )
