"""Classical peers a user would otherwise pick, on the same y as the samplers.

- BM3D deblurring (Dabov et al.; the ``bm3d`` package, ``bm3d_deblurring`` with the true
  PSF and noise sigma), one channel at a time (bm3d 4.0.3 fails on H x W x 3).
- BM3D denoising (``bm3d_rgb``, colour BM3D, the true sigma): the peer of the prior's
  one-step denoising in ``bench_prior --bm3d``.
- BM3D for SR x f: bicubic upsampling of y (torch, ``align_corners=False``) followed by
  BM3D denoising at the effective noise of the upsampled image: the noise sigma times
  the root of the sum of squared interpolation weights, measured by upsampling a
  noise-only image.
- Richardson-Lucy (scikit-image) for deblurring, the astronomers' default: y clipped to
  [0, 1] and wrap-padded by the kernel size (the benchmark's blur is circular; zero
  padding costs RL ~10 dB at the borders), 10 iterations (the best of 3/5/10/20/30 on
  the first two held-out photos at 128 px; more iterations amplify the noise).

``bm3d`` is licensed for non-commercial use only: it is in the ``bench`` extra (installed
by ``make bench``), never a runtime dependency of restoreflow.

All functions take y as a (3, h, w) float tensor in [0, 1] units and return (3, H, W).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _bm3d():
    """The bm3d module; bm4d 4.2.5 (its dependency) still calls ``np.trapz``, which
    numpy 2.4 removed: give it the renamed function (same maths)."""
    import bm3d

    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid
    return bm3d


def _channels(y: torch.Tensor) -> list[np.ndarray]:
    return [c.double().numpy() for c in y]


def bm3d_deblur(y: torch.Tensor, psf: torch.Tensor, sigma: float) -> torch.Tensor:
    """BM3D-deblurring of a circularly blurred y with the true PSF and noise sigma."""
    bm3d = _bm3d()
    k = psf.double().numpy()
    out = [np.asarray(bm3d.bm3d_deblurring(c[..., None], sigma, k)).reshape(c.shape)
           for c in _channels(y)]
    return torch.from_numpy(np.stack(out)).float().clamp(0, 1)


def bm3d_denoise(y: torch.Tensor, sigma: float) -> torch.Tensor:
    """Colour BM3D (CBM3D, ``bm3d.bm3d_rgb``) denoising of y with the true noise sigma."""
    bm3d = _bm3d()
    out = bm3d.bm3d_rgb(y.permute(1, 2, 0).double().numpy(), sigma)
    return torch.from_numpy(np.asarray(out)).permute(2, 0, 1).float().clamp(0, 1)


def bicubic_up(y: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(y[None].double(), scale_factor=factor, mode="bicubic",
                         align_corners=False)[0]


def upsampled_noise_sigma(sigma: float, factor: int, size: int = 64, seed: int = 0) -> float:
    """Noise std after :func:`bicubic_up` of white noise of std ``sigma``."""
    g = torch.Generator().manual_seed(seed)
    n = sigma * torch.randn(1, size, size, generator=g, dtype=torch.float64)
    return float(bicubic_up(n, factor)[0, 8:-8, 8:-8].std())


def bm3d_sr(y: torch.Tensor, factor: int, sigma: float) -> torch.Tensor:
    """Bicubic upsampling followed by BM3D denoising at the effective noise."""
    bm3d = _bm3d()
    up = bicubic_up(y, factor)
    s = upsampled_noise_sigma(sigma, factor)
    out = [np.asarray(bm3d.bm3d(c, sigma_psd=s)).reshape(c.shape) for c in _channels(up)]
    return torch.from_numpy(np.stack(out)).float().clamp(0, 1)


def richardson_lucy(y: torch.Tensor, psf: torch.Tensor, num_iter: int = 10) -> torch.Tensor:
    """Richardson-Lucy deconvolution per channel (scikit-image), circular boundary."""
    from skimage.restoration import richardson_lucy as rl

    k = psf.double().numpy()
    p = max(k.shape)
    out = []
    for c in _channels(y):
        padded = np.pad(np.clip(c, 0, 1), p, mode="wrap")
        out.append(rl(padded, k, num_iter=num_iter, clip=True)[p:-p, p:-p])
    return torch.from_numpy(np.stack(out)).float().clamp(0, 1)
