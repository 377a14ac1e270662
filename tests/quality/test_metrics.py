"""PSNR / SSIM wrappers: known values, input types and shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from restoreflow.quality.metrics import mse, psnr, psnr_from_mse, ssim


def test_identical_images_have_infinite_psnr_and_unit_ssim():
    x = np.random.default_rng(0).random((3, 16, 16))
    assert psnr(x, x.copy()) == math.inf
    assert ssim(x, x.copy()) == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(16, 16), (3, 16, 16), (1, 3, 16, 16)])
def test_known_mse_gives_known_psnr(shape):
    # constant offset 0.1 everywhere -> MSE = 0.01 -> PSNR = 10 log10(1 / 0.01) = 20 dB
    ref = np.full(shape, 0.4)
    x = ref + 0.1
    assert mse(x, ref) == pytest.approx(0.01)
    assert psnr(x, ref) == pytest.approx(20.0, abs=1e-9)
    # data_range 2 adds 20 log10(2) dB
    assert psnr(x, ref, data_range=2.0) == pytest.approx(20.0 + 20 * math.log10(2), abs=1e-9)


def test_psnr_from_mse():
    assert psnr_from_mse(1e-3) == pytest.approx(30.0)
    assert psnr_from_mse(0.0) == math.inf
    with pytest.raises(ValueError):
        psnr_from_mse(-1.0)


def test_torch_and_numpy_agree():
    rng = np.random.default_rng(1)
    ref = rng.random((3, 12, 12))
    x = np.clip(ref + 0.05 * rng.normal(size=ref.shape), 0, 1)
    assert psnr(torch.from_numpy(x).float(), torch.from_numpy(ref).float()) == pytest.approx(
        psnr(x, ref), abs=1e-4
    )
    assert ssim(torch.from_numpy(x), torch.from_numpy(ref)) == pytest.approx(ssim(x, ref))


def test_ssim_matches_skimage_with_channel_axis_and_drops_with_noise():
    rng = np.random.default_rng(2)
    ref = rng.random((3, 20, 20))
    x = np.clip(ref + 0.1 * rng.normal(size=ref.shape), 0, 1)
    expected = structural_similarity(ref, x, data_range=1.0, channel_axis=0)
    assert ssim(x, ref) == pytest.approx(expected)
    noisier = np.clip(ref + 0.3 * rng.normal(size=ref.shape), 0, 1)
    assert ssim(noisier, ref) < ssim(x, ref) < 1.0


def test_shape_errors():
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros((3, 8, 8)), np.zeros((3, 8, 9)))
    with pytest.raises(ValueError):
        psnr(np.zeros(8), np.zeros(8))
    with pytest.raises(ValueError, match="3x3"):
        ssim(np.zeros((3, 2, 2)), np.ones((3, 2, 2)))
